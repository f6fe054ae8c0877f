import json

import cv2
import numpy as np
import pytest

from hoi_perception.bag_io import camera_info_msg, header, image_msg, open_bag_writer
from hoi_perception.synth.sequence_files import DatasetFormatError
from hoi_training.data.frames import (
    RosBagFrameSource,
    SomethingElseFrameSource,
    VideoFrameSource,
    read_something_else,
)

K = np.array([[100.0, 0, 16.0], [0, 101.0, 12.0], [0, 0, 1]])


def write_video(path, frames, fourcc="MJPG", size=(32, 24)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 12, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 20 + 30 * i, np.uint8))
    writer.release()


def test_video_frames_with_stride_and_intrinsics(tmp_path):
    path = tmp_path / "clip.avi"
    write_video(path, 6)
    frames = list(VideoFrameSource(path, K=K, stride=2))
    assert [f.source_id for f in frames] == ["clip.avi#0", "clip.avi#2", "clip.avi#4"]
    np.testing.assert_allclose([f.timestamp for f in frames], [0.0, 2 / 12, 4 / 12])
    assert frames[1].image.shape == (24, 32, 3) and frames[1].image.dtype == np.uint8
    assert abs(float(frames[1].image.mean()) - 80.0) < 4.0
    np.testing.assert_array_equal(frames[2].K, K)
    assert frames[0].boxes is None


def test_video_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        VideoFrameSource(tmp_path / "missing.mp4")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(DatasetFormatError, match="broken.mp4"):
        list(VideoFrameSource(broken))
    with pytest.raises(ValueError, match="stride"):
        VideoFrameSource(broken, stride=0)


def something_else_entry(video_id, number, boxes):
    return {"name": f"{video_id}/{number:04d}.jpg", "nr_instances": len(boxes), "gt_placeholders": ["cup"],
            "labels": [{"box2d": {"x1": b[1][0], "y1": b[1][1], "x2": b[1][2], "y2": b[1][3]}, "category": b[0]}
                       for b in boxes]}


@pytest.fixture
def ssv2(tmp_path):
    videos = tmp_path / "20bn-something-something-v2"
    videos.mkdir()
    write_video(videos / "101.webm", 5, fourcc="VP80")
    write_video(videos / "7.webm", 3, fourcc="VP80")
    annotations = {
        "101": [something_else_entry("101", 3, [("hand", (2.0, 3.0, 12.0, 14.0)), ("cup", (10.0, 5.0, 40.0, 20.0))]),
                something_else_entry("101", 1, [("hand", (1.0, 1.0, 5.0, 5.0))])],
        "7": [something_else_entry("7", 2, [])],
    }
    path = tmp_path / "bounding_box_smthsmth_part1.json"
    path.write_text(json.dumps(annotations))
    return videos, path, annotations


def test_something_else_frames_come_with_their_boxes(ssv2):
    videos, path, _ = ssv2
    frames = list(SomethingElseFrameSource(videos, [path]))
    assert [f.source_id for f in frames] == ["ssv2/7/0002", "ssv2/101/0001", "ssv2/101/0003"]
    np.testing.assert_allclose([f.timestamp for f in frames], [1 / 12, 0.0, 2 / 12])
    third = frames[2]
    assert abs(float(third.image.mean()) - 80.0) < 6.0  # decoded frame index 2 of 101.webm
    assert [b.label for b in third.boxes] == ["hand", "cup"]
    np.testing.assert_allclose(third.hand_boxes()[0], [2.0, 3.0, 12.0, 14.0])
    np.testing.assert_allclose(third.object_boxes()[0].box, [10.0, 5.0, 32.0, 20.0])  # clipped to the 32 px width
    assert frames[0].boxes == [] and third.K is None
    only = list(SomethingElseFrameSource(videos, [path], video_ids=["7"]))
    assert len(only) == 1


def test_something_else_mismatches_are_reported(ssv2, tmp_path):
    videos, path, annotations = ssv2
    bad = dict(annotations, **{"555": [something_else_entry("555", 1, [])]})
    (tmp_path / "missing_video.json").write_text(json.dumps(bad))
    with pytest.raises(DatasetFormatError, match=r"1 annotated video\(s\) are not in .*555.webm"):
        SomethingElseFrameSource(videos, [tmp_path / "missing_video.json"])
    wrong_id = {"101": [something_else_entry("7", 1, [])]}
    (tmp_path / "wrong_id.json").write_text(json.dumps(wrong_id))
    with pytest.raises(DatasetFormatError, match="belongs to video '7'"):
        read_something_else([tmp_path / "wrong_id.json"])
    too_long = {"7": [something_else_entry("7", 9, [])]}
    (tmp_path / "too_long.json").write_text(json.dumps(too_long))
    with pytest.raises(DatasetFormatError, match=r"7.webm' decodes to 3 frames but .* annotates frame 0009"):
        list(SomethingElseFrameSource(videos, [tmp_path / "too_long.json"]))
    malformed = {"7": [{"name": "7/0001.jpg", "labels": [{"box2d": {"x1": 1}, "category": "hand"}]}]}
    (tmp_path / "malformed.json").write_text(json.dumps(malformed))
    with pytest.raises(DatasetFormatError, match=r"malformed.json': video '7', frame '7/0001.jpg': malformed label"):
        read_something_else([tmp_path / "malformed.json"])
    with pytest.raises(DatasetFormatError, match=r"video id\(s\) \['999'\] have no Something-Else annotation"):
        SomethingElseFrameSource(videos, [path], video_ids=["999"])


def raw_image(ts, image, encoding, stamp):
    Image = ts.types["sensor_msgs/msg/Image"]
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    padded = np.zeros((height, width * channels + 4), np.uint8)  # rows padded: step > width * channels
    padded[:, : width * channels] = image.reshape(height, -1)
    return Image(header=header(ts, stamp, "cam"), height=height, width=width, encoding=encoding, is_bigendian=0,
                 step=width * channels + 4, data=padded.reshape(-1))


@pytest.fixture
def bag(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    path = tmp_path / "recording"
    with open_bag_writer(path) as writer:
        ts = writer.typestore
        CompressedImage = ts.types["sensor_msgs/msg/CompressedImage"]
        png = np.frombuffer(cv2.imencode(".png", rgb[..., ::-1])[1].tobytes(), np.uint8)
        for i in range(3):
            stamp = 2_000_000_000 + i * 50_000_000
            writer.write("/cam/color/image_raw", image_msg(ts, rgb, stamp, "cam"), stamp + 1000)
            writer.write("/cam/bgr", raw_image(ts, rgb[..., ::-1].copy(), "bgr8", stamp), stamp)
            writer.write("/cam/mono", raw_image(ts, rgb[..., 0].copy(), "mono8", stamp), stamp)
            writer.write("/cam/color/image_raw/compressed",
                         CompressedImage(header=header(ts, stamp, "cam"), format="png", data=png), stamp)
            writer.write("/cam/depth", image_msg(ts, np.zeros((12, 16), np.uint16), stamp, "cam"), stamp)
            # Camera info 1 ms after the image stamp, and missing for the last frame.
            if i < 2:
                info_stamp = stamp + 1_000_000
                writer.write("/cam/color/camera_info", camera_info_msg(ts, K * (i + 1), 16, 12, info_stamp, "cam"),
                             info_stamp)
    return path, rgb


def test_bag_images_pair_with_camera_info_by_stamp(bag):
    path, rgb = bag
    frames = list(RosBagFrameSource(path, "/cam/color/image_raw", "/cam/color/camera_info",
                                    max_stamp_difference=0.002))
    assert len(frames) == 2  # the third image has no CameraInfo within 2 ms
    np.testing.assert_array_equal(frames[0].image, rgb)
    np.testing.assert_allclose(frames[0].K, K)
    np.testing.assert_allclose(frames[1].K, 2 * K)
    assert frames[1].timestamp == pytest.approx(2.05)
    assert frames[1].source_id == "recording:/cam/color/image_raw@2050000000"
    no_info = list(RosBagFrameSource(path, "/cam/color/image_raw"))
    assert len(no_info) == 3 and no_info[2].K is None


@pytest.mark.parametrize("topic", ["/cam/bgr", "/cam/mono", "/cam/color/image_raw/compressed"])
def test_bag_encodings_decode_to_rgb(bag, topic):
    path, rgb = bag
    image = next(iter(RosBagFrameSource(path, topic))).image
    expected = np.repeat(rgb[..., :1], 3, axis=2) if topic.endswith("mono") else rgb
    np.testing.assert_array_equal(image, expected)


def test_bag_errors_name_topics(bag):
    path, _ = bag
    with pytest.raises(DatasetFormatError, match=r"lacks topic\(s\) \['/camera/image'\]; topics present: .*"
                                                  r"/cam/color/camera_info \(sensor_msgs/msg/CameraInfo\)"):
        RosBagFrameSource(path, "/camera/image", "/cam/color/camera_info")
    with pytest.raises(DatasetFormatError, match=r"lacks topic\(s\) \['/info'\]"):
        RosBagFrameSource(path, "/cam/bgr", "/info")
    with pytest.raises(DatasetFormatError, match="carries sensor_msgs/msg/CameraInfo, expected sensor_msgs/msg/Image"):
        RosBagFrameSource(path, "/cam/color/camera_info")
    with pytest.raises(DatasetFormatError, match=r"encoding '16UC1' is not supported"):
        list(RosBagFrameSource(path, "/cam/depth"))
    with pytest.raises(DatasetFormatError, match=r"no image on /cam/bgr has a CameraInfo"):
        list(RosBagFrameSource(path, "/cam/bgr", "/cam/color/camera_info", max_stamp_difference=0.0))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        RosBagFrameSource(path.parent / "nowhere", "/x")
