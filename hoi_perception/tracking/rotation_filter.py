"""Rotation smoothing on SO(3) and pose smoothing on SE(3).

Rotations cannot be smoothed component by component: q and -q are the same
rotation, so averaging quaternion components across a sign flip lands near the
zero quaternion, and axis-angle vectors jump where the angle wraps at pi. Here
every incoming quaternion is first moved to the hemisphere of the previous output,
the step to it is taken as a rotation vector (the log map of the relative
rotation), and the One Euro rule picks what fraction of that step to take:

    delta = log(q_t * conj(q_hat))          spatial rotation vector, |delta| <= pi
    speed = low-pass(delta / Te)             angular velocity, rad/s
    alpha = alpha(min_cutoff + beta * |speed|)
    q_hat = exp(alpha * delta) * q_hat      (a slerp from q_hat towards q_t by alpha)

Quaternions are scalar-first (w, x, y, z), the package's convention (geometry/rotations.py);
ROS messages and scipy are scalar-last, so convert at those boundaries.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation

from hoi_perception.geometry.rotations import matrix_to_quaternion_np
from hoi_perception.tracking.one_euro import FilterState, OneEuroConfig, OneEuroFilter, smoothing_factor

_SMALL_ANGLE = 1e-9
IDENTITY_QUATERNION = np.array([1.0, 0.0, 0.0, 0.0])


def quaternion_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b of scalar-first quaternions (..., 4), broadcasting."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    aw, ax, ay, az = a[..., 0], a[..., 1], a[..., 2], a[..., 3]
    bw, bx, by, bz = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return np.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], axis=-1)


def quaternion_conjugate(q: np.ndarray) -> np.ndarray:
    """Inverse of a unit quaternion (..., 4)."""
    q = np.array(q, dtype=np.float64)
    q[..., 1:] *= -1.0
    return q


def quaternion_exp(rotvec: np.ndarray) -> np.ndarray:
    """Unit quaternion (..., 4) of the rotation vector (..., 3) (axis times angle in rad)."""
    rotvec = np.asarray(rotvec, dtype=np.float64)
    angle = np.linalg.norm(rotvec, axis=-1, keepdims=True)
    half = 0.5 * angle
    # sin(angle/2)/angle -> 1/2 as angle -> 0
    scale = np.where(angle > _SMALL_ANGLE, np.sin(half) / np.maximum(angle, _SMALL_ANGLE), 0.5)
    return np.concatenate([np.cos(half), rotvec * scale], axis=-1)


def quaternion_log(q: np.ndarray) -> np.ndarray:
    """Rotation vector (..., 3) of the unit quaternion (..., 4), angle in [0, pi]."""
    q = align_quaternion_sign(q, IDENTITY_QUATERNION)
    w, vector = q[..., :1], q[..., 1:]
    sine = np.linalg.norm(vector, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(sine, w)
    scale = np.where(sine > _SMALL_ANGLE, angle / np.maximum(sine, _SMALL_ANGLE), 2.0 / np.maximum(w, _SMALL_ANGLE))
    return vector * scale


def align_quaternion_sign(q: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Return q or -q, whichever lies in the hemisphere of ``reference`` (non-negative dot product)."""
    q = np.asarray(q, dtype=np.float64)
    dot = np.sum(q * np.asarray(reference, dtype=np.float64), axis=-1, keepdims=True)
    return np.where(dot < 0.0, -q, q)


def rotation_angle_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Geodesic angle (rad) between unit quaternions a and b (..., 4), sign-invariant."""
    dot = np.abs(np.sum(np.asarray(a, dtype=np.float64) * np.asarray(b, dtype=np.float64), axis=-1))
    return 2.0 * np.arccos(np.clip(dot, 0.0, 1.0))


def normalized_quaternion(q: np.ndarray, name: str = "quaternion") -> np.ndarray:
    """Check shape (..., 4) and finiteness and return q scaled to unit length."""
    q = np.asarray(q, dtype=np.float64)
    if q.ndim == 0 or q.shape[-1] != 4:
        raise ValueError(f"{name}: expected quaternions of shape (..., 4) in (w, x, y, z) order, got {q.shape}")
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if not np.all(np.isfinite(q)) or np.any(norm < 1e-6):
        raise ValueError(f"{name}: quaternions must be finite and non-zero")
    return q / norm


def rotation_matrix_to_quaternion(rotation: np.ndarray, name: str = "rotation", tolerance: float = 1e-3) -> np.ndarray:
    """Scalar-first quaternion of a proper rotation matrix (..., 3, 3).

    Matrices off orthonormal by more than ``tolerance`` (or reflections) are refused
    rather than silently projected: they mean an upstream bug.
    """
    rotation = np.asarray(rotation, dtype=np.float64)
    if rotation.ndim < 2 or rotation.shape[-2:] != (3, 3):
        raise ValueError(f"{name}: expected rotation matrices of shape (..., 3, 3), got {rotation.shape}")
    if not np.all(np.isfinite(rotation)):
        raise ValueError(f"{name}: rotation matrix contains NaN or infinity")
    gram_error = np.abs(np.swapaxes(rotation, -1, -2) @ rotation - np.eye(3)).max()
    if gram_error > tolerance or np.any(np.linalg.det(rotation) <= 0):
        raise ValueError(f"{name}: not a proper rotation matrix (|R^T R - I| = {gram_error:.2e}, "
                         f"det = {np.linalg.det(rotation)})")
    return matrix_to_quaternion_np(rotation)


def quaternion_to_rotation_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) of scalar-first unit quaternions (..., 4)."""
    q = np.asarray(q, dtype=np.float64)
    return Rotation.from_quat(q.reshape(-1, 4)[:, [1, 2, 3, 0]]).as_matrix().reshape(q.shape[:-1] + (3, 3))


class SO3OneEuroFilter(FilterState):
    """One Euro filter for a fixed-shape batch of rotations (..., 4), in the tangent space.

    Each rotation of the batch has its own adaptive cutoff, driven by the norm of its
    angular velocity (rad/s), so ``beta`` is in s/rad. Outputs stay in the hemisphere
    of the previous output, so a stream of filtered quaternions never flips sign.
    """

    def __call__(self, quaternions: np.ndarray, stamp: float) -> np.ndarray:
        """Filter rotations (..., 4) observed at ``stamp`` (s); returns unit quaternions of the same shape."""
        q = normalized_quaternion(quaternions, "SO3OneEuroFilter sample")
        stamp = float(stamp)
        if not math.isfinite(stamp):
            raise ValueError(f"SO3OneEuroFilter: timestamp must be finite, got {stamp}")
        if self._value is not None and q.shape != self._value.shape:
            raise ValueError(f"SO3OneEuroFilter: sample shape {q.shape} differs from the filtered shape "
                             f"{self._value.shape}; call reset() to filter a different signal")
        if self._stamp is not None and stamp <= self._stamp:
            self.reset()
        if self._value is None:
            # Start on the w >= 0 hemisphere so the output sign is deterministic.
            self._value = align_quaternion_sign(q, IDENTITY_QUATERNION)
            self._speed = np.zeros(q.shape[:-1] + (3,))
            self._stamp = stamp
            return self._value.copy()
        assert self._stamp is not None and self._speed is not None  # set together with self._value
        dt = stamp - self._stamp
        q = align_quaternion_sign(q, self._value)
        delta = quaternion_log(quaternion_multiply(q, quaternion_conjugate(self._value)))
        self._speed = self._speed + smoothing_factor(self.config.derivative_cutoff_hz, dt) * (delta / dt - self._speed)
        cutoff = self.config.min_cutoff_hz + self.config.beta * np.linalg.norm(self._speed, axis=-1, keepdims=True)
        step = quaternion_exp(smoothing_factor(cutoff, dt) * delta)
        value = quaternion_multiply(step, self._value)
        self._value = value / np.linalg.norm(value, axis=-1, keepdims=True)
        self._stamp = stamp
        return self._value.copy()


class SE3OneEuroFilter:
    """Rigid pose smoothing: rotation on SO(3) (tangent-space One Euro), translation with a One Euro filter."""

    def __init__(self, rotation: OneEuroConfig, translation: OneEuroConfig) -> None:
        self._rotation = SO3OneEuroFilter(rotation)
        self._translation = OneEuroFilter(translation)

    @property
    def initialized(self) -> bool:
        return self._rotation.initialized

    @property
    def value(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The last output (rotation matrix (3, 3), translation (3,)), or None before the first sample."""
        rotation, translation = self._rotation.value, self._translation.value
        if rotation is None or translation is None:
            return None
        return quaternion_to_rotation_matrix(rotation), translation

    def reset(self) -> None:
        self._rotation.reset()
        self._translation.reset()

    def __call__(self, rotation: np.ndarray, translation: np.ndarray, stamp: float) -> tuple[np.ndarray, np.ndarray]:
        """Filter the pose (rotation matrix (3, 3), translation (3,)) observed at ``stamp`` (s)."""
        translation = np.asarray(translation, dtype=np.float64)
        if translation.shape != (3,) or not np.all(np.isfinite(translation)):
            raise ValueError(f"SE3OneEuroFilter: translation must be 3 finite numbers, got {translation!r}")
        q = rotation_matrix_to_quaternion(rotation, "SE3OneEuroFilter rotation")
        q_out = self._rotation(q, stamp)
        t_out = self._translation(translation, stamp)
        return quaternion_to_rotation_matrix(q_out), t_out
