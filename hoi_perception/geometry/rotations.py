"""Rotation conversions: batched, differentiable PyTorch plus NumPy counterparts.

The network regresses hand joint rotations in the continuous 6D form of Zhou et al.
(CVPR 2019) and hands MANO axis-angle vectors, so these conversions run inside the
exported graph. They therefore avoid data-dependent Python control flow and
operators without an ONNX opset-17 equivalent (no ``atan2``, no ``linalg.cross``):
every case split is a ``torch.where`` with both branches kept finite, which also
keeps gradients finite at the identity and at half-turns.

Conventions used throughout the package:

* rotation matrices act on column vectors, ``x' = R @ x``;
* 6D form = the first two *columns* of the matrix, ``[R[:, 0], R[:, 1]]``;
* quaternions are scalar-first ``(w, x, y, z)``; functions returning one choose
  ``w >= 0``;
* axis-angle = unit axis times angle in radians, angle in ``[0, pi]``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial.transform import Rotation

_SMALL_ANGLE = 1e-4  # below this (rad), sin(x)/x and friends use their Taylor series


def _check_last_dims(x: torch.Tensor, shape: tuple[int, ...], name: str) -> None:
    if torch.jit.is_tracing():  # shapes are symbolic while exporting; checked in eager runs
        return
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() < len(shape) or tuple(x.shape[x.dim() - len(shape):]) != shape:
        raise ValueError(f"{name}: expected shape (..., {', '.join(map(str, shape))}), got {tuple(x.shape)}")


def _normalize(v: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return v / torch.sqrt((v * v).sum(-1, keepdim=True)).clamp_min(eps)


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cross product written with slices so it exports to any ONNX opset."""
    ax, ay, az = a[..., 0], a[..., 1], a[..., 2]
    bx, by, bz = b[..., 0], b[..., 1], b[..., 2]
    return torch.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], dim=-1)


def rot6d_to_matrix(rot6d: torch.Tensor) -> torch.Tensor:
    """6D rotation (..., 6) -> rotation matrix (..., 3, 3) by Gram-Schmidt.

    The first three values give the first column direction, the next three the
    plane of the second column; the third column is their cross product.
    """
    _check_last_dims(rot6d, (6,), "rot6d")
    a1, a2 = rot6d[..., 0:3], rot6d[..., 3:6]
    b1 = _normalize(a1)
    b2 = _normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1)
    b3 = _cross(b1, b2)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rot6d(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrix (..., 3, 3) -> 6D form (..., 6): its first two columns."""
    _check_last_dims(matrix, (3, 3), "matrix")
    return torch.cat([matrix[..., :, 0], matrix[..., :, 1]], dim=-1)


def _atan2_nonneg(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """atan2(y, x) for y >= 0 and x >= 0 from ``atan`` only (ONNX opset 17 has no Atan2).

    Uses atan(y/x) when x >= y and pi/2 - atan(x/y) otherwise, so the argument of
    atan stays in [0, 1]; the unused branch gets a safe denominator so neither the
    value nor the gradient becomes inf/NaN.
    """
    use_first = x >= y
    safe_x = torch.where(use_first, x, torch.ones_like(x))
    safe_y = torch.where(use_first, torch.ones_like(y), y)
    return torch.where(use_first, torch.atan(y / safe_x), math.pi / 2 - torch.atan(x / safe_y))


def quaternion_to_axis_angle(quaternion: torch.Tensor) -> torch.Tensor:
    """Quaternion (..., 4) as (w, x, y, z), any norm -> axis-angle (..., 3), angle in [0, pi]."""
    _check_last_dims(quaternion, (4,), "quaternion")
    q = _normalize(quaternion)
    # q and -q are the same rotation; take w >= 0 so the angle is at most pi.
    sign = torch.where(q[..., :1] < 0, -torch.ones_like(q[..., :1]), torch.ones_like(q[..., :1]))
    q = q * sign
    w, v = q[..., 0], q[..., 1:]
    sin_half = torch.sqrt((v * v).sum(-1) + 1e-20)
    half = _atan2_nonneg(sin_half, w)
    small = half < _SMALL_ANGLE
    # angle / sin(angle/2) = 2 * half / sin(half) -> 2 (1 + half^2 / 6) for small half.
    safe_sin = torch.where(small, torch.ones_like(sin_half), sin_half)
    scale = torch.where(small, 2.0 * (1.0 + half * half / 6.0), 2.0 * half / safe_sin)
    return v * scale.unsqueeze(-1)


def axis_angle_to_quaternion(axis_angle: torch.Tensor) -> torch.Tensor:
    """Axis-angle (..., 3) -> unit quaternion (..., 4) as (w, x, y, z)."""
    _check_last_dims(axis_angle, (3,), "axis_angle")
    angle = torch.sqrt((axis_angle * axis_angle).sum(-1, keepdim=True) + 1e-20)
    half = 0.5 * angle
    small = angle < _SMALL_ANGLE
    safe_angle = torch.where(small, torch.ones_like(angle), angle)
    # sin(angle/2) / angle -> 1/2 - angle^2 / 48 for small angles.
    sinc_half = torch.where(small, 0.5 - angle * angle / 48.0, torch.sin(half) / safe_angle)
    return torch.cat([torch.cos(half), axis_angle * sinc_half], dim=-1)


def quaternion_to_matrix(quaternion: torch.Tensor) -> torch.Tensor:
    """Quaternion (..., 4) as (w, x, y, z), any non-zero norm -> rotation matrix (..., 3, 3)."""
    _check_last_dims(quaternion, (4,), "quaternion")
    q = _normalize(quaternion)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(q.shape[:-1] + (3, 3))


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrix (..., 3, 3) -> unit quaternion (..., 4) as (w, x, y, z) with w >= 0.

    Shepperd's method: compute the quaternion from each of the four possible
    pivots (w, x, y or z largest) and keep the one with the largest pivot, which is
    well conditioned at every angle including pi. The choice is a one-hot weighted
    sum rather than indexing, so it exports as plain arithmetic.
    """
    _check_last_dims(matrix, (3, 3), "matrix")
    m = matrix
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # 4 * (w^2, x^2, y^2, z^2)
    pivots = torch.stack([
        1 + m00 + m11 + m22,
        1 + m00 - m11 - m22,
        1 - m00 + m11 - m22,
        1 - m00 - m11 + m22,
    ], dim=-1)
    # Row k: 4 * q_k * (w, x, y, z); dividing by 4 q_k = 2 sqrt(pivot_k) gives q.
    candidates = torch.stack([
        torch.stack([pivots[..., 0], m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, pivots[..., 1], m01 + m10, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m01 + m10, pivots[..., 2], m12 + m21], dim=-1),
        torch.stack([m10 - m01, m02 + m20, m12 + m21, pivots[..., 3]], dim=-1),
    ], dim=-2)
    denominators = 2.0 * torch.sqrt(pivots.clamp_min(0.0) + 1e-12)
    candidates = candidates / denominators.unsqueeze(-1)
    best = torch.argmax(pivots, dim=-1, keepdim=True)
    one_hot = (torch.arange(4, device=m.device).expand(pivots.shape) == best).to(m.dtype)
    q = (candidates * one_hot.unsqueeze(-1)).sum(-2)
    q = _normalize(q)
    sign = torch.where(q[..., :1] < 0, -torch.ones_like(q[..., :1]), torch.ones_like(q[..., :1]))
    return q * sign


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrix (..., 3, 3) -> axis-angle (..., 3), angle in [0, pi]; safe near 0 and pi."""
    return quaternion_to_axis_angle(matrix_to_quaternion(matrix))


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Axis-angle (..., 3) -> rotation matrix (..., 3, 3) (Rodrigues, via the unit quaternion)."""
    return quaternion_to_matrix(axis_angle_to_quaternion(axis_angle))


def rot6d_to_axis_angle(rot6d: torch.Tensor) -> torch.Tensor:
    """6D rotation (..., 6) -> axis-angle (..., 3): the network's path to MANO pose vectors."""
    return matrix_to_axis_angle(rot6d_to_matrix(rot6d))


# --------------------------------------------------------------------------- NumPy
# Post-network geometry (PnP, tracking, evaluation) works in float64 NumPy. These
# wrap scipy so the package has one quaternion convention (scalar-first) everywhere;
# scipy itself is scalar-last.


def axis_angle_to_matrix_np(axis_angle: np.ndarray) -> np.ndarray:
    """Axis-angle (..., 3) -> rotation matrices (..., 3, 3), float64."""
    aa = np.asarray(axis_angle, dtype=np.float64)
    if aa.shape[-1:] != (3,):
        raise ValueError(f"axis_angle: expected shape (..., 3), got {aa.shape}")
    return Rotation.from_rotvec(aa.reshape(-1, 3)).as_matrix().reshape(aa.shape[:-1] + (3, 3))


def matrix_to_axis_angle_np(matrix: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> axis-angle (..., 3), angle in [0, pi], float64."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape[-2:] != (3, 3):
        raise ValueError(f"matrix: expected shape (..., 3, 3), got {m.shape}")
    return Rotation.from_matrix(m.reshape(-1, 3, 3)).as_rotvec().reshape(m.shape[:-2] + (3,))


def quaternion_to_matrix_np(quaternion: np.ndarray) -> np.ndarray:
    """Quaternions (..., 4) as (w, x, y, z) -> rotation matrices (..., 3, 3), float64."""
    q = np.asarray(quaternion, dtype=np.float64)
    if q.shape[-1:] != (4,):
        raise ValueError(f"quaternion: expected shape (..., 4) as (w, x, y, z), got {q.shape}")
    xyzw = q.reshape(-1, 4)[:, [1, 2, 3, 0]]
    return Rotation.from_quat(xyzw).as_matrix().reshape(q.shape[:-1] + (3, 3))


def matrix_to_quaternion_np(matrix: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4) as (w, x, y, z), canonical sign.

    Plain NumPy (scipy's ``Rotation`` costs ~50 us per call, and the runtime converts several
    rotations per frame): the quaternion is built from the largest of w, x, y, z, as scipy
    and Shepperd's method do, so it is accurate near every angle. Canonical as scipy's
    ``as_quat(canonical=True)``: w > 0, or at w = 0 the first non-zero of x, y, z positive.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape[-2:] != (3, 3):
        raise ValueError(f"matrix: expected shape (..., 3, 3), got {m.shape}")
    if m.shape == (3, 3):  # the runtime's case: plain floats are ~10x faster than array ops on one matrix
        return np.array(_quaternion_of(*m.reshape(-1).tolist()))
    m = m.reshape(-1, 3, 3)
    m00, m01, m02 = m[:, 0, 0], m[:, 0, 1], m[:, 0, 2]
    m10, m11, m12 = m[:, 1, 0], m[:, 1, 1], m[:, 1, 2]
    m20, m21, m22 = m[:, 2, 0], m[:, 2, 1], m[:, 2, 2]
    trace = m00 + m11 + m22
    # One candidate (w, x, y, z), up to scale, per largest component.
    candidates = np.stack([
        np.stack([m21 - m12, 1.0 + m00 - m11 - m22, m01 + m10, m02 + m20], -1),
        np.stack([m02 - m20, m01 + m10, 1.0 - m00 + m11 - m22, m12 + m21], -1),
        np.stack([m10 - m01, m02 + m20, m12 + m21, 1.0 - m00 - m11 + m22], -1),
        np.stack([1.0 + trace, m21 - m12, m02 - m20, m10 - m01], -1),
    ], axis=1)  # (N, 4 candidates, 4)
    choice = np.argmax(np.stack([m00, m11, m22, trace], -1), axis=-1)
    q = candidates[np.arange(len(m)), choice]
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    # Canonical sign: the first non-zero of (w, x, y, z) positive.
    nonzero = q != 0.0
    first = np.take_along_axis(q, np.argmax(nonzero, axis=-1)[:, None], axis=-1)
    q = np.where(first < 0, -q, q)
    return q.reshape(np.asarray(matrix).shape[:-2] + (4,))


def _quaternion_of(m00: float, m01: float, m02: float, m10: float, m11: float, m12: float, m20: float,
                   m21: float, m22: float) -> tuple[float, float, float, float]:
    """One matrix's canonical (w, x, y, z), the same construction as :func:`matrix_to_quaternion_np`."""
    trace = m00 + m11 + m22
    largest = max(m00, m11, m22, trace)  # ties go to the first, as np.argmax does
    if largest == m00:
        q = (m21 - m12, 1.0 + m00 - m11 - m22, m01 + m10, m02 + m20)
    elif largest == m11:
        q = (m02 - m20, m01 + m10, 1.0 - m00 + m11 - m22, m12 + m21)
    elif largest == m22:
        q = (m10 - m01, m02 + m20, m12 + m21, 1.0 - m00 - m11 + m22)
    else:
        q = (1.0 + trace, m21 - m12, m02 - m20, m10 - m01)
    norm = math.sqrt(sum(c * c for c in q))
    first = next((c for c in q if c != 0.0), 1.0)
    sign = -1.0 if first < 0 else 1.0
    return tuple(sign * c / norm for c in q)  # type: ignore[return-value]


def nearest_rotation_np(matrix: np.ndarray) -> np.ndarray:
    """Closest proper rotation (Frobenius norm) to a 3x3 matrix, via SVD with det fixed to +1."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (3, 3):
        raise ValueError(f"matrix: expected shape (3, 3), got {m.shape}")
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    return u @ np.diag([1.0, 1.0, d]) @ vt


def rotation_angle_deg_np(rotation_a: np.ndarray, rotation_b: np.ndarray) -> float:
    """Angle (degrees) of the relative rotation A B^T: arccos((trace - 1) / 2), clipped."""
    a = np.asarray(rotation_a, dtype=np.float64).reshape(3, 3)
    b = np.asarray(rotation_b, dtype=np.float64).reshape(3, 3)
    cos = (np.trace(a @ b.T) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
