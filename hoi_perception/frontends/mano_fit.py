"""MANO pose (and shape) fitted to 3D hand landmarks: a hand mesh from MediaPipe's world landmarks.

The landmarks give a root-relative skeleton in metres; the project's hand layer
(:class:`~hoi_perception.hand_model.mano.HandModel`, the stand-in or the real MANO) gives a
mesh for a pose and shape. Levenberg-Marquardt on the root-relative joint residuals, with a
small prior pulling finger pose and shape towards zero, finds the pose; the Jacobian is by
finite differences of a NumPy MANO that only poses the joints and the five fingertip
vertices (one batched evaluation per step). A warm start from the previous frame's fit
converges in a few steps. Shape is fitted per track: :class:`HandShapeTrack` averages the
first frames' shapes and then holds it fixed, so the hand's size does not breathe.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from hoi_perception.config import ConfigError
from hoi_perception.hand_model.joint_orders import NUM_HAND_JOINTS
from hoi_perception.hand_model.kinematics import finger_joint_angles
from hoi_perception.hand_model.mano import NUM_BETAS, HandModel, NumpyHandPoser

POSE_DIM = 48  # global orientation + 15 joints, axis-angle
# Joints that fix the palm's orientation for the cold start (HO-3D order): wrist and the
# four finger bases.
PALM_JOINTS = (0, 1, 4, 7, 10)


@dataclass
class ManoFitConfig:
    """Settings of the landmark-to-MANO fit (``estimator.mano_fit`` in perception.yaml)."""

    # Levenberg-Marquardt steps from a cold start and from the previous frame's fit.
    cold_iterations: int = 20
    warm_iterations: int = 5
    # Stop when a step lowers the cost by less than this fraction.
    relative_tolerance: float = 1e-4
    # Prior weights (per unit of axis-angle / beta, squared) against the squared joint residuals
    # in metres. A weaker shape prior lets the shape shrink bones to nothing to follow odd
    # landmarks (then the temporal filter drops the hand for a short bone).
    pose_prior: float = 1e-6
    shape_prior: float = 1e-4
    # Frames whose fitted shapes are averaged into the track's shape, which is then held.
    shape_frames: int = 10
    # Finger joints bent further than this are pushed back (a hinge penalty, metres per radian
    # beyond it): the temporal filter drops hands bent past 90 degrees (SHO's limit).
    max_joint_angle_deg: float = 85.0
    joint_angle_weight: float = 0.5

    def validate(self) -> None:
        if self.cold_iterations < 1 or self.warm_iterations < 1:
            raise ConfigError("mano_fit: cold_iterations and warm_iterations must be >= 1, got "
                              f"{self.cold_iterations}, {self.warm_iterations}")
        if self.pose_prior < 0 or self.shape_prior < 0:
            raise ConfigError(f"mano_fit: priors must be >= 0, got {self.pose_prior}, {self.shape_prior}")
        if self.shape_frames < 1:
            raise ConfigError(f"mano_fit.shape_frames: expected >= 1, got {self.shape_frames}")
        if not 0.0 < self.max_joint_angle_deg <= 180.0 or self.joint_angle_weight < 0:
            raise ConfigError("mano_fit: max_joint_angle_deg must be in (0, 180] and joint_angle_weight >= 0, got "
                              f"{self.max_joint_angle_deg}, {self.joint_angle_weight}")


@dataclass
class ManoFit:
    """A fitted hand: ``pose`` (48,) axis-angle, ``betas`` (10,), root-relative ``joints`` (21, 3) in
    HO-3D order and ``vertices`` (778, 3), metres; ``rms_m`` the joints' RMS residual."""

    pose: np.ndarray
    betas: np.ndarray
    joints: np.ndarray
    vertices: np.ndarray
    rms_m: float
    iterations: int


def _joint_poser(poser: NumpyHandPoser) -> NumpyHandPoser:
    """A copy of ``poser`` that poses only the fingertip vertices (its joints are the same)."""
    ids = poser.tip_vertex_ids
    small = copy.copy(poser)
    small.v_template = poser.v_template[ids]
    small.shapedirs = poser.shapedirs[ids]
    small.posedirs = poser.posedirs.reshape(poser.posedirs.shape[0], -1, 3)[:, ids].reshape(
        poser.posedirs.shape[0], -1)
    small.lbs_weights = poser.lbs_weights[ids]
    small.tip_vertex_ids = np.arange(len(ids))
    return small


def kabsch_rotation(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotation R minimising |R @ source_i - target_i| over centred point sets (N, 3)."""
    a = source - source.mean(0)
    b = target - target.mean(0)
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    return vt.T @ np.diag([1.0, 1.0, d]) @ u.T


def rotation_to_axis_angle(rotation: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(rotation).as_rotvec()


class ManoFitter:
    """Fits one side's hand layer to root-relative 3D joints (HO-3D order, metres)."""

    def __init__(self, hand_model: HandModel, config: ManoFitConfig | None = None) -> None:
        self.config = config or ManoFitConfig()
        self.config.validate()
        self.side = hand_model.side
        self.poser = NumpyHandPoser(hand_model)
        self._joints_only = _joint_poser(self.poser)
        self.step = 1e-5

    def joints(self, params: np.ndarray, betas: np.ndarray | None) -> np.ndarray:
        """Root-relative joints (B, 21, 3) for parameter rows: 48 pose values, then 10 betas when ``betas`` is None."""
        params = np.atleast_2d(params)
        pose = params[:, :POSE_DIM]
        shape = params[:, POSE_DIM:] if betas is None else np.broadcast_to(betas, (len(params), NUM_BETAS))
        _, joints = self._joints_only(pose, shape)
        return joints - joints[:, :1]

    def _residuals(self, params: np.ndarray, target: np.ndarray, betas: np.ndarray | None) -> np.ndarray:
        """(B, R): joint residuals (63), finger joints bent too far (15), then the priors' (45 finger pose
        values, and 10 betas when fitted)."""
        params = np.atleast_2d(params)
        joints = self.joints(params, betas)
        joint_part = (joints - target).reshape(len(params), -1)
        excess = np.radians(finger_joint_angles(joints).reshape(len(params), -1) - self.config.max_joint_angle_deg)
        parts = [joint_part, self.config.joint_angle_weight * np.clip(excess, 0.0, None),
                 np.sqrt(self.config.pose_prior) * params[:, 3:POSE_DIM]]
        if betas is None:
            parts.append(np.sqrt(self.config.shape_prior) * params[:, POSE_DIM:])
        return np.concatenate(parts, axis=1)

    def cold_start(self, target: np.ndarray, betas: np.ndarray | None) -> np.ndarray:
        """Flat hand turned so that its palm joints line up with the target's."""
        shape = np.zeros(NUM_BETAS) if betas is None else betas
        flat = self.joints(np.zeros(POSE_DIM), shape)[0]
        rotation = kabsch_rotation(flat[list(PALM_JOINTS)], target[list(PALM_JOINTS)])
        params = np.zeros(POSE_DIM + (NUM_BETAS if betas is None else 0))
        params[:3] = rotation_to_axis_angle(rotation)
        return params

    def fit(self, target_joints: np.ndarray, previous: ManoFit | None = None,
            betas: np.ndarray | None = None) -> ManoFit:
        """Fit to ``target_joints`` (21, 3) (made root-relative here); from ``previous`` when given.

        ``betas`` given: the shape is held and only the pose is fitted.
        """
        target = np.asarray(target_joints, dtype=np.float64)
        if target.shape != (NUM_HAND_JOINTS, 3) or not np.all(np.isfinite(target)):
            raise ValueError(f"target_joints: expected finite (21, 3) joints, got shape {target.shape}")
        target = target - target[0]
        if previous is not None:
            params = previous.pose.copy() if betas is not None else np.concatenate([previous.pose, previous.betas])
            iterations = self.config.warm_iterations
        else:
            params = self.cold_start(target, betas)
            iterations = self.config.cold_iterations
        params, used = self._levenberg_marquardt(params, target, betas, iterations)
        pose = params[:POSE_DIM]
        shape = params[POSE_DIM:] if betas is None else np.asarray(betas, dtype=np.float64)
        vertices, joints = self.poser(pose[None], shape[None])
        root = joints[0, 0]
        rms = float(np.sqrt(np.mean(np.sum((joints[0] - root - target) ** 2, axis=1))))
        return ManoFit(pose, shape.copy(), joints[0] - root, vertices[0] - root, rms, used)

    def _levenberg_marquardt(self, params: np.ndarray, target: np.ndarray, betas: np.ndarray | None,
                             iterations: int) -> tuple[np.ndarray, int]:
        damping = 1e-3
        n = len(params)
        residual = self._residuals(params, target, betas)[0]
        cost = float(residual @ residual)
        used = 0
        while used < iterations:
            used += 1
            probes = params + np.vstack([np.zeros(n), np.eye(n) * self.step])
            rows = self._residuals(probes, target, betas)
            jacobian = ((rows[1:] - rows[0]) / self.step).T  # (R, n)
            gradient = jacobian.T @ residual
            normal = jacobian.T @ jacobian
            improved = False
            for _ in range(8):
                step = np.linalg.solve(normal + damping * np.diag(np.diag(normal) + 1e-9), -gradient)
                candidate = params + step
                new_residual = self._residuals(candidate, target, betas)[0]
                new_cost = float(new_residual @ new_residual)
                if new_cost < cost:
                    improved = True
                    break
                damping *= 10.0
            if not improved:
                break
            gain = (cost - new_cost) / max(cost, 1e-300)
            params, residual, cost = candidate, new_residual, new_cost
            damping = max(damping / 10.0, 1e-7)
            if gain < self.config.relative_tolerance:
                break
        return params, used


@dataclass
class HandShapeTrack:
    """One tracked hand's shape: free for the first ``shape_frames`` fits, then their mean, held."""

    shape_frames: int
    fitted: list[np.ndarray] = field(default_factory=list)
    previous: ManoFit | None = None

    @property
    def betas(self) -> np.ndarray | None:
        """The held shape, or None while it is still being fitted."""
        if len(self.fitted) < self.shape_frames:
            return None
        return np.mean(self.fitted, axis=0)

    def fit(self, fitter: ManoFitter, target_joints: np.ndarray) -> ManoFit:
        """Fit this frame, warm-started from the track's previous fit."""
        held = self.betas
        previous = self.previous
        if previous is not None and held is not None and len(self.fitted) == self.shape_frames:
            previous = ManoFit(previous.pose, held, previous.joints, previous.vertices, previous.rms_m, 0)
        result = fitter.fit(target_joints, previous, held)
        if held is None:
            self.fitted.append(result.betas)
        self.previous = result
        return result
