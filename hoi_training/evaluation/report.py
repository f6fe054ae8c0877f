"""Accumulate per-frame evaluation results and write JSON + Markdown reports.

An evaluation loop hands one :class:`EvaluationFrame` per image to
:class:`EvaluationAccumulator` - prediction and ground truth as typed
:class:`FrameAnnotation` records - and asks for :meth:`EvaluationAccumulator.summary`
at the end. Frames are streamed: per-point sums and PCK counts are kept instead of
every frame's errors, so memory stays bounded on full test sets.

Label presence: a ``None`` field in the ground truth means "not labelled" and the
frame is skipped by every metric that needs that field (e.g. a DexYCB frame with no
hand, an HO-3D evaluation frame without vertices). A ``None`` field in the
prediction on a labelled frame means the system gave no estimate (no detection,
PnP failure); such frames are counted (``missing_predictions``), count as failures
in ADD(-S)-0.1D accuracies and AUCs, score IoU 0, and are left out of mean errors,
which cannot be defined for them.

A predicted hand may be root-relative (:attr:`Hand3D.root_relative`: its shape is
known but its camera-frame translation is not). It is scored by the measures that do
not depend on the hand's position - root-relative MPJPE, Procrustes-aligned joint and
mesh errors and F-scores, HO-3D scale-translation alignment - and counted in
``missing_translations`` and left out of the camera-frame ones (MPJPE, MPVPE,
unaligned F-scores, acceleration, interaction). The hand section says how many frames
each group used: ``frames_evaluated`` / ``mesh_frames_evaluated`` (camera frame) and
``root_relative_frames_evaluated`` / ``root_relative_mesh_frames_evaluated``.

Units in the summary follow the field: millimetres (``_mm``), degrees (``_deg``),
percentages (``_pct``). Hand joints are in HO-3D order (MANO's 16 joints, then the
thumb, index, middle, ring and pinky tips) and all 3D quantities share one camera
frame in metres.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hoi_perception.atomic import atomic_write_text
from hoi_perception.config import ConfigError
from hoi_perception.geometry import metrics as m
from hoi_training.evaluation import interaction as ia

_MM = 1000.0
_PCT = 100.0
_ROOT_TOLERANCE_M = 1e-9  # a root-relative hand's wrist offset from the origin that counts as rounding


# ----------------------------------------------------------------------------- per-frame records


def _points(name: str, value: Any, num_points: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (num_points, 3):
        raise ValueError(f"{name}: expected shape ({num_points}, 3), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return arr


def _box(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (4,) or not np.all(np.isfinite(arr)) or arr[2] < arr[0] or arr[3] < arr[1]:
        raise ValueError(f"{name}: expected a finite (x0, y0, x1, y1) box with x1 >= x0 and y1 >= y0, got {value!r}")
    return arr


@dataclass(frozen=True, eq=False)
class Hand3D:
    """A hand in metres along the camera's axes: 21 joints in HO-3D order and optionally the 778 MANO vertices.

    By default the points are camera-frame positions. ``root_relative=True`` marks a hand
    whose position in the camera is unknown (e.g. a prediction whose translation fit
    failed): the wrist (joint 0) sits at the origin, and only metrics that do not depend
    on the hand's position (root-relative and aligned errors) may use it.
    """

    joints: np.ndarray
    vertices: np.ndarray | None = None
    root_relative: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "joints", _points("hand joints", self.joints, m.NUM_HAND_JOINTS))
        if self.vertices is not None:
            object.__setattr__(self, "vertices", _points("hand vertices", self.vertices, m.NUM_MANO_VERTICES))
        if not isinstance(self.root_relative, (bool, np.bool_)):
            raise TypeError(f"hand root_relative: expected a bool, got {type(self.root_relative).__name__}")
        object.__setattr__(self, "root_relative", bool(self.root_relative))
        wrist = self.joints[m.HO3D_WRIST]
        if self.root_relative and not np.allclose(wrist, 0.0, rtol=0.0, atol=_ROOT_TOLERANCE_M):
            raise ValueError(f"root-relative hand: expected the wrist (joint {m.HO3D_WRIST}) at the origin, "
                             f"got {wrist.tolist()}")


@dataclass(frozen=True, eq=False)
class ObjectPose:
    """Rigid object pose mapping model coordinates into the camera frame: ``x_cam = R @ x + t`` (metres)."""

    rotation: np.ndarray
    translation: np.ndarray

    def __post_init__(self) -> None:
        rotation = np.asarray(self.rotation, dtype=np.float64)
        translation = np.asarray(self.translation, dtype=np.float64)
        if rotation.shape != (3, 3) or not np.all(np.isfinite(rotation)):
            raise ValueError(f"object rotation: expected a finite (3, 3) matrix, got shape {rotation.shape}")
        if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-4) or np.linalg.det(rotation) < 0:
            raise ValueError("object rotation: expected a proper rotation matrix (orthonormal, det +1)")
        if translation.shape != (3,) or not np.all(np.isfinite(translation)):
            raise ValueError(f"object translation: expected a finite (3,) vector, got shape {translation.shape}")
        object.__setattr__(self, "rotation", rotation)
        object.__setattr__(self, "translation", translation)


@dataclass(frozen=True, eq=False)
class ObjectModel:
    """An object's 3D model in its own frame (metres), shared by all frames that show it.

    ``points`` are the model points ADD/ADD-S average over (typically the mesh
    vertices); ``faces`` (optional) index into them and enable the interaction
    metrics. ``symmetric`` selects ADD-S in the ADD(-S) scores. Diameter (BOP),
    bounding-box diagonal (SHO) and box corners are computed once here.
    """

    name: str
    points: np.ndarray
    symmetric: bool = False
    faces: np.ndarray | None = None
    diameter: float = field(init=False)
    bbox_diagonal: float = field(init=False)
    corners: np.ndarray = field(init=False)
    mesh: ia.TriangleMesh | None = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"object model name: expected a non-empty string, got {self.name!r}")
        points = np.asarray(self.points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] < 2 or not np.all(np.isfinite(points)):
            raise ValueError(f"object model '{self.name}' points: expected finite (N, 3) with N >= 2, "
                             f"got {points.shape}")
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "diameter", m.model_diameter(points))
        if self.diameter <= 0:
            raise ValueError(f"object model '{self.name}': all points coincide, the diameter is 0")
        object.__setattr__(self, "bbox_diagonal", m.bounding_box_diagonal(points))
        object.__setattr__(self, "corners", m.bounding_box_corners(points))
        object.__setattr__(self, "mesh", None if self.faces is None else ia.TriangleMesh(points, self.faces))


@dataclass(frozen=True, eq=False)
class FrameAnnotation:
    """What is known about one frame, ground truth or prediction; ``None`` marks a missing field.

    Boxes are ``(x0, y0, x1, y1)`` in pixels of the full image.
    """

    hand: Hand3D | None = None
    object_pose: ObjectPose | None = None
    hand_box: np.ndarray | None = None
    object_box: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.hand is not None and not isinstance(self.hand, Hand3D):
            raise TypeError(f"hand: expected Hand3D or None, got {type(self.hand).__name__}")
        if self.object_pose is not None and not isinstance(self.object_pose, ObjectPose):
            raise TypeError(f"object_pose: expected ObjectPose or None, got {type(self.object_pose).__name__}")
        if self.hand_box is not None:
            object.__setattr__(self, "hand_box", _box("hand_box", self.hand_box))
        if self.object_box is not None:
            object.__setattr__(self, "object_box", _box("object_box", self.object_box))


@dataclass(frozen=True, eq=False)
class EvaluationFrame:
    """One evaluated image: prediction, ground truth and the model of the object it shows.

    ``sequence_id`` and ``frame_index`` (consecutive integers within a sequence)
    enable the acceleration error; frames without them are left out of it only.
    """

    frame_id: str
    prediction: FrameAnnotation
    ground_truth: FrameAnnotation
    object_model: ObjectModel | None = None
    sequence_id: str | None = None
    frame_index: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.frame_id, str) or not self.frame_id:
            raise ValueError(f"frame_id: expected a non-empty string, got {self.frame_id!r}")
        if (self.sequence_id is None) != (self.frame_index is None):
            raise ValueError(f"frame '{self.frame_id}': give both sequence_id and frame_index, or neither")
        if self.ground_truth.object_pose is not None and self.object_model is None:
            raise ValueError(f"frame '{self.frame_id}': an object pose label needs the object_model to score it")


# ----------------------------------------------------------------------------- configuration


@dataclass
class EvaluationConfig:
    """Benchmark thresholds, in metres; the defaults are the HO-3D / BOP / YCB-Video conventions."""

    f_score_thresholds_m: list[float] = field(default_factory=lambda: list(m.F_SCORE_THRESHOLDS_M))
    pck_max_threshold_m: float = m.PCK_MAX_THRESHOLD_M
    pck_num_thresholds: int = m.PCK_NUM_THRESHOLDS
    add_diameter_fraction: float = m.ADD_DIAMETER_FRACTION
    ycb_video_auc_max_distance_m: float = m.YCB_VIDEO_AUC_MAX_DISTANCE_M
    contact_threshold_m: float = ia.DEFAULT_CONTACT_THRESHOLD_M
    interaction_metrics: bool = True  # penetration/contact need object faces and cost ~0.1-1 s per frame

    def validate(self) -> None:
        if not self.f_score_thresholds_m or any(not t > 0 for t in self.f_score_thresholds_m):
            raise ConfigError(f"f_score_thresholds_m: expected positive distances, got {self.f_score_thresholds_m}")
        if not self.pck_max_threshold_m > 0:
            raise ConfigError(f"pck_max_threshold_m: expected > 0, got {self.pck_max_threshold_m}")
        if self.pck_num_thresholds < 2:
            raise ConfigError(f"pck_num_thresholds: expected >= 2, got {self.pck_num_thresholds}")
        if not 0 < self.add_diameter_fraction <= 1:
            raise ConfigError(f"add_diameter_fraction: expected in (0, 1], got {self.add_diameter_fraction}")
        if not self.ycb_video_auc_max_distance_m > 0:
            raise ConfigError(f"ycb_video_auc_max_distance_m: expected > 0, got {self.ycb_video_auc_max_distance_m}")
        if not self.contact_threshold_m >= 0:
            raise ConfigError(f"contact_threshold_m: expected >= 0, got {self.contact_threshold_m}")


# ----------------------------------------------------------------------------- streaming statistics


class _PointErrorStats:
    """Running per-point error sums and PCK counts over frames (the HO-3D ``EvalUtil`` measures)."""

    def __init__(self, thresholds: np.ndarray) -> None:
        self.thresholds = thresholds
        self.frames = 0
        self._sums: np.ndarray | None = None
        self._correct: np.ndarray | None = None

    def add(self, errors: np.ndarray) -> None:
        errors = errors.reshape(1, -1)
        if self._sums is None:
            self._sums = np.zeros(errors.shape[1])
            self._correct = np.zeros((self.thresholds.size, errors.shape[1]), dtype=np.int64)
        self._sums += errors[0]
        self._correct += m.pck_counts(errors, self.thresholds)
        self.frames += 1

    def mean(self) -> float | None:
        return None if self._sums is None else float((self._sums / self.frames).mean())

    def pck(self) -> m.PCKCurve | None:
        return None if self._correct is None else m.pck_from_counts(self._correct, self.frames, self.thresholds)


def _mean(values: list[float], scale: float = 1.0) -> float | None:
    return float(np.mean(values)) * scale if values else None


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else value * scale


def _threshold_tag(threshold_m: float) -> str:
    mm = threshold_m * _MM
    return f"{mm:g}mm"


class EvaluationAccumulator:
    """Collects per-frame hand, object, box and interaction errors and summarises them."""

    def __init__(self, config: EvaluationConfig | None = None) -> None:
        self.config = config or EvaluationConfig()
        self.config.validate()
        thresholds = m.pck_thresholds(self.config.pck_max_threshold_m, self.config.pck_num_thresholds)
        self._frame_ids: set[str] = set()
        self._hand_labelled = 0
        self._hand_missing = 0
        self._hand_without_translation = 0
        self._joints = _PointErrorStats(thresholds)
        self._joints_root_relative = _PointErrorStats(thresholds)
        self._joints_procrustes = _PointErrorStats(thresholds)
        self._joints_scale_translation = _PointErrorStats(thresholds)
        self._vertices = _PointErrorStats(thresholds)
        self._vertices_procrustes = _PointErrorStats(thresholds)
        self._f_scores: list[np.ndarray] = []
        self._f_scores_aligned: list[np.ndarray] = []
        self._sequences: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = defaultdict(dict)
        self._object_labelled = 0
        self._object_missing = 0
        self._objects: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self._box_iou: dict[str, list[float]] = {"hand": [], "object": []}
        self._box_missing = {"hand": 0, "object": 0}
        self._interaction: list[ia.InteractionFrameResult] = []

    def __len__(self) -> int:
        return len(self._frame_ids)

    def add(self, frame: EvaluationFrame) -> None:
        """Score one frame; frames are identified by ``frame_id``, which must be unique."""
        if frame.frame_id in self._frame_ids:
            raise ValueError(f"frame '{frame.frame_id}' was already added to this evaluation")
        self._frame_ids.add(frame.frame_id)
        self._add_hand(frame)
        self._add_object(frame)
        self._add_boxes(frame)
        self._add_interaction(frame)

    # -- hands

    def _add_hand(self, frame: EvaluationFrame) -> None:
        gt, pred = frame.ground_truth.hand, frame.prediction.hand
        if gt is None:
            return
        if gt.root_relative:
            raise ValueError(f"frame '{frame.frame_id}': the ground-truth hand must be in the camera frame, "
                             "got a root-relative one")
        self._hand_labelled += 1
        if pred is None:
            self._hand_missing += 1
            return
        # Position-free measures: root-relative, Procrustes and HO-3D scale-translation alignment (which moves
        # the predicted wrist onto the ground truth) give the same error wherever the prediction sits.
        self._joints_root_relative.add(m.point_errors(m.root_relative(pred.joints), m.root_relative(gt.joints)))
        self._joints_procrustes.add(m.point_errors(m.procrustes_align(pred.joints, gt.joints), gt.joints))
        self._joints_scale_translation.add(
            m.point_errors(m.scale_translation_align_ho3d(pred.joints, gt.joints), gt.joints))
        has_mesh = gt.vertices is not None and pred.vertices is not None
        thresholds = self.config.f_score_thresholds_m
        if has_mesh:
            aligned = m.procrustes_align(pred.vertices, gt.vertices)
            self._vertices_procrustes.add(m.point_errors(aligned, gt.vertices))
            self._f_scores_aligned.append(m.f_scores(aligned, gt.vertices, thresholds)[0])
        if pred.root_relative:
            self._hand_without_translation += 1
            return
        # Camera-frame measures need the predicted hand's position.
        self._joints.add(m.point_errors(pred.joints, gt.joints))
        if has_mesh:
            self._vertices.add(m.point_errors(pred.vertices, gt.vertices))
            self._f_scores.append(m.f_scores(pred.vertices, gt.vertices, thresholds)[0])
        if frame.sequence_id is not None:
            frames = self._sequences[frame.sequence_id]
            if frame.frame_index in frames:
                raise ValueError(f"frame '{frame.frame_id}': sequence '{frame.sequence_id}' already has "
                                 f"frame_index {frame.frame_index}")
            frames[int(frame.frame_index)] = (pred.joints, gt.joints)

    def _acceleration_errors(self) -> list[float]:
        errors: list[float] = []
        for frames in self._sequences.values():
            indices = np.array(sorted(frames))
            span = indices[-1] - indices[0] + 1
            pred = np.zeros((span, m.NUM_HAND_JOINTS, 3))
            gt = np.zeros_like(pred)
            valid = np.zeros(span, dtype=bool)
            for index in indices:
                slot = index - indices[0]
                pred[slot], gt[slot] = frames[int(index)]
                valid[slot] = True
            errors.extend(m.acceleration_errors(pred, gt, valid).tolist())
        return errors

    def _hand_summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "frames_labelled": self._hand_labelled,
            "missing_predictions": self._hand_missing,
            "missing_translations": self._hand_without_translation,
            "frames_evaluated": self._joints.frames,
            "mesh_frames_evaluated": self._vertices.frames,
            "root_relative_frames_evaluated": self._joints_root_relative.frames,
            "root_relative_mesh_frames_evaluated": self._vertices_procrustes.frames,
            "mpjpe_mm": _scaled(self._joints.mean(), _MM),
            "root_relative_mpjpe_mm": _scaled(self._joints_root_relative.mean(), _MM),
            "pa_mpjpe_mm": _scaled(self._joints_procrustes.mean(), _MM),
            "scale_translation_mpjpe_mm": _scaled(self._joints_scale_translation.mean(), _MM),
            "mpvpe_mm": _scaled(self._vertices.mean(), _MM),
            "pa_mpvpe_mm": _scaled(self._vertices_procrustes.mean(), _MM),
        }
        curves = {
            "joints": self._joints.pck(),
            "joints_root_relative": self._joints_root_relative.pck(),
            "joints_pa": self._joints_procrustes.pck(),
            "joints_scale_translation": self._joints_scale_translation.pck(),
            "vertices": self._vertices.pck(),
            "vertices_pa": self._vertices_procrustes.pck(),
        }
        for name, curve in curves.items():
            out[f"pck_auc_{name}_pct"] = None if curve is None else curve.auc * _PCT
        for i, threshold in enumerate(self.config.f_score_thresholds_m):
            tag = _threshold_tag(threshold)
            out[f"f_score_{tag}_pct"] = _mean([f[i] for f in self._f_scores], _PCT)
            out[f"pa_f_score_{tag}_pct"] = _mean([f[i] for f in self._f_scores_aligned], _PCT)
        accel = self._acceleration_errors()
        out["acceleration_error_triplets"] = len(accel)
        out["acceleration_error_mm_per_frame_sq"] = _mean(accel, _MM)
        out["pck_curves"] = {
            name: {"thresholds_mm": (curve.thresholds * _MM).tolist(), "pck_pct": (curve.pck * _PCT).tolist()}
            for name, curve in curves.items() if curve is not None
        }
        return out

    # -- objects

    def _add_object(self, frame: EvaluationFrame) -> None:
        gt, pred, model = frame.ground_truth.object_pose, frame.prediction.object_pose, frame.object_model
        if gt is None:
            return
        assert model is not None  # EvaluationFrame guarantees a model for every object label
        self._object_labelled += 1
        stats = self._objects[model.name]
        stats["diameter"].append(model.diameter)
        stats["bbox_diagonal"].append(model.bbox_diagonal)
        stats["symmetric"].append(float(model.symmetric))
        if pred is None:
            self._object_missing += 1
            for key in ("add", "adds", "add_adds"):
                stats[key].append(math.inf)
            return
        poses = (pred.rotation, pred.translation, gt.rotation, gt.translation)
        add = float(m.add_errors(model.points, *poses)[0])
        adds = float(m.adds_errors(model.points, *poses)[0])
        stats["add"].append(add)
        stats["adds"].append(adds)
        stats["add_adds"].append(adds if model.symmetric else add)
        stats["corner_error"].append(float(m.mean_corner_errors(model.corners, *poses)[0]))
        stats["rotation_error_deg"].append(float(m.rotation_errors_deg(pred.rotation, gt.rotation)[0]))
        stats["translation_error"].append(float(m.translation_errors(pred.translation, gt.translation)[0]))

    def _object_scores(self, stats: Mapping[str, list[float]]) -> dict[str, Any]:
        """Scores of one group of object frames (one object, or all pooled)."""
        cfg = self.config
        add, adds, add_adds = (np.asarray(stats[k]) for k in ("add", "adds", "add_adds"))
        diameter, diagonal = np.asarray(stats["diameter"]), np.asarray(stats["bbox_diagonal"])

        def finite_mean(values: np.ndarray) -> float | None:
            finite = values[np.isfinite(values)]
            return float(finite.mean()) * _MM if finite.size else None

        fraction = cfg.add_diameter_fraction
        auc_max = cfg.ycb_video_auc_max_distance_m
        return {
            "frames_labelled": int(add.size),
            "frames_evaluated": int(np.isfinite(add).sum()),
            "add_adds_0.1d_pct": m.pose_accuracy(add_adds, diameter, fraction) * _PCT,
            "add_0.1d_pct": m.pose_accuracy(add, diameter, fraction) * _PCT,
            "adds_0.1d_pct": m.pose_accuracy(adds, diameter, fraction) * _PCT,
            "add_adds_0.1_bbox_diagonal_pct": m.pose_accuracy(add_adds, diagonal, fraction) * _PCT,
            "ycbv_add_adds_auc_pct": m.ycb_video_auc(add_adds, auc_max) * _PCT,
            "ycbv_add_auc_pct": m.ycb_video_auc(add, auc_max) * _PCT,
            "ycbv_adds_auc_pct": m.ycb_video_auc(adds, auc_max) * _PCT,
            "add_mean_mm": finite_mean(add),
            "adds_mean_mm": finite_mean(adds),
            "corner_error_mm": _mean(stats.get("corner_error", []), _MM),
            "rotation_error_deg": _mean(stats.get("rotation_error_deg", [])),
            "translation_error_mm": _mean(stats.get("translation_error", []), _MM),
        }

    def _object_summary(self) -> tuple[dict[str, Any], dict[str, Any]]:
        pooled: dict[str, list[float]] = defaultdict(list)
        per_object = {}
        for name in sorted(self._objects):
            stats = self._objects[name]
            per_object[name] = self._object_scores(stats)
            per_object[name]["symmetric"] = bool(stats["symmetric"][0])
            per_object[name]["diameter_mm"] = stats["diameter"][0] * _MM
            for key, values in stats.items():
                pooled[key].extend(values)
        out: dict[str, Any] = {"frames_labelled": self._object_labelled, "missing_predictions": self._object_missing}
        if self._object_labelled:
            out.update(self._object_scores(pooled))
            out["add_adds_0.1d_pct_mean_over_objects"] = float(
                np.mean([s["add_adds_0.1d_pct"] for s in per_object.values()]))
        return out, per_object

    # -- boxes and interaction

    def _add_boxes(self, frame: EvaluationFrame) -> None:
        for kind in ("hand", "object"):
            gt = getattr(frame.ground_truth, f"{kind}_box")
            pred = getattr(frame.prediction, f"{kind}_box")
            if gt is None:
                continue
            if pred is None:
                self._box_missing[kind] += 1
                self._box_iou[kind].append(0.0)
            else:
                self._box_iou[kind].append(float(m.paired_box_iou(pred, gt)[0]))

    def _add_interaction(self, frame: EvaluationFrame) -> None:
        pred, model = frame.prediction, frame.object_model
        if (not self.config.interaction_metrics or model is None or model.mesh is None or pred.hand is None
                or pred.hand.root_relative or pred.hand.vertices is None or pred.object_pose is None):
            return
        # Distances are rigid-invariant: bring the hand into the object frame (x = R^T (x_cam - t)) so the
        # mesh's search structures, built once, serve every frame.
        pose = pred.object_pose
        hand_in_object = (pred.hand.vertices - pose.translation) @ pose.rotation
        self._interaction.append(ia.evaluate_interaction(hand_in_object, model.mesh, self.config.contact_threshold_m))

    def _interaction_summary(self) -> dict[str, Any]:
        if not self._interaction:
            return {"frames_evaluated": 0}
        s = ia.summarize_interaction(self._interaction)
        return {
            "frames_evaluated": s.num_frames,
            "contact_threshold_mm": self.config.contact_threshold_m * _MM,
            "max_penetration_depth_mm": s.max_penetration_depth * _MM,
            "mean_penetration_depth_mm": s.mean_penetration_depth * _MM,
            "contact_pct": s.contact_fraction * _PCT,
            "penetrating_frames_pct": s.penetrating_frame_fraction * _PCT,
        }

    # -- summary

    def summary(self) -> dict[str, Any]:
        """All metrics as a nested, JSON-ready dict; ``None`` where no frame could be scored."""
        objects, per_object = self._object_summary()
        boxes: dict[str, Any] = {}
        for kind in ("hand", "object"):
            boxes[f"{kind}_frames_labelled"] = len(self._box_iou[kind])
            boxes[f"{kind}_missing_predictions"] = self._box_missing[kind]
            boxes[f"{kind}_box_iou_mean"] = _mean(self._box_iou[kind])
        cfg = self.config
        return {
            "frames": len(self._frame_ids),
            "hand": self._hand_summary(),
            "object": objects,
            "per_object": per_object,
            "boxes": boxes,
            "interaction": self._interaction_summary(),
            "settings": {
                "f_score_thresholds_mm": [t * _MM for t in cfg.f_score_thresholds_m],
                "pck_max_threshold_mm": cfg.pck_max_threshold_m * _MM,
                "pck_num_thresholds": cfg.pck_num_thresholds,
                "add_diameter_fraction": cfg.add_diameter_fraction,
                "ycb_video_auc_max_distance_mm": cfg.ycb_video_auc_max_distance_m * _MM,
                "contact_threshold_mm": cfg.contact_threshold_m * _MM,
            },
        }


# ----------------------------------------------------------------------------- writing


def _json_ready(value: Any) -> Any:
    """Plain JSON types; NaN and infinities (not valid JSON) become null."""
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"summary value of type {type(value).__name__} cannot be written to JSON")


def _format(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _scalar_rows(section: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in section.items() if not isinstance(v, (Mapping, list))]


def format_markdown(summary: Mapping[str, Any], title: str = "Evaluation report") -> str:
    """Markdown tables of a :meth:`EvaluationAccumulator.summary` (curves are left to the JSON)."""
    lines = [f"# {title}", "", f"Frames: {summary.get('frames', 'n/a')}", ""]
    for section in ("hand", "joints2d", "object", "boxes", "detector", "interaction", "settings"):
        rows = _scalar_rows(summary.get(section) or {})
        if not rows:
            continue
        lines += [f"## {section.capitalize()}", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {key} | {_format(value)} |" for key, value in rows]
        lines.append("")
    per_object = summary.get("per_object") or {}
    if per_object:
        columns = [k for k, _ in _scalar_rows(next(iter(per_object.values())))]
        lines += ["## Per object", "", "| object | " + " | ".join(columns) + " |",
                  "| --- |" + " --- |" * len(columns)]
        for name, scores in per_object.items():
            lines.append(f"| {name} | " + " | ".join(_format(scores.get(c)) for c in columns) + " |")
        lines.append("")
    return "\n".join(lines)


def write_report(summary: Mapping[str, Any], out_dir: str | Path, stem: str = "metrics",
                 title: str = "Evaluation report") -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``out_dir`` atomically; returns both paths."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out_dir: '{out}' exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    atomic_write_text(json_path, json.dumps(_json_ready(summary), indent=2, allow_nan=False) + "\n")
    atomic_write_text(md_path, format_markdown(summary, title) + "\n")
    return json_path, md_path
