"""Object pose from voted 2D control points: confident-vote selection, RANSAC EPnP, LM refinement.

The object head predicts, in every cell of its 32x32 grid, a 2D position for each
of the 21 control points (8 corners, 12 edge midpoints and the centre of the
object's 3D bounding box) and a confidence. As in Semi-Hand-Object, each control
point keeps its 10 most confident votes above 0.5 (at most 210 2D-3D pairs), and
``cv2.solvePnPRansac`` with EPnP finds the pose; unlike the reference code, the
inlier set is then refined with Levenberg-Marquardt, and every failure (too few
votes, RANSAC failure, degenerate inliers, pose behind the camera, non-finite
numbers) is reported as such instead of falling back to an identity pose.

Pixel frame: the 2D votes and the camera matrix must be in the same frame. The
pipeline uses full-image pixels with the full camera matrix (votes mapped back from
the crop); crop pixels with ``crop_intrinsics(K, crop_box, size)`` give the same pose
because the crop is an axis-aligned scaling, except that ``ransac_reprojection_px``
is then measured in crop pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from hoi_perception.config import ConfigError

NUM_CONTROL_POINTS = 21


@dataclass
class PnPConfig:
    """Vote selection and solver settings (defaults: SHO's selection, OpenCV's RANSAC)."""

    confidence_threshold: float = 0.5  # a vote is used only if its confidence exceeds this
    votes_per_point: int = 10  # most confident votes kept per control point
    min_correspondences: int = 6  # fewer selected 2D-3D pairs -> failure
    min_distinct_points: int = 4  # inliers must cover this many different control points
    ransac_reprojection_px: float = 8.0  # inlier threshold, pixels of the frame the votes are in
    ransac_iterations: int = 100
    ransac_confidence: float = 0.99
    refine: bool = True  # Levenberg-Marquardt on the RANSAC inliers
    # LM stops once an update is this small (OpenCV's default, float32 epsilon, iterates on for
    # changes of ~1e-7 rad and ~1e-8 m, doubling the cost); at most 20 iterations either way.
    refine_tolerance: float = 1e-6
    min_depth_m: float = 0.01  # every posed control point must lie at least this far in front
    # ... and no farther than this: a pose from near-degenerate votes can land kilometres
    # away with a small reprojection error; a hand-held object is within arm's reach.
    max_depth_m: float = 10.0

    def validate(self) -> None:
        if not 0.0 <= self.confidence_threshold < 1.0:
            raise ConfigError(f"confidence_threshold must be in [0, 1), got {self.confidence_threshold}")
        if self.votes_per_point < 1:
            raise ConfigError(f"votes_per_point must be >= 1, got {self.votes_per_point}")
        if self.min_correspondences < 4:
            raise ConfigError(f"min_correspondences must be >= 4 (EPnP's minimum), got {self.min_correspondences}")
        if not 4 <= self.min_distinct_points <= NUM_CONTROL_POINTS:
            raise ConfigError(f"min_distinct_points must be in [4, {NUM_CONTROL_POINTS}], "
                              f"got {self.min_distinct_points}")
        if self.ransac_reprojection_px <= 0:
            raise ConfigError(f"ransac_reprojection_px must be > 0, got {self.ransac_reprojection_px}")
        if not self.refine_tolerance > 0:
            raise ConfigError(f"refine_tolerance must be > 0, got {self.refine_tolerance}")
        if self.ransac_iterations < 1:
            raise ConfigError(f"ransac_iterations must be >= 1, got {self.ransac_iterations}")
        if not 0.0 < self.ransac_confidence < 1.0:
            raise ConfigError(f"ransac_confidence must be in (0, 1), got {self.ransac_confidence}")
        if not 0 <= self.min_depth_m < self.max_depth_m:
            raise ConfigError(f"need 0 <= min_depth_m < max_depth_m, got {self.min_depth_m}, {self.max_depth_m}")


@dataclass
class PnPResult:
    """Outcome of one object's PnP: x_cam = rotation @ x_model + translation.

    On failure ``success`` is False, ``reason`` says why and the pose is NaN.
    ``inliers`` indexes the selected correspondences (``num_correspondences`` of them);
    ``reprojection_error_px`` is the RMS inlier reprojection error after refinement.
    """

    success: bool
    rotation: np.ndarray
    translation: np.ndarray
    inliers: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    reason: str = ""
    num_correspondences: int = 0
    reprojection_error_px: float = float("nan")

    @classmethod
    def failure(cls, reason: str, num_correspondences: int = 0) -> PnPResult:
        return cls(False, np.full((3, 3), np.nan), np.full(3, np.nan), np.zeros(0, dtype=np.int64), reason,
                   num_correspondences)


@dataclass
class VoteCorrespondences:
    """Selected votes: 2D position (N,2), the control point each votes for (N,), its confidence (N,)."""

    points_2d: np.ndarray
    point_ids: np.ndarray
    confidences: np.ndarray


def top_k_per_row(values: np.ndarray, k: int) -> np.ndarray:
    """Indices (R, k) of each row's k largest values, largest first, ties in index order.

    Equal to ``np.argsort(-values, axis=1, kind="stable")[:, :k]``, at a fraction of the
    cost: the vote grids are 21 x 1024 and the runtime takes their top 10 twice per frame.
    ``torch.topk`` finds the k largest; their order is then made stable, and only when a
    tie straddles the k-th place is the exact (slower) tie-break needed. No NaN allowed.
    """
    values = np.ascontiguousarray(values)
    rows, n = values.shape
    k = min(int(k), n)
    if k <= 0:
        return np.zeros((rows, 0), dtype=np.int64)
    if k == n:
        return np.argsort(-values, axis=1, kind="stable")
    top = torch.topk(torch.from_numpy(values), k, dim=1)
    top_values, candidates = top.values.numpy(), top.indices.numpy()
    kth = top_values[:, -1:]
    if not np.all((values >= kth).sum(axis=1) == k):
        # A tie straddles the k-th place: keep the lowest indices among the tied values.
        less, equal = values > kth, values == kth
        needed = k - less.sum(axis=1, keepdims=True)
        chosen = less | (equal & (np.cumsum(equal, axis=1) <= needed))
        candidates = np.nonzero(chosen)[1].reshape(rows, k)
        top_values = np.take_along_axis(values, candidates, axis=1)
    order = np.lexsort((candidates, -top_values), axis=-1)  # value descending, then index ascending
    return np.take_along_axis(candidates, order, axis=1)


def select_votes(votes: np.ndarray, confidence: np.ndarray, config: PnPConfig | None = None) -> VoteCorrespondences:
    """Keep each control point's ``votes_per_point`` most confident votes above the threshold.

    ``votes`` (21, 2, H, W) are the 2D positions predicted by every cell (x then y);
    ``confidence`` (21, H, W). Votes with a non-finite position or confidence are dropped.
    Ranking runs in the inputs' precision; only the kept votes are converted to float64.
    """
    config = config or PnPConfig()
    votes = np.asarray(votes)
    confidence = np.asarray(confidence)
    if votes.ndim != 4 or votes.shape[:2] != (NUM_CONTROL_POINTS, 2):
        raise ValueError(f"votes: expected shape ({NUM_CONTROL_POINTS}, 2, H, W), got {votes.shape}")
    if confidence.shape != (NUM_CONTROL_POINTS,) + votes.shape[2:]:
        expected = (NUM_CONTROL_POINTS,) + votes.shape[2:]
        raise ValueError(f"confidence: expected shape {expected}, got {confidence.shape}")
    n_cells = votes.shape[2] * votes.shape[3]
    xy = votes.reshape(NUM_CONTROL_POINTS, 2, n_cells)
    conf = confidence.reshape(NUM_CONTROL_POINTS, n_cells)
    usable = np.isfinite(conf) & np.isfinite(xy).all(axis=1) & (conf > config.confidence_threshold)
    ranked_conf = np.where(usable, conf, -np.inf)
    top = top_k_per_row(ranked_conf, config.votes_per_point)  # (21, k)
    keep = np.take_along_axis(usable, top, axis=1)
    point_ids = np.broadcast_to(np.arange(NUM_CONTROL_POINTS)[:, None], top.shape)[keep]
    cells = top[keep]
    return VoteCorrespondences(points_2d=xy[point_ids, :, cells].astype(np.float64),
                               point_ids=point_ids.astype(np.int64),
                               confidences=conf[point_ids, cells].astype(np.float64))


def pose_failure_reason(rotation: np.ndarray, translation: np.ndarray, points_3d: np.ndarray,
                        min_depth_m: float, max_depth_m: float = math.inf) -> str:
    """Why a solver's pose is unusable ('' when it is usable): non-finite, not a rotation, behind the
    camera or beyond ``max_depth_m``."""
    if not (np.all(np.isfinite(rotation)) and np.all(np.isfinite(translation))):
        return "non-finite pose"
    if abs(np.linalg.det(rotation) - 1.0) > 1e-3:
        return "solver returned a matrix that is not a rotation"
    depths = (points_3d @ rotation.T + translation)[:, 2]
    if np.min(depths) < min_depth_m:
        return f"pose puts the object behind the camera (nearest control point at z = {np.min(depths):.3f} m)"
    if np.max(depths) > max_depth_m:
        return f"pose puts the object beyond max_depth_m = {max_depth_m:g} m (farthest control point at z = " \
               f"{np.max(depths):.3g} m)"
    return ""


def solve_pnp(points_3d: np.ndarray, points_2d: np.ndarray, K: np.ndarray,
              config: PnPConfig | None = None, dist_coeffs: np.ndarray | None = None,
              point_ids: np.ndarray | None = None) -> PnPResult:
    """RANSAC EPnP + LM refinement on explicit 2D-3D pairs (N,3)/(N,2) with camera matrix K.

    ``point_ids`` (N,) says which control point each pair belongs to; it is used to
    reject inlier sets that cover fewer than ``min_distinct_points`` different 3D points
    (many votes for one point constrain nothing). Without it every pair counts as distinct.
    """
    config = config or PnPConfig()
    obj = np.ascontiguousarray(np.asarray(points_3d, dtype=np.float64).reshape(-1, 3))
    img = np.ascontiguousarray(np.asarray(points_2d, dtype=np.float64).reshape(-1, 2))
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)):
        raise ValueError(f"K: expected a finite 3x3 camera matrix, got shape {K.shape}")
    if obj.shape[0] != img.shape[0]:
        raise ValueError(f"points_3d ({obj.shape[0]}) and points_2d ({img.shape[0]}) must pair up")
    ids = np.arange(len(obj)) if point_ids is None else np.asarray(point_ids).reshape(-1)
    if ids.shape[0] != obj.shape[0]:
        raise ValueError(f"point_ids: expected {obj.shape[0]} ids, got {ids.shape[0]}")
    dist = np.zeros(5) if dist_coeffs is None else np.asarray(dist_coeffs, dtype=np.float64).reshape(-1)
    n = len(obj)
    if n < config.min_correspondences:
        return PnPResult.failure(f"too few confident votes: {n} < {config.min_correspondences}", n)
    if not (np.all(np.isfinite(obj)) and np.all(np.isfinite(img))):
        return PnPResult.failure("non-finite 2D or 3D points", n)
    if len(np.unique(ids)) < config.min_distinct_points:
        return PnPResult.failure(f"votes cover only {len(np.unique(ids))} control points "
                                 f"(< {config.min_distinct_points})", n)

    try:
        ok, rvec, tvec, inliers = cv2.solvePnPRansac(
            obj, img, K, dist, iterationsCount=config.ransac_iterations,
            reprojectionError=config.ransac_reprojection_px, confidence=config.ransac_confidence,
            flags=cv2.SOLVEPNP_EPNP)
    except cv2.error as exc:
        return PnPResult.failure(f"solvePnPRansac raised: {exc.msg if hasattr(exc, 'msg') else exc}", n)
    if not ok or inliers is None or len(inliers) < 4:
        return PnPResult.failure("RANSAC found no pose with enough inliers", n)
    inliers = np.sort(inliers.reshape(-1).astype(np.int64))
    if len(np.unique(ids[inliers])) < config.min_distinct_points:
        return PnPResult.failure(f"RANSAC inliers cover only {len(np.unique(ids[inliers]))} control points", n)

    if config.refine:
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, config.refine_tolerance)
        rvec, tvec = cv2.solvePnPRefineLM(obj[inliers], img[inliers], K, dist, rvec.copy(), tvec.copy(),
                                          criteria=criteria)
    rotation = cv2.Rodrigues(rvec)[0]
    translation = tvec.reshape(3)
    reason = pose_failure_reason(rotation, translation, obj, config.min_depth_m, config.max_depth_m)
    if reason:
        return PnPResult.failure(reason, n)
    projected = cv2.projectPoints(obj[inliers], rvec, tvec, K, dist)[0].reshape(-1, 2)
    rms = float(np.sqrt(np.mean(np.sum((projected - img[inliers]) ** 2, axis=1))))
    return PnPResult(True, rotation, translation, inliers, "", n, rms)


def solve_control_point_pnp(votes: np.ndarray, confidence: np.ndarray, control_points_3d: np.ndarray,
                            K: np.ndarray, config: PnPConfig | None = None,
                            dist_coeffs: np.ndarray | None = None) -> PnPResult:
    """Object pose from the object head's vote grid.

    ``votes`` (21, 2, H, W) in pixels of the frame ``K`` describes (see the module
    docstring), ``confidence`` (21, H, W) in [0, 1], ``control_points_3d`` (21, 3) in the
    object model frame (metres), in the same order as the votes.
    """
    config = config or PnPConfig()
    control_points_3d = np.asarray(control_points_3d, dtype=np.float64)
    if control_points_3d.shape != (NUM_CONTROL_POINTS, 3):
        raise ValueError(f"control_points_3d: expected shape ({NUM_CONTROL_POINTS}, 3), "
                         f"got {control_points_3d.shape}")
    selected = select_votes(votes, confidence, config)
    return solve_pnp(control_points_3d[selected.point_ids], selected.points_2d, K, config, dist_coeffs,
                     point_ids=selected.point_ids)


def bbox_control_points(points: np.ndarray) -> np.ndarray:
    """The 21 control points of a model's axis-aligned 3D bounding box, in this package's order.

    Order: the 8 corners (x, y, z each min/max, x slowest), the 12 edge midpoints
    (4 along x, 4 along y, 4 along z), then the centre.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(pts) == 0 or not np.all(np.isfinite(pts)):
        raise ValueError("points: expected a non-empty finite (N, 3) array of model points")
    lo, hi = pts.min(0), pts.max(0)
    mid = (lo + hi) / 2
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    edges_x = [[mid[0], y, z] for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    edges_y = [[x, mid[1], z] for x in (lo[0], hi[0]) for z in (lo[2], hi[2])]
    edges_z = [[x, y, mid[2]] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])]
    return np.vstack([corners, edges_x, edges_y, edges_z, mid[None]])
