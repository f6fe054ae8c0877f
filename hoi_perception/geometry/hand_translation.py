"""Camera-frame position of a hand from its 2D joints, root-relative 3D joints and K.

The network predicts the hand's shape and articulation relative to the wrist, but a
robot needs the hand where it is. Every joint j with root-relative position
(X, Y, Z) and pixel (u, v) gives two equations linear in the hand translation t:

    fx (X + tx) = (u - cx) (Z + tz)   and   fy (Y + ty) = (v - cy) (Z + tz),

which are solved by confidence-weighted least squares (in normalised image
coordinates, so both rows have the same units) and then polished by a few
Gauss-Newton steps on the weighted pixel reprojection error, which the linear form
only approximates. The depth of a monocular hand hangs on its predicted size, so
when an aligned depth image exists ``tz`` is re-estimated from it: the robust
(median) offset between the measured depth at visible joints and the model's
joint depth, after which tx, ty are re-fitted with tz fixed. A system whose joints
all see the hand from one direction (too few confident joints, a collapsed 2D
skeleton) is ill-conditioned and reported as a failure, never as a guess.

A weakly trained or occluded hand can have a usable mesh but 2D joints too diffuse
to trust. :func:`locate_hand` then falls back on the hand's box (detected or
labelled, as the box of the projected mesh; never a box carried over from the previous
frame's estimate, which would only return that estimate): the translation whose
projected mesh has that box, which fixes the depth from the hand's predicted size, as a
weak-perspective crop camera does, but with the full pinhole model. Box sides on the
image border are clipped, not the hand's extent, and are left out of the fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hoi_perception.config import ConfigError

NUM_JOINTS = 21


@dataclass
class HandTranslationConfig:
    """Solver settings; distances in metres, image distances in pixels."""

    min_joint_confidence: float = 0.1  # joints below this weight are ignored
    min_joints: int = 4  # fewer usable joints -> failure
    max_condition_number: float = 1e4  # of the weighted linear system; larger -> failure
    refine_iterations: int = 5  # Gauss-Newton steps on the pixel reprojection error (0: linear only)
    min_depth_m: float = 0.05  # every joint must end up at least this far in front of the camera
    # Depth refinement
    depth_window_radius_px: int = 2  # median over a (2r+1)^2 window around each projected joint
    depth_min_m: float = 0.1  # valid depth readings lie in [depth_min_m, depth_max_m]
    depth_max_m: float = 3.0
    depth_min_joints: int = 3  # fewer joints with a valid reading -> keep the 2D-only estimate
    depth_gate_fraction: float = 0.3  # readings implying a tz this far (relative) from the 2D-only tz are ignored
    depth_max_deviation_m: float = 0.04  # joints whose offset is this far from the median are occluded/outliers
    joint_surface_offset_m: float = 0.008  # depth sees the skin, about a finger radius in front of the joint
    # Box fallback (locate_hand): when the joint fit fails, fit the projected mesh to the hand box.
    box_fallback: bool = True
    box_border_px: float = 1.0  # box sides this close to the image border are clipped and not fitted

    def validate(self) -> None:
        if not 0.0 <= self.min_joint_confidence < 1.0:
            raise ConfigError(f"min_joint_confidence must be in [0, 1), got {self.min_joint_confidence}")
        if not 2 <= self.min_joints <= NUM_JOINTS:
            raise ConfigError(f"min_joints must be in [2, {NUM_JOINTS}], got {self.min_joints}")
        if self.max_condition_number <= 1.0:
            raise ConfigError(f"max_condition_number must be > 1, got {self.max_condition_number}")
        if self.refine_iterations < 0:
            raise ConfigError(f"refine_iterations must be >= 0, got {self.refine_iterations}")
        if self.depth_window_radius_px < 0:
            raise ConfigError(f"depth_window_radius_px must be >= 0, got {self.depth_window_radius_px}")
        if not 0.0 <= self.depth_min_m < self.depth_max_m:
            raise ConfigError(f"need 0 <= depth_min_m < depth_max_m, got {self.depth_min_m}, {self.depth_max_m}")
        if self.depth_min_joints < 1:
            raise ConfigError(f"depth_min_joints must be >= 1, got {self.depth_min_joints}")
        if self.depth_gate_fraction <= 0:
            raise ConfigError(f"depth_gate_fraction must be > 0, got {self.depth_gate_fraction}")
        if self.depth_max_deviation_m <= 0:
            raise ConfigError(f"depth_max_deviation_m must be > 0, got {self.depth_max_deviation_m}")
        if self.box_border_px < 0:
            raise ConfigError(f"box_border_px must be >= 0, got {self.box_border_px}")


@dataclass
class HandTranslationResult:
    """Camera-frame translation of the root-relative hand (NaN when ``success`` is False).

    ``reprojection_error_px`` is the confidence-weighted RMS pixel error of the
    used joints (of the fitted box sides for ``method`` "box"); ``depth_joints`` how
    many joints had a consistent depth reading, and ``depth_note`` why depth was not
    used when one was given. ``method`` says what fixed the translation: "joints" (the
    2D joints) or "box" (the hand box, after the joint fit failed for ``reason``).
    """

    success: bool
    translation: np.ndarray
    reason: str = ""
    method: str = "joints"
    reprojection_error_px: float = float("nan")
    condition_number: float = float("nan")
    depth_used: bool = False
    depth_joints: int = 0
    depth_note: str = ""

    @classmethod
    def failure(cls, reason: str, condition_number: float = float("nan"), method: str = "joints"
                ) -> HandTranslationResult:
        return cls(False, np.full(3, np.nan), reason, method, condition_number=condition_number)


def _check_inputs(joints2d: np.ndarray, joints3d: np.ndarray, K: np.ndarray,
                  confidence: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    uv = np.asarray(joints2d, dtype=np.float64)
    xyz = np.asarray(joints3d, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    if uv.ndim != 2 or uv.shape[1] != 2:
        raise ValueError(f"joints2d: expected shape (N, 2) in pixels, got {uv.shape}")
    if xyz.shape != (uv.shape[0], 3):
        raise ValueError(f"joints3d: expected shape ({uv.shape[0]}, 3) root-relative metres, got {xyz.shape}")
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"K: expected a finite 3x3 camera matrix with positive focal lengths, got {K.tolist()}")
    if confidence is None:
        w = np.ones(uv.shape[0])
    else:
        w = np.asarray(confidence, dtype=np.float64).reshape(-1)
        if w.shape != (uv.shape[0],):
            raise ValueError(f"joint_confidence: expected shape ({uv.shape[0]},), got {w.shape}")
    finite = np.all(np.isfinite(uv), axis=1) & np.all(np.isfinite(xyz), axis=1) & np.isfinite(w)
    w = np.where(finite, np.clip(w, 0.0, None), 0.0)
    return np.where(finite[:, None], uv, 0.0), np.where(finite[:, None], xyz, 0.0), K, w


def _reprojection(t: np.ndarray, xyz: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = xyz + t
    return K[0, 0] * p[:, 0] / p[:, 2] + K[0, 2], K[1, 1] * p[:, 1] / p[:, 2] + K[1, 2]


def _weighted_rms_px(t: np.ndarray, uv: np.ndarray, xyz: np.ndarray, K: np.ndarray, w: np.ndarray) -> float:
    pu, pv = _reprojection(t, xyz, K)
    sq = (pu - uv[:, 0]) ** 2 + (pv - uv[:, 1]) ** 2
    return float(np.sqrt(np.sum(w * sq) / np.sum(w)))


def _gauss_newton(t: np.ndarray, uv: np.ndarray, xyz: np.ndarray, K: np.ndarray, w: np.ndarray,
                  iterations: int, min_depth: float) -> np.ndarray:
    fx, fy = K[0, 0], K[1, 1]
    sw = np.sqrt(w)
    for _ in range(iterations):
        p = xyz + t
        z = p[:, 2]
        if np.any(z < min_depth):
            break
        pu, pv = _reprojection(t, xyz, K)
        residual = np.concatenate([(pu - uv[:, 0]) * sw, (pv - uv[:, 1]) * sw])
        zeros = np.zeros_like(z)
        ju = np.stack([fx / z, zeros, -fx * p[:, 0] / z**2], axis=1) * sw[:, None]
        jv = np.stack([zeros, fy / z, -fy * p[:, 1] / z**2], axis=1) * sw[:, None]
        step = np.linalg.lstsq(np.vstack([ju, jv]), -residual, rcond=None)[0]
        t = t + step
        if np.linalg.norm(step) < 1e-10:
            break
    return t


def _fit_xy_given_z(tz: float, uv: np.ndarray, xyz: np.ndarray, K: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Least-squares tx, ty for a fixed tz: each joint gives tx = x_n (Z + tz) - X directly."""
    xn = (uv[:, 0] - K[0, 2]) / K[0, 0]
    yn = (uv[:, 1] - K[1, 2]) / K[1, 1]
    depth = xyz[:, 2] + tz
    tx = np.sum(w * (xn * depth - xyz[:, 0])) / np.sum(w)
    ty = np.sum(w * (yn * depth - xyz[:, 1])) / np.sum(w)
    return np.array([tx, ty, tz])


def _sample_depth(depth: np.ndarray, uv: np.ndarray, radius: int, lo: float, hi: float) -> np.ndarray:
    """Median valid depth (metres) in a window around each pixel; NaN where none is valid."""
    h, w = depth.shape
    out = np.full(len(uv), np.nan)
    for i, (u, v) in enumerate(np.round(uv).astype(np.int64)):
        if not (0 <= u < w and 0 <= v < h):
            continue
        patch = depth[max(v - radius, 0):v + radius + 1, max(u - radius, 0):u + radius + 1]
        valid = patch[np.isfinite(patch) & (patch >= lo) & (patch <= hi)]
        if valid.size:
            out[i] = np.median(valid)
    return out


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, 0.5 * cum[-1])])


def estimate_hand_translation(joints2d: np.ndarray, joints3d: np.ndarray, K: np.ndarray,
                              joint_confidence: np.ndarray | None = None, depth: np.ndarray | None = None,
                              depth_scale: float = 1.0,
                              config: HandTranslationConfig | None = None) -> HandTranslationResult:
    """Translation t (metres, camera frame) such that joints3d + t projects onto joints2d.

    ``joints2d`` (N,2) full-image pixels of the camera ``K`` describes; ``joints3d``
    (N,3) root-relative metres in the camera's axes (OpenCV: x right, y down, z
    forward); ``joint_confidence`` (N,) weights in [0, 1] (default all 1). ``depth``
    (H,W) is an image aligned with the colour image, in units of ``depth_scale``
    metres (1.0 for 32FC1 metres, 0.001 for 16UC1 millimetres); zeros and NaNs are
    treated as missing.
    """
    config = config or HandTranslationConfig()
    uv, xyz, K, w = _check_inputs(joints2d, joints3d, K, joint_confidence)
    w = np.where(w >= config.min_joint_confidence, w, 0.0)
    used = w > 0
    if used.sum() < config.min_joints:
        return HandTranslationResult.failure(f"too few confident joints: {int(used.sum())} < {config.min_joints}")

    # Linear system in normalised image coordinates: [1, 0, -xn] t = xn Z - X, [0, 1, -yn] t = yn Z - Y.
    xn = (uv[:, 0] - K[0, 2]) / K[0, 0]
    yn = (uv[:, 1] - K[1, 2]) / K[1, 1]
    ones, zeros = np.ones_like(xn), np.zeros_like(xn)
    A = np.vstack([np.stack([ones, zeros, -xn], 1), np.stack([zeros, ones, -yn], 1)])
    b = np.concatenate([xn * xyz[:, 2] - xyz[:, 0], yn * xyz[:, 2] - xyz[:, 1]])
    sw = np.sqrt(np.concatenate([w, w]))
    Aw, bw = A * sw[:, None], b * sw
    singular_values = np.linalg.svd(Aw, compute_uv=False)
    condition = float(singular_values[0] / max(singular_values[-1], 1e-300))
    if condition > config.max_condition_number:
        return HandTranslationResult.failure(
            f"ill-conditioned: condition number {condition:.3g} > {config.max_condition_number:.3g} "
            "(2D joints too close together to fix the depth)", condition)
    t = np.linalg.lstsq(Aw, bw, rcond=None)[0]
    if config.refine_iterations:
        t = _gauss_newton(t, uv[used], xyz[used], K, w[used], config.refine_iterations, config.min_depth_m)

    result = HandTranslationResult(True, t, condition_number=condition)
    if depth is not None:
        _refine_with_depth(result, uv, xyz, K, w, depth, depth_scale, config)
    t = result.translation
    if not np.all(np.isfinite(t)):
        return HandTranslationResult.failure("non-finite translation", condition)
    nearest = float(np.min((xyz[used] + t)[:, 2]))
    if nearest < config.min_depth_m:
        return HandTranslationResult.failure(
            f"hand would be behind or at the camera (nearest joint at z = {nearest:.3f} m)", condition)
    result.reprojection_error_px = _weighted_rms_px(t, uv[used], xyz[used], K, w[used])
    return result


def _refine_with_depth(result: HandTranslationResult, uv: np.ndarray, xyz: np.ndarray, K: np.ndarray,
                       w: np.ndarray, depth: np.ndarray, depth_scale: float, config: HandTranslationConfig) -> None:
    """Replace tz by the depth image's robust estimate and re-fit tx, ty; leaves the 2D result on failure."""
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth: expected an (H, W) image aligned with the colour image, got shape {depth.shape}")
    if not (np.isfinite(depth_scale) and depth_scale > 0):
        raise ValueError(f"depth_scale: expected metres per depth unit > 0, got {depth_scale}")
    depth_m = depth.astype(np.float64) * depth_scale
    measured = _sample_depth(depth_m, uv, config.depth_window_radius_px, config.depth_min_m, config.depth_max_m)
    # The tz each joint's reading implies (the skin is nearer than the joint centre). Readings far
    # from the 2D-only estimate see the background or an occluder, not this hand.
    implied = measured + config.joint_surface_offset_m - xyz[:, 2]
    tz_2d = result.translation[2]
    gated = np.abs(implied - tz_2d) <= config.depth_gate_fraction * abs(tz_2d)
    valid = (w > 0) & np.isfinite(measured) & gated
    if valid.sum() < config.depth_min_joints:
        result.depth_note = (f"only {int(valid.sum())} joints with a valid depth reading near the 2D estimate "
                             f"({int(np.sum((w > 0) & np.isfinite(measured)))} valid in total)")
        return
    implied_tz = implied[valid]
    consistent = np.abs(implied_tz - np.median(implied_tz)) <= config.depth_max_deviation_m
    if consistent.sum() < config.depth_min_joints:
        result.depth_note = "depth readings at the joints disagree (occlusion or misalignment)"
        return
    tz = _weighted_median(implied_tz[consistent], w[valid][consistent])
    result.translation = _fit_xy_given_z(tz, uv[w > 0], xyz[w > 0], K, w[w > 0])
    result.depth_used = True
    result.depth_joints = int(consistent.sum())


def fit_translation_to_box(vertices3d: np.ndarray, box: np.ndarray, K: np.ndarray,
                           image_size: tuple[int, int] | None = None,
                           config: HandTranslationConfig | None = None) -> HandTranslationResult:
    """Translation t such that the pixel box of ``vertices3d + t`` is ``box``.

    ``vertices3d`` (N,3) root-relative metres in the camera's axes; ``box`` (x1, y1, x2, y2)
    pixels; ``image_size`` (width, height), when given, marks sides on the image border as
    clipped. Each fitted side is the projection of the mesh's extreme vertex on that side, so
    Gauss-Newton re-picks the extreme vertices every step. Needs three unclipped sides.
    """
    config = config or HandTranslationConfig()
    xyz = np.asarray(vertices3d, dtype=np.float64)
    box = np.asarray(box, dtype=np.float64).reshape(-1)
    K = np.asarray(K, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or len(xyz) < 2:
        raise ValueError(f"vertices3d: expected shape (N >= 2, 3) root-relative metres, got {xyz.shape}")
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"K: expected a finite 3x3 camera matrix with positive focal lengths, got {K.tolist()}")
    if box.shape != (4,):
        raise ValueError(f"box: expected (x1, y1, x2, y2) pixels, got shape {box.shape}")
    if not np.all(np.isfinite(xyz)):
        return HandTranslationResult.failure("non-finite vertices", method="box")
    if not (np.all(np.isfinite(box)) and box[2] > box[0] and box[3] > box[1]):
        return HandTranslationResult.failure(f"empty or non-finite hand box {box.tolist()}", method="box")
    # Which of the sides x1, y1, x2, y2 are fitted (not clipped by the image border).
    fitted = np.ones(4, dtype=bool)
    if image_size is not None:
        width, height = image_size
        margin = config.box_border_px
        fitted = np.array([box[0] > margin, box[1] > margin, box[2] < width - margin, box[3] < height - margin])
    if fitted.sum() < 3:
        return HandTranslationResult.failure(
            f"hand box {np.round(box, 1).tolist()} is clipped by the image border on {4 - int(fitted.sum())} sides "
            "(three free sides are needed)", method="box")

    # Start: depth from the size along each axis whose two sides are free, centre on the box centre.
    focal = np.array([K[0, 0], K[1, 1]])
    extent3d = xyz[:, :2].max(0) - xyz[:, :2].min(0)
    extent2d = box[2:] - box[:2]
    both = fitted[:2] & fitted[2:]
    depths = focal * extent3d / extent2d
    tz = float(np.mean(depths[both])) if both.any() else float(np.mean(depths))
    tz -= float(np.mean(xyz[:, 2]))
    centre = (0.5 * (box[:2] + box[2:]) - K[:2, 2]) / focal
    mid = 0.5 * (xyz[:, :2].max(0) + xyz[:, :2].min(0))
    t = np.array([*(centre * (tz + np.mean(xyz[:, 2])) - mid), tz])

    fx, fy = focal
    # Four times the joint fit's Gauss-Newton budget: the extreme vertices may change in the first steps.
    for _ in range(max(config.refine_iterations, 1) * 4):
        p = xyz + t
        z = p[:, 2]
        if np.any(z < config.min_depth_m):
            break
        pu, pv = _reprojection(t, xyz, K)
        extremes = [int(np.argmin(pu)), int(np.argmin(pv)), int(np.argmax(pu)), int(np.argmax(pv))]
        rows, residual = [], np.zeros(4)
        for side, k in enumerate(extremes):
            if side % 2 == 0:
                residual[side] = pu[k] - box[side]
                rows.append([fx / z[k], 0.0, -fx * p[k, 0] / z[k] ** 2])
            else:
                residual[side] = pv[k] - box[side]
                rows.append([0.0, fy / z[k], -fy * p[k, 1] / z[k] ** 2])
        J = np.asarray(rows)[fitted]
        step = np.linalg.lstsq(J, -residual[fitted], rcond=None)[0]
        t = t + step
        if np.linalg.norm(step) < 1e-10:
            break
    if not np.all(np.isfinite(t)):
        return HandTranslationResult.failure("box fit diverged", method="box")
    nearest = float(np.min((xyz + t)[:, 2]))
    if nearest < config.min_depth_m:
        return HandTranslationResult.failure(
            f"box fit puts the hand behind or at the camera (nearest vertex at z = {nearest:.3f} m)", method="box")
    pu, pv = _reprojection(t, xyz, K)
    projected = np.array([pu.min(), pv.min(), pu.max(), pv.max()])
    rms = float(np.sqrt(np.mean((projected - box)[fitted] ** 2)))
    return HandTranslationResult(True, t, method="box", reprojection_error_px=rms)


def locate_hand(joints2d: np.ndarray, joints3d: np.ndarray, vertices3d: np.ndarray, box: np.ndarray | None,
                K: np.ndarray, joint_confidence: np.ndarray | None = None, depth: np.ndarray | None = None,
                depth_scale: float = 1.0, image_size: tuple[int, int] | None = None,
                config: HandTranslationConfig | None = None) -> HandTranslationResult:
    """The hand's translation from its 2D joints, or from its box when that fit fails.

    Arguments as :func:`estimate_hand_translation` and :func:`fit_translation_to_box`
    (``vertices3d`` root-relative like ``joints3d``). With ``config.box_fallback`` off or
    no ``box``, the joint fit's result is returned as it is. A box fit keeps the joint
    fit's failure in ``reason``; with a depth image, its depth is re-estimated at the
    joints the box fit reprojects.
    """
    config = config or HandTranslationConfig()
    fit = estimate_hand_translation(joints2d, joints3d, K, joint_confidence, depth=depth, depth_scale=depth_scale,
                                    config=config)
    if fit.success or not config.box_fallback or box is None:
        return fit
    boxed = fit_translation_to_box(vertices3d, box, K, image_size, config)
    if not boxed.success:
        boxed.reason = f"joints: {fit.reason}; box: {boxed.reason}"
        return boxed
    boxed.reason = fit.reason
    if depth is not None:
        xyz = np.asarray(joints3d, dtype=np.float64)
        pu, pv = _reprojection(boxed.translation, xyz, np.asarray(K, dtype=np.float64))
        _refine_with_depth(boxed, np.stack([pu, pv], 1), xyz, np.asarray(K, dtype=np.float64),
                           np.ones(len(xyz)), depth, depth_scale, config)
    return boxed
