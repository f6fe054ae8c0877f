"""Hand joint orders: names, skeleton, and conversions between dataset conventions.

The project's 21-joint order is HO-3D's: MANO's 16 kinematic joints (0 wrist;
1-3 index; 4-6 middle; 7-9 pinky; 10-12 ring; 13-15 thumb) followed by the five
fingertips (16 thumb, 17 index, 18 middle, 19 ring, 20 pinky). The "simple" order
(FreiHAND, manopth) is wrist then thumb, index, middle, ring, pinky, four joints each
from the base outwards. Datasets are converted at their loaders' boundary so every
stage inside the package sees one order.

All converters index the joint axis (``-2``) and therefore work for numpy arrays and
torch tensors of shape ``(..., 21, D)`` alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

ArrayT = TypeVar("ArrayT", np.ndarray, "torch.Tensor")  # numpy or torch, the same type out

NUM_MANO_JOINTS = 16
NUM_HAND_JOINTS = 21

MANO_JOINT_NAMES: tuple[str, ...] = (
    "wrist",
    "index1", "index2", "index3",
    "middle1", "middle2", "middle3",
    "pinky1", "pinky2", "pinky3",
    "ring1", "ring2", "ring3",
    "thumb1", "thumb2", "thumb3",
)
# Parents of MANO's 16 joints (what MANO's kintree_table row 0 holds, root = -1).
MANO_PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)

FINGERTIP_NAMES: tuple[str, ...] = ("thumb_tip", "index_tip", "middle_tip", "ring_tip", "pinky_tip")
HO3D_JOINT_NAMES: tuple[str, ...] = MANO_JOINT_NAMES + FINGERTIP_NAMES
# Each tip hangs off the last MANO joint of its finger.
HO3D_PARENTS: tuple[int, ...] = MANO_PARENTS + (15, 3, 6, 12, 9)
# Bones as (parent, child) pairs, one per non-root joint, in child order.
HO3D_BONES: tuple[tuple[int, int], ...] = tuple((HO3D_PARENTS[c], c) for c in range(1, NUM_HAND_JOINTS))

FINGER_NAMES: tuple[str, ...] = ("thumb", "index", "middle", "ring", "pinky")
# Mesh vertices used as fingertips (thumb, index, middle, ring, pinky): HO-3D's choice.
# FreiHAND uses 744, 320, 443, 555, 672; smplx 744, 320, 443, 554, 671; manopth
# 745, 317, 444, 556, 673. Converting tips between datasets belongs at their loaders.
FINGERTIP_VERTEX_IDS: tuple[int, ...] = (744, 333, 444, 555, 672)
# Joint chains from the wrist to the tip of each finger, in HO-3D order.
HO3D_FINGER_CHAINS: tuple[tuple[int, ...], ...] = (
    (0, 13, 14, 15, 16),
    (0, 1, 2, 3, 17),
    (0, 4, 5, 6, 18),
    (0, 10, 11, 12, 19),
    (0, 7, 8, 9, 20),
)

# simple[i] = ho3d[HO3D_TO_SIMPLE[i]]
HO3D_TO_SIMPLE: tuple[int, ...] = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)
# ho3d[i] = simple[SIMPLE_TO_HO3D[i]]
SIMPLE_TO_HO3D: tuple[int, ...] = tuple(int(i) for i in np.argsort(HO3D_TO_SIMPLE))
SIMPLE_JOINT_NAMES: tuple[str, ...] = tuple(HO3D_JOINT_NAMES[i] for i in HO3D_TO_SIMPLE)

JointOrder = Literal["ho3d", "simple"]
_FROM_HO3D: dict[str, tuple[int, ...]] = {"ho3d": tuple(range(NUM_HAND_JOINTS)), "simple": HO3D_TO_SIMPLE}


def _check_joint_axis(joints, name: str) -> None:
    shape = tuple(joints.shape)
    if len(shape) < 2 or shape[-2] != NUM_HAND_JOINTS:
        raise ValueError(f"{name}: expected shape (..., {NUM_HAND_JOINTS}, D), got {shape}")


def reorder_joints(joints: ArrayT, source: JointOrder, target: JointOrder) -> ArrayT:
    """Convert ``(..., 21, D)`` joints (numpy or torch) from one order to another.

    The HO-3D to HO-3D conversion is the identity, kept explicit so dataset loaders
    state the order they read.
    """
    if source not in _FROM_HO3D or target not in _FROM_HO3D:
        raise ValueError(f"joint order must be one of {sorted(_FROM_HO3D)}, got source={source!r} target={target!r}")
    _check_joint_axis(joints, "joints")
    to_ho3d = np.argsort(_FROM_HO3D[source])
    index = np.asarray(to_ho3d)[list(_FROM_HO3D[target])]
    if np.array_equal(index, np.arange(NUM_HAND_JOINTS)):
        return joints
    return joints[..., index.tolist(), :]


def ho3d_to_simple(joints: ArrayT) -> ArrayT:
    """HO-3D order (MANO + tips) to the simple order (FreiHAND, manopth)."""
    return reorder_joints(joints, "ho3d", "simple")


def simple_to_ho3d(joints: ArrayT) -> ArrayT:
    """Simple order (FreiHAND, manopth) to HO-3D order (MANO + tips)."""
    return reorder_joints(joints, "simple", "ho3d")
