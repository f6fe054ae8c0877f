"""ROS 2 bag reading and writing without a ROS installation, through rosbags.

Bags are written into a hidden sibling folder and renamed into place only when
complete, so an interrupted job never leaves a bag that looks finished.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from hoi_perception.output_paths import ROSBAG, check_output

DEFAULT_DISTRO = "humble"
_STORES = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY, "kilted": Stores.ROS2_KILTED}
BAG_FORMAT_VERSION = 8  # rosbag2 metadata version read by Humble and later


def typestore(distro: str = DEFAULT_DISTRO) -> Typestore:
    """The message definitions of one ROS 2 distribution."""
    try:
        return get_typestore(_STORES[distro])
    except KeyError:
        raise ValueError(f"unknown ROS 2 distribution '{distro}'; expected one of {sorted(_STORES)}") from None


def stamp_from_ns(ts: Typestore, nanoseconds: int):
    Time = ts.types["builtin_interfaces/msg/Time"]
    return Time(sec=int(nanoseconds // 1_000_000_000), nanosec=int(nanoseconds % 1_000_000_000))


def header(ts: Typestore, nanoseconds: int, frame_id: str):
    Header = ts.types["std_msgs/msg/Header"]
    return Header(stamp=stamp_from_ns(ts, nanoseconds), frame_id=frame_id)


_ENCODINGS = {  # numpy dtype, channels -> ROS encoding
    (np.dtype(np.uint8), 3): "rgb8",
    (np.dtype(np.uint8), 1): "mono8",
    (np.dtype(np.uint16), 1): "16UC1",
    (np.dtype(np.float32), 1): "32FC1",
}


def image_msg(ts: Typestore, image: np.ndarray, nanoseconds: int, frame_id: str):
    """sensor_msgs/Image from an RGB uint8, mono8, 16UC1 (depth mm) or 32FC1 (depth m) array."""
    image = np.ascontiguousarray(image)
    channels = 1 if image.ndim == 2 else image.shape[2]
    encoding = _ENCODINGS.get((image.dtype, channels))
    if encoding is None:
        raise ValueError(f"cannot encode an image of dtype {image.dtype} with {channels} channels; "
                         f"supported: {sorted(set(_ENCODINGS.values()))}")
    Image = ts.types["sensor_msgs/msg/Image"]
    height, width = image.shape[:2]
    return Image(header=header(ts, nanoseconds, frame_id), height=height, width=width, encoding=encoding,
                 is_bigendian=0, step=width * channels * image.dtype.itemsize,
                 data=image.view(np.uint8).reshape(-1))


def camera_info_msg(ts: Typestore, K: np.ndarray, width: int, height: int, nanoseconds: int, frame_id: str):
    """sensor_msgs/CameraInfo for an undistorted pinhole camera."""
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    P = np.zeros((3, 4))
    P[:, :3] = K
    CameraInfo = ts.types["sensor_msgs/msg/CameraInfo"]
    Roi = ts.types["sensor_msgs/msg/RegionOfInterest"]
    return CameraInfo(header=header(ts, nanoseconds, frame_id), height=height, width=width,
                      distortion_model="plumb_bob", d=np.zeros(5), k=K.reshape(-1), r=np.eye(3).reshape(-1),
                      p=P.reshape(-1), binning_x=0, binning_y=0,
                      roi=Roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


@dataclass(frozen=True)
class SerializedMessage:
    """A message already serialised to CDR bytes (a fast path for large messages) and its type."""

    msgtype: str
    data: bytes


class BagWriter:
    """Typed rosbag2 writer: connections are created on first use of a topic. Messages are
    rosbags message objects or :class:`SerializedMessage` s."""

    def __init__(self, writer: Writer, ts: Typestore):
        self._writer = writer
        self.typestore = ts
        self._connections: dict[str, object] = {}

    def write(self, topic: str, msg, nanoseconds: int) -> None:
        if isinstance(msg, SerializedMessage):
            msgtype, data = msg.msgtype, msg.data
        else:
            msgtype, data = msg.__msgtype__, self.typestore.serialize_cdr(msg, msg.__msgtype__)
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=self.typestore)
            self._connections[topic] = conn
        self._writer.write(conn, int(nanoseconds), data)


@contextmanager
def open_bag_writer(path: str | Path, storage: str = "mcap", distro: str = DEFAULT_DISTRO,
                    overwrite: bool = False) -> Iterator[BagWriter]:
    """Write a rosbag2 folder atomically: the bag appears at ``path`` only when complete.

    An existing ``path`` is replaced only with ``overwrite`` and only when it is a rosbag2 folder
    (:func:`hoi_perception.output_paths.check_output`)."""
    path = Path(path)
    if storage not in ("mcap", "sqlite3"):
        raise ValueError(f"bag storage '{storage}' is not supported; expected 'mcap' or 'sqlite3'")
    check_output(path, kind=ROSBAG, overwrite=overwrite, option="output bag")
    path.parent.mkdir(parents=True, exist_ok=True)
    # rosbags names the storage file after the bag folder: write into a hidden
    # staging folder under the final name, then move it into place.
    staging = path.parent / f".{path.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    partial = staging / path.name
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    ts = typestore(distro)
    try:
        with Writer(partial, version=BAG_FORMAT_VERSION, storage_plugin=plugin) as writer:
            yield BagWriter(writer, ts)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if path.exists():
        check_output(path, kind=ROSBAG, overwrite=overwrite, option="output bag")  # still ours after the run
        shutil.rmtree(path)
    partial.rename(path)
    staging.rmdir()
