"""Test-time augmentation ensemble for pseudo-labels (SHO section 5.1, after Radosavovic et al. 2018).

SHO runs the trained model on 8 augmented copies of each crop and averages the
predictions, which lowers their noise before the consistency constraints select
pseudo-labels. The augmentations here are pure geometry about the crop centre: an
in-plane rotation and a zoom. Each has an exact forward map on images and 2D points
and an exact inverse, so every copy's prediction is brought back onto the original
crop before averaging. The default set is the four rotations by multiples of 90
degrees (lossless: ``np.rot90`` moves pixels without resampling) at two zooms, 1 and
0.85 (zooming out keeps the whole hand in view; SHO trains with +-20% scale jitter and
any rotation, so the network has seen both). Horizontal flips, the other classic test
augmentation, are left out: a flipped right hand is a left hand, which a right-hand
MANO network cannot predict.

Conventions. Pixel coordinates follow OpenCV: x right, y down, the centre of pixel
(row i, column j) at (x, y) = (j, i); the crop centre is ((W - 1) / 2, (H - 1) / 2). A
rotation by ``rotation_deg`` turns the image content clockwise on screen and maps
a point p to ``c + scale * R(angle) (p - c)``, R = [[cos, -sin], [sin, cos]]. On 3D
quantities in the camera's orientation (x right, y down, z forward) the same rotation
is ``R_z(angle)`` about the optical axis: it rotates root-relative joints and vertices
and left-multiplies the MANO global orientation; the finger rotations (relative to
their parents) and the shape do not change, and neither does anything 3D under a
zoom. This treats the crop centre as lying on the optical axis, the approximation
SHO's own rotation augmentation makes. Absolute translation is not ensembled: fit it
afterwards from the averaged 2D and 3D joints.

Averages: points are averaged arithmetically; rotations by their chordal L2 mean (the
mean of the rotation matrices projected back onto SO(3) by SVD); everything else
(betas, confidences) arithmetically.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from hoi_perception.config import ConfigError
from hoi_perception.geometry.rotations import axis_angle_to_matrix_np, matrix_to_axis_angle_np


class OutputKind(str, enum.Enum):
    """How one predicted array changes under an augmentation (last axis as described)."""

    POINTS_2D = "points_2d"  # (..., 2) crop pixels
    POINTS_3D = "points_3d"  # (..., 3) root-relative, camera orientation
    GLOBAL_ROTATION = "global_rotation"  # (3,) axis-angle in the camera orientation
    MANO_POSE = "mano_pose"  # (3 + 3k,) global orientation then k parent-relative joint rotations
    LOCAL_ROTATIONS = "local_rotations"  # (3k,) parent-relative axis-angles: unchanged by the augmentation
    INVARIANT = "invariant"  # anything unchanged (betas, confidences): arithmetic mean


# What the hand network's outputs are; pass your own mapping for other names.
HAND_OUTPUT_KINDS: dict[str, OutputKind] = {
    "joints_2d": OutputKind.POINTS_2D,
    "joints_3d": OutputKind.POINTS_3D,
    "vertices": OutputKind.POINTS_3D,
    "pose": OutputKind.MANO_POSE,
    "betas": OutputKind.INVARIANT,
}

Predictor = Callable[[np.ndarray], Mapping[str, np.ndarray]]


def rotation_about_optical_axis(angle_deg: float) -> np.ndarray:
    """(3, 3) rotation about +z; its top-left 2x2 block is the matching image-plane rotation.

    Quarter turns get exact 0 and 1 entries, so their point maps are exact like their image maps."""
    quarter_turns = angle_deg / 90.0
    if quarter_turns == round(quarter_turns):
        c, s = ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))[int(round(quarter_turns)) % 4]
    else:
        angle = math.radians(angle_deg)
        c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class Augmentation:
    """Rotate by ``rotation_deg`` (clockwise on screen) and zoom by ``scale`` about the crop centre."""

    rotation_deg: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rotation_deg) and math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"Augmentation: expected a finite angle and a positive scale, got "
                             f"rotation_deg={self.rotation_deg}, scale={self.scale}")

    @property
    def rotation_3d(self) -> np.ndarray:
        return rotation_about_optical_axis(self.rotation_deg)

    def point_matrix(self, size: int) -> np.ndarray:
        """(2, 3) affine map of crop pixels of a ``size`` x ``size`` crop: [A | b], p' = A p + b."""
        centre = np.full(2, (size - 1) / 2.0)
        linear = self.scale * self.rotation_3d[:2, :2]
        return np.concatenate([linear, (centre - linear @ centre)[:, None]], axis=1)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """The augmented copy of a square (S, S, C) or (S, S) image, same shape and dtype.

        Rotations by multiples of 90 degrees without zoom move pixels exactly; anything
        else is resampled bilinearly, with black (0) where the source has no pixel.
        """
        image = np.asarray(image)
        size = _square_size(image.shape, "image")
        quarter_turns = self.rotation_deg / 90.0
        if self.scale == 1.0 and quarter_turns == round(quarter_turns):
            # np.rot90 with positive k turns counter-clockwise on screen.
            return np.ascontiguousarray(np.rot90(image, k=-int(round(quarter_turns)) % 4, axes=(0, 1)))
        return cv2.warpAffine(image, self.point_matrix(size), (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def apply_points_2d(self, points: np.ndarray, size: int) -> np.ndarray:
        """Crop pixels (..., 2) of the original crop -> pixels of the augmented crop."""
        matrix = self.point_matrix(size)
        return np.asarray(points, dtype=np.float64) @ matrix[:, :2].T + matrix[:, 2]

    def invert_points_2d(self, points: np.ndarray, size: int) -> np.ndarray:
        """Pixels (..., 2) of the augmented crop -> pixels of the original crop."""
        matrix = self.point_matrix(size)
        return (np.asarray(points, dtype=np.float64) - matrix[:, 2]) @ np.linalg.inv(matrix[:, :2]).T

    def apply_points_3d(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, dtype=np.float64) @ self.rotation_3d.T

    def invert_points_3d(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, dtype=np.float64) @ self.rotation_3d

    def apply_global_rotation(self, axis_angle: np.ndarray) -> np.ndarray:
        """Axis-angle (..., 3) global orientation as seen in the augmented crop: R_z R."""
        return matrix_to_axis_angle_np(self.rotation_3d @ axis_angle_to_matrix_np(axis_angle))

    def invert_global_rotation(self, axis_angle: np.ndarray) -> np.ndarray:
        return matrix_to_axis_angle_np(self.rotation_3d.T @ axis_angle_to_matrix_np(axis_angle))


def _square_size(shape: tuple[int, ...], name: str) -> int:
    if len(shape) < 2 or shape[0] != shape[1] or shape[0] < 1:
        raise ValueError(f"{name}: expected a square crop (S, S[, C]), got shape {tuple(shape)}")
    return int(shape[0])


@dataclass
class TTAConfig:
    """Test-time augmentation: every rotation combined with every zoom (the default gives SHO's 8 copies).

    enabled: false runs the network once on the unaugmented crop.
    rotations_deg: in-plane rotations about the crop centre (clockwise on screen).
    scales: zooms about the crop centre (< 1 shows more context, > 1 less).
    """

    enabled: bool = True
    rotations_deg: tuple[float, ...] = (0.0, 90.0, 180.0, 270.0)
    scales: tuple[float, ...] = (1.0, 0.85)

    def validate(self) -> None:
        if not self.rotations_deg or not self.scales:
            raise ConfigError("rotations_deg and scales: expected at least one value each")
        if any(not math.isfinite(r) for r in self.rotations_deg):
            raise ConfigError(f"rotations_deg: expected finite angles, got {list(self.rotations_deg)}")
        if any(not (math.isfinite(s) and s > 0) for s in self.scales):
            raise ConfigError(f"scales: expected positive numbers, got {list(self.scales)}")
        angles = [r % 360.0 for r in self.rotations_deg]
        if len(set(angles)) != len(angles) or len(set(self.scales)) != len(self.scales):
            raise ConfigError(f"rotations_deg {list(self.rotations_deg)} and scales {list(self.scales)}: "
                              "repeated values would weigh one copy twice")

    def augmentations(self) -> tuple[Augmentation, ...]:
        """The copies to run, identity first when it is in the set."""
        if not self.enabled:
            return (Augmentation(),)
        return tuple(Augmentation(rotation, scale) for scale in self.scales for rotation in self.rotations_deg)


def undo_augmentation(outputs: Mapping[str, np.ndarray], augmentation: Augmentation, size: int,
                      output_kinds: Mapping[str, OutputKind]) -> dict[str, np.ndarray]:
    """Map one copy's predictions back onto the original crop (arrays with a leading batch axis)."""
    restored = {}
    for key, value in outputs.items():
        kind = _kind_of(key, output_kinds)
        value = np.asarray(value, dtype=np.float64)
        if kind is OutputKind.POINTS_2D:
            _check_last(value, 2, key, kind)
            restored[key] = augmentation.invert_points_2d(value, size)
        elif kind is OutputKind.POINTS_3D:
            _check_last(value, 3, key, kind)
            restored[key] = augmentation.invert_points_3d(value)
        elif kind is OutputKind.GLOBAL_ROTATION:
            _check_last(value, 3, key, kind)
            restored[key] = augmentation.invert_global_rotation(value)
        elif kind is OutputKind.MANO_POSE:
            _check_rotations(value, key, kind)
            pose = value.copy()
            pose[..., :3] = augmentation.invert_global_rotation(value[..., :3])
            restored[key] = pose
        else:
            if kind is OutputKind.LOCAL_ROTATIONS:
                _check_rotations(value, key, kind)
            restored[key] = value
    return restored


def chordal_mean_rotations(matrices: np.ndarray, axis: int = 0) -> np.ndarray:
    """Chordal L2 mean of rotation matrices (..., 3, 3) along ``axis``: the rotation nearest
    (Frobenius) to their arithmetic mean, by SVD with the determinant fixed to +1."""
    matrices = np.asarray(matrices, dtype=np.float64)
    if matrices.ndim < 3 or matrices.shape[-2:] != (3, 3):
        raise ValueError(f"matrices: expected shape (..., 3, 3), got {matrices.shape}")
    if axis < 0:
        axis += matrices.ndim
    if axis >= matrices.ndim - 2:
        raise ValueError(f"axis {axis} must be a batch axis of matrices with shape {matrices.shape}")
    mean = matrices.mean(axis=axis)
    u, _, vt = np.linalg.svd(mean)
    fix = np.ones(mean.shape[:-1])
    fix[..., -1] = np.sign(np.linalg.det(u @ vt))
    fix[fix == 0] = 1.0
    return (u * fix[..., None, :]) @ vt


def mean_axis_angle(axis_angles: np.ndarray, axis: int = 0) -> np.ndarray:
    """Chordal mean of axis-angle rotations (..., 3k) along ``axis``, as axis-angles (..., 3k)."""
    values = np.asarray(axis_angles, dtype=np.float64)
    if axis < 0:
        axis += values.ndim
    if values.shape[-1] % 3 or axis >= values.ndim - 1:
        raise ValueError(f"axis_angles: expected (..., 3k) with a batch axis {axis}, got shape {values.shape}")
    matrices = axis_angle_to_matrix_np(values.reshape(values.shape[:-1] + (-1, 3)))
    mean = chordal_mean_rotations(matrices, axis=axis)
    return matrix_to_axis_angle_np(mean).reshape(mean.shape[:-3] + (-1,))


def average_predictions(copies: Sequence[Mapping[str, np.ndarray]],
                        output_kinds: Mapping[str, OutputKind]) -> dict[str, np.ndarray]:
    """Average predictions already mapped onto the original crop (one mapping per copy)."""
    if not copies:
        raise ValueError("average_predictions: expected at least one set of predictions")
    keys = set(copies[0])
    for i, copy in enumerate(copies[1:], start=1):
        if set(copy) != keys:
            raise ValueError(f"prediction {i} has keys {sorted(copy)}, prediction 0 has {sorted(keys)}")
    averaged = {}
    for key in sorted(keys):
        stacked = np.stack([np.asarray(copy[key], dtype=np.float64) for copy in copies])
        kind = _kind_of(key, output_kinds)
        if kind in (OutputKind.GLOBAL_ROTATION, OutputKind.MANO_POSE, OutputKind.LOCAL_ROTATIONS):
            averaged[key] = mean_axis_angle(stacked, axis=0)
        else:
            averaged[key] = stacked.mean(axis=0)
    return averaged


def predict_with_tta(predict: Predictor, images: np.ndarray, augmentations: Sequence[Augmentation],
                     output_kinds: Mapping[str, OutputKind] = HAND_OUTPUT_KINDS,
                     batch_size: int | None = None) -> dict[str, np.ndarray]:
    """Run ``predict`` on every augmented copy of each crop and return the ensemble.

    predict: images (M, S, S, C) -> {name: (M, ...)} (the network, in crop pixels).
    images: (N, S, S, C) square crops.
    augmentations: the copies (e.g. ``TTAConfig().augmentations()``).
    output_kinds: how each output transforms; every output key must be listed.
    batch_size: most images per ``predict`` call; None sends all N x len(augmentations) at once.
    Returns {name: (N, ...)} averaged over the copies, on the original crops.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images: expected shape (N, S, S, C), got {images.shape}")
    size = _square_size(images.shape[1:], "images")
    if not augmentations:
        raise ValueError("augmentations: expected at least one")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer or None, got {batch_size}")
    count = len(images)
    stack = np.stack([aug.apply_image(image) for aug in augmentations for image in images])
    outputs = _predict_in_batches(predict, stack, batch_size or len(stack))
    copies = []
    for k, aug in enumerate(augmentations):
        part = {key: value[k * count:(k + 1) * count] for key, value in outputs.items()}
        copies.append(undo_augmentation(part, aug, size, output_kinds))
    return average_predictions(copies, output_kinds)


def _predict_in_batches(predict: Predictor, images: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        result = predict(batch)
        if not isinstance(result, Mapping) or not result:
            raise TypeError(f"predict: expected a non-empty mapping of arrays, got {type(result).__name__}")
        if parts and set(result) != set(parts):
            raise ValueError(f"predict returned keys {sorted(result)}, earlier batches {sorted(parts)}")
        for key, value in result.items():
            value = np.asarray(value)
            if value.ndim == 0 or value.shape[0] != len(batch):
                raise ValueError(f"predict output '{key}': expected a leading axis of {len(batch)} images, "
                                 f"got shape {value.shape}")
            parts.setdefault(key, []).append(value)
    return {key: np.concatenate(values) for key, values in parts.items()}


def _kind_of(key: str, output_kinds: Mapping[str, OutputKind]) -> OutputKind:
    try:
        return OutputKind(output_kinds[key])
    except KeyError:
        raise ValueError(f"prediction '{key}' has no output kind; declare it in output_kinds "
                         f"(known: {sorted(output_kinds)})") from None


def _check_last(value: np.ndarray, size: int, key: str, kind: OutputKind) -> None:
    if value.ndim < 2 or value.shape[-1] != size:
        raise ValueError(f"prediction '{key}' ({kind.value}): expected shape (N, ..., {size}), got {value.shape}")


def _check_rotations(value: np.ndarray, key: str, kind: OutputKind) -> None:
    if value.ndim < 2 or value.shape[-1] % 3 or value.shape[-1] == 0:
        raise ValueError(f"prediction '{key}' ({kind.value}): expected (N, ..., 3k) axis-angles, got {value.shape}")
