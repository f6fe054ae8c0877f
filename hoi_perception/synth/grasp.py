"""Grasp synthesis: place an object against the palm and close the fingers onto its surface.

Everything is derived from the hand model through its forward pass alone (rest joints,
which vertices each finger moves, the palm side), so real MANO files and the stand-in
produce grasps through the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import ConvexHull
from scipy.spatial.transform import Rotation

# Finger chains in the 21-joint HO-3D order: (MCP, PIP, DIP, tip) for index, middle, pinky, ring, thumb.
FINGER_CHAINS = ((1, 2, 3, 17), (4, 5, 6, 18), (7, 8, 9, 20), (10, 11, 12, 19), (13, 14, 15, 16))
# Maximum flexion per finger joint (degrees) when a finger closes completely.
FINGER_MAX_FLEXION = np.array([85.0, 100.0, 75.0])
THUMB_MAX_FLEXION = np.array([50.0, 45.0, 65.0])
CLOSURE_STEPS = 33


@dataclass(frozen=True)
class ConvexSDF:
    """Signed distance to a convex hull: exact inside, a lower bound outside."""

    normals: np.ndarray  # (P, 3) outward unit normals
    offsets: np.ndarray  # (P,)  n.x + d = 0 on each face

    @classmethod
    def from_points(cls, points: np.ndarray) -> ConvexSDF:
        hull = ConvexHull(np.asarray(points, dtype=np.float64))
        return cls(hull.equations[:, :3].copy(), hull.equations[:, 3].copy())

    def __call__(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points) @ self.normals.T + self.offsets).max(axis=-1)


@dataclass(frozen=True)
class HandGeometry:
    """What grasping needs to know about one hand model with one shape."""

    side: str
    betas: np.ndarray  # (10,)
    rest_joints: np.ndarray  # (21, 3) at zero pose, no translation
    rest_vertices: np.ndarray  # (778, 3) at zero pose, no translation
    palm_normal: np.ndarray  # unit vector out of the palm
    finger_direction: np.ndarray  # unit vector wrist -> middle knuckle
    finger_vertices: tuple[np.ndarray, ...]  # per finger (index, middle, pinky, ring, thumb): vertex ids it moves
    flexion_axes: np.ndarray  # (15, 3) rotation axis per pose joint 1..15 that curls toward the palm


def _forward(hand_model, pose45: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (B,778,3) and joints (B,21,3) for a batch of articulations, no global motion."""
    pose45 = np.atleast_2d(pose45)
    batch = pose45.shape[0]
    with torch.no_grad():
        out = hand_model(
            global_orient=torch.zeros(batch, 3),
            hand_pose=torch.as_tensor(pose45, dtype=torch.float32),
            betas=torch.as_tensor(np.broadcast_to(betas, (batch, 10)).copy(), dtype=torch.float32),
        )
    return out.vertices.numpy().astype(np.float64), out.joints.numpy().astype(np.float64)


def hand_geometry(hand_model, side: str, betas: np.ndarray) -> HandGeometry:
    """Measure the palm frame, finger vertex sets and flexion axes of a hand model."""
    zero = np.zeros(45)
    verts0, joints = _forward(hand_model, zero, betas)
    verts0, joints = verts0[0], joints[0]

    # Which vertices each finger moves: bend its first joint and compare.
    probes = np.zeros((5, 45))
    for f, chain in enumerate(FINGER_CHAINS):
        probes[f, (chain[0] - 1) * 3:(chain[0] - 1) * 3 + 3] = [0.3, 0.3, 0.3]
    moved_verts, _ = _forward(hand_model, probes, betas)
    moved = np.linalg.norm(moved_verts - verts0[None], axis=-1) > 1e-5
    finger_vertices = tuple(np.flatnonzero(moved[f]) for f in range(5))

    wrist, middle_mcp = joints[0], joints[4]
    finger_direction = _unit(middle_mcp - wrist)
    normal = _unit(np.cross(joints[1] - wrist, joints[10] - wrist))
    # Anatomy fixes the sign: seen with the palm facing the viewer and fingers up, a right
    # thumb lies along finger_direction x palm_normal, a left thumb opposite.
    thumb_side = np.dot(joints[15] - middle_mcp, np.cross(finger_direction, normal))
    if (thumb_side < 0) == (side == "right"):
        normal = -normal
    normal = _unit(normal - np.dot(normal, finger_direction) * finger_direction)

    axes = np.zeros((15, 3))
    for chain in FINGER_CHAINS:
        for joint, child in zip(chain[:3], chain[1:]):
            bone = joints[child] - joints[joint]
            axes[joint - 1] = _unit(np.cross(bone, normal))  # rotating about it moves the child toward the palm
    return HandGeometry(side, np.asarray(betas, dtype=np.float64), joints, verts0, normal, finger_direction,
                        finger_vertices, axes)


def articulation(geometry: HandGeometry, closure: np.ndarray, spread: np.ndarray | None = None) -> np.ndarray:
    """MANO hand pose (B, 45) for per-finger closures (B, 5) in [0, 1] and optional spreads (5,) in radians."""
    closure = np.atleast_2d(closure)
    pose = np.zeros((closure.shape[0], 15, 3))
    for f, chain in enumerate(FINGER_CHAINS):
        limits = np.deg2rad(THUMB_MAX_FLEXION if f == 4 else FINGER_MAX_FLEXION)
        for k, joint in enumerate(chain[:3]):
            pose[:, joint - 1] = closure[:, f, None] * limits[k] * geometry.flexion_axes[joint - 1]
        if spread is not None:
            pose[:, chain[0] - 1] += spread[f] * geometry.palm_normal
    return pose.reshape(-1, 45)


@dataclass(frozen=True)
class Grasp:
    """A hand holding an object, in the hand model's own frame (zero global pose)."""

    side: str
    betas: np.ndarray  # (10,)
    contact_closure: np.ndarray  # (5,) per-finger closure at which each finger touches the object
    spread: np.ndarray  # (5,) radians
    object_rotation: np.ndarray  # (3, 3) object -> hand frame
    object_translation: np.ndarray  # (3,)
    centre: np.ndarray  # (3,) a point between palm and object, the pivot of the motion

    def hand_pose(self, geometry: HandGeometry, closure_scale: float | np.ndarray) -> np.ndarray:
        scale = np.asarray(closure_scale, dtype=np.float64).reshape(-1, 1)
        return articulation(geometry, scale * self.contact_closure[None], self.spread)


def synthesize_grasp(hand_model, geometry: HandGeometry, object_vertices: np.ndarray, rng: np.random.Generator,
                     penetration_tolerance: float = 0.002) -> Grasp:
    """Put the object against the palm in a power-grasp-like orientation and close each finger until contact."""
    n, d = geometry.palm_normal, geometry.finger_direction
    lateral = np.cross(n, d)
    # Long axis across the palm (fingers wrap around it), with random tilt and roll.
    extents = object_vertices.max(0) - object_vertices.min(0)
    order = np.argsort(extents)[::-1]
    basis_obj = np.eye(3)[order]  # rows: object long, middle, short axes
    basis_hand = np.stack([lateral, d, n])
    R = basis_hand.T @ basis_obj
    if np.linalg.det(R) < 0:
        R[:, 2] *= -1
    tilt = Rotation.from_rotvec(n * rng.uniform(-0.45, 0.45)) * Rotation.from_rotvec(d * rng.uniform(-0.3, 0.3))
    spin = Rotation.from_rotvec(lateral * rng.uniform(-np.pi, np.pi))  # about the object's long axis
    R = (tilt * spin).as_matrix() @ R

    joints = geometry.rest_joints
    palm_point = joints[0] + rng.uniform(0.6, 0.85) * (joints[4] - joints[0]) + lateral * rng.uniform(-0.01, 0.01)
    posed = object_vertices @ R.T
    flat_verts, _ = _forward(hand_model, np.zeros(45), geometry.betas)
    hand_surface = flat_verts[0]
    # Start clear of the open hand, then slide the object along -n until it rests on it
    # (palm, or the opposed thumb where that sticks out further) with a small gap. The
    # convex SDF never overestimates the distance, so no step overshoots.
    gap = rng.uniform(0.001, 0.004)
    t = palm_point + n * (float((-posed @ n).max()) + 0.05)
    for _ in range(30):
        sdf = ConvexSDF.from_points(posed + t)
        clearance = float(sdf(hand_surface).min()) - gap
        if abs(clearance) < 2e-4:
            break
        t = t - n * clearance
    sdf = ConvexSDF.from_points(posed + t)

    spread = rng.uniform(-0.08, 0.08, 5)
    contact = _close_fingers(hand_model, geometry, sdf, spread, penetration_tolerance)
    centre = 0.5 * (palm_point + t)
    return Grasp(geometry.side, geometry.betas, contact, spread, R, t, centre)


def _close_fingers(hand_model, geometry: HandGeometry, sdf: ConvexSDF, spread: np.ndarray,
                   tolerance: float) -> np.ndarray:
    """Per finger, the largest closure before any of its vertices sink deeper than ``tolerance``."""
    steps = np.linspace(0.0, 1.0, CLOSURE_STEPS)
    closures = np.repeat(steps[:, None], 5, axis=1)
    verts, _ = _forward(hand_model, articulation(geometry, closures, spread), geometry.betas)
    contact = np.ones(5)
    for f, ids in enumerate(geometry.finger_vertices):
        if len(ids) == 0:
            continue
        depth = sdf(verts[:, ids].reshape(-1, 3)).reshape(len(steps), len(ids)).min(axis=1)
        hits = np.flatnonzero(depth < -tolerance)
        if len(hits):
            first = hits[0]
            # Interpolate between the last free step and the first penetrating one.
            if first == 0:
                contact[f] = 0.0
            else:
                d0, d1 = depth[first - 1], depth[first]
                w = (d0 + tolerance) / max(d0 - d1, 1e-9)
                contact[f] = steps[first - 1] + np.clip(w, 0.0, 1.0) * (steps[first] - steps[first - 1])
    return contact


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v)
    if norm < 1e-12:
        raise ValueError("degenerate hand geometry: zero-length direction")
    return v / norm
