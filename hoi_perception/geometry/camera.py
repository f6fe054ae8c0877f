"""Pinhole camera helpers in the OpenCV optical convention (x right, y down, z forward)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of an undistorted image of ``width`` x ``height`` pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the conventional name
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @classmethod
    def from_matrix(cls, K: np.ndarray, width: int, height: int) -> Intrinsics:  # noqa: N803
        K = np.asarray(K, dtype=np.float64).reshape(3, 3)
        if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f"camera matrix must have positive finite focal lengths, got {K.tolist()}")
        return cls(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), int(width), int(height))

    def scaled(self, sx: float, sy: float | None = None) -> Intrinsics:
        """Intrinsics of the same camera after resizing the image by (sx, sy)."""
        sy = sx if sy is None else sy
        return Intrinsics(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy,
                          round(self.width * sx), round(self.height * sy))


def project(points: np.ndarray, K: np.ndarray) -> np.ndarray:  # noqa: N803
    """Project camera-frame points (..., 3) to pixels (..., 2)."""
    points = np.asarray(points, dtype=np.float64)
    uvw = points @ np.asarray(K, dtype=np.float64).T
    return uvw[..., :2] / uvw[..., 2:3]


def crop_intrinsics(K: np.ndarray, box: np.ndarray, out_size: int) -> np.ndarray:  # noqa: N803
    """Camera matrix of the square crop ``box`` = (x0, y0, x1, y1) resized to ``out_size``.

    A pixel u in the full image maps to (u - x0) * out_size / (x1 - x0) in the crop.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    sx = out_size / (x1 - x0)
    sy = out_size / (y1 - y0)
    A = np.array([[sx, 0.0, -x0 * sx], [0.0, sy, -y0 * sy], [0.0, 0.0, 1.0]])
    return A @ np.asarray(K, dtype=np.float64)


def box_from_points(points_2d: np.ndarray) -> np.ndarray:
    """Tight (x0, y0, x1, y1) box around 2D points (N, 2)."""
    p = np.asarray(points_2d, dtype=np.float64).reshape(-1, 2)
    return np.concatenate([p.min(0), p.max(0)])


def square_box(box: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Square box with the same centre, side = scale * max(width, height)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = max(x1 - x0, y1 - y0) * scale / 2
    return np.array([cx - half, cy - half, cx + half, cy + half])


def box_union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])], dtype=np.float64)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / area) if area > 0 else 0.0
