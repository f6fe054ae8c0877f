"""Spatial and temporal consistency constraints that select pseudo-labels (SHO section 5.1).

Semi-Hand-Object keeps a frame's predicted hand as a pseudo-label only if the
prediction agrees with itself, with the annotated hand box, with anatomy and with
its neighbours in time:

spatial (5.1.1), on each frame alone
    box_iou       IoU of the box around the reprojected mesh and the given hand box >= 0.6
    reprojection  distance between the 2D joints and the reprojected 3D joints <= 0.65
    bone_length   every normalised bone length >= 0.1
    joint_angle   every finger joint angle within [0, 90] degrees
temporal (5.1.2), between consecutive frames of the source
    joint2d_change  2D joint change <= 0.5
    pose_change     MANO pose change <= 0.01
    isolated_frame  (ours) a frame with no consecutive neighbour cannot be checked
teacher (ours), on each frame alone, only in jobs run with a teacher (``--teacher mediapipe``)
    teacher_2d      mean per-joint distance of the 2D joints to the teacher's <= 0.25
shape (5.1.2), per sequence, on the frames that passed everything enabled above
    shape           |betas - mean betas| <= 2 sigma_C

The 3D joints and mesh are reprojected with the weak-perspective camera fitted to the
predicted 2D and 3D joints (equation 7, :mod:`weak_perspective`).

Where SHO leaves a definition open, the choice made here (and configurable in
:class:`ConstraintConfig`) is:

* 2D distances are divided by a scale so they do not depend on the image size: the
  larger side of the given hand box (``scale_reference: hand_box``, default), or of
  the box around the predicted 2D joints (``joints_2d``, the runtime filter's choice).
* the reprojection distance is the L2 norm of the whole 21x2 residual (SHO's formula
  taken literally). The fit removes scale and shift, so a good prediction leaves a small
  residual and 0.65 hand boxes of total residual (0.14 per joint, root mean square) is
  a meaningful bound; the mean per-joint distance would pass nearly anything at 0.65.
* the 2D change between frames is the mean per-joint displacement. The literal norm of
  all 42 numbers at 0.5 rejects a large share of clean frames of a moving hand (measured
  for the runtime filter, hoi_perception.tracking.hand_filter), and with the mean the
  pseudo-label filter and the runtime gate agree.
* the pose change is the mean over the 48 pose numbers of the squared relative rotation
  angle of each of the 16 joints (rad^2), as in the runtime filter; ``axis_angle_norm``
  gives SHO's literal |theta_t - theta_t-1|_2 on the raw axis-angle numbers, which
  reports a jump where an axis-angle wraps at pi although the rotation barely moved.
* bone lengths are divided by the wrist-to-middle-knuckle bone, joint angles are the
  unsigned angles between consecutive bones of a finger (0 = straight), both as in
  :mod:`hoi_perception.hand_model.kinematics`.
* consecutive frames are frames whose ids differ by exactly ``frame_step``; a gap in the
  ids (dropped or unannotated frames) breaks the pair. A frame is compared with its
  source predecessor whatever that frame's own verdict (smoothness is a property of the
  pair of predictions); the first frame of a run of consecutive frames, which has no
  predecessor, is compared with its successor instead, so it is not lost for lack of
  history. A frame with neither is ``isolated_frame`` and dropped unless
  ``keep_isolated_frames``.
* the teacher distance is the mean per-joint distance between the predicted 2D joints and
  the real-image teacher's landmarks (:mod:`hoi_training.pseudolabel.teacher`, MediaPipe Hands
  on the full frame), over the same scale reference as the other 2D distances. A frame where
  the teacher found no hand matching the hand box has a NaN distance: it cannot be confirmed
  and ``teacher_2d`` rejects it.
* the shape filter is one pass over the frames that passed the other enabled
  constraints: mean and sigma_C = sqrt(mean |beta - mean|^2) over them, then drop those
  with |beta - mean| > 2 sigma_C.

Which side a value exactly at a threshold falls: every threshold is inclusive of
passing (IoU = 0.6 passes, distance = 0.65 passes, bone = 0.1 passes, angle = 90
passes, change = 0.5 passes, pose change = 0.01 passes, teacher distance = 0.25 passes,
shape deviation = 2 sigma_C passes). NaN scores (degenerate predictions, no teacher hand) fail.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np
from scipy.spatial.transform import Rotation

from hoi_perception.config import ConfigError
from hoi_perception.geometry.camera import box_from_points, box_iou
from hoi_perception.hand_model.joint_orders import NUM_HAND_JOINTS
from hoi_perception.hand_model.kinematics import BiomechanicsLimits, check_biomechanics
from hoi_training.pseudolabel.weak_perspective import fit_weak_perspective


class Constraint(str, enum.Enum):
    """A pseudo-label constraint; the value names it in results, counts and manifests."""

    BOX_IOU = "box_iou"
    REPROJECTION = "reprojection"
    BONE_LENGTH = "bone_length"
    JOINT_ANGLE = "joint_angle"
    JOINT2D_CHANGE = "joint2d_change"
    POSE_CHANGE = "pose_change"
    ISOLATED_FRAME = "isolated_frame"
    TEACHER_2D = "teacher_2d"
    SHAPE = "shape"


SPATIAL_CONSTRAINTS = (Constraint.BOX_IOU, Constraint.REPROJECTION, Constraint.BONE_LENGTH, Constraint.JOINT_ANGLE)
TEMPORAL_CONSTRAINTS = (Constraint.JOINT2D_CHANGE, Constraint.POSE_CHANGE, Constraint.ISOLATED_FRAME)
# Column order of FilterResult.rejected_by (the order they are decided in).
CONSTRAINTS: tuple[Constraint, ...] = SPATIAL_CONSTRAINTS + TEMPORAL_CONSTRAINTS + (Constraint.TEACHER_2D,
                                                                                    Constraint.SHAPE)


@dataclass
class ConstraintConfig:
    """Thresholds and definitions of the pseudo-label constraints; defaults are SHO's values.

    spatial / temporal / shape: ablation switches for the three groups (SHO's table 4
        compares no filtering, without spatial, without temporal, and all). Scores are
        computed either way; a switched-off group rejects nothing.
    teacher: ablation switch of ``teacher_2d``, which only judges predictions that carry a
        teacher's joints (jobs run with ``teacher.kind: mediapipe``); others it never rejects.
    min_box_iou: SHO 0.6. IoU between the given hand box and the box around the mesh
        vertices reprojected with the fitted weak-perspective camera.
    max_reprojection_distance: SHO t_p = 0.65. Distance between the predicted 2D joints and
        the reprojected 3D joints, in units of the scale reference; ``reprojection_reduction``
        says how the 21 joints are combined. A non-positive fitted scale also fails (the hand
        would face away from a camera that looks along +z).
    reprojection_reduction: ``norm``: L2 norm of the whole (21, 2) residual (SHO's formula);
        ``mean_joint``: mean of the per-joint distances.
    min_normalized_bone_length: SHO 0.1. Each bone divided by the wrist-to-middle-knuckle bone.
    min_joint_angle_deg / max_joint_angle_deg: SHO (0, 90). Unsigned bend angle between
        consecutive bones of each finger, 0 = straight.
    max_joint2d_change: SHO t_j = 0.5. 2D joint change between consecutive frames in units
        of the earlier frame's scale reference; ``joint2d_change_reduction`` as above
        (default ``mean_joint``: mean per-joint displacement).
    max_pose_change: SHO t_theta = 0.01. Change of the 48 MANO pose numbers between
        consecutive frames, measured by ``pose_change_metric``: ``mean_squared_angle``
        (mean over the 48 numbers of each joint's squared relative rotation angle, rad^2)
        or ``axis_angle_norm`` (L2 norm of the difference of the raw axis-angle vectors, rad).
    max_teacher_2d_distance: mean per-joint distance between the predicted 2D joints and the
        teacher's landmarks, in units of the scale reference. NaN (no matching teacher
        hand) fails. 0.25: several times MediaPipe's own 2D error on the synthetic check
        (benchmarks/results/pseudolabel_teacher.md), below the labels it should refuse there.
    scale_reference: what 2D distances are divided by: the larger side of the given hand
        box (``hand_box``) or of the box around the predicted 2D joints (``joints_2d``).
    frame_step: difference of frame ids between consecutive source frames (2 when the
        source's ids count every frame but every second one was decoded).
    keep_isolated_frames: keep frames that have no consecutive neighbour (their temporal
        constraints cannot be evaluated); SHO's videos have none but the first frame.
    shape_max_sigmas: SHO 2. Frames whose betas lie further than this many sigma_C from
        the mean over the frames that passed the other constraints are dropped.
    """

    spatial: bool = True
    temporal: bool = True
    shape: bool = True
    teacher: bool = True
    min_box_iou: float = 0.6
    max_reprojection_distance: float = 0.65
    reprojection_reduction: Literal["norm", "mean_joint"] = "norm"
    min_normalized_bone_length: float = 0.1
    min_joint_angle_deg: float = 0.0
    max_joint_angle_deg: float = 90.0
    max_joint2d_change: float = 0.5
    joint2d_change_reduction: Literal["norm", "mean_joint"] = "mean_joint"
    max_pose_change: float = 0.01
    pose_change_metric: Literal["mean_squared_angle", "axis_angle_norm"] = "mean_squared_angle"
    max_teacher_2d_distance: float = 0.25
    scale_reference: Literal["hand_box", "joints_2d"] = "hand_box"
    frame_step: int = 1
    keep_isolated_frames: bool = False
    shape_max_sigmas: float = 2.0

    def validate(self) -> None:
        if not 0.0 <= self.min_box_iou <= 1.0:
            raise ConfigError(f"min_box_iou: expected a value in [0, 1], got {self.min_box_iou}")
        for name in ("max_reprojection_distance", "max_joint2d_change", "max_pose_change", "max_teacher_2d_distance",
                     "shape_max_sigmas"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name}: expected a positive number, got {value}")
        if self.frame_step < 1:
            raise ConfigError(f"frame_step: expected an integer >= 1, got {self.frame_step}")
        self.biomechanics_limits().validate()

    def biomechanics_limits(self) -> BiomechanicsLimits:
        return BiomechanicsLimits(min_normalized_bone_length=self.min_normalized_bone_length,
                                  min_joint_angle_deg=self.min_joint_angle_deg,
                                  max_joint_angle_deg=self.max_joint_angle_deg)


@dataclass
class SequencePredictions:
    """The (test-time-augmented) predictions for every frame of one source sequence, in source order.

    frame_ids: (T,) integers, strictly increasing; gaps mark frames the source lacks.
    joints_2d: (T, 21, 2) pixels of the source image, HO-3D joint order.
    joints_3d: (T, 21, 3) in the camera's orientation (root-relative is fine), HO-3D order.
    vertices: (T, V, 3) the mesh in the same frame and unit as ``joints_3d``.
    hand_pose: (T, 48) MANO axis-angle pose: global orientation then the 15 finger joints.
    betas: (T, B) MANO shape.
    hand_boxes: (T, 4) the given hand box (x0, y0, x1, y1) in the pixels of ``joints_2d``.
    timestamps: optional (T,) seconds, carried into the results for the record.
    teacher_joints_2d: optional (T, 21, 2) a real-image teacher's 2D joints in the pixels and
        order of ``joints_2d``, NaN rows where it found no matching hand; None: no teacher.
    sequence: name of the sequence, for messages and manifests.
    """

    frame_ids: np.ndarray
    joints_2d: np.ndarray
    joints_3d: np.ndarray
    vertices: np.ndarray
    hand_pose: np.ndarray
    betas: np.ndarray
    hand_boxes: np.ndarray
    timestamps: np.ndarray | None = None
    teacher_joints_2d: np.ndarray | None = None
    sequence: str = ""

    def __post_init__(self) -> None:
        where = f"SequencePredictions({self.sequence!r})" if self.sequence else "SequencePredictions"
        self.frame_ids = np.asarray(self.frame_ids)
        if self.frame_ids.ndim != 1 or not np.issubdtype(self.frame_ids.dtype, np.integer):
            raise ValueError(f"{where}.frame_ids: expected a 1-D integer array, got {self.frame_ids.dtype} "
                             f"{self.frame_ids.shape}")
        if np.any(np.diff(self.frame_ids) <= 0):
            raise ValueError(f"{where}.frame_ids: expected strictly increasing ids (frames in source order)")
        count = len(self.frame_ids)
        expected = {
            "joints_2d": (count, NUM_HAND_JOINTS, 2),
            "joints_3d": (count, NUM_HAND_JOINTS, 3),
            "vertices": (count, None, 3),
            "hand_pose": (count, 48),
            "betas": (count, None),
            "hand_boxes": (count, 4),
        }
        if self.timestamps is not None:
            expected["timestamps"] = (count,)
        if self.teacher_joints_2d is not None:
            expected["teacher_joints_2d"] = (count, NUM_HAND_JOINTS, 2)
        for name, shape in expected.items():
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
                shown = tuple("V" if s is None else s for s in shape)
                raise ValueError(f"{where}.{name}: expected shape {shown} for {count} frames, got {value.shape}")
            setattr(self, name, value)

    def __len__(self) -> int:
        return len(self.frame_ids)

    def to_arrays(self, float_dtype: type = np.float32) -> dict[str, np.ndarray]:
        """Per-frame arrays for a shard file, floats as ``float_dtype`` (float32 halves the size of
        the meshes and is far finer than the predictions' accuracy). Stored next to
        ``FilterResult.to_arrays()``, every frame's labels stay available to re-filter offline."""
        arrays = {"frame_ids": self.frame_ids.astype(np.int64)}
        for name in ("joints_2d", "joints_3d", "vertices", "hand_pose", "betas", "hand_boxes"):
            arrays[name] = getattr(self, name).astype(float_dtype)
        if self.timestamps is not None:
            arrays["timestamps"] = self.timestamps.astype(np.float64)
        if self.teacher_joints_2d is not None:
            arrays["teacher_joints_2d"] = self.teacher_joints_2d.astype(float_dtype)
        return arrays


@dataclass
class ConstraintScores:
    """Per-frame value of every constraint, shape (T,) each; NaN where it cannot be evaluated."""

    box_iou: np.ndarray
    reprojection_distance: np.ndarray
    min_normalized_bone_length: np.ndarray
    min_joint_angle_deg: np.ndarray
    max_joint_angle_deg: np.ndarray
    joint2d_change: np.ndarray
    pose_change: np.ndarray
    teacher_2d: np.ndarray  # distance to the teacher's 2D joints (NaN: no teacher, or no matching hand)
    shape_deviation: np.ndarray  # |betas - mean| over the shape-filter population, in units of betas
    camera_scale: np.ndarray  # the fitted weak-perspective camera
    camera_translation: np.ndarray  # (T, 2)


@dataclass
class FilterResult:
    """What the constraints decided for one sequence.

    kept: (T,) True for frames that become pseudo-labels.
    rejected_by: (T, len(CONSTRAINTS)) True where the constraint of that column rejected
        the frame (several may; only enabled groups reject; the shape filter only judges
        frames that passed everything else).
    shape_mean / shape_sigma: the mean betas and sigma_C of the shape filter's population
        (NaN when it was empty).
    timestamps: the input's timestamps, when it had them.
    """

    sequence: str
    frame_ids: np.ndarray
    kept: np.ndarray
    rejected_by: np.ndarray
    scores: ConstraintScores
    shape_mean: np.ndarray
    shape_sigma: float
    timestamps: np.ndarray | None = None

    def rejected(self, constraint: Constraint | str) -> np.ndarray:
        """(T,) frames rejected by one constraint."""
        return self.rejected_by[:, CONSTRAINTS.index(Constraint(constraint))]

    def reasons(self, index: int) -> list[str]:
        """Names of the constraints that rejected frame ``index`` (empty when kept)."""
        return [c.value for c, hit in zip(CONSTRAINTS, self.rejected_by[index]) if hit]

    def counts(self) -> dict[str, int]:
        """Frame counts for manifests: frames, kept, dropped, and rejected_by.<constraint> for each
        constraint (a frame rejected by two constraints counts under both)."""
        out = {"frames": int(len(self.kept)), "kept": int(self.kept.sum()), "dropped": int((~self.kept).sum())}
        for column, constraint in enumerate(CONSTRAINTS):
            out[f"rejected_by.{constraint.value}"] = int(self.rejected_by[:, column].sum())
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Self-describing per-frame arrays for a shard file: frame_ids, kept,
        rejected_by.<constraint> for every constraint, and score.<name> for every score."""
        arrays = {"frame_ids": self.frame_ids.astype(np.int64), "kept": self.kept}
        if self.timestamps is not None:
            arrays["timestamps"] = self.timestamps.astype(np.float64)
        for column, constraint in enumerate(CONSTRAINTS):
            arrays[f"rejected_by.{constraint.value}"] = self.rejected_by[:, column]
        for f in fields(ConstraintScores):
            arrays[f"score.{f.name}"] = np.asarray(getattr(self.scores, f.name), dtype=np.float64)
        return arrays


def sum_counts(counts: Sequence[dict[str, int]]) -> dict[str, int]:
    """Add up count dictionaries (e.g. of every sequence of a shard)."""
    total: dict[str, int] = {}
    for item in counts:
        for key, value in item.items():
            total[key] = total.get(key, 0) + int(value)
    return dict(sorted(total.items()))


# ---------------------------------------------------------------------------------------------
# Scores


def scale_references(joints_2d: np.ndarray, hand_boxes: np.ndarray,
                     reference: Literal["hand_box", "joints_2d"]) -> np.ndarray:
    """(T,) pixel length that 2D distances are divided by: larger side of the box or of the joints' extent."""
    if reference == "hand_box":
        sides = hand_boxes[:, 2:] - hand_boxes[:, :2]
    elif reference == "joints_2d":
        sides = joints_2d.max(axis=1) - joints_2d.min(axis=1)
    else:
        raise ValueError(f"scale reference: expected 'hand_box' or 'joints_2d', got {reference!r}")
    side = sides.max(axis=-1)
    return np.where(side > 0, side, np.nan)


def joint_set_distance(a: np.ndarray, b: np.ndarray, reduction: Literal["norm", "mean_joint"]) -> np.ndarray:
    """Distance between (..., J, D) joint sets: L2 norm of the whole difference, or mean per-joint distance."""
    difference = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if reduction == "norm":
        return np.sqrt(np.sum(difference ** 2, axis=(-1, -2)))
    if reduction == "mean_joint":
        return np.linalg.norm(difference, axis=-1).mean(axis=-1)
    raise ValueError(f"reduction: expected 'norm' or 'mean_joint', got {reduction!r}")


def pose_change(previous: np.ndarray, current: np.ndarray,
                metric: Literal["mean_squared_angle", "axis_angle_norm"]) -> np.ndarray:
    """Change between (..., 48) MANO axis-angle poses, see ConstraintConfig.pose_change_metric."""
    previous = np.asarray(previous, dtype=np.float64)
    current = np.asarray(current, dtype=np.float64)
    if metric == "axis_angle_norm":
        return np.linalg.norm(current - previous, axis=-1)
    if metric == "mean_squared_angle":
        batch = current.shape[:-1]
        before = Rotation.from_rotvec(previous.reshape(-1, 3))
        after = Rotation.from_rotvec(current.reshape(-1, 3))
        angles = (after * before.inv()).magnitude().reshape(batch + (-1,))
        return np.sum(angles ** 2, axis=-1) / current.shape[-1]
    raise ValueError(f"pose change metric: expected 'mean_squared_angle' or 'axis_angle_norm', got {metric!r}")


def temporal_partners(frame_ids: np.ndarray, frame_step: int) -> np.ndarray:
    """(T,) index of the frame each frame is compared with: its predecessor when that is the
    previous frame of the source, else its successor when that is the next one, else -1."""
    frame_ids = np.asarray(frame_ids)
    count = len(frame_ids)
    partner = np.full(count, -1, dtype=np.int64)
    if count < 2:
        return partner
    consecutive = np.diff(frame_ids) == frame_step  # pair (i, i + 1)
    index = np.arange(count)
    has_previous = np.concatenate([[False], consecutive])
    has_next = np.concatenate([consecutive, [False]])
    partner[has_next] = index[has_next] + 1
    partner[has_previous] = index[has_previous] - 1
    return partner


def compute_scores(predictions: SequencePredictions, config: ConstraintConfig) -> tuple[ConstraintScores, np.ndarray]:
    """Every per-frame score except the shape deviation (which needs the verdicts), and the
    temporal partner index of each frame (-1 for isolated frames)."""
    p = predictions
    count = len(p)
    camera = fit_weak_perspective(p.joints_3d, p.joints_2d)
    reference = scale_references(p.joints_2d, p.hand_boxes, config.scale_reference)

    mesh_2d = camera.project(p.vertices)
    iou = np.array([box_iou(box_from_points(mesh_2d[i]), p.hand_boxes[i]) if np.all(np.isfinite(mesh_2d[i]))
                    else np.nan for i in range(count)], dtype=np.float64)
    reprojected = camera.project(p.joints_3d)
    reprojection = joint_set_distance(p.joints_2d, reprojected, config.reprojection_reduction) / reference

    biomechanics = check_biomechanics(p.joints_3d, config.biomechanics_limits())
    angles = biomechanics.joint_angles_deg.reshape(count, 15)  # 5 fingers x 3 joints
    lengths = biomechanics.normalized_bone_lengths

    partner = temporal_partners(p.frame_ids, config.frame_step)
    paired = partner >= 0
    joint2d = np.full(count, np.nan)
    pose = np.full(count, np.nan)
    if paired.any():
        current = np.flatnonzero(paired)
        other = partner[paired]
        earlier = np.minimum(current, other)
        later = np.maximum(current, other)
        joint2d[paired] = joint_set_distance(p.joints_2d[later], p.joints_2d[earlier],
                                             config.joint2d_change_reduction) / reference[earlier]
        pose[paired] = pose_change(p.hand_pose[earlier], p.hand_pose[later], config.pose_change_metric)
    teacher = np.full(count, np.nan)
    if p.teacher_joints_2d is not None:
        teacher = joint_set_distance(p.joints_2d, p.teacher_joints_2d, "mean_joint") / reference

    scores = ConstraintScores(
        box_iou=iou,
        reprojection_distance=reprojection,
        min_normalized_bone_length=_nan_reduce(np.min, lengths),
        min_joint_angle_deg=_nan_reduce(np.min, angles),
        max_joint_angle_deg=_nan_reduce(np.max, angles),
        joint2d_change=joint2d,
        pose_change=pose,
        teacher_2d=teacher,
        shape_deviation=np.full(count, np.nan),
        camera_scale=np.asarray(camera.scale, dtype=np.float64),
        camera_translation=np.asarray(camera.translation, dtype=np.float64),
    )
    return scores, partner


def _nan_reduce(reduce, values: np.ndarray) -> np.ndarray:
    """Row-wise min/max that is NaN when any entry is NaN (a degenerate hand fails)."""
    out = reduce(values, axis=-1) if values.shape[-1] else np.full(values.shape[:-1], np.nan)
    return np.where(np.isnan(values).any(axis=-1), np.nan, out)


# ---------------------------------------------------------------------------------------------
# Decisions


def _at_least(values: np.ndarray, limit: float) -> np.ndarray:
    return values >= limit  # NaN compares False: fails


def _at_most(values: np.ndarray, limit: float) -> np.ndarray:
    return values <= limit


def filter_sequence(predictions: SequencePredictions, config: ConstraintConfig | None = None) -> FilterResult:
    """Evaluate every constraint on one sequence and decide which frames become pseudo-labels."""
    config = config if config is not None else ConstraintConfig()
    config.validate()
    scores, partner = compute_scores(predictions, config)
    count = len(predictions)
    rejected = np.zeros((count, len(CONSTRAINTS)), dtype=bool)

    def mark(constraint: Constraint, passes: np.ndarray) -> None:
        rejected[:, CONSTRAINTS.index(constraint)] = ~passes

    if config.spatial:
        mark(Constraint.BOX_IOU, _at_least(scores.box_iou, config.min_box_iou))
        mark(Constraint.REPROJECTION, _at_most(scores.reprojection_distance, config.max_reprojection_distance)
             & (scores.camera_scale > 0))
        mark(Constraint.BONE_LENGTH, _at_least(scores.min_normalized_bone_length, config.min_normalized_bone_length))
        mark(Constraint.JOINT_ANGLE, _at_least(scores.min_joint_angle_deg, config.min_joint_angle_deg)
             & _at_most(scores.max_joint_angle_deg, config.max_joint_angle_deg))
    if config.temporal:
        paired = partner >= 0
        # Isolated frames have NaN changes; they are judged by isolated_frame alone.
        mark(Constraint.JOINT2D_CHANGE, ~paired | _at_most(scores.joint2d_change, config.max_joint2d_change))
        mark(Constraint.POSE_CHANGE, ~paired | _at_most(scores.pose_change, config.max_pose_change))
        mark(Constraint.ISOLATED_FRAME, paired | config.keep_isolated_frames)
    if config.teacher and predictions.teacher_joints_2d is not None:
        mark(Constraint.TEACHER_2D, _at_most(scores.teacher_2d, config.max_teacher_2d_distance))

    population = ~rejected.any(axis=1)
    shape_mean = np.full(predictions.betas.shape[1], np.nan)
    shape_sigma = math.nan
    if population.any():
        shape_mean = predictions.betas[population].mean(axis=0)
        deviation = np.linalg.norm(predictions.betas - shape_mean, axis=-1)
        shape_sigma = float(np.sqrt(np.mean(deviation[population] ** 2)))
        scores.shape_deviation = deviation
        if config.shape:
            outlier = population & ~(deviation <= config.shape_max_sigmas * shape_sigma)
            rejected[:, CONSTRAINTS.index(Constraint.SHAPE)] = outlier

    return FilterResult(sequence=predictions.sequence, frame_ids=predictions.frame_ids.copy(),
                        kept=~rejected.any(axis=1), rejected_by=rejected, scores=scores,
                        shape_mean=shape_mean, shape_sigma=shape_sigma,
                        timestamps=None if predictions.timestamps is None else predictions.timestamps.copy())
