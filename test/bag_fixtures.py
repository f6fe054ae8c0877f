"""A small camera bag (colour raw and compressed, CameraInfo, depth) of the test scene's coordinate
image, and a reader of output bags; shared by the bag processing, message and command tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from rosbags.highlevel import AnyReader
from scenes import HEIGHT, WIDTH, K, coordinate_image

from hoi_perception.bag_io import camera_info_msg, header, image_msg, open_bag_writer

START_NS = 1_700_000_000_000_000_000
PERIOD_NS = 33_333_333
FRAME_ID = "cam_color_optical_frame"


def write_input_bag(path: Path, frames: int = 4, corrupt_frame: int | None = None) -> Path:
    """Colour (raw + compressed twin), CameraInfo and 16UC1 depth, 30 Hz; one corrupt image if asked."""
    image = coordinate_image()
    with open_bag_writer(path) as bag:
        ts = bag.typestore
        Compressed = ts.types["sensor_msgs/msg/CompressedImage"]
        jpeg = np.frombuffer(cv2.imencode(".jpg", image[..., ::-1])[1].tobytes(), np.uint8)
        for i in range(frames):
            stamp = START_NS + i * PERIOD_NS
            msg = image_msg(ts, image, stamp, FRAME_ID)
            if i == corrupt_frame:
                msg.encoding = "yuv422"
            bag.write("/cam/color/image_raw", msg, stamp + 1000)
            bag.write("/cam/color/image_raw/compressed",
                      Compressed(header=header(ts, stamp, FRAME_ID), format="jpeg", data=jpeg), stamp + 1000)
            bag.write("/cam/color/camera_info", camera_info_msg(ts, K, WIDTH, HEIGHT, stamp, FRAME_ID), stamp)
            bag.write("/cam/depth/image_raw", image_msg(ts, np.zeros((HEIGHT, WIDTH), np.uint16), stamp, FRAME_ID),
                      stamp + 2000)
    return path


def read_back(path: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    with AnyReader([path]) as reader:
        for connection, _, raw in reader.messages():
            out.setdefault(connection.topic, []).append(reader.deserialize(raw, connection.msgtype))
    return out
