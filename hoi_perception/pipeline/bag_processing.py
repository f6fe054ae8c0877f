"""``hoi-perception process-bag``: run the estimator over a recorded ROS 2 bag, write the results as a bag.

Input: a rosbag2 folder (sqlite3 or MCAP) with a colour image topic (``sensor_msgs/Image``
rgb8/bgr8/mono8 or ``CompressedImage``), its ``CameraInfo`` and optionally an aligned
depth image (16UC1 mm / 32FC1 m). Topics are found automatically when not given; when
that is ambiguous the error lists the topics present. Images pair with the CameraInfo
and the depth image nearest in header stamp (within ``MAX_PAIRING_S``).

Output (written atomically: the bag appears only when complete; never over the input or
a folder that is not a rosbag2 folder), every message stamped with its input image's
header stamp and framed in the camera's optical frame (the CameraInfo's ``frame_id``):
exactly what the ROS node publishes, built by the node's own builder
(:mod:`hoi_perception.pipeline.messages`) from the node parameters of the perception
config (``node.topics``, ``node.frames``, ``node.publish``), for a node named
``hoi_perception`` by default:

* ``/tf`` - ``tf2_msgs/TFMessage``: wrist frames (``right_hand``/``left_hand``) and the
  frame of each object whose pose passed the plausibility gates;
* ``/hoi_perception/estimate`` - the package's ``HandObjectEstimate`` (failed or refused
  object poses with their reasons);
* ``/hoi_perception/hand_mesh`` - one ``Marker`` TRIANGLE_LIST per hand;
* ``/hoi_perception/markers`` - ``MarkerArray`` with the hand skeletons and the object's box;
* ``/hoi_perception/joint_states`` - ``JointState`` of the hands' finger joints;
* ``/hoi_perception/debug_image`` - the input image with skeletons, boxes and the object pose.

A message that cannot be decoded is logged and skipped, as is a frame the estimator
refuses; both are counted in the summary. A bag whose file ends mid-message (a
recording that was killed) still yields every message before the break.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from hoi_perception.bag_io import BagReader, RawMessage, nearest_stamp, open_bag_writer
from hoi_perception.output_paths import ROSBAG, check_output
from hoi_perception.pipeline.image_decoding import (
    CAMERA_INFO_TYPE,
    DEPTH_ENCODINGS,
    IMAGE_TYPE,
    IMAGE_TYPES,
    ImageDecodeError,
    camera_matrix_from_info,
    decode_color_image,
    decode_depth_image,
    stamp_to_ns,
)
from hoi_perception.pipeline.messages import TF_TOPIC, FrameMessageBuilder, OutputSettings
from hoi_perception.pipeline.results import FrameResult

log = logging.getLogger(__name__)

MAX_PAIRING_S = 0.02  # largest stamp difference between an image and its CameraInfo / depth image
DEPTH_WAIT_S = 0.2  # how long (bag time) an image waits for its depth image to arrive


class BagTopicError(ValueError):
    """The input bag's topics do not say unambiguously what to process."""


class NothingProcessedError(ValueError):
    """Not one frame of the input could be processed; the message says why."""


# ----------------------------------------------------------------------------- topics


@dataclass(frozen=True)
class BagTopics:
    """The input topics: colour images, their CameraInfo and (optionally) aligned depth."""

    image: str
    camera_info: str
    depth: str | None


def _listing(types: dict[str, str]) -> str:
    return ", ".join(f"{t} ({m})" for t, m in sorted(types.items())) or "none"


def _namespace(topic: str) -> str:
    return topic.rsplit("/", 1)[0]


def choose_topics(types: dict[str, str], encodings: dict[str, str], image: str | None = None,
                  camera_info: str | None = None, depth: str | None = None, use_depth: bool = True) -> BagTopics:
    """Pick the topics to process from ``types`` (topic -> message type) and the first message's
    ``encodings`` of raw Image topics; given names are checked, missing ones found."""
    for given, allowed in ((image, IMAGE_TYPES), (camera_info, (CAMERA_INFO_TYPE,)), (depth, (IMAGE_TYPE,))):
        if given is not None and given not in types:
            raise BagTopicError(f"topic {given} is not in the bag; topics present: {_listing(types)}")
        if given is not None and types[given] not in allowed:
            raise BagTopicError(f"topic {given} carries {types[given]}, expected {' or '.join(allowed)}")
    depth_topics = sorted(t for t, m in types.items() if m == IMAGE_TYPE and encodings.get(t) in DEPTH_ENCODINGS)
    if image is not None and image in depth_topics:
        raise BagTopicError(f"topic {image} carries depth images ({encodings[image]}), not colour; choose the colour "
                            f"topic with --image-topic. Topics present: {_listing(types)}")
    if depth is not None and depth == image:
        raise BagTopicError(f"--depth-topic {depth} is the image topic; give the aligned depth topic or --no-depth")
    if image is None:
        colour = sorted(t for t, m in types.items() if m in IMAGE_TYPES and t not in depth_topics)
        # A raw topic and its image_transport twin <topic>/compressed are one stream: prefer raw.
        colour = [t for t in colour if not (t.endswith("/compressed") and t[: -len("/compressed")] in colour)]
        if len(colour) != 1:
            raise BagTopicError(f"{'several' if colour else 'no'} colour image topics ({colour}); choose one with "
                                f"--image-topic. Topics present: {_listing(types)}")
        image = colour[0]
    if camera_info is None:
        infos = sorted(t for t, m in types.items() if m == CAMERA_INFO_TYPE)
        base = _namespace(image[: -len("/compressed")] if image.endswith("/compressed") else image)
        near = [t for t in infos if _namespace(t) == base]
        infos = near if len(near) == 1 else infos
        if len(infos) != 1:
            raise BagTopicError(f"{'several' if infos else 'no'} CameraInfo topics for {image} ({infos}); "
                                f"choose one with --camera-info-topic. Topics present: {_listing(types)}")
        camera_info = infos[0]
    depth_topics = [t for t in depth_topics if t != image]  # never the colour stream itself
    if depth is None and use_depth and len(depth_topics) == 1:
        depth = depth_topics[0]
    elif depth is None and use_depth and depth_topics:
        log.warning("several depth topics %s: running without depth (choose one with --depth-topic)", depth_topics)
    return BagTopics(image, camera_info, depth if use_depth else None)


# ----------------------------------------------------------------------------- writing


class EstimateBagWriter:
    """Writes each :class:`FrameResult`'s messages (:class:`~hoi_perception.pipeline.messages.FrameMessageBuilder`,
    the node's builder) to an open bag: TF on ``/tf``, the rest on ``settings.topics``."""

    def __init__(self, bag: Any, hand_faces: Mapping[str, np.ndarray],
                 object_control_points: Mapping[str, np.ndarray], settings: OutputSettings | None = None,
                 wanted: Callable[[str], bool] | None = None) -> None:
        from hoi_perception.ros_messages import register_messages

        self.bag = bag
        self.ts = register_messages(bag.typestore)
        self.settings = settings or OutputSettings()
        self.builder = FrameMessageBuilder(self.settings, self.ts, hand_faces, object_control_points,
                                           serialized_mesh=True)
        self.wanted = wanted
        self.written: Counter[str] = Counter()

    def write(self, result: FrameResult, image: np.ndarray, K: np.ndarray, stamp_ns: int, frame_id: str,  # noqa: N803
              log_time_ns: int) -> None:
        from hoi_perception.bag_io import header

        outputs = self.builder.build(header(self.ts, stamp_ns, frame_id), result, image, K, wanted=self.wanted)
        if outputs.transforms:
            self._write(TF_TOPIC, self.builder.tf_message(outputs), log_time_ns)
        for name, messages in outputs.messages.items():
            for message in messages:
                self._write(self.settings.topics[name], message, log_time_ns)

    def _write(self, topic: str, msg: Any, log_time_ns: int) -> None:
        self.bag.write(topic, msg, log_time_ns)
        self.written[topic] += 1


# ----------------------------------------------------------------------------- processing


@dataclass
class BagSummary:
    """What a run did: frames read and processed, what was skipped and why, what was written."""

    topics: BagTopics
    images: int = 0
    processed: int = 0
    skipped: Counter = field(default_factory=Counter)
    written: Counter = field(default_factory=Counter)
    damaged: str | None = None

    def lines(self) -> list[str]:
        out = [f"images on {self.topics.image}: {self.images}, processed: {self.processed}"]
        out += [f"skipped ({reason}): {count}" for reason, count in sorted(self.skipped.items())]
        out += [f"wrote {topic}: {count}" for topic, count in sorted(self.written.items())]
        if self.damaged:
            out.append(f"input bag damaged, read up to the damage: {self.damaged}")
        return out


@dataclass
class _PendingImage:
    message: RawMessage
    stamp_ns: int


def process_bag(estimator: Any, in_bag: str | Path, out_bag: str | Path, *, image_topic: str | None = None,
                camera_info_topic: str | None = None, depth_topic: str | None = None, use_depth: bool = True,
                storage: str = "mcap", overwrite: bool = False, progress: bool = True,
                outputs: OutputSettings | None = None) -> BagSummary:
    """Run ``estimator`` (an :class:`~hoi_perception.pipeline.estimator.Estimator`) over a bag.

    Raises :class:`NothingProcessedError` (and writes no bag) when no frame could be processed.
    """
    check_output(out_bag, kind=ROSBAG, inputs=[in_bag], overwrite=overwrite, option="output bag")
    reader = BagReader(in_bag)
    if not any(reader.counts.values()):
        raise BagTopicError(f"input bag '{reader.path}' holds no messages")
    encodings = _first_encodings(reader)
    topics = choose_topics(reader.types, encodings, image_topic, camera_info_topic, depth_topic, use_depth)
    summary = BagSummary(topics)
    infos = _camera_infos(reader, topics.camera_info, summary)
    if len(infos[0]) == 0:
        raise BagTopicError(f"no usable CameraInfo on {topics.camera_info} in '{reader.path}'")
    faces = {side: estimator.hand_faces(side) for side in ("right", "left")}
    with open_bag_writer(out_bag, storage=storage, overwrite=overwrite) as bag:
        writer = EstimateBagWriter(bag, faces, object_control_points(estimator), outputs)
        pending: deque[_PendingImage] = deque()
        depths: deque[tuple[int, Any]] = deque(maxlen=30)
        bar = tqdm(total=reader.counts.get(topics.image, 0), desc="process-bag", unit="frame", disable=not progress)
        wanted = [topics.image] + ([topics.depth] if topics.depth else [])
        for message in reader.messages(wanted):
            if message.topic == topics.depth:
                try:
                    depth_msg = reader.deserialize(message)
                    depths.append((stamp_to_ns(depth_msg.header.stamp), depth_msg))
                except Exception as exc:  # noqa: BLE001 - a corrupt message must not stop the run
                    _count(summary, "undecodable depth message", exc)
            else:
                try:
                    stamp = stamp_to_ns(reader.deserialize(message).header.stamp)
                except Exception as exc:  # noqa: BLE001
                    summary.images += 1
                    bar.update()
                    _count(summary, "undecodable image message", exc)
                    continue
                pending.append(_PendingImage(message, stamp))
            while pending and (topics.depth is None or _nearest(depths, pending[0].stamp_ns) is not None
                               or message.log_time_ns - pending[0].message.log_time_ns > DEPTH_WAIT_S * 1e9):
                _process_one(estimator, reader, writer, pending.popleft(), infos, depths, topics, summary)
                bar.update()
        while pending:
            _process_one(estimator, reader, writer, pending.popleft(), infos, depths, topics, summary)
            bar.update()
        bar.close()
        if summary.processed == 0:  # raising inside the writer leaves no output bag behind
            reasons = "; ".join(f"{reason}: {count}" for reason, count in sorted(summary.skipped.items()))
            raise NothingProcessedError(f"no frame of '{in_bag}' was processed ({summary.images} images on "
                                        f"{topics.image}{'; ' + reasons if reasons else ''}); no output bag written")
    summary.written = writer.written
    summary.damaged = reader.damaged
    return summary


def object_control_points(estimator: Any) -> dict[str, np.ndarray]:
    """The estimator's object's control points by name (empty when it tracks hands only)."""
    model = estimator.object_model
    return {} if model is None else {model.name: model.control_points}


def _count(summary: BagSummary, kind: str, exc: Exception | str) -> None:
    """Count a skip; only the first of each kind is logged (the summary has the totals)."""
    summary.skipped[kind] += 1
    if summary.skipped[kind] == 1:
        log.warning("%s: %s (further ones are only counted in the summary)", kind, exc)


def _first_encodings(reader: BagReader) -> dict[str, str]:
    """The encoding of the first message of every raw Image topic (tells colour from depth)."""
    raw_topics = {t for t, m in reader.types.items() if m == IMAGE_TYPE}
    encodings: dict[str, str] = {}
    if not raw_topics:
        return encodings
    for message in reader.messages(raw_topics):
        if message.topic not in encodings:
            try:
                encodings[message.topic] = reader.deserialize(message).encoding
            except Exception:  # noqa: BLE001 - an undecodable first message says nothing about the topic
                continue
        if len(encodings) == len(raw_topics):
            break
    return encodings


def _camera_infos(reader: BagReader, topic: str, summary: BagSummary) -> tuple[np.ndarray, list]:
    stamps, infos = [], []
    for message in reader.messages([topic]):
        try:
            msg = reader.deserialize(message)
            K, width, height = camera_matrix_from_info(msg)
        except Exception as exc:  # noqa: BLE001
            _count(summary, "invalid CameraInfo", exc)
            continue
        stamps.append(stamp_to_ns(msg.header.stamp))
        infos.append((K, width, height, msg.header.frame_id))
    order = np.argsort(stamps, kind="stable")
    return np.asarray(stamps, dtype=np.int64)[order], [infos[i] for i in order]


def _nearest(items: Sequence[tuple[int, Any]] | deque, stamp_ns: int) -> Any:
    best = min(items, key=lambda item: abs(item[0] - stamp_ns), default=None)
    if best is None or abs(best[0] - stamp_ns) > MAX_PAIRING_S * 1e9:
        return None
    return best[1]


def _process_one(estimator: Any, reader: BagReader, writer: EstimateBagWriter, pending: _PendingImage,
                 infos: tuple[np.ndarray, list], depths: deque, topics: BagTopics, summary: BagSummary) -> None:
    summary.images += 1
    message, stamp_ns = pending.message, pending.stamp_ns
    stamps, entries = infos
    index = nearest_stamp(stamps, stamp_ns, MAX_PAIRING_S * 1e9)
    if index is None:
        _count(summary, "no CameraInfo near the image stamp", f"image at {stamp_ns} ns")
        return
    K, width, height, frame_id = entries[index]
    try:
        msg = reader.deserialize(message)
        image = decode_color_image(msg, message.msgtype)
    except Exception as exc:  # noqa: BLE001 - a corrupt message is counted, never fatal
        _count(summary, "undecodable image", exc)
        return
    frame_id = frame_id or msg.header.frame_id
    if image.shape[:2] != (height, width):
        _count(summary, "image size differs from CameraInfo", f"{image.shape[1]}x{image.shape[0]} vs "
                                                               f"{width}x{height}")
        return
    depth = None
    if topics.depth is not None:
        depth_msg = _nearest(depths, stamp_ns)
        if depth_msg is not None:
            try:
                depth = decode_depth_image(depth_msg)
            except ImageDecodeError as exc:
                _count(summary, "undecodable depth image (processed without depth)", exc)
    result = estimator.process(image, K, stamp_ns * 1e-9, depth)
    if result.skipped is not None:
        summary.skipped[f"estimator: {result.skipped.split(':')[0]}"] += 1
        return
    summary.processed += 1
    writer.write(result, image, K, stamp_ns, frame_id, message.log_time_ns)


def process_bag_main(in_bag: str | Path, out_bag: str | Path, image_topic: str | None = None,
                     camera_info_topic: str | None = None, depth_topic: str | None = None,
                     config: str | Path | None = None, storage: str = "mcap", *, overrides: Sequence[str] = (),
                     use_depth: bool = True, overwrite: bool = False,
                     outputs: OutputSettings | None = None) -> BagSummary:
    """``hoi-perception process-bag``: build the estimator from ``config`` (default: the shipped
    perception.yaml, with ``overrides``), process ``in_bag`` into ``out_bag`` and print a summary."""
    from hoi_perception.pipeline.shipped_model import runtime_estimator

    check_output(out_bag, kind=ROSBAG, inputs=[in_bag], overwrite=overwrite, option="output bag")  # before loading
    estimator = runtime_estimator(config, overrides)
    summary = process_bag(estimator, in_bag, out_bag, image_topic=image_topic, camera_info_topic=camera_info_topic,
                          depth_topic=depth_topic, use_depth=use_depth, storage=storage, overwrite=overwrite,
                          outputs=outputs)
    for line in summary.lines():
        print(line)
    return summary
