"""Hand and object pose metrics, computed the way each benchmark's official code computes them.

Everything here is NumPy, works in metres and is batched over frames: per-frame
functions take ``(F, N, 3)`` point sets (a single ``(N, 3)`` set is treated as one
frame) and return one value per frame, so a caller can drop frames without a label
before averaging. Conversion to the units a field reports (mm, %) happens in
:mod:`hoi_training.evaluation.report`.

Conventions followed (see the project's notes/metrics.md):

* Hands - HO-3D / FreiHAND evaluation code: per-point Euclidean errors, mean per
  point over frames then over points; Procrustes alignment with scale through
  ``orthogonal_procrustes`` (reflections allowed); HO-3D scale-translation
  alignment; F-score on vertices with strict ``<``; PCK with ``<=`` on 100
  thresholds from 0 to 50 mm, AUC by the trapezoid rule per point, then averaged.
  DexYCB: root-relative errors (joint 0 subtracted). VIBE: acceleration error.
* Objects - BOP toolkit (ADD, ADD-S, diameter = largest pairwise model-point
  distance, correct when ``error < 0.1 * diameter``), YCB-Video toolbox (ADD(-S)
  AUC up to 10 cm via its ``VOCap`` routine), and the usual rotation, translation,
  bounding-box-corner and box-IoU errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull, QhullError, cKDTree

# HO-3D 21-joint order: MANO's 16 joints (0 wrist, 4 middle MCP, ...) then 5 fingertips.
HO3D_WRIST = 0
HO3D_MIDDLE_MCP = 4
NUM_HAND_JOINTS = 21
NUM_MANO_VERTICES = 778

# HO-3D / FreiHAND evaluation constants.
PCK_MAX_THRESHOLD_M = 0.05
PCK_NUM_THRESHOLDS = 100
F_SCORE_THRESHOLDS_M = (0.005, 0.015)
# BOP: a pose is correct when its ADD(-S) error is below this fraction of the diameter.
ADD_DIAMETER_FRACTION = 0.1
# YCB-Video toolbox: errors above this count as failures in the ADD(-S) AUC.
YCB_VIDEO_AUC_MAX_DISTANCE_M = 0.1
# Added to the Frobenius norms in the official Procrustes code; it also makes an
# all-zero prediction align to the ground-truth centroid instead of dividing by zero.
_PROCRUSTES_NORM_EPS = 1e-8


# ----------------------------------------------------------------------------- input checks


def _as_frames(name: str, points: np.ndarray, num_points: int | None = None) -> np.ndarray:
    """Return ``points`` as a finite float64 ``(F, N, 3)`` array, or raise naming the input."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.shape[1] == 0:
        raise ValueError(f"{name}: expected points of shape (F, N, 3) or (N, 3) with N >= 1, got {np.shape(points)}")
    if num_points is not None and arr.shape[1] != num_points:
        raise ValueError(f"{name}: expected {num_points} points per frame, got {arr.shape[1]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return arr


def _same_shape(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {a.shape} and {b.shape}")


def _as_rotations(name: str, rotations: np.ndarray) -> np.ndarray:
    arr = np.asarray(rotations, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (3, 3):
        raise ValueError(f"{name}: expected rotation matrices of shape (F, 3, 3) or (3, 3), got {np.shape(rotations)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return arr


def _as_translations(name: str, translations: np.ndarray) -> np.ndarray:
    arr = np.asarray(translations, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name}: expected translations of shape (F, 3) or (3,), got {np.shape(translations)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return arr


def _as_model_points(name: str, points: np.ndarray) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3 or arr.shape[0] == 0:
        raise ValueError(f"{name}: expected model points of shape (N, 3) with N >= 1, got {np.shape(points)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return arr


# ----------------------------------------------------------------------------- hands: errors


def point_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Euclidean distance between corresponding points: ``(F, N)`` in the input unit."""
    pred = _as_frames("pred", pred)
    gt = _as_frames("gt", gt)
    _same_shape("pred", pred, "gt", gt)
    return np.linalg.norm(pred - gt, axis=-1)


def mean_point_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """MPJPE / MPVPE: mean per point over frames, then mean over points (HO-3D ``EvalUtil``)."""
    return float(point_errors(pred, gt).mean(axis=0).mean())


def root_relative(points: np.ndarray, root_index: int = HO3D_WRIST) -> np.ndarray:
    """Subtract the root joint (DexYCB: joint 0, the wrist) from every point of each frame."""
    arr = _as_frames("points", points)
    if not 0 <= root_index < arr.shape[1]:
        raise ValueError(f"root_index {root_index} is outside the {arr.shape[1]} points per frame")
    return arr - arr[:, root_index : root_index + 1]


def procrustes_align(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Similarity-align ``pred`` onto ``gt`` per frame, exactly as the HO-3D/FreiHAND ``align_w_scale``.

    Both sets are centred and divided by their Frobenius norms, then
    ``R, s = scipy.linalg.orthogonal_procrustes(gt_n, pred_n)`` and
    ``aligned = (pred_n @ R.T) * s * norm_gt + mean_gt``. ``R`` is only required to be
    orthogonal, so a mirrored prediction aligns perfectly; this is the benchmarks'
    definition (some papers restrict to det(R) = +1 and get slightly larger errors).
    The SVD is batched here; it is the one ``orthogonal_procrustes`` performs.
    """
    pred = _as_frames("pred", pred)
    gt = _as_frames("gt", gt)
    _same_shape("pred", pred, "gt", gt)
    mean_pred = pred.mean(axis=1, keepdims=True)
    mean_gt = gt.mean(axis=1, keepdims=True)
    pred_c = pred - mean_pred
    gt_c = gt - mean_gt
    norm_pred = np.linalg.norm(pred_c, axis=(1, 2), keepdims=True) + _PROCRUSTES_NORM_EPS
    norm_gt = np.linalg.norm(gt_c, axis=(1, 2), keepdims=True) + _PROCRUSTES_NORM_EPS
    pred_n = pred_c / norm_pred
    gt_n = gt_c / norm_gt
    # orthogonal_procrustes(A=gt_n, B=pred_n): u, w, vt = svd(A.T @ B); R = u @ vt; scale = sum(w).
    u, w, vt = np.linalg.svd(np.einsum("fni,fnj->fij", gt_n, pred_n))
    rotation = u @ vt
    scale = w.sum(axis=-1)[:, None, None]
    return np.einsum("fnj,fij->fni", pred_n, rotation) * scale * norm_gt + mean_gt


def scale_translation_align_ho3d(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """HO-3D's ``align_sc_tr``: no rotation; match the wrist-to-middle-MCP length, then the wrist.

    Joints must be in HO-3D order (joint 0 wrist, joint 4 middle MCP). A prediction
    whose wrist and middle MCP coincide is left unscaled before the ground-truth
    scale is applied, as in the official code.
    """
    pred = _as_frames("pred", pred)
    gt = _as_frames("gt", gt)
    _same_shape("pred", pred, "gt", gt)
    if pred.shape[1] <= HO3D_MIDDLE_MCP:
        raise ValueError(f"pred: scale-translation alignment needs HO-3D joints (>= 5 per frame), got {pred.shape[1]}")
    ref_pred = np.linalg.norm(pred[:, HO3D_MIDDLE_MCP] - pred[:, HO3D_WRIST], axis=-1)[:, None, None]
    ref_gt = np.linalg.norm(gt[:, HO3D_MIDDLE_MCP] - gt[:, HO3D_WRIST], axis=-1)[:, None, None]
    scaled = np.where(ref_pred > 0, pred / np.where(ref_pred > 0, ref_pred, 1.0), pred) * ref_gt
    return scaled - scaled[:, HO3D_WRIST : HO3D_WRIST + 1] + gt[:, HO3D_WRIST : HO3D_WRIST + 1]


def f_scores(pred_vertices: np.ndarray, gt_vertices: np.ndarray,
             thresholds: Sequence[float] = F_SCORE_THRESHOLDS_M) -> np.ndarray:
    """Per-frame F-score of two vertex sets at each threshold: ``(F, T)``, values in [0, 1].

    For every ground-truth vertex the distance to the nearest predicted vertex, and
    for every predicted vertex the distance to the nearest ground-truth vertex; the
    two fractions with distance strictly below the threshold give F = 2PR / (P + R),
    and F = 0 when both fractions are 0 (HO-3D ``calculate_fscore``). F is symmetric,
    so it does not matter which fraction is called precision. Unaligned or aligned
    is the caller's choice: pass :func:`procrustes_align` output for the latter.
    """
    pred = _as_frames("pred_vertices", pred_vertices)
    gt = _as_frames("gt_vertices", gt_vertices)
    if pred.shape[0] != gt.shape[0]:
        raise ValueError(f"pred_vertices and gt_vertices must have the same number of frames, "
                         f"got {pred.shape[0]} and {gt.shape[0]}")
    th = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if th.size == 0 or np.any(~np.isfinite(th)) or np.any(th <= 0):
        raise ValueError(f"thresholds: expected positive finite values, got {list(thresholds)}")
    out = np.empty((pred.shape[0], th.size))
    for i, (p, g) in enumerate(zip(pred, gt)):
        gt_to_pred, _ = cKDTree(p).query(g)
        pred_to_gt, _ = cKDTree(g).query(p)
        frac_gt = (gt_to_pred[None, :] < th[:, None]).mean(axis=1)
        frac_pred = (pred_to_gt[None, :] < th[:, None]).mean(axis=1)
        denom = frac_gt + frac_pred
        out[i] = np.where(denom > 0, 2 * frac_gt * frac_pred / np.where(denom > 0, denom, 1.0), 0.0)
    return out


@dataclass(frozen=True)
class PCKCurve:
    """Percentage-of-correct-keypoints curve and its normalised area (HO-3D ``get_measures``)."""

    thresholds: np.ndarray  # (T,) in the unit of the errors
    pck: np.ndarray  # (T,) fraction of points with error <= threshold, averaged over points
    auc: float  # trapezoid area under each point's curve / threshold range, averaged over points


def pck_thresholds(max_threshold: float = PCK_MAX_THRESHOLD_M, num: int = PCK_NUM_THRESHOLDS) -> np.ndarray:
    """The benchmark threshold grid: ``num`` evenly spaced values from 0 to ``max_threshold``."""
    if not max_threshold > 0 or num < 2:
        raise ValueError(f"PCK thresholds need max_threshold > 0 and num >= 2, got {max_threshold}, {num}")
    return np.linspace(0.0, max_threshold, num)


def pck_from_counts(correct_counts: np.ndarray, num_frames: int, thresholds: np.ndarray) -> PCKCurve:
    """PCK curve from per-threshold, per-point counts of errors ``<= threshold`` over ``num_frames``.

    Lets an accumulator keep ``(T, N)`` integer counts instead of every frame's errors.
    """
    counts = np.asarray(correct_counts, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] != thresholds.shape[0]:
        raise ValueError(f"correct_counts: expected shape (T={thresholds.shape[0]}, N), got {counts.shape}")
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    per_point = counts / num_frames  # (T, N)
    norm = np.trapezoid(np.ones_like(thresholds), thresholds)
    auc_per_point = np.trapezoid(per_point, thresholds, axis=0) / norm
    return PCKCurve(thresholds=thresholds, pck=per_point.mean(axis=1), auc=float(auc_per_point.mean()))


def pck_counts(errors: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``(T, N)`` counts of frames whose per-point error is ``<= threshold`` (errors: ``(F, N)``)."""
    errors = np.asarray(errors, dtype=np.float64)
    if errors.ndim != 2:
        raise ValueError(f"errors: expected shape (F, N), got {errors.shape}")
    thresholds = np.asarray(thresholds, dtype=np.float64)
    return (errors[None, :, :] <= thresholds[:, None, None]).sum(axis=1)


def pck_curve(errors: np.ndarray, thresholds: np.ndarray | None = None) -> PCKCurve:
    """PCK curve and AUC of per-point errors ``(F, N)``; default thresholds 0-50 mm (in metres), 100 values."""
    thresholds = pck_thresholds() if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    errors = np.asarray(errors, dtype=np.float64)
    if errors.ndim != 2 or errors.shape[0] == 0:
        raise ValueError(f"errors: expected shape (F, N) with F >= 1, got {errors.shape}")
    return pck_from_counts(pck_counts(errors, thresholds), errors.shape[0], thresholds)


def acceleration_errors(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """VIBE-style acceleration error of a sequence ``(T, N, 3)``: one value per usable frame triplet.

    For t = 1 .. T-2 the second difference ``x[t-1] - 2 x[t] + x[t+1]`` of prediction
    and ground truth are compared per point and averaged over points. A triplet is
    used only when all three frames are ``valid`` (VIBE's visibility mask). The unit
    is the input unit per frame squared (not divided by the frame period).
    """
    pred = _as_frames("pred", pred)
    gt = _as_frames("gt", gt)
    _same_shape("pred", pred, "gt", gt)
    num_frames = pred.shape[0]
    if num_frames < 3:
        return np.empty(0)
    accel_pred = pred[:-2] - 2 * pred[1:-1] + pred[2:]
    accel_gt = gt[:-2] - 2 * gt[1:-1] + gt[2:]
    per_triplet = np.linalg.norm(accel_pred - accel_gt, axis=-1).mean(axis=1)
    if valid is None:
        return per_triplet
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != (num_frames,):
        raise ValueError(f"valid: expected shape ({num_frames},), got {valid.shape}")
    usable = valid[:-2] & valid[1:-1] & valid[2:]
    return per_triplet[usable]


# ----------------------------------------------------------------------------- objects


def pose_points(points: np.ndarray, rotations: np.ndarray, translations: np.ndarray) -> np.ndarray:
    """Model points posed per frame, ``R @ x + t``: ``(F, N, 3)``."""
    points = _as_model_points("points", points)
    rotations = _as_rotations("rotations", rotations)
    translations = _as_translations("translations", translations)
    if rotations.shape[0] != translations.shape[0]:
        raise ValueError(f"rotations and translations must have the same number of frames, "
                         f"got {rotations.shape[0]} and {translations.shape[0]}")
    return np.einsum("fij,nj->fni", rotations, points) + translations[:, None, :]


def add_errors(model_points: np.ndarray, rot_pred: np.ndarray, trans_pred: np.ndarray,
               rot_gt: np.ndarray, trans_gt: np.ndarray) -> np.ndarray:
    """ADD (BOP ``add``): mean distance between corresponding posed model points, per frame ``(F,)``."""
    posed_pred = pose_points(model_points, rot_pred, trans_pred)
    posed_gt = pose_points(model_points, rot_gt, trans_gt)
    _same_shape("estimated poses", posed_pred, "ground-truth poses", posed_gt)
    return np.linalg.norm(posed_pred - posed_gt, axis=-1).mean(axis=1)


def adds_errors(model_points: np.ndarray, rot_pred: np.ndarray, trans_pred: np.ndarray,
                rot_gt: np.ndarray, trans_gt: np.ndarray) -> np.ndarray:
    """ADD-S (BOP ``adi``): for each ground-truth-posed point the nearest estimate-posed point, averaged.

    Never larger than ADD, and zero for a pose that differs only by a symmetry of the
    model's point set.
    """
    posed_pred = pose_points(model_points, rot_pred, trans_pred)
    posed_gt = pose_points(model_points, rot_gt, trans_gt)
    _same_shape("estimated poses", posed_pred, "ground-truth poses", posed_gt)
    out = np.empty(posed_pred.shape[0])
    for i, (p, g) in enumerate(zip(posed_pred, posed_gt)):
        distances, _ = cKDTree(p).query(g)
        out[i] = distances.mean()
    return out


def model_diameter(points: np.ndarray) -> float:
    """BOP diameter: the largest distance between any two model points.

    The farthest pair always lies on the convex hull, so only hull vertices are
    compared; flat or tiny point sets (no 3D hull) fall back to comparing all pairs.
    """
    pts = _as_model_points("points", points)
    candidates = pts
    if pts.shape[0] > 4:
        try:
            candidates = pts[ConvexHull(pts).vertices]
        except QhullError:
            candidates = pts
    # Squared distances through one matrix product per block (|a|^2 + |b|^2 - 2 a.b) on centred
    # points; the winning pair is re-measured directly (near-ties differ only by rounding).
    candidates = candidates - candidates.mean(axis=0)
    sq_norms = (candidates**2).sum(axis=1)
    best, best_pair = -1.0, (0, 0)
    chunk = max(1, 2_000_000 // candidates.shape[0])
    for start in range(0, candidates.shape[0], chunk):
        block = candidates[start : start + chunk]
        d2 = sq_norms[start : start + chunk, None] + sq_norms[None, :] - 2.0 * block @ candidates.T
        i, j = np.unravel_index(np.argmax(d2), d2.shape)
        if d2[i, j] > best:
            best, best_pair = float(d2[i, j]), (start + int(i), int(j))
    best = float(((candidates[best_pair[0]] - candidates[best_pair[1]]) ** 2).sum())
    return float(np.sqrt(best))


def bounding_box_diagonal(points: np.ndarray) -> float:
    """Diagonal of the model's axis-aligned bounding box: what SHO's code calls the "diameter"."""
    pts = _as_model_points("points", points)
    return float(np.linalg.norm(pts.max(axis=0) - pts.min(axis=0)))


def bounding_box_corners(points: np.ndarray) -> np.ndarray:
    """The 8 corners ``(8, 3)`` of the model's axis-aligned bounding box in the object frame.

    Corner ``k`` takes the maximum along axis ``a`` when bit ``a`` of ``k`` is set
    (x is bit 0), the minimum otherwise. HO-3D's ``objCorners3DRest`` is this box.
    """
    pts = _as_model_points("points", points)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    bits = (np.arange(8)[:, None] >> np.arange(3)[None, :]) & 1
    return np.where(bits == 1, hi, lo)


def mean_corner_errors(corners: np.ndarray, rot_pred: np.ndarray, trans_pred: np.ndarray,
                       rot_gt: np.ndarray, trans_gt: np.ndarray) -> np.ndarray:
    """Mean corner error per frame: mean distance over the 8 bounding-box corners posed both ways.

    There is no single official definition; this is the common one (HO-3D papers
    comparing ``objCorners3D``), i.e. ADD restricted to the 8 box corners.
    """
    corners = _as_model_points("corners", corners)
    if corners.shape[0] != 8:
        raise ValueError(f"corners: expected the 8 bounding-box corners, got {corners.shape[0]} points")
    return add_errors(corners, rot_pred, trans_pred, rot_gt, trans_gt)


def pose_accuracy(errors: np.ndarray, diameters: np.ndarray | float,
                  fraction: float = ADD_DIAMETER_FRACTION) -> float:
    """Fraction of frames with ``error < fraction * diameter`` (BOP, strict); infinite errors are failures."""
    errors = np.asarray(errors, dtype=np.float64).reshape(-1)
    if errors.size == 0:
        raise ValueError("errors: at least one frame is needed to compute an accuracy")
    if np.any(np.isnan(errors)) or np.any(errors < 0):
        raise ValueError("errors: expected non-negative values (inf marks a missing estimate)")
    diameters = np.broadcast_to(np.asarray(diameters, dtype=np.float64), errors.shape)
    if np.any(~np.isfinite(diameters)) or np.any(diameters <= 0):
        raise ValueError("diameters: expected positive finite values")
    if not 0 < fraction:
        raise ValueError(f"fraction must be positive, got {fraction}")
    return float(np.mean(errors < fraction * diameters))


def ycb_video_auc(errors: np.ndarray, max_distance: float = YCB_VIDEO_AUC_MAX_DISTANCE_M) -> float:
    """Area under the ADD(-S) accuracy-threshold curve up to ``max_distance``, in [0, 1] (YCB-Video ``VOCap``).

    Errors above ``max_distance`` (and infinite ones, e.g. a failed estimate) count as
    failures. The toolbox integrates a step curve whose value on each interval
    between consecutive sorted errors is the accuracy at the interval's right end,
    which for sorted errors d_1..d_K <= max_distance out of n equals
    ``sum_k (max_distance - d_{k-1}) / (n * max_distance)`` with d_0 = 0. This is
    reproduced exactly, so numbers compare with PoseCNN-style tables.
    """
    errors = np.asarray(errors, dtype=np.float64).reshape(-1)
    if errors.size == 0:
        raise ValueError("errors: at least one frame is needed to compute an AUC")
    if np.any(np.isnan(errors)) or np.any(errors < 0):
        raise ValueError("errors: expected non-negative values (inf marks a missing estimate)")
    if not max_distance > 0:
        raise ValueError(f"max_distance must be positive, got {max_distance}")
    ordered = np.sort(errors)
    accuracy = np.arange(1, ordered.size + 1) / ordered.size
    kept = ordered <= max_distance
    if not np.any(kept):
        return 0.0
    recall_axis = np.concatenate([[0.0], ordered[kept], [max_distance]])
    accuracy_axis = np.concatenate([[0.0], accuracy[kept], [accuracy[kept][-1]]])
    accuracy_axis = np.maximum.accumulate(accuracy_axis)
    steps = np.nonzero(recall_axis[1:] != recall_axis[:-1])[0] + 1
    area = np.sum((recall_axis[steps] - recall_axis[steps - 1]) * accuracy_axis[steps])
    return float(area / max_distance)


def rotation_errors_deg(rot_pred: np.ndarray, rot_gt: np.ndarray) -> np.ndarray:
    """Geodesic rotation error per frame in degrees: ``arccos((trace(R_e R_g^T) - 1) / 2)``."""
    rot_pred = _as_rotations("rot_pred", rot_pred)
    rot_gt = _as_rotations("rot_gt", rot_gt)
    _same_shape("rot_pred", rot_pred, "rot_gt", rot_gt)
    trace = np.einsum("fij,fij->f", rot_pred, rot_gt)  # trace(R_e @ R_g.T)
    return np.degrees(np.arccos(np.clip((trace - 1.0) / 2.0, -1.0, 1.0)))


def translation_errors(trans_pred: np.ndarray, trans_gt: np.ndarray) -> np.ndarray:
    """Euclidean translation error per frame, ``|t_g - t_e|``."""
    trans_pred = _as_translations("trans_pred", trans_pred)
    trans_gt = _as_translations("trans_gt", trans_gt)
    _same_shape("trans_pred", trans_pred, "trans_gt", trans_gt)
    return np.linalg.norm(trans_gt - trans_pred, axis=-1)


def paired_box_iou(boxes_pred: np.ndarray, boxes_gt: np.ndarray) -> np.ndarray:
    """IoU of each predicted ``(x0, y0, x1, y1)`` box with its ground-truth box, per frame ``(F,)``."""
    a = np.asarray(boxes_pred, dtype=np.float64)
    b = np.asarray(boxes_gt, dtype=np.float64)
    a = a[None] if a.ndim == 1 else a
    b = b[None] if b.ndim == 1 else b
    for name, boxes in (("boxes_pred", a), ("boxes_gt", b)):
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"{name}: expected boxes of shape (F, 4) as (x0, y0, x1, y1), got {boxes.shape}")
        if not np.all(np.isfinite(boxes)) or np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1]):
            raise ValueError(f"{name}: expected finite boxes with x1 >= x0 and y1 >= y0")
    _same_shape("boxes_pred", a, "boxes_gt", b)
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0.0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0.0, None)
    inter = iw * ih
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
