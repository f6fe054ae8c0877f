"""ROS 2 bag reading and writing without a ROS installation, through rosbags.

One reader (:class:`BagReader`) serves ``process-bag``, the training side's bag frame
source and pseudo-labelling: it reads sqlite3 and MCAP bags in log-time order and, for
an MCAP file cut off before its summary, recovers the messages before the damage.

Bags are written into a hidden sibling folder and renamed into place only when
complete, so an interrupted job never leaves a bag that looks finished.
"""

from __future__ import annotations

import logging
import shutil
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from rosbags.interfaces import Connection
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from hoi_perception.output_paths import ROSBAG, check_output

log = logging.getLogger(__name__)

DEFAULT_DISTRO = "humble"
_STORES = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY, "kilted": Stores.ROS2_KILTED}
BAG_FORMAT_VERSION: Final = 8  # rosbag2 metadata version read by Humble and later


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
        self._connections: dict[str, Connection] = {}

    def write(self, topic: str, msg, nanoseconds: int) -> None:
        data: bytes | memoryview
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


# ----------------------------------------------------------------------------- reading


@dataclass
class RawMessage:
    """One serialized message as stored: its topic, type name, log time and CDR bytes."""

    topic: str
    msgtype: str
    log_time_ns: int
    data: bytes


class BagReader:
    """Messages of a rosbag2 folder in log-time order, through rosbags; for an MCAP file that
    rosbags cannot open (cut off before its summary), a record-by-record scan of what is there."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise FileNotFoundError(f"input bag '{self.path}' does not exist")
        self.typestore = typestore()
        self.damaged: str | None = None
        self.types: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        try:
            from rosbags.highlevel import AnyReader

            with AnyReader([self.path]) as reader:
                self.types = {c.topic: c.msgtype for c in reader.connections}
                for connection in reader.connections:
                    self.counts[connection.topic] = self.counts.get(connection.topic, 0) + connection.msgcount
            self._scan = False
        except Exception as exc:  # noqa: BLE001 - rosbags raises reader-specific errors for damaged files
            mcaps = sorted(self.path.glob("*.mcap")) if self.path.is_dir() else [self.path]
            if not mcaps or mcaps[0].suffix != ".mcap":
                raise ValueError(f"input bag '{self.path}' cannot be read: {exc}") from exc
            self.damaged = f"{exc}"
            log.warning("bag '%s' is damaged (%s); recovering the messages before the damage", self.path, exc)
            self._scan = True
            self._mcaps = mcaps
            for message in self._scan_messages(None):
                self.types[message.topic] = message.msgtype
                self.counts[message.topic] = self.counts.get(message.topic, 0) + 1

    def deserialize(self, message: RawMessage) -> Any:
        return self.typestore.deserialize_cdr(message.data, message.msgtype)

    def messages(self, topics: Iterable[str]) -> Iterator[RawMessage]:
        wanted = set(topics)
        if self._scan:
            yield from self._scan_messages(wanted)
            return
        from rosbags.highlevel import AnyReader

        with AnyReader([self.path]) as reader:
            connections = [c for c in reader.connections if c.topic in wanted]
            try:
                for connection, log_time, data in reader.messages(connections=connections):
                    yield RawMessage(connection.topic, connection.msgtype, int(log_time), bytes(data))
            except Exception as exc:  # noqa: BLE001 - a damaged chunk mid-file
                self.damaged = f"{exc}"
                log.error("bag '%s' is damaged (%s); stopping after the messages before the damage", self.path, exc)

    def _scan_messages(self, wanted: set[str] | None) -> Iterator[RawMessage]:
        for mcap in self._mcaps:
            yield from scan_mcap(mcap.read_bytes(), wanted)


_MCAP_MAGIC = b"\x89MCAP0\r\n"
_SCHEMA, _CHANNEL, _MESSAGE, _CHUNK, _FOOTER = 0x03, 0x04, 0x05, 0x06, 0x02


def _string(data: bytes, pos: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<I", data, pos)
    return data[pos + 4:pos + 4 + length].decode("utf-8"), pos + 4 + length


def scan_mcap(data: bytes, wanted: set[str] | None = None) -> Iterator[RawMessage]:
    """Messages of an MCAP file record by record, stopping quietly where the file is cut off.

    Uncompressed chunks (what rosbags writes) are read even when cut off themselves;
    compressed chunks are read only when complete.
    """
    if not data.startswith(_MCAP_MAGIC):
        raise ValueError("not an MCAP file (bad magic bytes)")
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}

    def records(buffer: bytes, pos: int, end: int) -> Iterator[RawMessage]:
        while pos + 9 <= end:
            opcode = buffer[pos]
            (length,) = struct.unpack_from("<Q", buffer, pos + 1)
            body, pos = pos + 9, pos + 9 + length
            complete = pos <= end
            if opcode == _SCHEMA and complete:
                (schema_id,) = struct.unpack_from("<H", buffer, body)
                schemas[schema_id], _ = _string(buffer, body + 2)
            elif opcode == _CHANNEL and complete:
                channel_id, schema_id = struct.unpack_from("<HH", buffer, body)
                topic, _ = _string(buffer, body + 4)
                channels[channel_id] = (topic, schemas.get(schema_id, ""))
            elif opcode == _MESSAGE and complete:
                channel_id, _, log_time = struct.unpack_from("<HIQ", buffer, body)
                topic, msgtype = channels.get(channel_id, ("", ""))
                if topic and (wanted is None or topic in wanted):
                    yield RawMessage(topic, msgtype, log_time, bytes(buffer[body + 22:pos]))
            elif opcode == _CHUNK:
                compression, records_at = _string(buffer, body + 28)
                if compression == "":
                    records_end = min(records_at + 8 + struct.unpack_from("<Q", buffer, records_at)[0], end)
                    yield from records(buffer, records_at + 8, records_end)
                elif complete:
                    log.warning("skipping a %s-compressed chunk of a damaged MCAP file", compression)
            elif opcode == _FOOTER:
                return
            if not complete:
                return

    yield from records(data, len(_MCAP_MAGIC), len(data))


def nearest_stamp(stamps: np.ndarray, stamp_ns: int, max_difference_ns: float) -> int | None:
    """Index of the stamp in sorted ``stamps`` (ns) nearest to ``stamp_ns``; None when none lies within
    ``max_difference_ns`` (how images are paired with their CameraInfo and depth)."""
    if len(stamps) == 0:
        return None
    i = int(np.searchsorted(stamps, stamp_ns))
    best = min((j for j in (i - 1, i) if 0 <= j < len(stamps)), key=lambda j: abs(int(stamps[j]) - stamp_ns))
    return best if abs(int(stamps[best]) - stamp_ns) <= max_difference_ns else None
