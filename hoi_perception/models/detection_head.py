"""Hand and object detector head (CenterNet-style) for the full camera frame.

The hand-object decoders need a hand box and an object box; the papers take them
from ground truth. This head finds them itself: on a stride-4 (or 8) feature map of
the letterboxed frame it predicts, per class (right hand, left hand, object), a
centre heatmap, and per cell the box size and the sub-cell offset of the centre.
Decoding keeps local maxima (3x3 max-pool as NMS) and the top ``k`` peaks with
static shapes, so it exports to ONNX/TensorRT; choosing the hands and the object
and undoing the letterbox happen in NumPy after the network.

Units: sizes are (width, height) in feature-map cells; offsets are the centre's
position inside its cell in [0, 1); decoded boxes are (x0, y0, x1, y1) in pixels of
the letterboxed network input, where pixel i spans [i, i + 1) and cell j covers input
pixels [j * stride, (j + 1) * stride).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import nn

from hoi_perception.config import ConfigError
from hoi_perception.geometry.camera import box_iou

CLASS_NAMES: tuple[str, ...] = ("right_hand", "left_hand", "object")
NUM_CLASSES = len(CLASS_NAMES)
RIGHT_HAND, LEFT_HAND, OBJECT = 0, 1, 2
PRIOR_PROBABILITY = 0.1  # initial heatmap output, so the focal loss starts stable (RetinaNet / CenterNet)


@dataclass
class DetectionHeadOutput:
    """Dense predictions on the (H, W) feature grid.

    heatmap_logits: (B, 3, H, W) centre heatmap logits (sigmoid -> probability).
    sizes: (B, 2, H, W) box width and height in cells.
    offsets: (B, 2, H, W) centre position inside the cell, x then y, in cells.
    """

    heatmap_logits: torch.Tensor
    sizes: torch.Tensor
    offsets: torch.Tensor


@dataclass
class Detections:
    """Top-k decoded peaks (static shapes): boxes (B, k, 4) input pixels, scores (B, k), classes (B, k) int64."""

    boxes: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor


class DetectionHead(nn.Module):
    """Three branches of (3x3 conv -> BatchNorm -> ReLU -> 1x1 conv) on a shared feature map.

    CenterNet's branches have no normalisation; on FPN features trained from scratch
    (std ~40 here) their ReLUs died within a thousand steps (3 of 32 heatmap units ever
    active, one score everywhere). BatchNorm keeps them alive and folds into the conv
    at export.
    """

    def __init__(self, in_channels: int = 256, head_channels: int = 64) -> None:
        super().__init__()
        if in_channels < 1 or head_channels < 1:
            raise ValueError(f"DetectionHead: channels must be >= 1, got {in_channels}, {head_channels}")

        def branch(out_channels: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(in_channels, head_channels, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(head_channels), nn.ReLU(), nn.Conv2d(head_channels, out_channels, 1))

        self.heatmap = branch(NUM_CLASSES)
        self.size = branch(2)
        self.offset = branch(2)
        heatmap_logits = self.heatmap[-1]
        assert isinstance(heatmap_logits, nn.Conv2d) and heatmap_logits.bias is not None
        nn.init.constant_(heatmap_logits.bias, -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY))

    def forward(self, features: torch.Tensor) -> DetectionHeadOutput:
        return DetectionHeadOutput(heatmap_logits=self.heatmap(features), sizes=self.size(features),
                                   offsets=self.offset(features))


def decode_detections(output: DetectionHeadOutput, k: int, stride: int) -> Detections:
    """Keep 3x3 local maxima of the class heatmaps and return the ``k`` highest, as boxes.

    Fixed-size output (ONNX friendly): when fewer than ``k`` real peaks exist the rest
    are low-score entries that the NumPy selection drops by threshold.
    """
    heat = torch.sigmoid(output.heatmap_logits)
    batch, classes, height, width = heat.shape
    if not torch.jit.is_tracing() and not 1 <= k <= classes * height * width:
        raise ValueError(f"decode_detections k: expected 1..{classes * height * width}, got {k}")
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat).to(heat.dtype)
    scores, flat_index = torch.topk(peaks.flatten(1), k, dim=1)
    cells = height * width
    class_ids = torch.div(flat_index, cells, rounding_mode="floor")
    cell = flat_index - class_ids * cells
    ys = torch.div(cell, width, rounding_mode="floor")
    xs = cell - ys * width
    gather_index = cell.unsqueeze(1).expand(-1, 2, -1)  # (B, 2, k)
    sizes = torch.gather(output.sizes.flatten(2), 2, gather_index)
    offsets = torch.gather(output.offsets.flatten(2), 2, gather_index)
    cx = (xs.to(heat.dtype) + offsets[:, 0]) * stride
    cy = (ys.to(heat.dtype) + offsets[:, 1]) * stride
    half_w = sizes[:, 0] * stride / 2
    half_h = sizes[:, 1] * stride / 2
    boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1)
    return Detections(boxes=boxes, scores=scores, classes=class_ids)


# ----------------------------------------------------------------------------- letterbox


@dataclass(frozen=True)
class Letterbox:
    """Uniform scaling plus centred padding from an original image to the network input.

    input pixel = original pixel * scale + (pad_x, pad_y).
    """

    scale: float
    pad_x: float
    pad_y: float
    original_width: int
    original_height: int
    input_width: int
    input_height: int

    @classmethod
    def fit(cls, original_width: int, original_height: int, input_width: int, input_height: int) -> Letterbox:
        if min(original_width, original_height, input_width, input_height) < 1:
            raise ValueError("Letterbox.fit: image sizes must be positive, got "
                             f"{original_width}x{original_height} -> {input_width}x{input_height}")
        scale = min(input_width / original_width, input_height / original_height)
        new_w, new_h = round(original_width * scale), round(original_height * scale)
        return cls(scale, (input_width - new_w) // 2, (input_height - new_h) // 2, original_width, original_height,
                   input_width, input_height)

    def boxes_to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes (..., 4) in input pixels -> original-image pixels, clipped to the image."""
        b = np.array(boxes, dtype=np.float64)
        b[..., [0, 2]] = np.clip((b[..., [0, 2]] - self.pad_x) / self.scale, 0, self.original_width)
        b[..., [1, 3]] = np.clip((b[..., [1, 3]] - self.pad_y) / self.scale, 0, self.original_height)
        return b

    def boxes_to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes (..., 4) in original-image pixels -> input pixels (for training targets)."""
        b = np.array(boxes, dtype=np.float64)
        b[..., [0, 2]] = b[..., [0, 2]] * self.scale + self.pad_x
        b[..., [1, 3]] = b[..., [1, 3]] * self.scale + self.pad_y
        return b


def letterbox_image(image: np.ndarray, input_width: int, input_height: int,
                    pad_value: int = 114) -> tuple[np.ndarray, Letterbox]:
    """Resize ``image`` (H, W, C) keeping its aspect ratio and pad it to the network input size."""
    if image.ndim != 3:
        raise ValueError(f"image: expected (H, W, C), got shape {image.shape}")
    lb = Letterbox.fit(image.shape[1], image.shape[0], input_width, input_height)
    new_w, new_h = round(lb.original_width * lb.scale), round(lb.original_height * lb.scale)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR if lb.scale > 1 else cv2.INTER_AREA)
    out = np.full((input_height, input_width, image.shape[2]), pad_value, dtype=image.dtype)
    out[int(lb.pad_y):int(lb.pad_y) + new_h, int(lb.pad_x):int(lb.pad_x) + new_w] = resized.reshape(
        new_h, new_w, image.shape[2])
    return out, lb


# ----------------------------------------------------------------------------- selection


@dataclass
class DetectionSelectionConfig:
    """Thresholds for picking one right hand, one left hand and one object per frame."""

    hand_score_threshold: float = 0.3
    object_score_threshold: float = 0.3
    same_hand_iou: float = 0.6  # a right and a left box overlapping this much are one hand: keep the better
    min_box_size_px: float = 4.0  # in original-image pixels

    def validate(self) -> None:
        for name in ("hand_score_threshold", "object_score_threshold", "same_hand_iou"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value}")
        if self.min_box_size_px < 0:
            raise ConfigError(f"min_box_size_px must be >= 0, got {self.min_box_size_px}")


@dataclass
class Detection:
    """One detection in original-image pixels."""

    label: str
    box: np.ndarray
    score: float


@dataclass
class FrameDetections:
    """The best right hand, left hand and object of one frame (None where nothing passed)."""

    right_hand: Detection | None
    left_hand: Detection | None
    object: Detection | None


def select_detections(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, letterbox: Letterbox,
                      config: DetectionSelectionConfig | None = None) -> FrameDetections:
    """Pick the best detection per class above threshold from one image's top-k decode.

    ``boxes`` (k, 4) input pixels, ``scores`` (k,), ``classes`` (k,) from
    :func:`decode_detections` (one batch element, as NumPy).
    """
    config = config or DetectionSelectionConfig()
    boxes = np.asarray(boxes, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    classes = np.asarray(classes).reshape(-1)
    if boxes.shape != (len(scores), 4) or classes.shape != scores.shape:
        raise ValueError(f"select_detections: expected boxes (k, 4), scores (k,), classes (k,); got "
                         f"{boxes.shape}, {scores.shape}, {classes.shape}")
    original = letterbox.boxes_to_original(boxes)
    sizes = np.minimum(original[:, 2] - original[:, 0], original[:, 3] - original[:, 1])
    usable = np.isfinite(scores) & np.all(np.isfinite(original), axis=1) & (sizes >= config.min_box_size_px)
    thresholds = np.where(classes == OBJECT, config.object_score_threshold, config.hand_score_threshold)
    usable &= scores >= thresholds

    def best(class_id: int) -> Detection | None:
        candidates = np.flatnonzero(usable & (classes == class_id))
        if candidates.size == 0:
            return None
        i = candidates[np.argmax(scores[candidates])]
        return Detection(CLASS_NAMES[class_id], original[i], float(scores[i]))

    right, left = best(RIGHT_HAND), best(LEFT_HAND)
    if right is not None and left is not None and box_iou(right.box, left.box) >= config.same_hand_iou:
        right, left = (right, None) if right.score >= left.score else (None, left)
    return FrameDetections(right_hand=right, left_hand=left, object=best(OBJECT))


# ----------------------------------------------------------------------------- targets


@dataclass
class DetectionTargets:
    """CenterNet training targets of one image on an (H, W) grid.

    heatmap: (3, H, W) per-class gaussian peaks (1.0 exactly at each centre cell).
    indices: (M,) flat cell index (y * W + x) of each box's centre; sizes (M, 2) and
    offsets (M, 2) the regression targets there; mask (M,) 1 for real boxes, 0 for padding.
    """

    heatmap: np.ndarray
    indices: np.ndarray
    sizes: np.ndarray
    offsets: np.ndarray
    mask: np.ndarray


def build_detection_targets(boxes: np.ndarray, classes: np.ndarray, grid_height: int, grid_width: int,
                            stride: int, max_boxes: int = 16, gaussian_alpha: float = 0.54) -> DetectionTargets:
    """CenterNet targets from boxes (N, 4) in input pixels and their class ids (N,).

    Each box adds an elliptical gaussian whose standard deviations are
    ``gaussian_alpha * (w, h) / 6`` cells (TTFNet's shape, suited to elongated boxes such as
    bottles and hands); overlapping gaussians of one class combine by maximum. Boxes
    whose centre falls outside the grid or with no area are skipped.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1)
    if classes.shape[0] != boxes.shape[0]:
        raise ValueError(f"classes: expected {boxes.shape[0]} class ids, got {classes.shape[0]}")
    if boxes.shape[0] > max_boxes:
        raise ValueError(f"boxes: {boxes.shape[0]} boxes exceed max_boxes={max_boxes}")
    if np.any((classes < 0) | (classes >= NUM_CLASSES)):
        raise ValueError(f"classes: ids must be in [0, {NUM_CLASSES}) = {CLASS_NAMES}, got {classes.tolist()}")
    heatmap = np.zeros((NUM_CLASSES, grid_height, grid_width), dtype=np.float32)
    indices = np.zeros(max_boxes, dtype=np.int64)
    sizes = np.zeros((max_boxes, 2), dtype=np.float32)
    offsets = np.zeros((max_boxes, 2), dtype=np.float32)
    mask = np.zeros(max_boxes, dtype=np.float32)
    ys, xs = np.mgrid[0:grid_height, 0:grid_width]
    m = 0
    for box, class_id in zip(boxes, classes):
        w, h = (box[2] - box[0]) / stride, (box[3] - box[1]) / stride
        cx, cy = (box[0] + box[2]) / 2 / stride, (box[1] + box[3]) / 2 / stride
        cell_x, cell_y = int(np.floor(cx)), int(np.floor(cy))
        if not (w > 0 and h > 0 and 0 <= cell_x < grid_width and 0 <= cell_y < grid_height):
            continue
        sigma_x, sigma_y = max(gaussian_alpha * w / 6, 0.5), max(gaussian_alpha * h / 6, 0.5)
        g = np.exp(-((xs - cell_x) ** 2 / (2 * sigma_x**2) + (ys - cell_y) ** 2 / (2 * sigma_y**2)))
        np.maximum(heatmap[class_id], g.astype(np.float32), out=heatmap[class_id])
        indices[m] = cell_y * grid_width + cell_x
        sizes[m] = (w, h)
        offsets[m] = (cx - cell_x, cy - cell_y)
        mask[m] = 1.0
        m += 1
    return DetectionTargets(heatmap, indices, sizes, offsets, mask)
