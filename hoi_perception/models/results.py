"""Per-hand and per-object results of one frame, in NumPy and camera units.

These are what the pipeline hands to publishers, trackers and evaluation: the
network's tensors after post-processing (un-mirroring of left hands, camera-frame
hand translation, PnP for the object). Arrays are float64; the constructors check
shapes so that a wrong array fails where it is made, not in a ROS callback later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

HandSide = Literal["right", "left"]


def _as_array(value: np.ndarray, shape: tuple[int, ...], name: str, owner: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.shape != shape:
        raise ValueError(f"{owner}.{name}: expected shape {shape}, got {array.shape}")
    return array


@dataclass
class HandResult:
    """One hand in the camera frame (OpenCV optical axes, metres, full-image pixels).

    ``pose`` is MANO's 48-D axis-angle vector (global orientation then 15 joints) of
    a ``side`` hand model; ``joints_cam`` are the 21 joints in HO-3D order (MANO's 16
    then the thumb, index, middle, ring and pinky tips). ``joint_confidence`` is the
    per-joint heatmap confidence in [0, 1]; ``confidence`` the detection score.
    """

    side: HandSide
    pose: np.ndarray
    betas: np.ndarray
    joints_cam: np.ndarray
    vertices_cam: np.ndarray
    joints2d: np.ndarray
    box: np.ndarray
    joint_confidence: np.ndarray
    confidence: float

    def __post_init__(self) -> None:
        if self.side not in ("right", "left"):
            raise ValueError(f"HandResult.side: expected 'right' or 'left', got {self.side!r}")
        self.pose = _as_array(self.pose, (48,), "pose", "HandResult")
        self.betas = _as_array(self.betas, (10,), "betas", "HandResult")
        self.joints_cam = _as_array(self.joints_cam, (21, 3), "joints_cam", "HandResult")
        self.vertices_cam = _as_array(self.vertices_cam, (778, 3), "vertices_cam", "HandResult")
        self.joints2d = _as_array(self.joints2d, (21, 2), "joints2d", "HandResult")
        self.box = _as_array(self.box, (4,), "box", "HandResult")
        self.joint_confidence = _as_array(self.joint_confidence, (21,), "joint_confidence", "HandResult")
        self.confidence = float(self.confidence)

    @property
    def root_cam(self) -> np.ndarray:
        """Wrist position (3,) in the camera frame."""
        return self.joints_cam[0]


@dataclass
class ObjectResult:
    """One object's 6-DoF pose in the camera frame: x_cam = rotation @ x_model + translation.

    ``control_points_2d`` are the 21 voted bounding-box control points in full-image
    pixels (8 corners, 12 edge midpoints, centre). When PnP failed, ``success`` is
    False, ``failure_reason`` says why, and ``rotation``/``translation`` are NaN: a
    failed pose is never reported as identity.
    """

    name: str
    rotation: np.ndarray
    translation: np.ndarray
    control_points_2d: np.ndarray
    box: np.ndarray
    pnp_inliers: int
    confidence: float
    success: bool
    failure_reason: str = ""

    def __post_init__(self) -> None:
        self.rotation = _as_array(self.rotation, (3, 3), "rotation", "ObjectResult")
        self.translation = _as_array(self.translation, (3,), "translation", "ObjectResult")
        self.control_points_2d = _as_array(self.control_points_2d, (21, 2), "control_points_2d", "ObjectResult")
        self.box = _as_array(self.box, (4,), "box", "ObjectResult")
        self.pnp_inliers = int(self.pnp_inliers)
        self.confidence = float(self.confidence)
        self.success = bool(self.success)
        if self.success and not (np.all(np.isfinite(self.rotation)) and np.all(np.isfinite(self.translation))):
            raise ValueError("ObjectResult: success=True needs a finite rotation and translation")
        if not self.success and not self.failure_reason:
            raise ValueError("ObjectResult: a failed pose needs a failure_reason")

    @property
    def pose_matrix(self) -> np.ndarray:
        """4x4 homogeneous model-to-camera transform."""
        T = np.eye(4)
        T[:3, :3] = self.rotation
        T[:3, 3] = self.translation
        return T
