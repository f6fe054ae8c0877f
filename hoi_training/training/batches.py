"""From dataset samples to training batches and their targets.

One dataset sample feeds both of the network's entry points: the augmented square crop
(crop-network labels in crop pixels) and the letterboxed full frame with its detection
boxes, optionally flipped and zoomed (:class:`~hoi_training.train_config.DetectionAugmentConfig`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from hoi_perception.geometry.mirror import mirror_boxes
from hoi_perception.models.detection_head import (
    LEFT_HAND,
    OBJECT,
    RIGHT_HAND,
    build_detection_targets,
    letterbox_image,
)
from hoi_perception.models.network import P2_STRIDE
from hoi_perception.models.object_head import points_to_box_units
from hoi_training.data.augment import Augmenter
from hoi_training.data.registry import open_dataset
from hoi_training.data.sample import HandObjectSample, collate_samples
from hoi_training.losses import DetectionTargetBatch, HandObjectTargets
from hoi_training.train_config import DatasetEntry, DetectionAugmentConfig

log = logging.getLogger(__name__)

MIN_BOX_SIDE_PX = 1.0  # boxes thinner than this in the crop carry no usable 2D target


@dataclass
class TrainingExample:
    """One sample prepared for both entry points: the augmented crop (crop-network labels in
    crop pixels) and the letterboxed full frame with its detection boxes and classes."""

    crop: HandObjectSample
    frame: np.ndarray
    detection_boxes: np.ndarray
    detection_classes: np.ndarray
    object_loss: bool
    # (3,) bool per detection class: False where the sample's labels do not say (no hand or
    # object label): unknown, left out of the detection loss rather than taught as absent.
    detection_known: np.ndarray = field(default_factory=lambda: np.ones(3, dtype=bool))


@dataclass
class TrainingBatch:
    """Collated examples: ``crop`` is :func:`collate_samples`' dict; ``frame`` (B, 3, S, S) in [0, 1];
    ``detection`` the CenterNet targets; ``object_loss`` (B,) bool."""

    crop: dict[str, Any]
    frame: torch.Tensor
    detection: DetectionTargetBatch
    object_loss: torch.Tensor

    def __len__(self) -> int:
        return int(self.frame.shape[0])


class ExampleBuilder:
    """Turns a dataset sample into a :class:`TrainingExample` (runs in DataLoader workers)."""

    def __init__(self, augmenter: Augmenter, detector_size: int, object_loss: bool,
                 detection: DetectionAugmentConfig | None = None) -> None:
        self.augmenter = augmenter
        self.detector_size = detector_size  # side of the letterboxed frame
        self.object_loss = object_loss
        self.detection = detection or DetectionAugmentConfig()

    def __call__(self, sample: HandObjectSample) -> TrainingExample:
        frame, letterbox = letterbox_image(sample.image, self.detector_size, self.detector_size)
        boxes, classes = [], []
        if sample.hand_box is not None:
            boxes.append(sample.hand_box)
            classes.append(RIGHT_HAND if sample.hand_side == "right" else LEFT_HAND)
        if sample.object_box is not None:
            boxes.append(sample.object_box)
            classes.append(OBJECT)
        boxes_in = letterbox.boxes_to_input(np.asarray(boxes).reshape(-1, 4))
        classes_in = np.asarray(classes, dtype=np.int64)
        known = np.array([sample.hand_box is not None] * 2 + [sample.object_box is not None])
        if self.augmenter.train and (self.detection.flip_probability > 0 or self.detection.scale_jitter > 0):
            rng = self.augmenter.generator_for(sample)
            rng = np.random.default_rng(rng.integers(2**63))  # a stream apart from the crop's
            frame, boxes_in, classes_in = augment_detection_frame(frame, boxes_in, classes_in, self.detection, rng)
        return TrainingExample(crop=self.augmenter(sample), frame=frame, detection_boxes=boxes_in,
                               detection_classes=classes_in, object_loss=self.object_loss, detection_known=known)


def augment_detection_frame(frame: np.ndarray, boxes: np.ndarray, classes: np.ndarray,
                            config: DetectionAugmentConfig, rng: np.random.Generator
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A letterboxed frame (S, S, 3) and its boxes (N, 4) flipped and zoomed (:class:`DetectionAugmentConfig`)."""
    size = frame.shape[1]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    classes = np.asarray(classes, dtype=np.int64).copy()
    if rng.random() < config.flip_probability:
        frame = np.ascontiguousarray(frame[:, ::-1])
        boxes = mirror_boxes(boxes, size)  # the project's flip convention: u -> W - 1 - u
        swapped = classes.copy()
        swapped[classes == RIGHT_HAND], swapped[classes == LEFT_HAND] = LEFT_HAND, RIGHT_HAND
        classes = swapped
    if config.scale_jitter > 0:
        zoom = 1.0 + rng.uniform(-config.scale_jitter, config.scale_jitter)
        low, high = sorted((0.0, size * (1.0 - zoom)))
        shift = rng.uniform(low, high, 2)
        matrix = np.array([[zoom, 0.0, shift[0]], [0.0, zoom, shift[1]]])
        frame = cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=(114, 114, 114))
        boxes = np.clip(boxes * zoom + np.tile(shift, 2), 0.0, float(size))
        sides = boxes[:, 2:] - boxes[:, :2]
        keep = (sides >= config.min_box_side).all(1)
        boxes, classes = boxes[keep], classes[keep]
    return frame, boxes, classes


class ExampleDataset(Dataset):
    """A dataset's samples mapped through an :class:`ExampleBuilder`."""

    def __init__(self, base: Dataset, builder: ExampleBuilder) -> None:
        self.base = base
        self.builder = builder

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> TrainingExample:
        return self.builder(self.base[index])


class ConcatExamples(Dataset):
    """Several :class:`ExampleDataset` end to end (indices as :class:`EpochSampler` deals them)."""

    def __init__(self, parts: Sequence[ExampleDataset]) -> None:
        self.parts = list(parts)
        self.ends = np.cumsum([len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.ends[-1])

    def __getitem__(self, index: int) -> TrainingExample:
        part = int(np.searchsorted(self.ends, index, side="right"))
        start = 0 if part == 0 else int(self.ends[part - 1])
        return self.parts[part][index - start]

    def set_epoch(self, epoch: int) -> None:
        for part in self.parts:
            part.builder.augmenter.set_epoch(epoch)


def collate_examples(examples: Sequence[TrainingExample]) -> TrainingBatch:
    """``DataLoader`` collate function for :class:`TrainingExample` lists."""
    size = examples[0].frame.shape[0]
    grid = size // P2_STRIDE
    targets = [build_detection_targets(e.detection_boxes, e.detection_classes, grid, grid, P2_STRIDE)
               for e in examples]
    detection = DetectionTargetBatch(
        heatmap=torch.from_numpy(np.stack([t.heatmap for t in targets])),
        indices=torch.from_numpy(np.stack([t.indices for t in targets])),
        sizes=torch.from_numpy(np.stack([t.sizes for t in targets])),
        offsets=torch.from_numpy(np.stack([t.offsets for t in targets])),
        mask=torch.from_numpy(np.stack([t.mask for t in targets])),
        known=torch.from_numpy(np.stack([e.detection_known for e in examples])))
    frame = torch.from_numpy(np.stack([e.frame for e in examples])).permute(0, 3, 1, 2).float().div_(255.0)
    return TrainingBatch(crop=collate_samples([e.crop for e in examples]), frame=frame, detection=detection,
                         object_loss=torch.tensor([e.object_loss for e in examples], dtype=torch.bool))


def build_dataset(name: str, entry: DatasetEntry, augmenter: Augmenter, detector_size: int,
                  detection: DetectionAugmentConfig | None = None) -> ExampleDataset:
    """The training dataset of one config entry, mapped to :class:`TrainingExample` (full frames
    letterboxed to ``detector_size``)."""
    base = open_dataset(entry.kind, entry.dataset_config())
    if len(base) == 0:
        raise ValueError(f"dataset '{name}' ({entry.kind}, {entry.config}) holds no samples")
    return ExampleDataset(base, ExampleBuilder(augmenter, detector_size, entry.object_loss, detection))


# ----------------------------------------------------------------------------- targets


def valid_boxes(boxes: torch.Tensor) -> torch.Tensor:
    return ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX_SIDE_PX) & ((boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_SIDE_PX)


def safe_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes with at least MIN_BOX_SIDE_PX sides, so unit conversions never divide by zero."""
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1 = torch.maximum(boxes[:, 2], x0 + MIN_BOX_SIDE_PX)
    y1 = torch.maximum(boxes[:, 3], y0 + MIN_BOX_SIDE_PX)
    return torch.stack([x0, y0, x1, y1], 1)


def mask_on_roi_grid(masks: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest-pixel samples (B, size, size) of crop masks (B, H, W) at the cell centres of each box's RoI grid."""
    batch, height, width = masks.shape
    centres = (torch.arange(size, dtype=boxes.dtype, device=boxes.device) + 0.5) / size
    xs = boxes[:, 0:1] + centres[None] * (boxes[:, 2:3] - boxes[:, 0:1])  # (B, size)
    ys = boxes[:, 1:2] + centres[None] * (boxes[:, 3:4] - boxes[:, 1:2])
    ix = xs.floor().long().clamp(0, width - 1)
    iy = ys.floor().long().clamp(0, height - 1)
    inside_x = (xs >= 0) & (xs < width)
    inside_y = (ys >= 0) & (ys < height)
    b = torch.arange(batch, device=masks.device)[:, None, None]
    values = masks[b, iy[:, :, None], ix[:, None, :]]
    return values & inside_y[:, :, None] & inside_x[:, None, :]


def build_hand_object_targets(crop: dict[str, Any], object_loss: torch.Tensor, hand_model: nn.Module,
                              roi_size: int) -> tuple[HandObjectTargets, torch.Tensor, torch.Tensor]:
    """Crop-level targets of a collated batch, plus the (safe) hand and object boxes to feed the network.

    Samples with MANO labels but no vertices (HO-3D, DexYCB) get their root-relative vertex
    targets from ``hand_model`` at the labelled pose, so one flag covers vertices, pose and
    shape. Every flag is multiplied by the sample weight.
    """
    weight = crop["weight"]
    hand_box, object_box = safe_boxes(crop["hand_box"]), safe_boxes(crop["object_box"])
    has_hand2d = crop["has_hand_2d"] & crop["has_hand_box"] & valid_boxes(crop["hand_box"])
    has_object = (crop["has_object_2d"] & crop["has_object_box"] & valid_boxes(crop["object_box"])
                  & object_loss)
    joints3d = crop["joints_3d"]
    root = joints3d[:, :1]
    vertices = crop["vertices_3d"] - root
    missing_vertices = crop["has_mano"] & ~crop["has_vertices"]
    if missing_vertices.any():
        pose, betas = crop["mano_pose"][missing_vertices], crop["mano_shape"][missing_vertices]
        with torch.no_grad():
            mano = hand_model(global_orient=pose[:, :3], hand_pose=pose[:, 3:], betas=betas)
        vertices = vertices.clone()
        vertices[missing_vertices] = (mano.vertices - mano.joints[:, :1]).to(vertices.dtype)
    object_points2d = points_to_box_units(crop["object_points_2d"], object_box)
    object_mask = mask_on_roi_grid(crop["object_mask"], object_box, roi_size)
    object_mask = torch.where(crop["has_object_mask"][:, None, None], object_mask, torch.ones_like(object_mask))
    has_hand_mask = crop["has_hand_mask"] & crop["has_hand_box"] & valid_boxes(crop["hand_box"])
    targets = HandObjectTargets(
        joints2d=points_to_box_units(crop["joints_2d"], hand_box),
        joints3d=joints3d - root,
        vertices=vertices,
        pose=crop["mano_pose"],
        betas=crop["mano_shape"],
        object_points2d=object_points2d,
        object_symmetric_points2d=symmetric_object_points(crop, object_points2d, object_box),
        object_mask=object_mask,
        hand_mask=mask_on_roi_grid(crop["hand_mask"], hand_box, roi_size),
        has_hand2d=has_hand2d.float() * weight,
        has_hand3d=crop["has_hand_3d"].float() * weight,
        has_mano=crop["has_mano"].float() * weight,
        has_hand_mask=has_hand_mask.float() * weight,
        has_object=has_object.float() * weight,
    )
    return targets, hand_box, object_box


def symmetric_object_points(crop: dict[str, Any], object_points2d: torch.Tensor,
                            object_box: torch.Tensor) -> torch.Tensor | None:
    """(B, S, 21, 2) box-unit control points of the poses ``R S`` of each sample's object over its
    symmetry rotations S (``object_symmetry_rotations``); None when no object in the batch has any.
    Samples without an object pose keep their labelled points for every S."""
    symmetries = crop.get("object_symmetry_rotations")
    if symmetries is None or symmetries.shape[1] == 1:
        return None
    count = symmetries.shape[1]
    points = object_points2d[:, None].repeat(1, count, 1, 1)
    posed = crop["has_object_pose"] & crop["has_object_points"]
    if posed.any():
        rotation = crop["object_rotation"][posed][:, None] @ symmetries[posed]  # (N, S, 3, 3)
        camera = crop["object_control_points"][posed][:, None] @ rotation.transpose(-1, -2) \
            + crop["object_translation"][posed][:, None, None]  # (N, S, 21, 3)
        pixels = camera @ crop["K"][posed][:, None].transpose(-1, -2)
        pixels = pixels[..., :2] / pixels[..., 2:].clamp(min=1e-6)
        boxes = object_box[posed]
        origin, size = boxes[:, None, None, :2], boxes[:, None, None, 2:] - boxes[:, None, None, :2]
        points[posed] = ((pixels - origin) / size).to(points.dtype)
    return points


def to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, DetectionTargetBatch):
        return DetectionTargetBatch(**{f.name: to_device(getattr(value, f.name), device) for f in fields(value)})
    return value


def float32_outputs(output: Any) -> Any:
    """A copy of an output dataclass with every tensor in float32 (losses run outside autocast);
    absent optional outputs (None) stay None."""
    return replace(output, **{f.name: getattr(output, f.name).float() for f in fields(output)
                              if getattr(output, f.name) is not None})
