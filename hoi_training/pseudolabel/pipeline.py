"""``hoi-train pseudolabel``: a trained checkpoint turns unlabelled video into hand pseudo-labels.

Per work unit (a sequence of the source, or a frame range of a long one):

1. **frames** from the source (:data:`SOURCE_KINDS`): ROS 2 bags, video files,
   Something-Something v2 videos with Something-Else boxes (``ssv2``), or a synthetic
   dataset read as unlabelled (``synthetic``: only its images and camera matrices are
   read; its labelled boxes are never used, or the experiment would cheat);
2. **one hand per frame**: the annotated hand box where the source has one (the largest
   Something-Else hand box; the object box overlapping it most), otherwise the network's
   detection head (the best-scoring hand among ``hand_sides``, and its object). Something-Else
   does not say which hand a box is, so the side comes from the detected hand that
   overlaps the box most (right when none does; counted as ``side_undetected``);
3. **the runtime's crop**: :func:`~hoi_perception.pipeline.crops.crop_geometry` /
   :func:`~hoi_perception.pipeline.crops.extract_crop`, left hands mirrored;
4. **the 8-copy TTA ensemble** over the crop network (:func:`~hoi_training.pseudolabel.tta.predict_with_tta`);
5. **camera-frame quantities as the estimator computes them**: 2D joints mapped to image
   pixels, 3D outputs un-mirrored, the wrist translation fitted from 2D joints, 3D joints
   and K (:func:`~hoi_perception.geometry.hand_translation.estimate_hand_translation`).
   Sources without intrinsics (videos, SSv2) use the runtime's webcam assumption
   (:func:`~hoi_perception.pipeline.video.intrinsics_from_fov`, 60 degrees) and store
   ``has_intrinsics = False``;
6. with ``--teacher mediapipe``, **the real-image teacher's 2D joints** for the frame's hand box
   (:mod:`~hoi_training.pseudolabel.teacher`: MediaPipe Hands on the full frame);
7. **SHO's constraints** per unit (:func:`~hoi_training.pseudolabel.constraints.filter_sequence`),
   and ``teacher_2d`` where there is a teacher, run on the float32 values that are stored, so
   :func:`hoi_training.pseudolabel.dataset.refilter` reproduces ``kept`` exactly from the files.

Output: :func:`~hoi_training.pseudolabel.shards.run_pseudolabel_job` (sharded, resumable,
atomic, ranks from torchrun's RANK/WORLD_SIZE), whose manifest records this job's
configuration, the source, the sha256 of the checkpoint file and the counts per constraint.

Rows of a shard: one per frame that got a hand (frames without one are only counted:
``frames_without_hand``), all of them, kept or not, so ablations can be re-filtered
offline. :data:`ROW_ARRAYS` lists them (and :data:`~hoi_training.pseudolabel.teacher.TEACHER_ARRAYS`
in a job with a teacher). Images: the shard holds, per row, the crop the
network saw, un-mirrored, as PNG bytes (``crop_png``, the network's input size), and
``image_to_crop``, the affine from full-image pixels to that crop. That keeps the output
self-contained (bags and videos are not needed to train) at a fraction of the size of full
frames (a noisy wild-domain crop of 256 px: about 120 kB; its 640x480 frame: 520 kB), and
the crop already covers the hand box x1.5 that the training crop is cut from.

Frame ids: the decoded frame index (videos, SSv2: Something-Else frame number - 1), the
frame number (synthetic), or the position among the images that paired with a CameraInfo
(bags).
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch

from hoi_perception.bag_io import BagReader
from hoi_perception.config import to_dict
from hoi_perception.engines.base import file_sha256
from hoi_perception.frontends.mediapipe_hands import MediaPipeHandsConfig
from hoi_perception.geometry.camera import box_iou
from hoi_perception.geometry.crop import DEFAULT_BOX_EXPANSION, checkpoint_box_expansion, resolve_box_expansion
from hoi_perception.geometry.hand_translation import HandTranslationConfig, estimate_hand_translation
from hoi_perception.geometry.mirror import MIRROR_X, mirror_axis_angle, mirror_points_3d
from hoi_perception.models.checkpoint import load_network_checkpoint, read_training_checkpoint
from hoi_perception.models.detection_head import (
    DetectionSelectionConfig,
    FrameDetections,
    letterbox_image,
    select_detections,
)
from hoi_perception.models.network import HOINet
from hoi_perception.models.object_head import box_units_to_points
from hoi_perception.pipeline.config import (
    DEFAULT_PERCEPTION_CONFIG,
    EstimatorConfig,
    HandSideSource,
    load_estimator_config,
)
from hoi_perception.pipeline.crops import CropGeometry, crop_geometry, extract_crop, network_images
from hoi_perception.pipeline.hand_side import network_crop_runner, with_voted_sides
from hoi_perception.pipeline.video import intrinsics_from_fov
from hoi_perception.synth.sequence_files import DatasetFormatError, read_sequence_labels
from hoi_training.data.frames import (
    SOMETHING_ELSE_FPS,
    Frame,
    RosBagFrameSource,
    SomethingElseFrameSource,
    decode_video,
)
from hoi_training.data.sample import NUM_BETAS, NUM_JOINTS, NUM_POSE_PARAMS, NUM_VERTICES
from hoi_training.data.synthetic import SyntheticConfig, SyntheticDataset
from hoi_training.pseudolabel.config import (
    DEFAULT_PSEUDOLABEL_CONFIG,
    PseudoLabelConfig,
    SourceConfig,
    load_pseudolabel_config,
)
from hoi_training.pseudolabel.constraints import CONSTRAINTS, ConstraintScores, filter_sequence
from hoi_training.pseudolabel.dataset import PREDICTION_ARRAYS, sequence_predictions
from hoi_training.pseudolabel.shards import (
    JobIdentity,
    JobReport,
    RankInfo,
    UnitResult,
    WorkUnit,
    run_pseudolabel_job,
    units_from_sequences,
)
from hoi_training.pseudolabel.teacher import MediaPipeTeacher, create_teacher, teacher_arrays
from hoi_training.pseudolabel.tta import Augmentation, OutputKind, predict_with_tta

log = logging.getLogger(__name__)

SourceKind = Literal["bag", "video", "ssv2", "synthetic"]
SOURCE_KINDS: tuple[str, ...] = ("bag", "video", "ssv2", "synthetic")
# The kinds PseudoLabelConfig.source knows (its settings apply to them); synthetic has none.
_CONFIG_SOURCE_KIND = {"bag": "bag", "video": "video", "ssv2": "something_else"}
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm")
BAG_FILE_EXTENSIONS = (".mcap", ".db3")
# Every array of a shard row besides PREDICTION_ARRAYS and the filter's kept / rejected_by.* / score.*.
ROW_ARRAYS: dict[str, str] = {
    "source_ids": "the source's name of the frame",
    "hand_side": "'right' or 'left'",
    "box_source": "'annotation' or 'detection'",
    "box_score": "detector score of the hand box (NaN for annotated boxes)",
    "object_boxes": "(4,) the object box the crop was cut for (the hand box when there was none)",
    "joint_confidence": "(21,) TTA-averaged heatmap confidence of each joint",
    "hand_translation": "(3,) camera-frame wrist, metres (NaN when the fit failed)",
    "mano_trans": "(3,) MANO translation (smplx convention) for hand_pose and betas (NaN likewise)",
    "K": "(3, 3) camera matrix of the full image",
    "has_intrinsics": "False where K is the 60-degree assumption",
    "image_size": "(2,) full-image width, height",
    "image_to_crop": "(3, 3) affine from full-image pixels to crop_png's pixels",
    "crop_png": "the crop, un-mirrored, PNG bytes",
}
HAND_OUTPUT_KINDS_WITH_CONFIDENCE: dict[str, OutputKind] = {
    "joints_2d": OutputKind.POINTS_2D,
    "joints_3d": OutputKind.POINTS_3D,
    "vertices": OutputKind.POINTS_3D,
    "pose": OutputKind.MANO_POSE,
    "betas": OutputKind.INVARIANT,
    "joint_confidence": OutputKind.INVARIANT,
}


# ----------------------------------------------------------------------------- settings and network


@dataclass(frozen=True)
class LabellingGeometry:
    """The runtime settings pseudo-labelling shares with the estimator (``perception.yaml``'s
    ``estimator:`` section), so labels are made exactly as the deployed system sees hands."""

    crop_box_expansion: float | None = None  # None until run_job resolves it with the checkpoint's record
    hand_sides: tuple[str, ...] = ("right", "left")
    detection: DetectionSelectionConfig = field(default_factory=DetectionSelectionConfig)
    hand_side_from: HandSideSource = "crop_network"
    hand_translation: HandTranslationConfig = field(default_factory=HandTranslationConfig)

    @classmethod
    def from_estimator_config(cls, config: EstimatorConfig) -> LabellingGeometry:
        return cls(crop_box_expansion=config.crop_box_expansion, hand_sides=tuple(config.hand_sides),
                   detection=config.detection, hand_side_from=config.hand_side_from,
                   hand_translation=config.hand_translation)

    def as_dict(self) -> dict:
        return to_dict(self)


class PseudoLabelNetwork:
    """A HOINet's detector and TTA-ensembled crop network, as NumPy in, NumPy out.

    batch_size: crops x TTA copies per forward pass (PseudoLabelConfig.batch_size).
    """

    def __init__(self, network: HOINet, tta_augmentations: Sequence[Augmentation], batch_size: int,
                 detection: DetectionSelectionConfig, hand_side_from: HandSideSource = "detector",
                 box_expansion: float = DEFAULT_BOX_EXPANSION) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        self.network = network.eval()
        self.augmentations = tuple(tta_augmentations)
        self.crops_per_call = max(1, batch_size // len(self.augmentations))
        self.detection = detection
        self.hand_side_from = hand_side_from
        self.box_expansion = box_expansion
        self.crop_runner = network_crop_runner(self.network)
        self.input_size = int(network.config.input_size)
        self.detector_size = int(network.config.detector_input_size)

    def detect(self, image: np.ndarray) -> FrameDetections:
        """The best right hand, left hand and object of a full RGB frame, each hand's side named as
        the runtime names it (``hand_side_from``)."""
        frame, letterbox = letterbox_image(image, self.detector_size, self.detector_size)
        with torch.inference_mode():
            out = self.network.detect_top_k(torch.from_numpy(network_images(frame[None])))
        detections = select_detections(out.boxes[0].numpy(), out.scores[0].numpy(), out.classes[0].numpy(),
                                       letterbox, self.detection)
        if self.hand_side_from == "crop_network":
            detections = with_voted_sides(detections, image, self.crop_runner, self.input_size,
                                          self.box_expansion)
        return detections

    def predict(self, crops: np.ndarray, hand_boxes: np.ndarray, object_boxes: np.ndarray) -> dict[str, np.ndarray]:
        """TTA ensemble for (N, S, S, 3) uint8 crops and their (N, 4) boxes in crop pixels.

        Returns, on the original crops: joints_2d (N, 21, 2) crop pixels; joints_3d (N, 21, 3)
        and vertices (N, V, 3) root-relative metres; pose (N, 48); betas (N, B);
        joint_confidence (N, 21).
        """
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, len(crops), self.crops_per_call):
            stop = start + self.crops_per_call
            parts.append(self._predict_chunk(crops[start:stop], hand_boxes[start:stop], object_boxes[start:stop]))
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

    def _predict_chunk(self, crops: np.ndarray, hand_boxes: np.ndarray, object_boxes: np.ndarray
                       ) -> dict[str, np.ndarray]:
        size = self.input_size
        # predict_with_tta stacks copy-major: row k * N + n is copy k of crop n.
        augmented_hand = np.concatenate([_augment_boxes(a, hand_boxes, size) for a in self.augmentations])
        augmented_object = np.concatenate([_augment_boxes(a, object_boxes, size) for a in self.augmentations])

        def run(images: np.ndarray) -> dict[str, np.ndarray]:
            if len(images) != len(augmented_hand):
                raise RuntimeError(f"TTA sent {len(images)} images, expected {len(augmented_hand)}")
            hand_box = torch.from_numpy(augmented_hand.astype(np.float32))
            with torch.inference_mode():
                out = self.network(torch.from_numpy(network_images(images)), hand_box,
                                   torch.from_numpy(augmented_object.astype(np.float32))).hand
                joints_2d = box_units_to_points(out.joints2d, hand_box)
            return {"joints_2d": joints_2d.numpy(), "joints_3d": out.joints3d.numpy(),
                    "vertices": out.vertices.numpy(), "pose": out.pose.numpy(), "betas": out.betas.numpy(),
                    "joint_confidence": out.joint_confidence.numpy()}

        return predict_with_tta(run, crops, self.augmentations, HAND_OUTPUT_KINDS_WITH_CONFIDENCE)

    def rest_wrists(self, betas: np.ndarray) -> np.ndarray:
        """(N, 3) rest-pose wrist J0 of the right-hand MANO layer for each shape (MANO's
        rotation pivot, which the smplx translation is measured from)."""
        betas_t = torch.as_tensor(np.asarray(betas), dtype=torch.float32)
        zeros = torch.zeros(len(betas_t), 3)
        with torch.inference_mode():
            out = self.network.hand_decoder.hand_model(global_orient=zeros, hand_pose=torch.zeros(len(betas_t), 45),
                                                       betas=betas_t)
        return out.joints[:, 0].double().numpy()


def _augment_boxes(augmentation: Augmentation, boxes: np.ndarray, size: int) -> np.ndarray:
    """(N, 4) boxes through an augmentation: the box around the moved corners, clipped to the crop."""
    x0, y0, x1, y1 = (boxes[:, i] for i in range(4))
    corners = np.stack([np.stack([x0, y0], -1), np.stack([x1, y0], -1), np.stack([x0, y1], -1),
                        np.stack([x1, y1], -1)], 1)
    moved = augmentation.apply_points_2d(corners, size)
    return np.clip(np.concatenate([moved.min(1), moved.max(1)], -1), 0.0, float(size))


# ----------------------------------------------------------------------------- sources


class FrameSequences(ABC):
    """A source as named sequences of (frame id, :class:`Frame`)."""

    kind: str

    def __init__(self, path: Path) -> None:
        self.path = path

    @abstractmethod
    def sequences(self) -> dict[str, int | None]:
        """Sequence name -> number of frames (None when unknown without decoding)."""

    @abstractmethod
    def frames(self, sequence: str) -> Iterator[tuple[int, Frame]]:
        """The sequence's frames in order, each with its frame id."""


class BagSequences(FrameSequences):
    """One sequence per ROS 2 bag: ``path`` is a bag, or a folder of bags (e.g. ``hoi-train synth --bag``'s
    ``bags/``); a bag that lacks the configured topics fails its own unit only."""

    kind = "bag"

    def __init__(self, path: Path, source: SourceConfig) -> None:
        super().__init__(path)
        self.source = source
        if _is_bag(path):
            self.bags = {path.name: path}
        elif path.is_dir():
            self.bags = {child.name: child for child in sorted(path.iterdir()) if _is_bag(child)}
        else:
            raise FileNotFoundError(f"--input '{path}': no such ROS 2 bag or folder")
        if not self.bags:
            raise DatasetFormatError(f"--input '{path}': not a ROS 2 bag (metadata.yaml, .mcap or .db3) and holds "
                                     "none")

    def sequences(self) -> dict[str, int | None]:
        return {name: _bag_message_count(bag, self.source.image_topic) for name, bag in self.bags.items()}

    def frames(self, sequence: str) -> Iterator[tuple[int, Frame]]:
        reader = RosBagFrameSource(self.bags[sequence], self.source.image_topic,
                                   self.source.camera_info_topic or None, self.source.max_stamp_difference_s)
        yield from enumerate(reader)


def _is_bag(path: Path) -> bool:
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or \
        (path.is_file() and path.suffix in BAG_FILE_EXTENSIONS)


def _bag_message_count(bag: Path, topic: str) -> int | None:
    """Messages on ``topic`` per the bag's index (None when it cannot be read: its unit reports why)."""
    try:
        return BagReader(bag).counts.get(topic, 0)
    except (ValueError, OSError):  # the unit opens the bag again and fails with the reader's message
        return None


class VideoSequences(FrameSequences):
    """One sequence per video file: ``path`` is a video or a folder of them (VIDEO_EXTENSIONS)."""

    kind = "video"

    def __init__(self, path: Path, source: SourceConfig) -> None:
        super().__init__(path)
        self.stride = source.video_stride
        if path.is_file():
            self.videos = {path.name: path}
        elif path.is_dir():
            self.videos = {p.name: p for p in sorted(path.iterdir()) if p.suffix.lower() in VIDEO_EXTENSIONS}
        else:
            raise FileNotFoundError(f"--input '{path}': no such video file or folder")
        if not self.videos:
            raise DatasetFormatError(f"--input '{path}' holds no video ({', '.join(VIDEO_EXTENSIONS)})")

    def sequences(self) -> dict[str, int | None]:
        counts: dict[str, int | None] = {}
        for name, path in self.videos.items():
            capture = cv2.VideoCapture(str(path))
            total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
            capture.release()
            counts[name] = -(-total // self.stride) if total > 0 else None
        return counts

    def frames(self, sequence: str) -> Iterator[tuple[int, Frame]]:
        path = self.videos[sequence]
        for index, timestamp, image in decode_video(path):
            if index % self.stride == 0:
                yield index, Frame(image=image, K=None, timestamp=timestamp, source_id=f"{path.name}#{index}")


class SomethingElseSequences(FrameSequences):
    """One sequence per annotated Something-Something v2 video in the folder ``path``."""

    kind = "ssv2"

    def __init__(self, path: Path, source: SourceConfig) -> None:
        super().__init__(path)
        self.reader = SomethingElseFrameSource(path, source.annotation_files)

    def sequences(self) -> dict[str, int | None]:
        return {video_id: len(self.reader.annotations[video_id]) for video_id in self.reader.video_ids}

    def frames(self, sequence: str) -> Iterator[tuple[int, Frame]]:
        one_video = copy.copy(self.reader)
        one_video.video_ids = [sequence]
        for frame in one_video:
            yield int(round(frame.timestamp * SOMETHING_ELSE_FPS)), frame


class SyntheticSequences(FrameSequences):
    """A ``hoi-train synth`` dataset read as unlabelled: images, K and timestamps only."""

    kind = "synthetic"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.dataset = SyntheticDataset(SyntheticConfig(root=path, load_masks=False))
        starts = np.cumsum([0] + [seq.frames for seq in self.dataset.sequences])
        self.first_index = {seq.name: int(start) for seq, start in zip(self.dataset.sequences, starts)}
        self.frame_counts = {seq.name: seq.frames for seq in self.dataset.sequences}

    def sequences(self) -> dict[str, int | None]:
        return dict(self.frame_counts)

    def frames(self, sequence: str) -> Iterator[tuple[int, Frame]]:
        count = self.frame_counts[sequence]
        timestamps = read_sequence_labels(self.dataset.root / sequence / "labels.npz", count)["timestamps"]
        for f in range(count):
            sample = self.dataset.load(self.first_index[sequence] + f)  # only its image and K are used
            yield f, Frame(image=sample.image, K=sample.K, timestamp=float(timestamps[f]), source_id=sample.sample_id)


def open_source(kind: SourceKind, path: str | Path, source: SourceConfig) -> FrameSequences:
    """The frame source of ``kind`` (:data:`SOURCE_KINDS`) at ``path``."""
    path = Path(path).expanduser()
    if kind == "bag":
        return BagSequences(path, source)
    if kind == "video":
        return VideoSequences(path, source)
    if kind == "ssv2":
        return SomethingElseSequences(path, source)
    if kind == "synthetic":
        return SyntheticSequences(path)
    raise ValueError(f"--source: expected one of {list(SOURCE_KINDS)}, got {kind!r}")


def plan_units(frame_counts: dict[str, int | None], max_frames_per_unit: int) -> list[WorkUnit]:
    """Work units of the sequences; a sequence's last range is left open so a frame count that
    undercounts (video containers often do) loses no frames."""
    units = units_from_sequences(frame_counts, max_frames_per_unit)
    last = {u.sequence: i for i, u in enumerate(units)}
    return [WorkUnit(u.sequence, u.start_frame, None) if last[u.sequence] == i and u.start_frame > 0 else u
            for i, u in enumerate(units)]


# ----------------------------------------------------------------------------- labelling


@dataclass
class HandCrop:
    """One frame's hand, cut out as the network sees it."""

    frame_id: int
    timestamp: float
    source_id: str
    side: str
    hand_box: np.ndarray
    object_box: np.ndarray
    box_source: str
    box_score: float
    K: np.ndarray
    has_intrinsics: bool
    image_size: tuple[int, int]
    geometry: CropGeometry
    crop: np.ndarray
    stored_geometry: CropGeometry
    stored_png: bytes


class PseudoLabeller:
    """Labels one work unit of ``source`` with ``network`` (and scores it against ``teacher``, if
    any): the ``process_unit`` of the job."""

    def __init__(self, network: PseudoLabelNetwork, source: FrameSequences, config: PseudoLabelConfig,
                 geometry: LabellingGeometry, teacher: MediaPipeTeacher | None = None) -> None:
        self.network = network
        self.source = source
        self.config = config
        self.geometry = geometry
        self.teacher = teacher

    def label_unit(self, unit: WorkUnit) -> UnitResult:
        counts: Counter[str] = Counter(source_frames=0, frames_without_hand=0, side_undetected=0)
        crops: list[HandCrop] = []
        taught: list[tuple[np.ndarray, float]] = []
        frames = itertools.islice(self.source.frames(unit.sequence), unit.start_frame, unit.stop_frame)
        for frame_id, frame in frames:
            counts["source_frames"] += 1
            crop = self.cut_hand(frame_id, frame, counts)
            if crop is None:
                counts["frames_without_hand"] += 1
                continue
            crops.append(crop)
            if self.teacher is not None:
                taught.append(self.teacher.joints_for(frame.image, crop.hand_box))
        arrays = self.predict_rows(crops)
        if self.teacher is not None:
            arrays.update(teacher_arrays(taught))
        predictions = sequence_predictions(arrays, unit.key)
        if len(predictions):
            result = filter_sequence(predictions, self.config.constraints)
            filtered, filter_counts = result.to_arrays(), result.counts()
        else:
            filtered, filter_counts = _empty_filter_arrays(), {"frames": 0, "kept": 0, "dropped": 0}
        arrays.update({k: v for k, v in filtered.items() if k not in PREDICTION_ARRAYS})
        counts.update(filter_counts)
        return UnitResult(arrays=arrays, counts=dict(counts))

    def cut_hand(self, frame_id: int, frame: Frame, counts: Counter[str]) -> HandCrop | None:
        """The frame's hand and object boxes (annotated or detected) and the network crop."""
        image = frame.image
        height, width = image.shape[:2]
        if frame.boxes is not None:
            hands = frame.hand_boxes()
            if not hands:
                return None
            hand_box = max(hands, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
            objects = [b.box for b in frame.object_boxes()]
            overlaps = [box_iou(hand_box, b) for b in objects]
            object_box = objects[int(np.argmax(overlaps))] if objects and max(overlaps) > 0 else hand_box
            side = self._side_of(hand_box, self.network.detect(image))
            if side is None:
                counts["side_undetected"] += 1
                side = "right"
            box_source, score = "annotation", float("nan")
        else:
            detections = self.network.detect(image)
            candidates = [(d.score, s, d.box) for d, s in ((detections.right_hand, "right"),
                                                           (detections.left_hand, "left"))
                          if d is not None and s in self.geometry.hand_sides]
            if not candidates:
                return None
            score, side, hand_box = max(candidates, key=lambda c: c[0])
            box_source = "detection"
            object_box = detections.object.box if detections.object is not None else hand_box
        hand_box = np.asarray(hand_box, dtype=np.float64)
        object_box = np.asarray(object_box, dtype=np.float64)
        size = self.network.input_size
        expansion = self.geometry.crop_box_expansion
        try:
            geometry = crop_geometry(hand_box, object_box, width, size, side == "left", expansion)
        except ValueError:
            return None  # a degenerate box: nothing to crop
        stored = geometry if side == "right" else crop_geometry(hand_box, object_box, width, size, False, expansion)
        crop = extract_crop(image, geometry)
        stored_crop = crop if stored is geometry else extract_crop(image, stored)
        ok, png = cv2.imencode(".png", np.ascontiguousarray(stored_crop[..., ::-1]))
        if not ok:
            raise RuntimeError(f"{frame.source_id}: PNG encoding of the crop failed")
        has_k = frame.K is not None
        K = np.asarray(frame.K, dtype=np.float64) if has_k else intrinsics_from_fov(width, height)  # noqa: N806
        return HandCrop(frame_id=int(frame_id), timestamp=float(frame.timestamp), source_id=frame.source_id,
                        side=side, hand_box=hand_box, object_box=object_box, box_source=box_source, box_score=score,
                        K=K, has_intrinsics=has_k, image_size=(width, height), geometry=geometry, crop=crop,
                        stored_geometry=stored, stored_png=png.tobytes())

    @staticmethod
    def _side_of(hand_box: np.ndarray, detections: FrameDetections) -> str | None:
        """The side of the detected hand overlapping an annotated box most (None when none overlaps)."""
        overlaps = [(box_iou(hand_box, d.box), side) for d, side in ((detections.right_hand, "right"),
                                                                     (detections.left_hand, "left"))
                    if d is not None]
        overlaps = [o for o in overlaps if o[0] > 0]
        return max(overlaps)[1] if overlaps else None

    def predict_rows(self, crops: list[HandCrop]) -> dict[str, np.ndarray]:
        """Every row array of the unit: PREDICTION_ARRAYS (float32, as stored and filtered) and ROW_ARRAYS."""
        count = len(crops)
        joints_2d = np.zeros((count, NUM_JOINTS, 2))
        joints_3d = np.zeros((count, NUM_JOINTS, 3))
        vertices = np.zeros((count, NUM_VERTICES, 3))
        hand_pose = np.zeros((count, NUM_POSE_PARAMS))
        betas = np.zeros((count, NUM_BETAS))
        confidence = np.zeros((count, NUM_JOINTS))
        translation = np.full((count, 3), np.nan)
        mano_trans = np.full((count, 3), np.nan)
        if count:
            out = self.network.predict(np.stack([c.crop for c in crops]),
                                       np.stack([c.geometry.hand_box for c in crops]),
                                       np.stack([c.geometry.object_box for c in crops]))
            betas, confidence = out["betas"], out["joint_confidence"]
            rest_wrists = self.network.rest_wrists(betas)
            for i, c in enumerate(crops):
                joints_rel, vertices_rel, pose, rest_wrist = (out["joints_3d"][i], out["vertices"][i], out["pose"][i],
                                                              rest_wrists[i])
                if c.geometry.mirrored:  # the network saw a right hand in the mirrored camera
                    joints_rel, vertices_rel = mirror_points_3d(joints_rel), mirror_points_3d(vertices_rel)
                    pose, rest_wrist = mirror_axis_angle(pose), rest_wrist @ MIRROR_X
                joints_2d[i] = c.geometry.to_image(out["joints_2d"][i])
                joints_3d[i], vertices[i], hand_pose[i] = joints_rel, vertices_rel, pose
                fit = estimate_hand_translation(joints_2d[i], joints_rel, c.K, confidence[i],
                                                config=self.geometry.hand_translation)
                if fit.success:
                    translation[i] = fit.translation
                    mano_trans[i] = fit.translation - rest_wrist  # v = R (v0 - J0) + J0 + trans, wrist = J0 + trans
        png_width = max((len(c.stored_png) for c in crops), default=1)

        def column(values: list, dtype, *shape: int) -> np.ndarray:
            return np.array(values, dtype=dtype).reshape(count, *shape)

        return {
            "frame_ids": column([c.frame_id for c in crops], np.int64),
            "timestamps": column([c.timestamp for c in crops], np.float64),
            "joints_2d": joints_2d.astype(np.float32),
            "joints_3d": joints_3d.astype(np.float32),
            "vertices": vertices.astype(np.float32),
            "hand_pose": hand_pose.astype(np.float32),
            "betas": betas.astype(np.float32),
            "hand_boxes": column([c.hand_box for c in crops], np.float32, 4),
            "source_ids": column([c.source_id for c in crops], np.str_),
            "hand_side": column([c.side for c in crops], "<U5"),
            "box_source": column([c.box_source for c in crops], "<U10"),
            "box_score": column([c.box_score for c in crops], np.float32),
            "object_boxes": column([c.object_box for c in crops], np.float32, 4),
            "joint_confidence": confidence.astype(np.float32),
            "hand_translation": translation,
            "mano_trans": mano_trans.astype(np.float32),
            "K": column([c.K for c in crops], np.float64, 3, 3),
            "has_intrinsics": column([c.has_intrinsics for c in crops], bool),
            "image_size": column([c.image_size for c in crops], np.int32, 2),
            "image_to_crop": column([c.stored_geometry.image_to_crop for c in crops], np.float64, 3, 3),
            "crop_png": column([c.stored_png for c in crops], f"S{png_width}"),
        }


def _empty_filter_arrays() -> dict[str, np.ndarray]:
    """FilterResult.to_arrays() of a unit without a single hand (filter_sequence needs frames)."""
    arrays: dict[str, np.ndarray] = {"kept": np.zeros(0, dtype=bool)}
    for constraint in CONSTRAINTS:
        arrays[f"rejected_by.{constraint.value}"] = np.zeros(0, dtype=bool)
    for f in fields(ConstraintScores):
        arrays[f"score.{f.name}"] = np.zeros((0, 2) if f.name == "camera_translation" else 0, dtype=np.float64)
    return arrays


# ----------------------------------------------------------------------------- the job


def job_identity(checkpoint: str | Path, source_kind: SourceKind, input_path: str | Path, config: PseudoLabelConfig,
                 geometry: LabellingGeometry, network: HOINet,
                 teacher_frontend: MediaPipeHandsConfig | None = None) -> JobIdentity:
    """What the manifest records and a resumed run must match: this job's settings, the source,
    the sha256 of the checkpoint file, and the teacher front-end's settings when there is a teacher
    (without its model folder and threads: the files are pinned by sha256, and neither changes a label)."""
    settings = {
        "pseudolabel": to_dict(config),
        "source_kind": source_kind,
        "labelling": geometry.as_dict(),
        "model": {"name": network.config.name, "input_size": int(network.config.input_size)},
        "stored_image": "crop_png",
    }
    if config.teacher.enabled:
        frontend = to_dict(teacher_frontend or MediaPipeHandsConfig())
        settings["teacher_frontend"] = {k: v for k, v in frontend.items() if k not in ("model_dir", "threads")}
    return JobIdentity(config=settings, source=f"{source_kind}:{Path(input_path).expanduser().resolve()}",
                       checkpoint_hash=file_sha256(checkpoint))


def run_job(checkpoint: str | Path, source_kind: SourceKind, input_path: str | Path, out_dir: str | Path,
            config: PseudoLabelConfig, geometry: LabellingGeometry, rank: RankInfo | None = None,
            progress: bool = True, teacher_frontend: MediaPipeHandsConfig | None = None) -> JobReport:
    """Pseudo-label ``input_path`` with ``checkpoint`` into ``out_dir`` (this rank's shards; rank 0
    writes the manifest once every shard has settled). Rerunning resumes. ``teacher_frontend``: the
    MediaPipe settings of a ``teacher.kind: mediapipe`` job (default: the dataclass defaults)."""
    if source_kind not in SOURCE_KINDS:
        raise ValueError(f"--source: expected one of {list(SOURCE_KINDS)}, got {source_kind!r}")
    config.validate()
    teacher_frontend = teacher_frontend or MediaPipeHandsConfig()
    teacher = create_teacher(config.teacher, teacher_frontend)  # before any work: missing models fail here
    network = load_network_checkpoint(checkpoint)
    trained = checkpoint_box_expansion(read_training_checkpoint(checkpoint))
    geometry = replace(geometry, crop_box_expansion=resolve_box_expansion(geometry.crop_box_expansion, trained,
                                                                           f"checkpoint '{checkpoint}'"))
    identity = job_identity(checkpoint, source_kind, input_path, config, geometry, network, teacher_frontend)
    source = open_source(source_kind, input_path, config.source)
    units = plan_units(source.sequences(), config.sharding.max_frames_per_unit)
    if not units:
        raise DatasetFormatError(f"--input '{input_path}': the {source_kind} source holds no sequence")
    labeller = PseudoLabeller(PseudoLabelNetwork(network, config.tta.augmentations(), config.batch_size,
                                                 geometry.detection, geometry.hand_side_from,
                                                 geometry.crop_box_expansion), source, config, geometry, teacher)
    return run_pseudolabel_job(units, labeller.label_unit, out_dir, identity, config.sharding.units_per_shard,
                               rank=rank, progress=progress, wait_for_ranks_s=config.sharding.wait_for_ranks_s)


def pseudolabel_main(checkpoint: str | Path, source: str, input: str | Path, out: str | Path,  # noqa: A002
                     config: str | Path | None = None, overrides: Sequence[str] = (),
                     perception: str | Path | None = None, perception_overrides: Sequence[str] = (),
                     teacher: str | None = None) -> int:
    """``hoi-train pseudolabel``: label ``input`` (a ``source`` of :data:`SOURCE_KINDS`) into ``out``.

    ``config`` (default ``config/pseudolabel.yaml``) and ``overrides`` (``key=value``) give the
    PseudoLabelConfig; ``--source`` sets its ``source.kind``, ``--teacher`` (``teacher``, when
    given) its ``teacher.kind``. Crop, detection and translation settings, and the MediaPipe
    teacher's, are the runtime's: the ``estimator:`` section of ``perception`` (default
    ``perception.yaml``) with ``perception_overrides`` (e.g. a detection threshold chosen for the
    labelling model); the job's identity records them, so a resumed job must use the same.
    Returns 0 when every shard of this rank succeeded (on rank 0: and the manifest is complete),
    1 when some failed: the manifest and the shard sidecars name them and why; rerunning retries
    them.
    """
    if source not in SOURCE_KINDS:
        raise ValueError(f"--source: expected one of {list(SOURCE_KINDS)}, got {source!r}")
    overrides = list(overrides)
    if source in _CONFIG_SOURCE_KIND:
        overrides.append(f"source.kind={_CONFIG_SOURCE_KIND[source]}")
    if teacher is not None:
        overrides.append(f"teacher.kind={teacher}")
    job_config = load_pseudolabel_config(config if config is not None else DEFAULT_PSEUDOLABEL_CONFIG, overrides)
    estimator = load_estimator_config(perception if perception is not None else DEFAULT_PERCEPTION_CONFIG,
                                      perception_overrides)
    geometry = LabellingGeometry.from_estimator_config(estimator)
    report = run_job(checkpoint, source, input, out, job_config, geometry, teacher_frontend=estimator.mediapipe)
    for shard, reason in sorted(report.failed.items()):
        log.error("shard %d failed: %s", shard, reason)
    if report.manifest_path is not None:
        manifest = json.loads(report.manifest_path.read_text())
        counts = manifest["counts"]
        log.info("pseudo-labels in %s: %d of %d labelled frames kept (%d source frames, %d without a hand); "
                 "%d of %d shards failed", out, counts.get("kept", 0), counts.get("frames", 0),
                 counts.get("source_frames", 0), counts.get("frames_without_hand", 0), len(manifest["failures"]),
                 manifest["num_shards"])
        return 0 if manifest["complete"] else 1
    if report.rank.rank == 0:
        log.info("shards of other ranks are still running; rerun this command once they finish to write the "
                 "manifest (finished shards are skipped)")
    return 1 if report.failed else 0
