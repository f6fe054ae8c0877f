"""Skeleton measurements of 21-joint hands (HO-3D order), batched numpy.

Shared by the runtime temporal filter and the pseudo-label filter. The biomechanical
check follows Semi-Hand-Object (Liu et al. 2021, section 5.1.1): a pseudo-label is kept
only if every normalised bone length is at least 0.1 and every joint angle lies in
the range 0 to 90 degrees. The paper does not say what bone lengths are normalised
by; here they are divided by the wrist-to-middle-knuckle bone (joints 0 to 4), the
reference length HO-3D's scale alignment uses, so 0.1 means about 1 cm on an adult
hand. The joint angle is the angle between consecutive bones along a finger
(wrist-to-base bone and first phalanx, then each phalanx and the next), 0 when they
are collinear. Both limits are inclusive: a bone of exactly 0.1 or an angle of exactly
90 degrees passes.

Mirror helpers convert left hands to the right-hand model (as HFL-Net does for DexYCB):
a reflection across the y-z plane negates x of points and the y and z components of
every axis-angle rotation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from hoi_perception.config import ConfigError
from hoi_perception.hand_model.joint_orders import (
    FINGER_NAMES,
    HO3D_BONES,
    HO3D_FINGER_CHAINS,
    HO3D_JOINT_NAMES,
    NUM_HAND_JOINTS,
)

if TYPE_CHECKING:
    import torch

ArrayT = TypeVar("ArrayT", np.ndarray, "torch.Tensor")  # numpy or torch, the same type out

# Bone used to normalise lengths: wrist (0) to middle-finger base (4).
REFERENCE_BONE: tuple[int, int] = (0, 4)
_BONE_PARENT = np.array([p for p, _ in HO3D_BONES])
_BONE_CHILD = np.array([c for _, c in HO3D_BONES])
# For each finger, the three (bone into joint, bone out of joint) pairs, as indices into HO3D_BONES.
_BONE_INDEX = {child: i for i, (_, child) in enumerate(HO3D_BONES)}
_ANGLE_BONE_PAIRS = np.array([[(_BONE_INDEX[chain[k]], _BONE_INDEX[chain[k + 1]]) for k in range(1, 4)]
                              for chain in HO3D_FINGER_CHAINS])  # (5, 3, 2)


def _joints(joints: np.ndarray) -> np.ndarray:
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim < 2 or joints.shape[-2:] != (NUM_HAND_JOINTS, 3):
        raise ValueError(f"joints: expected shape (..., {NUM_HAND_JOINTS}, 3) in HO-3D order, got {joints.shape}")
    return joints


def bone_vectors(joints: np.ndarray) -> np.ndarray:
    """(..., 20, 3) child minus parent for the bones in ``joint_orders.HO3D_BONES`` order."""
    joints = _joints(joints)
    return joints[..., _BONE_CHILD, :] - joints[..., _BONE_PARENT, :]


def bone_lengths(joints: np.ndarray) -> np.ndarray:
    """(..., 20) bone lengths, in the joints' unit."""
    return np.linalg.norm(bone_vectors(joints), axis=-1)


def normalized_bone_lengths(joints: np.ndarray) -> np.ndarray:
    """(..., 20) bone lengths divided by the wrist-to-middle-base length (scale free).

    A degenerate hand with a zero reference bone gives NaN for that bone, which
    ``check_biomechanics`` reports as too short."""
    joints = _joints(joints)
    lengths = bone_lengths(joints)
    ref = np.linalg.norm(joints[..., REFERENCE_BONE[1], :] - joints[..., REFERENCE_BONE[0], :], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return lengths / ref[..., None]


def finger_joint_angles(joints: np.ndarray) -> np.ndarray:
    """(..., 5, 3) degrees between consecutive bones of each finger (thumb..pinky),
    at the finger's first, second and third joint; 0 for a straight finger."""
    bones = bone_vectors(joints)
    a = bones[..., _ANGLE_BONE_PAIRS[..., 0], :]
    b = bones[..., _ANGLE_BONE_PAIRS[..., 1], :]
    # The cross product written out: np.cross's axis handling costs more than the arithmetic here,
    # and the runtime's filter checks every frame.
    ax, ay, az = a[..., 0], a[..., 1], a[..., 2]
    bx, by, bz = b[..., 0], b[..., 1], b[..., 2]
    cross = np.sqrt((ay * bz - az * by) ** 2 + (az * bx - ax * bz) ** 2 + (ax * by - ay * bx) ** 2)
    dot = ax * bx + ay * by + az * bz
    return np.degrees(np.arctan2(cross, dot))


@dataclass
class BiomechanicsLimits:
    """Thresholds of SHO's biomechanical constraint (section 5.1.1); limits are inclusive."""

    min_normalized_bone_length: float = 0.1
    min_joint_angle_deg: float = 0.0
    max_joint_angle_deg: float = 90.0

    def validate(self) -> None:
        if self.min_normalized_bone_length < 0:
            raise ConfigError(f"min_normalized_bone_length: expected >= 0, got {self.min_normalized_bone_length}")
        if not 0.0 <= self.min_joint_angle_deg < self.max_joint_angle_deg <= 180.0:
            raise ConfigError("joint angle limits: expected 0 <= min_joint_angle_deg < max_joint_angle_deg <= 180, "
                              f"got {self.min_joint_angle_deg}, {self.max_joint_angle_deg}")


@dataclass
class BiomechanicsCheck:
    """Which of SHO's biomechanical checks each hand fails."""

    normalized_bone_lengths: np.ndarray  # (..., 20)
    joint_angles_deg: np.ndarray  # (..., 5, 3)
    short_bones: np.ndarray  # (..., 20) bool, True where a bone is shorter than allowed
    bad_angles: np.ndarray  # (..., 5, 3) bool, True where an angle is out of range

    @property
    def valid(self) -> np.ndarray | np.bool_:
        """(...,) True for hands that pass every check."""
        return ~(self.short_bones.any(-1) | self.bad_angles.any((-1, -2)))

    def violations(self, index: tuple[int, ...] | int = ()) -> list[str]:
        """Readable list of what hand ``index`` (of the batch dimensions) violates."""
        short = np.asarray(self.short_bones[index])
        angles = np.asarray(self.bad_angles[index])
        if short.ndim != 1:
            raise ValueError(f"index {index!r} must select one hand, selected shape {short.shape[:-1]}")
        out = []
        for b in np.flatnonzero(short):
            p, c = HO3D_BONES[b]
            out.append(f"bone {HO3D_JOINT_NAMES[p]}-{HO3D_JOINT_NAMES[c]} normalised length "
                       f"{float(self.normalized_bone_lengths[index][b]):.3f}")
        for f, k in zip(*np.nonzero(angles)):
            out.append(f"{FINGER_NAMES[f]} joint {k + 1} angle {float(self.joint_angles_deg[index][f, k]):.1f} deg")
        return out


def check_biomechanics(joints: np.ndarray, limits: BiomechanicsLimits | None = None) -> BiomechanicsCheck:
    """Evaluate SHO's bone-length and joint-angle constraints on (..., 21, 3) joints."""
    limits = limits or BiomechanicsLimits()
    limits.validate()
    lengths = normalized_bone_lengths(joints)
    angles = finger_joint_angles(joints)
    short = ~(lengths >= limits.min_normalized_bone_length)  # NaN counts as short
    bad = ~((angles >= limits.min_joint_angle_deg) & (angles <= limits.max_joint_angle_deg))
    return BiomechanicsCheck(normalized_bone_lengths=lengths, joint_angles_deg=angles, short_bones=short,
                             bad_angles=bad)


_POSE_SIGN = (1.0, -1.0, -1.0)
_POINT_SIGN = (-1.0, 1.0, 1.0)


def _signs(value, pattern: tuple[float, float, float], name: str, what: str):
    if value.shape[-1] % 3 != 0:
        raise ValueError(f"{name}: expected the last axis to hold {what} (a multiple of 3), got shape "
                         f"{tuple(value.shape)}")
    signs = np.tile(pattern, value.shape[-1] // 3)
    if hasattr(value, "new_tensor"):  # torch
        return value.new_tensor(signs)
    return signs.astype(np.result_type(value.dtype, np.float32))


def mirror_pose(pose: ArrayT) -> ArrayT:
    """Axis-angle rotations (..., 3k) of one hand as the other hand's: negate y and z.

    Works on global_orient (3), hand_pose (45) or both concatenated (48); numpy or torch.
    """
    return pose * _signs(pose, _POSE_SIGN, "pose", "axis-angle triplets")


def mirror_points(points: ArrayT) -> ArrayT:
    """Points (..., 3) reflected across the y-z plane: negate x; numpy or torch."""
    if points.shape[-1] != 3:
        raise ValueError(f"points: expected shape (..., 3), got {tuple(points.shape)}")
    return points * _signs(points, _POINT_SIGN, "points", "xyz")
