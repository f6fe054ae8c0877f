"""Plausibility gates: a pose whose own projection contradicts the image evidence is not published.

A robot acts on TF, so a hand or object pose is published only when it agrees with
what the frame shows (``config/perception.yaml``, ``estimator.gates``):

* **box centre**: the pose's projected silhouette box (model points for the object,
  the mesh for a hand) is centred near the tracked 2D box;
* **box size, hence depth**: the projected box's size (square root of its area) is
  within a factor of the 2D box's; an object 3 m away projects to a tenth of the size
  of one at 0.3 m, so a wrong depth fails here;
* **reprojection**: the voted control points (object) or the 2D joints (hand) lie
  near where the posed model puts them (for the object, the pose PnP fitted to its votes,
  before its box corrected the depth).

Offsets are fractions of the 2D box's size, so one threshold fits near and far
objects. A box detected this frame is independent evidence; between detections the
box is the one tracking carried over from the previous estimate, which the pose is
compared with as it was made (same points, tracking margin taken off), so a pose that
jumps away from its track is refused too. Thresholds are chosen on a validation split
(``benchmarks/gate_thresholds.py``).
A failing pose is reported with its reason (``ObjectResult.failure_reason``,
``FrameResult.hand_failures``, and in the estimate message ``ObjectEstimate.failure_reason``
and ``HandObjectEstimate.refused_hands``) and is not published to TF nor counted as found.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hoi_perception.config import ConfigError
from hoi_perception.geometry.camera import project


@dataclass
class GateLimits:
    """Limits for one kind of pose (hand or object); see the module docstring."""

    max_centre_offset: float = 0.3   # |projected box centre - 2D box centre| / 2D box size
    max_size_ratio: float = 1.3      # projected / 2D box size outside [1 / r, r] fails
    max_reprojection: float = 0.15   # mean |projected - observed 2D points| / 2D box size

    def validate(self) -> None:
        if not (math.isfinite(self.max_centre_offset) and self.max_centre_offset > 0):
            raise ConfigError(f"max_centre_offset: expected a positive fraction of the box size, got "
                              f"{self.max_centre_offset}")
        if not (math.isfinite(self.max_size_ratio) and self.max_size_ratio > 1.0):
            raise ConfigError(f"max_size_ratio: expected a factor > 1, got {self.max_size_ratio}")
        if not (math.isfinite(self.max_reprojection) and self.max_reprojection > 0):
            raise ConfigError(f"max_reprojection: expected a positive fraction of the box size, got "
                              f"{self.max_reprojection}")


@dataclass
class GateConfig:
    """``estimator.gates``: ``enabled: false`` publishes every solved pose (for experiments only)."""

    enabled: bool = True
    object: GateLimits = field(default_factory=GateLimits)
    hand: GateLimits = field(default_factory=GateLimits)


@dataclass(frozen=True)
class GateMeasures:
    """What the gates compare, for one pose (also recorded by the threshold benchmark).

    ``box_detected``: the box is this frame's detection (else the box tracking carried over
    from the previous frame's estimate, compared with what it was made from).
    """

    centre_offset: float
    size_ratio: float
    reprojection: float
    box_detected: bool = True


def _box_size(box: np.ndarray) -> float:
    return float(math.sqrt(max(box[2] - box[0], 1e-6) * max(box[3] - box[1], 1e-6)))


def without_margin(box: np.ndarray, margin: float) -> np.ndarray:
    """The box tracking enlarged by ``margin`` (``pipeline.tracking.enlarge_box``), before enlarging."""
    box = np.asarray(box, dtype=np.float64)
    shrink = margin * max(box[2] - box[0], box[3] - box[1]) / (1.0 + 2.0 * margin)
    return box + np.array([shrink, shrink, -shrink, -shrink])


def measure(points_cam: np.ndarray, box: np.ndarray, K: np.ndarray, predicted_2d: np.ndarray,  # noqa: N803
            observed_2d: np.ndarray, weights: np.ndarray | None = None, box_detected: bool = True,
            extra_2d: np.ndarray | None = None, image_size: tuple[int, int] | None = None) -> GateMeasures:
    """Compare a posed model (``points_cam`` (N, 3), camera frame; plus ``extra_2d`` pixels) with the
    2D ``box`` it should fill, and ``predicted_2d`` with ``observed_2d`` (M, 2) pixels (optionally weighted).

    ``image_size`` (width, height): the projected box is cut to the image as a detected box is,
    so a hand or object partly out of view is compared with the part the camera sees."""
    box = np.asarray(box, dtype=np.float64)
    size = _box_size(box)
    points_cam = np.asarray(points_cam, dtype=np.float64)
    if not np.all(np.isfinite(points_cam)) or np.any(points_cam[:, 2] <= 1e-6):
        return GateMeasures(math.inf, math.inf, math.inf, box_detected)
    uv = project(points_cam, K)
    if extra_2d is not None:
        uv = np.concatenate([uv, np.asarray(extra_2d, dtype=np.float64).reshape(-1, 2)])
    projected = np.concatenate([uv.min(0), uv.max(0)])
    if image_size is not None:
        projected = np.clip(projected, 0.0, np.tile(np.asarray(image_size, dtype=np.float64), 2))
    centre = (projected[:2] + projected[2:]) / 2 - (box[:2] + box[2:]) / 2
    errors = np.linalg.norm(np.asarray(predicted_2d) - np.asarray(observed_2d), axis=-1)
    w = np.ones_like(errors) if weights is None else np.clip(np.asarray(weights, dtype=np.float64), 0, None)
    reprojection = float((errors * w).sum() / max(w.sum(), 1e-9))
    return GateMeasures(float(np.linalg.norm(centre)) / size, _box_size(projected) / size, reprojection / size,
                        box_detected)


def gate_problem(measures: GateMeasures, limits: GateLimits) -> str | None:
    """Why the pose is implausible, or None."""
    which = "detected" if measures.box_detected else "tracked"
    if not 1.0 / limits.max_size_ratio <= measures.size_ratio <= limits.max_size_ratio:
        return (f"implausible pose: projects to {measures.size_ratio:.2f}x the {which} box size (allowed "
                f"1/{limits.max_size_ratio:g}-{limits.max_size_ratio:g}), so its depth contradicts the box")
    if measures.centre_offset > limits.max_centre_offset:
        return (f"implausible pose: projected centre {measures.centre_offset:.2f} box sizes from the detected box "
                f"(allowed {limits.max_centre_offset:g})")
    if measures.reprojection > limits.max_reprojection:
        return (f"implausible pose: reprojection error {measures.reprojection:.2f} box sizes (allowed "
                f"{limits.max_reprojection:g})")
    return None


def gate_of(reason: str) -> str:
    """Which gate a :func:`gate_problem` reason names: ``box size``, ``box centre`` or ``reprojection``
    (``other`` for a reason it did not write)."""
    for phrase, gate in (("depth contradicts", "box size"), ("projected centre", "box centre"),
                         ("reprojection error", "reprojection")):
        if phrase in reason:
            return gate
    return "other"


def object_measures(silhouette_points: np.ndarray, control_points: np.ndarray, rotation: np.ndarray,
                    translation: np.ndarray, box: np.ndarray, voted_2d: np.ndarray,
                    K: np.ndarray, box_detected: bool = True, margin: float = 0.0,  # noqa: N803
                    image_size: tuple[int, int] | None = None, depth_scale: float = 1.0) -> GateMeasures:
    """The object pose ``x_cam = R x + t`` against its 2D box and its voted control points (21, 2).

    ``silhouette_points`` (N, 3, model frame; the mesh's vertices) give the box the pose projects
    to. A detected box is the object's silhouette box, cut to the image (``image_size``, width
    and height): the projected box, cut the same way, is compared with it. A tracked box is the
    previous pose's projected box grown by the tracking ``margin``: the margin is taken off.
    ``depth_scale``: the factor the object's box applied to PnP's translation
    (:mod:`hoi_perception.geometry.object_depth`); the votes, drawn towards the object's
    centre, are compared with the pose PnP fitted to them, ``t / depth_scale``."""
    rotation = np.asarray(rotation, dtype=np.float64)
    fitted = control_points @ rotation.T + np.asarray(translation, dtype=np.float64) / depth_scale
    predicted = project(fitted, K) if np.all(fitted[:, 2] > 1e-6) else np.full((len(fitted), 2), np.inf)
    posed = silhouette_points @ rotation.T + translation
    if box_detected:
        return measure(posed, box, K, predicted, voted_2d, image_size=image_size)
    return measure(posed, without_margin(box, margin), K, predicted, voted_2d, box_detected=False)


def hand_measures(vertices_cam: np.ndarray, joints_cam: np.ndarray, box: np.ndarray, joints_2d: np.ndarray,
                  joint_confidence: np.ndarray, K: np.ndarray, box_detected: bool = True,  # noqa: N803
                  margin: float = 0.0, image_size: tuple[int, int] | None = None) -> GateMeasures:
    """The posed hand mesh against its 2D box, and its 3D joints against the 2D joints (weighted by confidence).

    A detected box is cut to the image (``image_size``, width and height), so the projected mesh is too.

    A tracked box is the box of the previous frame's 2D joints and projected mesh grown by the
    tracking ``margin``: this frame's are compared with it, the margin taken off."""
    predicted = project(joints_cam, K) if np.all(joints_cam[:, 2] > 1e-6) else np.full((len(joints_cam), 2), np.inf)
    if box_detected:
        return measure(vertices_cam, box, K, predicted, joints_2d, joint_confidence, image_size=image_size)
    return measure(vertices_cam, without_margin(box, margin), K, predicted, joints_2d, joint_confidence,
                   box_detected=False, extra_2d=joints_2d)
