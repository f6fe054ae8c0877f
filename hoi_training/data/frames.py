"""Unlabelled frame sources for pseudo-labelling: video files, Something-Something v2 with
Something-Else boxes, and ROS 2 bags.

Every source is an iterable of :class:`Frame`: an RGB image, the camera matrix when the
source knows it (bags with CameraInfo; ``K`` given by the user for videos), a timestamp
in seconds, an id that names the source and frame, and the annotated boxes when there
are any. Videos are decoded sequentially with OpenCV, so memory stays constant.

Something-Else (Materzynska et al., CVPR 2020) annotates Something-Something v2 videos
at 12 frames per second; its JSON files map a video id to a list of frames::

    {"<id>": [{"name": "<id>/0001.jpg", "labels": [{"box2d": {"x1", "y1", "x2", "y2"},
                                                  "category": "hand" | "<object>"}, ...]}, ...]}

Frame ``NNNN`` (1-based) is decoded frame ``NNNN - 1`` of ``<id>.webm`` (both at 12 fps).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from hoi_perception.bag_io import BagReader, nearest_stamp
from hoi_perception.pipeline.image_decoding import (
    CAMERA_INFO_TYPE,
    IMAGE_TYPES,
    ImageDecodeError,
    decode_color_image,
    stamp_to_ns,
)
from hoi_perception.synth.sequence_files import DatasetFormatError

log = logging.getLogger(__name__)

SOMETHING_ELSE_FPS = 12.0
HAND_CATEGORY = "hand"
_FRAME_NAME = re.compile(r"^(?P<video>[^/]+)/(?P<number>\d+)\.jpg$")


@dataclass
class LabelledBox:
    """A 2D box (x0, y0, x1, y1) in pixels and what it contains ('hand' or an object's name)."""

    label: str
    box: np.ndarray

    @property
    def is_hand(self) -> bool:
        return self.label == HAND_CATEGORY


@dataclass
class Frame:
    """One unlabelled frame. ``boxes`` is None when the source has no box annotations."""

    image: np.ndarray
    K: np.ndarray | None
    timestamp: float
    source_id: str
    boxes: list[LabelledBox] | None = field(default=None)

    def hand_boxes(self) -> list[np.ndarray]:
        return [b.box for b in self.boxes or [] if b.is_hand]

    def object_boxes(self) -> list[LabelledBox]:
        return [b for b in self.boxes or [] if not b.is_hand]


# -- video files ----------------------------------------------------------------------

def _open_video(path: Path) -> cv2.VideoCapture:
    if not path.is_file():
        raise FileNotFoundError(f"video '{path}' not found")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DatasetFormatError(f"video '{path}' could not be opened (unsupported container or codec?)")
    return capture


def decode_video(path: Path) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield (frame index, timestamp s, RGB image) for every frame of a video file.

    Fails with the file's name when it cannot be opened or no frame decodes.
    """
    capture = _open_video(path)
    fps = capture.get(cv2.CAP_PROP_FPS)
    index = 0
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            timestamp = index / fps if fps and fps > 0 else capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            yield index, float(timestamp), np.ascontiguousarray(bgr[..., ::-1])
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise DatasetFormatError(f"video '{path}': no frame could be decoded (corrupt file or unsupported codec?)")


class VideoFrameSource:
    """Frames of a video file, every ``stride``-th one; ``K`` is attached when given."""

    def __init__(self, path: str | Path, K: np.ndarray | None = None, stride: int = 1):  # noqa: N803
        self.path = Path(path)
        if stride < 1:
            raise ValueError(f"stride must be at least 1, got {stride}")
        if K is not None:
            K = np.asarray(K, dtype=np.float64)  # noqa: N806
            if K.shape != (3, 3):
                raise ValueError(f"K must be a 3x3 camera matrix, got shape {K.shape}")
        self.K = K
        self.stride = stride
        if not self.path.is_file():
            raise FileNotFoundError(f"video '{self.path}' not found")

    def __iter__(self) -> Iterator[Frame]:
        for index, timestamp, image in decode_video(self.path):
            if index % self.stride == 0:
                yield Frame(image=image, K=None if self.K is None else self.K.copy(), timestamp=timestamp,
                            source_id=f"{self.path.name}#{index}")


# -- Something-Something v2 + Something-Else ------------------------------------------

@dataclass(frozen=True)
class AnnotatedFrame:
    """One Something-Else frame annotation: 1-based frame number and its boxes."""

    number: int
    boxes: tuple[LabelledBox, ...]


def read_something_else(paths: Sequence[str | Path]) -> dict[str, list[AnnotatedFrame]]:
    """Parse Something-Else box files into video id -> frames sorted by number."""
    videos: dict[str, list[AnnotatedFrame]] = {}
    for path in (Path(p) for p in paths):
        if not path.is_file():
            raise FileNotFoundError(f"Something-Else annotation file '{path}' not found")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(f"'{path}' is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise DatasetFormatError(f"'{path}': expected a mapping from video id to frame list, "
                                     f"got {type(data).__name__}")
        for video_id, frames in data.items():
            if not isinstance(frames, list):
                raise DatasetFormatError(f"'{path}': video '{video_id}' should map to a list of frames")
            videos.setdefault(str(video_id), []).extend(_parse_frame(f, str(video_id), path) for f in frames)
    for frames in videos.values():
        frames.sort(key=lambda f: f.number)
    return videos


def _parse_frame(entry: dict, video_id: str, path: Path) -> AnnotatedFrame:
    where = f"'{path}': video '{video_id}'"
    if not isinstance(entry, dict) or "name" not in entry or "labels" not in entry:
        raise DatasetFormatError(f"{where}: each frame needs 'name' and 'labels', got {entry!r:.120}")
    match = _FRAME_NAME.match(str(entry["name"]))
    if match is None:
        raise DatasetFormatError(f"{where}: frame name {entry['name']!r} is not '<video id>/<number>.jpg'")
    if match["video"] != video_id:
        raise DatasetFormatError(f"{where}: frame {entry['name']!r} belongs to video '{match['video']}'; "
                                 "annotations do not match their video")
    boxes = []
    for label in entry["labels"]:
        try:
            b = label["box2d"]
            box = np.array([float(b["x1"]), float(b["y1"]), float(b["x2"]), float(b["y2"])])
            category = str(label["category"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetFormatError(f"{where}, frame {entry['name']!r}: malformed label {label!r:.120} "
                                     f"({exc})") from None
        if box[2] < box[0] or box[3] < box[1]:
            raise DatasetFormatError(f"{where}, frame {entry['name']!r}: box {box.tolist()} has x2 < x1 or y2 < y1")
        boxes.append(LabelledBox(label=category, box=box))
    return AnnotatedFrame(number=int(match["number"]), boxes=tuple(boxes))


class SomethingElseFrameSource:
    """Annotated frames of Something-Something v2 videos (``<videos_dir>/<id>.webm``) with their boxes.

    ``video_ids`` restricts the videos (default: every annotated one). Construction fails,
    listing them, when annotated videos are missing from ``videos_dir``; iteration fails
    when an annotated frame number lies beyond the frames the video decodes to. Boxes are
    clipped to the image.
    """

    def __init__(self, videos_dir: str | Path, annotation_files: Sequence[str | Path],
                 video_ids: Sequence[str] | None = None, extension: str = ".webm"):
        self.videos_dir = Path(videos_dir)
        if not self.videos_dir.is_dir():
            raise FileNotFoundError(f"Something-Something v2 video folder '{self.videos_dir}' not found")
        self.annotations = read_something_else(annotation_files)
        ids = list(video_ids) if video_ids is not None else sorted(self.annotations, key=_numeric_first)
        unannotated = [v for v in ids if v not in self.annotations]
        if unannotated:
            raise DatasetFormatError(f"video id(s) {unannotated[:10]} have no Something-Else annotation "
                                     f"({len(unannotated)} in all)")
        self.extension = extension
        missing = [v for v in ids if not (self.videos_dir / f"{v}{extension}").is_file()]
        if missing:
            examples = [f"{v}{extension}" for v in missing[:10]]
            raise DatasetFormatError(f"{len(missing)} annotated video(s) are not in '{self.videos_dir}', e.g. "
                                     f"{examples}; annotations do not match the videos")
        self.video_ids = ids

    def __iter__(self) -> Iterator[Frame]:
        for video_id in self.video_ids:
            yield from self._video_frames(video_id)

    def _video_frames(self, video_id: str) -> Iterator[Frame]:
        path = self.videos_dir / f"{video_id}{self.extension}"
        wanted = {f.number - 1: f for f in self.annotations[video_id]}
        last = max(wanted) if wanted else -1
        decoded = 0
        for index, _, image in decode_video(path):
            decoded = index + 1
            annotated = wanted.get(index)
            if annotated is not None:
                height, width = image.shape[:2]
                limits = np.array([width, height, width, height], dtype=np.float64)
                boxes = [LabelledBox(b.label, np.clip(b.box, 0.0, limits)) for b in annotated.boxes]
                yield Frame(image=image, K=None, timestamp=index / SOMETHING_ELSE_FPS,
                            source_id=f"ssv2/{video_id}/{annotated.number:04d}", boxes=boxes)
            if index >= last:
                return
        if last >= decoded:
            raise DatasetFormatError(f"'{path}' decodes to {decoded} frames but Something-Else annotates frame "
                                     f"{last + 1:04d}; annotations do not match the video")


def _numeric_first(video_id: str) -> tuple[int, str]:
    return (int(video_id), "") if video_id.isdigit() else (1 << 62, video_id)


# -- ROS 2 bags -----------------------------------------------------------------------

def _stamp_ns(stamp) -> int:
    return stamp_to_ns(stamp)


def decode_image_message(msg, msgtype: str, where: str) -> np.ndarray:
    """An RGB uint8 image from sensor_msgs/Image (rgb8, bgr8, mono8) or CompressedImage."""
    try:
        return decode_color_image(msg, msgtype)
    except ImageDecodeError as exc:
        raise DatasetFormatError(f"{where}: {exc}") from None


class RosBagFrameSource:
    """Images of one topic of a ROS 2 bag (sqlite3 or MCAP), each with the CameraInfo nearest in stamp.

    Images and camera infos are paired by header stamp; an image with no CameraInfo within
    ``max_stamp_difference`` seconds is skipped (logged), and a bag where none pairs is an
    error. Without ``camera_info_topic`` frames carry ``K=None``.
    """

    def __init__(self, bag_path: str | Path, image_topic: str, camera_info_topic: str | None = None,
                 max_stamp_difference: float = 0.005):
        self.bag_path = Path(bag_path)
        if not self.bag_path.exists():
            raise FileNotFoundError(f"ROS 2 bag '{self.bag_path}' not found")
        if max_stamp_difference < 0:
            raise ValueError(f"max_stamp_difference must be >= 0, got {max_stamp_difference}")
        self.image_topic = image_topic
        self.camera_info_topic = camera_info_topic
        self.max_stamp_difference = max_stamp_difference
        topics = self._topics()
        wanted = {image_topic: IMAGE_TYPES}
        if camera_info_topic is not None:
            wanted[camera_info_topic] = (CAMERA_INFO_TYPE,)
        missing = [t for t in wanted if t not in topics]
        if missing:
            present = ", ".join(f"{t} ({m})" for t, m in sorted(topics.items())) or "none"
            raise DatasetFormatError(f"bag '{self.bag_path}' lacks topic(s) {missing}; topics present: {present}")
        for topic, types in wanted.items():
            if topics[topic] not in types:
                raise DatasetFormatError(f"bag '{self.bag_path}': topic {topic} carries {topics[topic]}, "
                                         f"expected {' or '.join(types)}")

    def _topics(self) -> dict[str, str]:
        try:
            return BagReader(self.bag_path).types
        except (ValueError, OSError) as exc:
            raise DatasetFormatError(f"ROS 2 bag '{self.bag_path}' could not be opened: {exc}") from exc

    def _camera_infos(self, reader: BagReader) -> tuple[np.ndarray, list[np.ndarray]]:
        stamps, matrices = [], []
        for message in reader.messages([self.camera_info_topic]):
            msg = reader.deserialize(message)
            stamps.append(_stamp_ns(msg.header.stamp))
            matrices.append(np.asarray(msg.k, dtype=np.float64).reshape(3, 3))
        order = np.argsort(stamps, kind="stable")
        return np.asarray(stamps, dtype=np.int64)[order], [matrices[i] for i in order]

    def __iter__(self) -> Iterator[Frame]:
        reader = BagReader(self.bag_path)
        stamps, matrices = (self._camera_infos(reader) if self.camera_info_topic is not None
                            else (np.zeros(0, np.int64), []))
        paired = skipped = 0
        for message in reader.messages([self.image_topic]):
            msg = reader.deserialize(message)
            stamp_ns = _stamp_ns(msg.header.stamp)
            where = f"bag '{self.bag_path.name}' {self.image_topic} @ {stamp_ns} ns"
            K = None  # noqa: N806
            if self.camera_info_topic is not None:
                index = nearest_stamp(stamps, stamp_ns, self.max_stamp_difference * 1e9)
                if index is None:
                    skipped += 1
                    continue
                K = matrices[index].copy()  # noqa: N806
            paired += 1
            yield Frame(image=decode_image_message(msg, message.msgtype, where), K=K,
                        timestamp=stamp_ns * 1e-9, source_id=f"{self.bag_path.name}:{self.image_topic}@{stamp_ns}")
        if skipped:
            log.warning("bag '%s': skipped %d image(s) of %s with no %s within %.3f s", self.bag_path, skipped,
                        self.image_topic, self.camera_info_topic, self.max_stamp_difference)
        if skipped and not paired:
            raise DatasetFormatError(f"bag '{self.bag_path}': no image on {self.image_topic} has a CameraInfo on "
                                     f"{self.camera_info_topic} within {self.max_stamp_difference} s of its stamp")
