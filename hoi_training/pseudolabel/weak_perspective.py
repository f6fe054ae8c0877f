"""Weak-perspective camera fitted in closed form (Semi-Hand-Object, equation 7).

SHO relates a frame's predicted 3D joints to its predicted 2D joints with a
weak-perspective camera ``x = s * P_xy + t`` (one isotropic scale, a 2D translation,
no rotation: the 3D joints are already in the camera's orientation) and then
reprojects the mesh with it to test the prediction's self-consistency. SHO runs an
iterative optimiser (SMPLify) for this; the least-squares problem
``min_{s, t} sum_j w_j |s P_j + t - x_j|^2`` has the exact solution

    s = sum_j w_j (P_j - P_w) . (x_j - x_w) / sum_j w_j |P_j - P_w|^2,   t = x_w - s P_w,

with ``P_w`` and ``x_w`` the weighted means of the xy of the 3D joints and of the 2D
joints, so no iterations, initialisation or convergence test are needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WeakPerspectiveCamera:
    """Batched weak-perspective cameras: pixel = scale * xy + translation.

    ``scale`` has the batch shape (...,) and ``translation`` (..., 2). A scale of NaN
    marks a degenerate fit (all 3D points on top of each other, or zero total weight).
    """

    scale: np.ndarray
    translation: np.ndarray

    def project(self, points_3d: np.ndarray) -> np.ndarray:
        """Project (..., N, 3) points (or (..., N, 2) xy) of the matching batch shape to (..., N, 2) pixels."""
        points = np.asarray(points_3d, dtype=np.float64)
        if points.ndim < 2 or points.shape[-1] not in (2, 3):
            raise ValueError(f"points_3d: expected shape (..., N, 3) or (..., N, 2), got {points.shape}")
        if points.shape[:-2] != np.shape(self.scale):
            raise ValueError(f"points_3d: batch shape {points.shape[:-2]} does not match the cameras' "
                             f"{np.shape(self.scale)}")
        scale = np.asarray(self.scale, dtype=np.float64)[..., None, None]
        return scale * points[..., :2] + np.asarray(self.translation, dtype=np.float64)[..., None, :]


def fit_weak_perspective(points_3d: np.ndarray, points_2d: np.ndarray,
                         weights: np.ndarray | None = None) -> WeakPerspectiveCamera:
    """Least-squares weak-perspective camera mapping the xy of ``points_3d`` onto ``points_2d``.

    points_3d: (..., N, 3) (or (..., N, 2): only x and y are used), any length unit.
    points_2d: (..., N, 2) pixels, the same batch shape and N.
    weights: optional per-point weights (..., N) or (N,), non-negative (e.g. 2D joint
        confidences); None weighs every point equally.

    The scale is not constrained to be positive: a negative scale means the 2D points
    are the 3D points turned by 180 degrees, which the caller may treat as a failed fit.
    """
    p3 = np.asarray(points_3d, dtype=np.float64)
    p2 = np.asarray(points_2d, dtype=np.float64)
    if p3.ndim < 2 or p3.shape[-1] not in (2, 3):
        raise ValueError(f"points_3d: expected shape (..., N, 3), got {p3.shape}")
    if p2.shape != p3.shape[:-1] + (2,):
        raise ValueError(f"points_2d: expected shape {p3.shape[:-1] + (2,)} to match points_3d {p3.shape}, "
                         f"got {p2.shape}")
    if weights is None:
        w = np.ones(p3.shape[:-1])
    else:
        w = np.asarray(weights, dtype=np.float64)
        try:
            w = np.broadcast_to(w, p3.shape[:-1])
        except ValueError:
            raise ValueError(f"weights: expected shape {p3.shape[:-1]} or ({p3.shape[-2]},), got {w.shape}") from None
        if np.any(w < 0) or not np.all(np.isfinite(w)):
            raise ValueError("weights: expected finite non-negative values")
    xy = p3[..., :2]
    total = w.sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_3d = np.einsum("...n,...nd->...d", w, xy) / total[..., None]
        mean_2d = np.einsum("...n,...nd->...d", w, p2) / total[..., None]
        centred_3d = xy - mean_3d[..., None, :]
        centred_2d = p2 - mean_2d[..., None, :]
        numerator = np.einsum("...n,...nd,...nd->...", w, centred_3d, centred_2d)
        denominator = np.einsum("...n,...nd,...nd->...", w, centred_3d, centred_3d)
        scale = np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)
    translation = mean_2d - scale[..., None] * mean_3d
    return WeakPerspectiveCamera(scale=scale, translation=translation)
