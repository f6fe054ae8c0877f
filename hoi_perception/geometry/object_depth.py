"""The object's depth from its 2D box: a correction of PnP's depth.

PnP on the voted control points places the object well sideways (the votes' centroid is
right to a few pixels) but reads its depth from how far apart the votes lie. The object
head's votes for far-apart control points are pulled towards the object's centre, most
for small objects whose turn the image barely shows (a mug's votes spread half as wide as
the truth, a soup can's two thirds, on the validation split), and PnP then puts the object
too far away (by a median of 5 cm for the boxes to 44 cm for the mug there).

A box around the object's silhouette (the detector's, or a label's) measures its projected
size directly. :func:`box_depth_scale` finds the factor ``s`` for the translation, which
moves the object along the ray through its origin, that gives the posed model's vertices
a projected box of the box's size (square root of its area, both cut to the image). The
rotation is PnP's. The projected size shrinks monotonically as ``s`` grows, nearly as
``1 / s``: a few steps that assume exactly that, bracketed by bisection, find it. A box
that asks for a factor outside ``[min_scale, max_scale]`` contradicts the votes; that is
reported, and the pose left as PnP made it for the gates to judge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hoi_perception.config import ConfigError


@dataclass
class ObjectDepthConfig:
    """``estimator.object_depth``: whether the object's depth comes from its box, and how far it may move.

    ``hoi-train eval`` follows the runtime's setting."""

    from_box: bool = True
    # The range of factors a box may apply, beyond which box and votes contradict each other
    # (PnP's depth then stays, and the gates judge the pose against the box). The votes'
    # pull towards the centre puts PnP too far: on the validation split (seed 200) the boxes
    # asked for 0.24-1.33, and every pose the factor made right had one in 0.52-1.33.
    min_scale: float = 0.4   # at most 2.5x nearer ...
    max_scale: float = 1.5   # ... or 1.5x farther than PnP put it

    def validate(self) -> None:
        if not (math.isfinite(self.min_scale) and math.isfinite(self.max_scale)
                and 0.0 < self.min_scale < 1.0 < self.max_scale):
            raise ConfigError(f"object_depth: need 0 < min_scale < 1 < max_scale, got {self.min_scale}, "
                              f"{self.max_scale}")


@dataclass(frozen=True)
class BoxDepthResult:
    """``scale`` multiplies the translation; ``success`` False (scale 1) says why not in ``reason``."""

    scale: float
    success: bool
    reason: str = ""


def _projected_sizes(points_cam: np.ndarray, ray: np.ndarray, scales: np.ndarray, K: np.ndarray,  # noqa: N803
                     image_size: tuple[int, int] | None) -> np.ndarray:
    """Square root of the area of the box around the points moved by ``(s - 1) * ray``, per scale."""
    moved = points_cam[None] + (scales[:, None, None] - 1.0) * ray  # (S, N, 3)
    uv = moved[..., :2] / moved[..., 2:3] * np.array([K[0, 0], K[1, 1]]) + K[:2, 2]
    low, high = uv.min(axis=1), uv.max(axis=1)  # (S, 2)
    if image_size is not None:
        limit = np.asarray(image_size, dtype=np.float64)
        low, high = np.clip(low, 0.0, limit), np.clip(high, 0.0, limit)
    extent = np.clip(high - low, 1e-6, None)
    return np.sqrt(extent[:, 0] * extent[:, 1])


def box_depth_scale(vertices: np.ndarray, rotation: np.ndarray, translation: np.ndarray, box: np.ndarray,
                    K: np.ndarray, image_size: tuple[int, int] | None = None,  # noqa: N803
                    config: ObjectDepthConfig | None = None, tolerance: float = 1e-4,
                    iterations: int = 30) -> BoxDepthResult:
    """The factor for ``translation`` that makes the object's posed ``vertices`` (N, 3; the extreme
    points of its silhouette are among them) project to the size of ``box`` (x1, y1, x2, y2 pixels);
    ``image_size`` (width, height) cuts the projection as the box was cut."""
    config = config or ObjectDepthConfig()
    K = np.asarray(K, dtype=np.float64)  # noqa: N806
    box = np.asarray(box, dtype=np.float64).reshape(-1)
    translation = np.asarray(translation, dtype=np.float64).reshape(3)
    if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
        return BoxDepthResult(1.0, False, f"box {box.tolist()} is not a finite box with x2 > x1 and y2 > y1")
    if not (np.all(np.isfinite(rotation)) and np.all(np.isfinite(translation))) or translation[2] <= 0:
        return BoxDepthResult(1.0, False, "the pose is not finite or not in front of the camera")
    points_cam = np.asarray(vertices, dtype=np.float64) @ np.asarray(rotation, dtype=np.float64).T \
        + translation
    if np.any(points_cam[:, 2] <= 0):
        return BoxDepthResult(1.0, False, "part of the posed object lies behind the camera")
    target = math.sqrt((box[2] - box[0]) * (box[3] - box[1]))
    # Moving along the ray keeps every point in front of the camera for scales above
    # 1 - min depth / ray depth; the search starts above that.
    lowest = max(config.min_scale, 1.0 - 0.99 * float(points_cam[:, 2].min()) / translation[2])
    bounds = np.array([lowest, config.max_scale])
    sizes = _projected_sizes(points_cam, translation, bounds, K, image_size)
    if sizes[0] < target:
        return BoxDepthResult(1.0, False, f"the box ({target:.1f} px) is larger than the object projects even "
                                          f"{1 / lowest:.2g}x nearer")
    if sizes[1] > target:
        return BoxDepthResult(1.0, False, f"the box ({target:.1f} px) is smaller than the object projects even "
                                          f"{config.max_scale:.2g}x farther")
    low, high = float(bounds[0]), float(bounds[1])
    scale = min(max(1.0, low), high)
    for _ in range(iterations):
        size = float(_projected_sizes(points_cam, translation, np.array([scale]), K, image_size)[0])
        if abs(size / target - 1.0) < tolerance:
            break
        if size > target:  # the size falls as the scale grows
            low = scale
        else:
            high = scale
        # A projection's size is nearly inversely proportional to its depth: step as if it were,
        # bisecting (in log scale) where that step would leave the bracket.
        scale = scale * size / target
        if not low < scale < high:
            scale = math.sqrt(low * high)
    return BoxDepthResult(scale, True)
