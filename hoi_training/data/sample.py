"""The one sample schema every dataset loader returns and every training stage reads.

A :class:`HandObjectSample` holds one RGB frame and whatever labels its dataset has,
in a single set of conventions, so losses, metrics and augmentation never branch on
the dataset:

* NumPy arrays, metres, the OpenCV camera frame (x right, y down, z forward);
* pixels for 2D quantities, boxes as ``(x0, y0, x1, y1)``;
* hand joints in the HO-3D 21-joint order (MANO's 16 then the five tips, see
  :mod:`hoi_perception.hand_model.joint_orders`);
* MANO pose as 48 axis-angle values (global orientation + 15 joints) in the
  flat-hand-mean convention (zero pose = flat hand), shape as 10 betas, and the
  translation in smplx's convention: ``v = R (v0 - J0) + J0 + trans``, where ``J0`` is
  the rest-pose wrist of the shaped template. Because the global rotation pivots about
  ``J0``, the posed wrist equals ``J0 + trans``; :func:`rotate_mano_global` uses that to
  rotate a hand rigidly without needing the hand model;
* the object pose maps model points into the camera: ``x_cam = R x + t``;
  ``object_control_points`` are the model's 21 control points (8 box corners, 12 edge
  midpoints, centre; :func:`hoi_perception.objects.models.bbox_control_points` order);
  ``object_symmetry_rotations`` (S, 3, 3), identity first, are the object-frame rotations
  under which the object looks the same (its model's), so ``R S`` are equally right poses;
  ``object_mirror_axis`` is the model's mirror plane (``ObjectModel.mirror_axis``), which
  lets a mirrored sample keep the object's own control points.

A label a dataset does not provide is ``None``; the ``has_*`` properties say which
labels exist, and :func:`collate_samples` turns them into per-sample boolean masks so
losses and metrics skip what is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from hoi_perception.geometry.camera import project

NUM_JOINTS = 21
NUM_VERTICES = 778
NUM_POSE_PARAMS = 48
NUM_BETAS = 10
NUM_CONTROL_POINTS = 21
HAND_SIDES = ("right", "left")

# Shapes of the optional array labels; "H" and "W" are the image's height and width.
LABEL_SHAPES: dict[str, tuple[int | str, ...]] = {
    "hand_box": (4,),
    "object_box": (4,),
    "joints_2d": (NUM_JOINTS, 2),
    "joints_3d": (NUM_JOINTS, 3),
    "hand_root_3d": (3,),
    "vertices_3d": (NUM_VERTICES, 3),
    "mano_pose": (NUM_POSE_PARAMS,),
    "mano_shape": (NUM_BETAS,),
    "mano_trans": (3,),
    "object_rotation": (3, 3),
    "object_translation": (3,),
    "object_control_points": (NUM_CONTROL_POINTS, 3),
    "object_points_2d": (NUM_CONTROL_POINTS, 2),
    "hand_mask": ("H", "W"),
    "object_mask": ("H", "W"),
}

# Each flag of collate_samples and the label fields it covers (all present, or the flag is False).
FLAG_FIELDS: dict[str, tuple[str, ...]] = {
    "has_hand_box": ("hand_box",),
    "has_object_box": ("object_box",),
    "has_hand_2d": ("joints_2d",),
    "has_hand_3d": ("joints_3d",),
    "has_hand_root": ("hand_root_3d",),
    "has_vertices": ("vertices_3d",),
    "has_mano": ("mano_pose", "mano_shape", "mano_trans"),
    "has_object_pose": ("object_rotation", "object_translation"),
    "has_object_points": ("object_control_points",),
    "has_object_2d": ("object_points_2d",),
    "has_hand_mask": ("hand_mask",),
    "has_object_mask": ("object_mask",),
}


class SampleError(ValueError):
    """A sample's labels have the wrong shape, type or combination."""


@dataclass
class HandObjectSample:
    """One frame and its labels; see the module docstring for units and conventions.

    ``hand_root_3d`` is the camera-frame wrist for datasets that give only the root
    (HO-3D's evaluation split); when ``joints_3d`` is set it must be ``None`` and
    :attr:`root_3d` returns ``joints_3d[0]``. ``weight`` scales the sample's losses
    (1 for ground truth, the confidence for pseudo-labels).
    """

    image: np.ndarray
    K: np.ndarray
    dataset: str
    sequence: str
    frame: str
    hand_side: str = "right"
    object_name: str = ""
    hand_box: np.ndarray | None = None
    object_box: np.ndarray | None = None
    joints_2d: np.ndarray | None = None
    joints_3d: np.ndarray | None = None
    hand_root_3d: np.ndarray | None = None
    vertices_3d: np.ndarray | None = None
    mano_pose: np.ndarray | None = None
    mano_shape: np.ndarray | None = None
    mano_trans: np.ndarray | None = None
    object_rotation: np.ndarray | None = None
    object_translation: np.ndarray | None = None
    object_control_points: np.ndarray | None = None
    object_points_2d: np.ndarray | None = None
    hand_mask: np.ndarray | None = None
    object_mask: np.ndarray | None = None
    object_symmetry_rotations: np.ndarray | None = None
    object_mirror_axis: int | None = None
    weight: float = 1.0

    # -- which labels exist -------------------------------------------------------
    @property
    def has_hand_box(self) -> bool:
        return self.hand_box is not None

    @property
    def has_object_box(self) -> bool:
        return self.object_box is not None

    @property
    def has_boxes(self) -> bool:
        return self.has_hand_box and self.has_object_box

    @property
    def has_hand_2d(self) -> bool:
        return self.joints_2d is not None

    @property
    def has_hand_3d(self) -> bool:
        return self.joints_3d is not None

    @property
    def has_hand_root(self) -> bool:
        return self.joints_3d is not None or self.hand_root_3d is not None

    @property
    def has_vertices(self) -> bool:
        return self.vertices_3d is not None

    @property
    def has_mano(self) -> bool:
        return self.mano_pose is not None

    @property
    def has_object_pose(self) -> bool:
        return self.object_rotation is not None

    @property
    def has_object_points(self) -> bool:
        return self.object_control_points is not None

    @property
    def has_object_2d(self) -> bool:
        return self.object_points_2d is not None

    @property
    def has_hand_mask(self) -> bool:
        return self.hand_mask is not None

    @property
    def has_object_mask(self) -> bool:
        return self.object_mask is not None

    @property
    def root_3d(self) -> np.ndarray | None:
        """The camera-frame wrist: ``joints_3d[0]`` or the root-only label."""
        return self.joints_3d[0] if self.joints_3d is not None else self.hand_root_3d

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[0])

    @property
    def sample_id(self) -> str:
        return f"{self.dataset}/{self.sequence}/{self.frame}"

    def object_points_camera(self) -> np.ndarray:
        """The control points posed into the camera frame (21, 3)."""
        if not (self.has_object_pose and self.has_object_points):
            raise SampleError(f"{self.sample_id}: needs an object pose and control points")
        return self.object_control_points @ self.object_rotation.T + self.object_translation

    def validate(self) -> HandObjectSample:
        """Check shapes, dtypes and label combinations; returns ``self`` for chaining."""
        where = self.sample_id
        if not isinstance(self.image, np.ndarray) or self.image.ndim != 3 or self.image.shape[2] != 3 \
                or self.image.dtype != np.uint8:
            got = (self.image.shape, self.image.dtype) if isinstance(self.image, np.ndarray) else type(self.image)
            raise SampleError(f"{where}: image must be an (H, W, 3) uint8 RGB array, got {got}")
        _check_array(self.K, (3, 3), f"{where}: K")
        if self.K[0, 0] <= 0 or self.K[1, 1] <= 0 or not np.allclose(self.K[2], [0, 0, 1]):
            raise SampleError(f"{where}: K must be a pinhole matrix with positive focal lengths, got {self.K.tolist()}")
        if self.hand_side not in HAND_SIDES:
            raise SampleError(f"{where}: hand_side must be one of {HAND_SIDES}, got {self.hand_side!r}")
        height, width = self.image.shape[:2]
        for name, shape in LABEL_SHAPES.items():
            value = getattr(self, name)
            if value is not None:
                expected = tuple(height if s == "H" else width if s == "W" else s for s in shape)
                _check_array(value, expected, f"{where}: {name}", mask=name.endswith("_mask"))
        groups = {"MANO (mano_pose, mano_shape, mano_trans)": ("mano_pose", "mano_shape", "mano_trans"),
                  "object pose (object_rotation, object_translation)": ("object_rotation", "object_translation")}
        for label, names in groups.items():
            present = [getattr(self, n) is not None for n in names]
            if any(present) and not all(present):
                raise SampleError(f"{where}: {label} must be given together; missing "
                                  f"{[n for n, p in zip(names, present) if not p]}")
        if self.joints_3d is not None and self.hand_root_3d is not None:
            raise SampleError(f"{where}: give hand_root_3d only when joints_3d is missing (root = joints_3d[0])")
        if self.has_mano and self.joints_3d is None:
            raise SampleError(f"{where}: MANO labels need joints_3d (the posed wrist fixes the translation pivot)")
        if self.object_rotation is not None:
            det = float(np.linalg.det(self.object_rotation))
            if abs(det - 1.0) > 1e-3:
                raise SampleError(f"{where}: object_rotation is not a rotation (det {det:.4f})")
        symmetries = self.object_symmetry_rotations
        if symmetries is not None and (not isinstance(symmetries, np.ndarray) or symmetries.ndim != 3
                                       or symmetries.shape[1:] != (3, 3) or not np.allclose(symmetries[0], np.eye(3))):
            got = symmetries.shape if isinstance(symmetries, np.ndarray) else type(symmetries).__name__
            raise SampleError(f"{where}: object_symmetry_rotations must be (S, 3, 3) rotations with the identity "
                              f"first, got {got}")
        if self.object_mirror_axis not in (None, 0, 1, 2):
            raise SampleError(f"{where}: object_mirror_axis must be None, 0, 1 or 2, got {self.object_mirror_axis!r}")
        if not (np.isfinite(self.weight) and self.weight >= 0):
            raise SampleError(f"{where}: weight must be finite and >= 0, got {self.weight}")
        return self


def _check_array(value: Any, shape: tuple[int, ...], where: str, mask: bool = False) -> None:
    if not isinstance(value, np.ndarray):
        raise SampleError(f"{where}: expected a numpy array of shape {shape}, got {type(value).__name__}")
    if value.shape != shape:
        raise SampleError(f"{where}: expected shape {shape}, got {value.shape}")
    if mask:
        if value.dtype != np.bool_:
            raise SampleError(f"{where}: expected a bool mask, got dtype {value.dtype}")
    elif not np.all(np.isfinite(value)):
        raise SampleError(f"{where}: contains non-finite values")


def rotate_mano_global(mano_pose: np.ndarray, mano_trans: np.ndarray, wrist_3d: np.ndarray,
                       rotation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MANO global orientation and translation after rotating the posed hand by ``rotation``.

    MANO rotates about the rest wrist ``J0`` (``v = R (v0 - J0) + J0 + t``), so the posed
    wrist is ``J0 + t`` and ``J0 = wrist - t`` without evaluating the model. Rotating every
    vertex about the camera origin, ``Q v``, gives global orientation ``Q R`` and
    translation ``Q wrist - J0``. Returns (pose (48,), trans (3,)).
    """
    Q = np.asarray(rotation, dtype=np.float64)  # noqa: N806
    pose = np.asarray(mano_pose, dtype=np.float64).copy()
    trans = np.asarray(mano_trans, dtype=np.float64)
    wrist = np.asarray(wrist_3d, dtype=np.float64)
    pose[:3] = (Rotation.from_matrix(Q) * Rotation.from_rotvec(pose[:3])).as_rotvec()
    rest_wrist = wrist - trans
    return pose, Q @ wrist - rest_wrist


def rotate_sample_3d(sample: HandObjectSample, rotation: np.ndarray) -> HandObjectSample:
    """A copy with every camera-frame 3D label rotated about the camera centre by ``rotation``.

    Image, 2D labels and intrinsics are left alone: callers change them to match (a
    rotation about the optical axis is an image warp; HO-3D's OpenGL flip is not).
    """
    Q = np.asarray(rotation, dtype=np.float64)  # noqa: N806
    changes: dict[str, Any] = {}
    for name in ("joints_3d", "hand_root_3d", "vertices_3d", "object_translation"):
        value = getattr(sample, name)
        if value is not None:
            changes[name] = value @ Q.T
    if sample.object_rotation is not None:
        changes["object_rotation"] = Q @ sample.object_rotation
    if sample.has_mano:
        changes["mano_pose"], changes["mano_trans"] = rotate_mano_global(
            sample.mano_pose, sample.mano_trans, sample.joints_3d[0], Q)
    return replace(sample, **changes)


def project_object_points(sample: HandObjectSample) -> np.ndarray:
    """2D positions (21, 2) of the posed control points under the sample's K."""
    return project(sample.object_points_camera(), sample.K)


# -- batching -------------------------------------------------------------------------

def collate_samples(samples: Sequence[HandObjectSample]) -> dict[str, Any]:
    """Stack samples into a batch for ``torch.utils.data.DataLoader(collate_fn=...)``.

    Returns ``image`` (B, 3, H, W) float32 in [0, 1]; ``K`` (B, 3, 3); every label of
    :data:`LABEL_SHAPES` as a float32 (bool for masks) tensor with zeros where a sample
    lacks it; one ``has_*`` bool tensor (B,) per entry of :data:`FLAG_FIELDS`;
    ``hand_root_3d`` filled from ``joints_3d[0]`` where joints exist; ``weight`` (B,);
    ``is_right`` (B,) bool; ``object_symmetry_rotations`` (B, S, 3, 3), S the most any sample
    has, padded with the identity (which is also every sample's without symmetries); and lists
    ``hand_side``, ``object_name``, ``sample_id``.
    All images must have the same size (augment or resize first).
    """
    if len(samples) == 0:
        raise ValueError("collate_samples: got an empty batch")
    sizes = {s.image.shape for s in samples}
    if len(sizes) != 1:
        raise ValueError(f"collate_samples: images differ in size {sorted(sizes)}; crop or resize them to one size "
                         "(e.g. with hoi_training.data.augment) before batching")
    height, width = samples[0].image.shape[:2]
    batch: dict[str, Any] = {
        "image": torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float().div_(255.0),
        "K": torch.from_numpy(np.stack([s.K for s in samples]).astype(np.float32)),
    }
    for name, shape in LABEL_SHAPES.items():
        concrete = tuple(height if d == "H" else width if d == "W" else d for d in shape)
        is_mask = name.endswith("_mask")
        values = [s.root_3d if name == "hand_root_3d" else getattr(s, name) for s in samples]
        stacked = np.zeros((len(samples), *concrete), dtype=np.bool_ if is_mask else np.float32)
        for i, value in enumerate(values):
            if value is not None:
                stacked[i] = value
        batch[name] = torch.from_numpy(stacked)
    for flag in FLAG_FIELDS:
        batch[flag] = torch.tensor([bool(getattr(s, flag)) for s in samples], dtype=torch.bool)
    batch["weight"] = torch.tensor([s.weight for s in samples], dtype=torch.float32)
    batch["is_right"] = torch.tensor([s.hand_side == "right" for s in samples], dtype=torch.bool)
    symmetries = [np.eye(3)[None] if s.object_symmetry_rotations is None else s.object_symmetry_rotations
                  for s in samples]
    padded = np.tile(np.eye(3, dtype=np.float32), (len(samples), max(len(r) for r in symmetries), 1, 1))
    for i, rotations in enumerate(symmetries):
        padded[i, :len(rotations)] = rotations
    batch["object_symmetry_rotations"] = torch.from_numpy(padded)
    batch["hand_side"] = [s.hand_side for s in samples]
    batch["object_name"] = [s.object_name for s in samples]
    batch["sample_id"] = [s.sample_id for s in samples]
    return batch
