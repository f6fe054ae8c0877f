"""MediaPipe Hands as a hand front-end: palm detection, rotated hand crops, landmarks, tracking.

The two models are MediaPipe's ``palm_detection_full`` and ``hand_landmark_full`` (see
:mod:`~hoi_perception.frontends.mediapipe_models`); the steps around them follow MediaPipe's
graph definitions (``palm_detection_cpu``, ``palm_detection_detection_to_roi``,
``hand_landmark_cpu``, ``hand_landmark_landmarks_to_roi``, ``hand_landmark_tracking_cpu``):

1. palm detector on the letterboxed image (192x192, RGB in [0, 1], zero padding): 2016 SSD
   anchors, box and 7 palm keypoints decoded with scale 192, sigmoid scores clipped at
   +-100, score >= ``min_detection_score``, weighted non-maximum suppression (IoU 0.3);
2. hand region from a palm: rotation that points wrist (keypoint 0) -> middle finger MCP
   (keypoint 2) up, shifted by -0.5 box heights along it, squared on the long side, x2.6;
3. landmark model on the rotated crop (224x224, RGB in [0, 1]): 21 landmarks in crop
   pixels (z relative to the wrist, in the same units), presence, handedness, 21 world
   landmarks in metres (origin between the knuckles), rotated back to the image's axes;
4. next frame's region from the landmarks (rotation wrist -> the knuckles' weighted mean,
   box of the palm and lower finger joints, shifted -0.1, squared, x2.0); the palm
   detector only runs while fewer hands are tracked than ``num_hands`` (with a hand
   tracked, every ``palm_interval`` frames), and a tracked region wins over a palm
   region overlapping it (IoU > 0.5).

Handedness: the landmark model was trained on mirrored (selfie) images. Its single score
is the probability of MediaPipe's first label, "Left", *in the mirrored view*
(handedness.txt, binary classification); in an ordinary, unmirrored camera image that is
the person's right hand. ``HandLandmarks.side`` is the side as the camera sees it
(score >= 0.5: right); on the project's synthetic renders that side is correct in 91-95 %
of the frames (test_mediapipe_hands.py checks it, also on mirrored renders).

Pixels: image coordinates here are the project's (pixel ``i``'s centre at ``i``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from hoi_perception.config import ConfigError
from hoi_perception.engines.base import InferenceEngine
from hoi_perception.models.detection_head import Letterbox, letterbox_image

Side = Literal["right", "left"]

PALM_INPUT_SIZE = 192
LANDMARK_INPUT_SIZE = 224
NUM_PALM_KEYPOINTS = 7
NUM_LANDMARKS = 21
# ssd_anchors_calculator settings of palm_detection_full.
PALM_ANCHOR_STRIDES = (8, 16, 16, 16)
PALM_ANCHOR_OFFSET = 0.5
SCORE_CLIPPING = 100.0
# palm_detection_detection_to_roi.
PALM_ROTATION_KEYPOINTS = (0, 2)  # wrist centre -> middle finger MCP
PALM_ROI_SCALE = 2.6
PALM_ROI_SHIFT_Y = -0.5
# hand_landmark_landmarks_to_roi: landmarks that bound the region (wrist, thumb base, and the
# two lowest joints of each finger) and the region's transformation.
ROI_LANDMARKS = (0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18)
WRIST, INDEX_MCP, MIDDLE_MCP, RING_MCP = 0, 5, 9, 13
LANDMARK_ROI_SCALE = 2.0
LANDMARK_ROI_SHIFT_Y = -0.1
TARGET_ANGLE = math.pi / 2  # the hand points up in its crop


@dataclass
class MediaPipeHandsConfig:
    """Settings of the MediaPipe front-end (``estimator.mediapipe`` in perception.yaml)."""

    # Folder with the two .tflite files; null: $HOI_MEDIAPIPE_DIR, else the user data folder
    # (see hoi-perception install-mediapipe-models).
    model_dir: Path | None = None
    num_hands: int = 2
    # Palm detector score (MediaPipe's min_detection_confidence).
    min_detection_score: float = 0.5
    # Landmark model's hand presence to keep a hand (MediaPipe's min_tracking_confidence).
    min_presence: float = 0.5
    nms_iou: float = 0.3
    # A tracked region replaces a palm region overlapping it more than this.
    track_iou: float = 0.5
    # While some but fewer than num_hands hands are tracked, the palm detector looks for the
    # others every this many frames (1: every frame, as MediaPipe's graph does); with no hand
    # tracked it runs every frame. A hand entering beside a tracked one is found this much later.
    palm_interval: int = 1
    # Which runtime runs the two models. litert: the .tflite files (fastest on a CPU);
    # onnxruntime / tensorrt: their ONNX copies (hoi-perception convert-mediapipe-models),
    # tensorrt on an NVIDIA GPU.
    engine: Literal["litert", "onnxruntime", "tensorrt"] = "litert"
    device: str = "cpu"  # tensorrt (and onnxruntime with onnxruntime-gpu): cuda or cuda:N
    # CPU threads per model (0: the runtime's default).
    threads: int = 2

    def validate(self) -> None:
        if self.num_hands < 1:
            raise ConfigError(f"mediapipe.num_hands: expected >= 1, got {self.num_hands}")
        for name in ("min_detection_score", "min_presence", "nms_iou", "track_iou"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"mediapipe.{name}: expected a value in [0, 1], got {value}")
        if self.threads < 0:
            raise ConfigError(f"mediapipe.threads: expected >= 0 (0 = the runtime's default), got {self.threads}")
        if self.engine == "tensorrt" and not self.device.startswith("cuda"):
            raise ConfigError(f"mediapipe.engine tensorrt runs on an NVIDIA GPU: set mediapipe.device to cuda or "
                              f"cuda:N, got {self.device!r}")
        if self.engine == "litert" and self.device != "cpu":
            raise ConfigError(f"mediapipe.engine litert runs on the CPU: mediapipe.device must be cpu, got "
                              f"{self.device!r}")
        if self.palm_interval < 1:
            raise ConfigError(f"mediapipe.palm_interval: expected >= 1 frame, got {self.palm_interval}")


# ----------------------------------------------------------------------------- palm detector


def ssd_anchors(input_size: int = PALM_INPUT_SIZE, strides: tuple[int, ...] = PALM_ANCHOR_STRIDES,
                offset: float = PALM_ANCHOR_OFFSET) -> np.ndarray:
    """Anchor centres ``(N, 2)`` (x, y in [0, 1]) in the detector's output order.

    MediaPipe's SSD anchors with ``fixed_anchor_size`` (every anchor 1x1): consecutive
    layers of one stride share a grid; each layer adds two anchors per cell (aspect ratio 1
    and the interpolated scale), cell by cell in row-major order.
    """
    centres = []
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        same = layer
        while same < len(strides) and strides[same] == stride:
            same += 1
        per_cell = 2 * (same - layer)
        cells = math.ceil(input_size / stride)
        ys, xs = np.meshgrid((np.arange(cells) + offset) / cells, (np.arange(cells) + offset) / cells, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, per_cell, axis=0))
        layer = same
    return np.concatenate(centres)


@dataclass
class PalmDetection:
    """A palm in image pixels: box (x1, y1, x2, y2), 7 keypoints (0: wrist centre, 2: middle MCP), score."""

    box: np.ndarray
    keypoints: np.ndarray
    score: float


def decode_palms(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray,
                 input_size: int = PALM_INPUT_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The detector's raw outputs -> boxes ``(N, 4)`` and keypoints ``(N, 7, 2)`` in [0, 1] input units, scores.

    Each row of ``raw_boxes`` holds x, y offsets of the centre, width, height, then 7
    keypoints' x, y, in input pixels relative to the anchor centre (anchors are 1x1).
    """
    raw_boxes = np.asarray(raw_boxes, dtype=np.float64).reshape(len(anchors), -1)
    scale = float(input_size)
    centre = raw_boxes[:, 0:2] / scale + anchors
    size = raw_boxes[:, 2:4] / scale
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    keypoints = raw_boxes[:, 4:4 + 2 * NUM_PALM_KEYPOINTS].reshape(-1, NUM_PALM_KEYPOINTS, 2) / scale \
        + anchors[:, None, :]
    logits = np.clip(np.asarray(raw_scores, dtype=np.float64).reshape(-1), -SCORE_CLIPPING, SCORE_CLIPPING)
    return boxes, keypoints, 1.0 / (1.0 + np.exp(-logits))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box ``a`` (4,) with boxes ``b`` (N, 4), both (x1, y1, x2, y2)."""
    x1, y1 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    x2, y2 = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 iou_threshold: float) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's weighted non-maximum suppression, best first.

    The best remaining detection takes every other one that overlaps it by more than
    ``iou_threshold``; its box and keypoints become their score-weighted mean, its score
    stays its own.
    """
    order = np.argsort(-scores, kind="stable")
    kept = []
    while len(order):
        best = order[0]
        overlapping = box_iou(boxes[best], boxes[order]) > iou_threshold
        overlapping[0] = True
        group = order[overlapping]
        weights = scores[group] / scores[group].sum()
        kept.append(((weights[:, None] * boxes[group]).sum(0), (weights[:, None, None] * keypoints[group]).sum(0),
                     float(scores[best])))
        order = order[~overlapping]
    return kept


# ----------------------------------------------------------------------------- hand regions


@dataclass(frozen=True)
class RotatedRect:
    """A square-or-not region of the image in pixels: centre, width, height, rotation (radians, clockwise on screen).

    A point at ``(a, b)`` in the region's own frame (``a`` along its width, ``b`` down its
    height, both in [-0.5, 0.5]) is at ``centre + R(rotation) @ (a * width, b * height)``.
    """

    center: tuple[float, float]
    width: float
    height: float
    rotation: float

    def rotation_matrix(self) -> np.ndarray:
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        return np.array([[c, -s], [s, c]])

    def from_unit(self, points: np.ndarray) -> np.ndarray:
        """Region coordinates in [-0.5, 0.5] -> image pixels."""
        local = np.asarray(points, dtype=np.float64) * np.array([self.width, self.height])
        return local @ self.rotation_matrix().T + np.array(self.center)

    def corners(self) -> np.ndarray:
        return self.from_unit(np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]))

    def bounding_box(self) -> np.ndarray:
        """Axis-aligned box (x1, y1, x2, y2) around the rotated region."""
        c = self.corners()
        return np.concatenate([c.min(0), c.max(0)])

    def unrotated_box(self) -> np.ndarray:
        """The box of centre, width and height ignoring the rotation (what MediaPipe's association compares)."""
        half = np.array([self.width, self.height]) / 2
        return np.concatenate([np.array(self.center) - half, np.array(self.center) + half])

    def transformed(self, scale: float, shift_y: float) -> RotatedRect:
        """MediaPipe's rect transformation: shift along the rotated height, square on the long side, scale."""
        shift = self.rotation_matrix() @ np.array([0.0, self.height * shift_y])
        side = max(self.width, self.height) * scale
        return RotatedRect((self.center[0] + float(shift[0]), self.center[1] + float(shift[1])), side, side,
                           self.rotation)


def normalize_radians(angle: float) -> float:
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


def rotation_towards(start: np.ndarray, end: np.ndarray) -> float:
    """Rotation that turns the direction start -> end (image pixels, y down) to point up."""
    return normalize_radians(TARGET_ANGLE - math.atan2(-(end[1] - start[1]), end[0] - start[0]))


def palm_to_region(palm: PalmDetection) -> RotatedRect:
    """palm_detection_detection_to_roi: the hand's region from a palm detection."""
    start, end = palm.keypoints[PALM_ROTATION_KEYPOINTS[0]], palm.keypoints[PALM_ROTATION_KEYPOINTS[1]]
    box = palm.box
    rect = RotatedRect(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), float(box[2] - box[0]),
                       float(box[3] - box[1]), rotation_towards(start, end))
    return rect.transformed(PALM_ROI_SCALE, PALM_ROI_SHIFT_Y)


def landmarks_to_region(landmarks: np.ndarray) -> RotatedRect:
    """hand_landmark_landmarks_to_roi: next frame's region from this frame's image landmarks ``(21, >=2)``."""
    points = np.asarray(landmarks, dtype=np.float64)[:, :2]
    knuckles = ((points[INDEX_MCP] + points[RING_MCP]) / 2 + points[MIDDLE_MCP]) / 2
    rotation = rotation_towards(points[WRIST], knuckles)
    subset = points[list(ROI_LANDMARKS)]
    axis_centre = (subset.min(0) + subset.max(0)) / 2
    c, s = math.cos(-rotation), math.sin(-rotation)
    unrotate = np.array([[c, -s], [s, c]])
    projected = (subset - axis_centre) @ unrotate.T
    lo, hi = projected.min(0), projected.max(0)
    rotate = unrotate.T
    centre = rotate @ ((lo + hi) / 2) + axis_centre
    rect = RotatedRect((float(centre[0]), float(centre[1])), float(hi[0] - lo[0]), float(hi[1] - lo[1]), rotation)
    return rect.transformed(LANDMARK_ROI_SCALE, LANDMARK_ROI_SHIFT_Y)


def crop_transform(rect: RotatedRect, size: int) -> np.ndarray:
    """2x3 affine matrix from image pixels to crop pixels (both with pixel centres at integers)."""
    # Crop pixel (u, v) (centre convention) sits at region coordinates ((u + 0.5) / size - 0.5, ...).
    to_image = np.zeros((3, 3))
    to_image[:2, :2] = rect.rotation_matrix() @ np.diag([rect.width / size, rect.height / size])
    to_image[:2, 2] = rect.from_unit(np.array([[0.5 / size - 0.5, 0.5 / size - 0.5]]))[0]
    to_image[2, 2] = 1.0
    return np.linalg.inv(to_image)[:2]


# ----------------------------------------------------------------------------- results


@dataclass
class HandLandmarks:
    """One hand from the landmark model.

    ``image_landmarks`` ``(21, 3)``: x, y in image pixels, z the depth relative to the wrist
    in the same pixel units (MediaPipe's scale). ``world_landmarks`` ``(21, 3)``: metres,
    origin between the knuckles, axes of the camera image (x right, y down, z away).
    ``side`` is the hand's side as seen in the (unmirrored) image, ``side_score`` its probability.
    Landmark order is MediaPipe's: wrist, then thumb, index, middle, ring, pinky, four each.
    """

    image_landmarks: np.ndarray
    world_landmarks: np.ndarray
    presence: float
    side: Side
    side_score: float
    region: RotatedRect
    from_palm: bool

    @property
    def box(self) -> np.ndarray:
        """Axis-aligned box (x1, y1, x2, y2) of the image landmarks."""
        xy = self.image_landmarks[:, :2]
        return np.concatenate([xy.min(0), xy.max(0)])


@dataclass
class FrontendTimings:
    """Seconds spent in each step of one frame."""

    palm_detection: float = 0.0
    landmarks: float = 0.0


@dataclass
class FrontendResult:
    hands: list[HandLandmarks]
    palms: list[PalmDetection]
    timings: FrontendTimings = field(default_factory=FrontendTimings)


# ----------------------------------------------------------------------------- the front-end


class MediaPipeHands:
    """Hands frame by frame, as MediaPipe's hand tracking graph finds them; keeps the regions to track.

    ``palm_engine`` and ``landmark_engine`` are engines running the two models (see
    :func:`create_mediapipe_hands`); their input and output names are read from them.
    """

    def __init__(self, config: MediaPipeHandsConfig, palm_engine: InferenceEngine,
                 landmark_engine: InferenceEngine) -> None:
        config.validate()
        self.config = config
        self.palm_engine = palm_engine
        self.landmark_engine = landmark_engine
        self.anchors = ssd_anchors()
        self._palm_outputs = _outputs_by_width(palm_engine, {18: "boxes", 1: "scores"})
        landmark_outputs = [s for s in landmark_engine.outputs]
        if [tuple(s.shape) for s in landmark_outputs] != [(1, 63), (1, 1), (1, 1), (1, 63)]:
            raise ValueError(f"{landmark_engine.describe()}: expected outputs (1, 63), (1, 1), (1, 1), (1, 63) "
                             f"(hand_landmark_full.tflite), got {[s.shape for s in landmark_outputs]}")
        self._landmark_outputs = [s.name for s in landmark_outputs]
        self._tracked: list[RotatedRect] = []
        self._frames_since_palms = 0

    def reset(self) -> None:
        """Forget the tracked regions (a new sequence, a camera jump)."""
        self._tracked = []
        self._frames_since_palms = 0

    def detect_palms(self, rgb: np.ndarray) -> list[PalmDetection]:
        """Palms in an RGB uint8 image, best first, at most ``num_hands``."""
        tensor, letterbox = letterbox_image(rgb, PALM_INPUT_SIZE, PALM_INPUT_SIZE, pad_value=0)
        outputs = self.palm_engine.run({self.palm_engine.input_names[0]:
                                        (tensor.astype(np.float32) / 255.0)[None]})
        boxes, keypoints, scores = decode_palms(outputs[self._palm_outputs["boxes"]][0],
                                                outputs[self._palm_outputs["scores"]][0], self.anchors)
        keep = scores >= self.config.min_detection_score
        palms = []
        for box, points, score in weighted_nms(boxes[keep], keypoints[keep], scores[keep], self.config.nms_iou):
            palms.append(PalmDetection(_to_image(box.reshape(2, 2), letterbox).reshape(4),
                                       _to_image(points, letterbox), score))
        return palms[:self.config.num_hands]

    def landmarks_in(self, rgb: np.ndarray, region: RotatedRect, from_palm: bool) -> HandLandmarks:
        """The landmark model on one region of an RGB uint8 image."""
        matrix = crop_transform(region, LANDMARK_INPUT_SIZE)
        crop = cv2.warpAffine(rgb, matrix, (LANDMARK_INPUT_SIZE, LANDMARK_INPUT_SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        outputs = self.landmark_engine.run({self.landmark_engine.input_names[0]:
                                            (crop.astype(np.float32) / 255.0)[None]})
        landmarks, presence, handedness, world = (outputs[name].reshape(-1) for name in self._landmark_outputs)
        crop_points = landmarks.reshape(NUM_LANDMARKS, 3).astype(np.float64)
        # Crop pixels (corner convention, as the model reports them) -> region units -> image pixels.
        unit = crop_points[:, :2] / LANDMARK_INPUT_SIZE - 0.5
        image_xyz = np.concatenate([region.from_unit(unit), crop_points[:, 2:] * region.width / LANDMARK_INPUT_SIZE],
                                   axis=1)
        world_xyz = world.reshape(NUM_LANDMARKS, 3).astype(np.float64)
        world_xyz[:, :2] = world_xyz[:, :2] @ region.rotation_matrix().T
        # The score is MediaPipe's label 0, "Left", of the mirrored (selfie) view: a right hand here.
        right = float(handedness[0])
        side: Side = "right" if right >= 0.5 else "left"
        return HandLandmarks(image_xyz, world_xyz, float(presence[0]), side, max(right, 1.0 - right), region,
                             from_palm)

    def process(self, rgb: np.ndarray) -> FrontendResult:
        """One frame (RGB uint8, (H, W, 3)): track the previous frame's hands, detect palms while hands are missing."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"MediaPipeHands.process: expected an RGB uint8 image (H, W, 3), got {rgb.dtype} "
                             f"{rgb.shape}")
        timings = FrontendTimings()
        regions = [(rect, False) for rect in self._tracked]
        palms: list[PalmDetection] = []
        self._frames_since_palms += 1
        if not self._tracked or (len(self._tracked) < self.config.num_hands
                                 and self._frames_since_palms >= self.config.palm_interval):
            self._frames_since_palms = 0
            start = time.perf_counter()
            palms = self.detect_palms(rgb)
            timings.palm_detection = time.perf_counter() - start
            for palm in palms:
                rect = palm_to_region(palm)
                if all(box_iou(rect.unrotated_box(), tracked.unrotated_box()[None])[0] <= self.config.track_iou
                       for tracked, _ in regions):
                    regions.append((rect, True))
        start = time.perf_counter()
        hands = []
        for rect, from_palm in regions:
            hand = self.landmarks_in(rgb, rect, from_palm)
            if hand.presence >= self.config.min_presence:
                hands.append(hand)
        timings.landmarks = time.perf_counter() - start
        hands = hands[:self.config.num_hands]
        self._tracked = [landmarks_to_region(hand.image_landmarks) for hand in hands]
        return FrontendResult(hands, palms, timings)


def _to_image(points01: np.ndarray, letterbox: Letterbox) -> np.ndarray:
    """Points in [0, 1] detector-input units (corner convention) -> image pixels (centre convention)."""
    input_px = np.asarray(points01) * PALM_INPUT_SIZE - np.array([letterbox.pad_x, letterbox.pad_y])
    return input_px / letterbox.scale - 0.5


def _outputs_by_width(engine: InferenceEngine, widths: dict[int, str]) -> dict[str, str]:
    """Output names keyed by role, recognised by their last axis (the files name them Identity, Identity_1...)."""
    found = {}
    for spec in engine.outputs:
        role = widths.get(int(spec.shape[-1])) if isinstance(spec.shape[-1], int) else None
        if role is not None:
            found[role] = spec.name
    if len(found) != len(widths):
        raise ValueError(f"{engine.describe()}: expected outputs with last axes {sorted(widths)} "
                         f"(palm_detection_full.tflite), got {[s.shape for s in engine.outputs]}")
    return found


def create_mediapipe_hands(config: MediaPipeHandsConfig | None = None) -> MediaPipeHands:
    """The front-end with both models in ``config.engine``, from the checked model folder."""
    from hoi_perception.frontends.mediapipe_models import HAND_LANDMARKS, PALM_DETECTOR, PinnedModel

    config = config or MediaPipeHandsConfig()
    config.validate()

    def engine(model: PinnedModel) -> InferenceEngine:
        from hoi_perception.frontends.mediapipe_models import model_path, onnx_model_path

        if config.engine == "litert":
            from hoi_perception.engines.litert_engine import LiteRTEngine

            return LiteRTEngine(model_path(model, config.model_dir), config.threads)
        model_path(model, config.model_dir)  # the ONNX copy is checked against the pinned source file
        onnx = onnx_model_path(model, config.model_dir)
        if config.engine == "onnxruntime":
            from hoi_perception.engines.onnx_engine import OnnxRuntimeEngine

            return OnnxRuntimeEngine(onnx, config.device, config.threads)
        from hoi_perception.engines.tensorrt_engine import TensorRTEngine

        return TensorRTEngine(onnx, config.device, max_batch=1)

    return MediaPipeHands(config, engine(PALM_DETECTOR), engine(HAND_LANDMARKS))
