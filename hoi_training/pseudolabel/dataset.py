"""Finished pseudo-label output (``hoi-train pseudolabel``) read back as training samples.

:class:`PseudoLabelDataset` yields :class:`~hoi_training.data.sample.HandObjectSample` in the
schema of the labelled datasets, with hand labels only: the stored crop as the image (its
camera matrix is the full image's K moved into the crop), 2D joints and the hand box in
crop pixels, and, where the wrist translation could be fitted, camera-frame 3D joints,
vertices and MANO pose, shape and translation. Object fields are None, so a set entry
with ``object_loss: false`` trains the hand terms only (SHO equation 8).

Which frames: those the job kept (``filter: job``), or those kept when the stored
predictions are re-filtered (:func:`refilter`) under one of SHO's table-4 settings:
``all`` (every constraint group on, with the job's thresholds), ``none`` (every labelled
frame), ``no_spatial``, ``no_temporal`` (temporal and the per-sequence shape filter off,
SHO section 5.1.2 groups them). The teacher constraint (a job run with ``--teacher``) is on
in all of them but ``none``. Re-filtering needs no network: the shards hold every frame's
predictions, and the teacher's joints where the job had one.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from torch.utils.data import Dataset

from hoi_perception.config import ConfigError, from_dict
from hoi_perception.synth.sequence_files import DatasetFormatError
from hoi_training.data.sample import HandObjectSample
from hoi_training.pseudolabel.constraints import ConstraintConfig, FilterResult, SequencePredictions, filter_sequence
from hoi_training.pseudolabel.shards import MANIFEST_FILE, MANIFEST_FORMAT
from hoi_training.pseudolabel.teacher import TEACHER_JOINTS

log = logging.getLogger(__name__)

PREDICTION_ARRAYS = ("frame_ids", "timestamps", "joints_2d", "joints_3d", "vertices", "hand_pose", "betas",
                     "hand_boxes")
FilterName = Literal["job", "all", "none", "no_spatial", "no_temporal"]
SHARD_CACHE_SIZE = 2
DATASET_NAME = "pseudo"


@dataclass
class PseudoLabelDatasetConfig:
    """A finished pseudo-label output folder and which of its frames to train on.

    filter: ``job`` (the frames the job kept) or a re-filtering: ``all``, ``none``,
        ``no_spatial``, ``no_temporal`` (see the module docstring).
    weight: each sample's loss weight: ``one``, or ``confidence``, the mean TTA-averaged
        joint confidence of the prediction (in [0, 1]).
    """

    root: Path
    filter: FilterName = "job"
    weight: Literal["one", "confidence"] = "one"

    def validate(self) -> None:
        if not (Path(self.root) / MANIFEST_FILE).is_file():
            raise ConfigError(f"pseudo-label output '{self.root}' has no {MANIFEST_FILE}: not a finished "
                              "'hoi-train pseudolabel' output (rerun the job to finish it)")


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest of a finished pseudo-label job, checked for its format."""
    path = Path(root) / MANIFEST_FILE
    if not path.is_file():
        raise DatasetFormatError(f"'{path}' not found: not a finished pseudo-label output")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(f"'{path}' is not valid JSON: {exc}") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise DatasetFormatError(f"'{path}': format {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    return manifest


def job_constraints(manifest: dict[str, Any]) -> ConstraintConfig:
    """The ConstraintConfig the job filtered with."""
    try:
        data = manifest["config"]["pseudolabel"]["constraints"]
    except (KeyError, TypeError):
        raise DatasetFormatError("manifest: config.pseudolabel.constraints missing; not written by "
                                 "hoi-train pseudolabel") from None
    return from_dict(ConstraintConfig, data, "manifest config.pseudolabel.constraints")


def ablation_constraints(job: ConstraintConfig, name: FilterName) -> ConstraintConfig | None:
    """The job's thresholds with SHO's table-4 switches for ``name`` (the teacher on but in ``none``);
    None for ``job`` (use the stored kept)."""
    switches = {"job": None, "all": (True, True, True, True), "none": (False, False, False, False),
                "no_spatial": (False, True, True, True), "no_temporal": (True, False, False, True)}
    if name not in switches:
        raise ValueError(f"filter: expected one of {sorted(switches)}, got {name!r}")
    if switches[name] is None:
        return None
    spatial, temporal, shape, teacher = switches[name]
    return replace(job, spatial=spatial, temporal=temporal, shape=shape, teacher=teacher)


def sequence_predictions(arrays: dict[str, np.ndarray], sequence: str,
                         rows: np.ndarray | slice = slice(None)) -> SequencePredictions:
    """The SequencePredictions of ``rows`` of a unit's or shard's arrays (with the teacher's joints
    when the job had a teacher)."""
    teacher = arrays[TEACHER_JOINTS][rows] if TEACHER_JOINTS in arrays else None
    return SequencePredictions(**{k: arrays[k][rows] for k in PREDICTION_ARRAYS}, teacher_joints_2d=teacher,
                               sequence=sequence)


def _done_shards(root: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    done = [s for s in manifest["shards"] if s["status"] == "done"]
    if not manifest["complete"]:
        log.warning("%s: %d shard(s) failed (see the manifest's failures); using the %d that succeeded", root,
                    len(manifest["shards"]) - len(done), len(done))
    return done


def _load_arrays(path: Path, names: tuple[str, ...] | None = None,
                 optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """``names`` (all arrays when None) and those of ``optional`` the shard has."""
    if not path.is_file():
        raise DatasetFormatError(f"pseudo-label shard '{path}' not found")
    with np.load(path, allow_pickle=False) as data:
        missing = [n for n in names or () if n not in data.files]
        if missing:
            raise DatasetFormatError(f"pseudo-label shard '{path}' lacks array(s) {missing}")
        wanted = list(names if names is not None else data.files) + [n for n in optional if n in data.files]
        return {n: data[n] for n in wanted}


def refilter(root: str | Path, constraints: ConstraintConfig) -> dict[str, FilterResult]:
    """Re-run the constraints on a finished output's stored predictions, without the network.

    Returns unit key -> FilterResult for every unit of every finished shard (units without a
    labelled frame are left out). With the job's own ConstraintConfig the ``kept`` of each
    result equals the stored one.
    """
    root = Path(root)
    manifest = read_manifest(root)
    results: dict[str, FilterResult] = {}
    for shard in _done_shards(root, manifest):
        arrays = _load_arrays(root / shard["file"], PREDICTION_ARRAYS + ("unit_index",), (TEACHER_JOINTS,))
        for position, unit in enumerate(shard["units"]):
            rows = arrays["unit_index"] == position
            if not rows.any():
                continue
            results[unit] = filter_sequence(sequence_predictions(arrays, unit, rows), constraints)
    return results


@dataclass(frozen=True)
class _Row:
    shard: int  # position in self.shards
    row: int
    unit: str


class PseudoLabelDataset(Dataset):
    """The selected frames of a finished pseudo-label output as hand-only :class:`HandObjectSample`."""

    def __init__(self, config: PseudoLabelDatasetConfig,
                 transform: Callable[[HandObjectSample], HandObjectSample] | None = None) -> None:
        config.validate()
        self.config = config
        self.root = Path(config.root)
        self.transform = transform
        self.manifest = read_manifest(self.root)
        self.shards = _done_shards(self.root, self.manifest)
        ablation = ablation_constraints(job_constraints(self.manifest), config.filter)
        refiltered = refilter(self.root, ablation) if ablation is not None else {}
        self.index: list[_Row] = []
        for position, shard in enumerate(self.shards):
            arrays = _load_arrays(self.root / shard["file"], ("kept", "unit_index"))
            for unit_position, unit in enumerate(shard["units"]):
                rows = np.flatnonzero(arrays["unit_index"] == unit_position)
                if ablation is None:
                    selected = rows[arrays["kept"][rows]]
                else:
                    selected = rows[refiltered[unit].kept] if unit in refiltered else rows[:0]
                self.index.extend(_Row(position, int(r), unit) for r in selected)
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.index)

    def _shard_arrays(self, position: int) -> dict[str, np.ndarray]:
        if position in self._cache:
            self._cache.move_to_end(position)
            return self._cache[position]
        arrays = _load_arrays(self.root / self.shards[position]["file"])
        self._cache[position] = arrays
        if len(self._cache) > SHARD_CACHE_SIZE:
            self._cache.popitem(last=False)
        return arrays

    def load(self, index: int) -> HandObjectSample:
        """The untransformed sample ``index``."""
        entry = self.index[index]
        a = self._shard_arrays(entry.shard)
        r = entry.row
        where = f"{self.root / self.shards[entry.shard]['file']} row {r}"
        image = cv2.imdecode(np.frombuffer(a["crop_png"][r], dtype=np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetFormatError(f"{where}: the stored crop is not a decodable PNG")
        to_crop = a["image_to_crop"][r]
        joints_2d = _affine(to_crop, a["joints_2d"][r])
        hand_box = a["hand_boxes"][r].astype(np.float64)
        corners = _affine(to_crop, hand_box.reshape(2, 2))
        hand_box = np.concatenate([corners.min(0), corners.max(0)])
        labels: dict[str, Any] = {}
        translation = a["hand_translation"][r]
        if np.all(np.isfinite(translation)):
            labels = {"joints_3d": a["joints_3d"][r].astype(np.float64) + translation,
                      "vertices_3d": a["vertices"][r].astype(np.float64) + translation,
                      "mano_pose": a["hand_pose"][r].astype(np.float64),
                      "mano_shape": a["betas"][r].astype(np.float64),
                      "mano_trans": a["mano_trans"][r].astype(np.float64)}
        weight = 1.0
        if self.config.weight == "confidence":
            weight = float(np.clip(a["joint_confidence"][r].mean(), 0.0, 1.0))
        sample = HandObjectSample(
            image=np.ascontiguousarray(image[..., ::-1]), K=to_crop @ a["K"][r], dataset=DATASET_NAME,
            sequence=entry.unit, frame=f"{int(a['frame_ids'][r]):06d}", hand_side=str(a["hand_side"][r]),
            hand_box=hand_box, joints_2d=joints_2d, weight=weight, **labels)
        return sample.validate()

    def __getitem__(self, index: int) -> HandObjectSample:
        sample = self.load(index)
        return self.transform(sample) if self.transform is not None else sample


def _affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:2, :2].T + matrix[:2, 2]
