"""DexYCB in its released layout, with the toolkit's s0-s3 splits, read into :class:`HandObjectSample`.

Layout (``root`` is the toolkit's ``DEX_YCB_DIR``)::

    root/<subject>/<sequence>/meta.yml                         serials, num_frames, ycb_ids, ycb_grasp_ind,
                                                                 mano_sides, mano_calib
    root/<subject>/<sequence>/<serial>/color_000000.jpg
    root/<subject>/<sequence>/<serial>/labels_000000.npz       seg, pose_y, pose_m, joint_3d, joint_2d
    root/calibration/intrinsics/<serial>_640x480.yml           color: {fx, fy, ppx, ppy}
    root/calibration/mano_<mano_calib>/mano.yml                betas
    root/models/<ycb name>/textured_simple.obj

Splits follow the toolkit's ``dex_ycb.py`` exactly: subjects, cameras and sequence
indices are selected by position in the fixed subject and serial lists and in each
subject's 100 sequence folders sorted by name (s0 train: every sequence whose index
% 5 != 4, all subjects and cameras; s0 val: index % 5 == 4 of subjects 1-2; s0 test:
index % 5 == 4 of subjects 3-10). A subject folder without exactly 100 sequences is an
error, since the split rules would silently select other sequences.

Label conversion:

* ``joint_3d``/``joint_2d`` (camera frame, OpenCV, metres) are in the "simple" order
  (wrist, thumb..pinky base to tip) and are reordered to ours; all -1 means no hand.
* ``pose_m`` (1, 51): 3 global axis-angle, 45 PCA coefficients of MANO's
  ``hands_components`` with ``flat_hand_mean=False``, 3 translation (manopth and smplx
  share the translation convention). With ``mano_dir`` given, the articulation becomes
  ``coeffs @ hands_components + hands_mean``: axis-angles in the flat-mean convention.
  Left hands use MANO_LEFT's components and keep ``hand_side='left'``
  (:func:`hoi_training.data.augment.mirror_sample` turns them into right hands).
  All zeros means no hand.
* ``pose_y`` (num_objects, 3, 4): [R | t] per object in ``ycb_ids`` order; the sample
  takes the grasped one (``ycb_grasp_ind``); all zeros means not annotated.
* ``seg``: 255 hand, YCB class id per object; the masks are the hand and the grasped object.
* The hand box is the tight box of the 2D joints; the object box that of the projected
  control-point corners; control points come from the model OBJ's bounding box.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from torch.utils.data import Dataset

from hoi_perception.config import ConfigError
from hoi_perception.geometry.camera import box_from_points, project
from hoi_perception.hand_model.joint_orders import simple_to_ho3d
from hoi_perception.hand_model.mano import load_mano_arrays, resolve_mano_file
from hoi_perception.objects.models import bbox_control_points
from hoi_perception.synth.sequence_files import DatasetFormatError, read_rgb
from hoi_training.data.sample import HandObjectSample

SUBJECTS = (
    "20200709-subject-01", "20200813-subject-02", "20200820-subject-03", "20200903-subject-04",
    "20200908-subject-05", "20200918-subject-06", "20200928-subject-07", "20201002-subject-08",
    "20201015-subject-09", "20201022-subject-10",
)
SERIALS = (
    "836212060125", "839512060362", "840412060917", "841412060263",
    "932122060857", "932122060861", "932122061900", "932122062010",
)
YCB_CLASSES = {
    1: "002_master_chef_can", 2: "003_cracker_box", 3: "004_sugar_box", 4: "005_tomato_soup_can",
    5: "006_mustard_bottle", 6: "007_tuna_fish_can", 7: "008_pudding_box", 8: "009_gelatin_box",
    9: "010_potted_meat_can", 10: "011_banana", 11: "019_pitcher_base", 12: "021_bleach_cleanser",
    13: "024_bowl", 14: "025_mug", 15: "035_power_drill", 16: "036_wood_block", 17: "037_scissors",
    18: "040_large_marker", 19: "051_large_clamp", 20: "052_extra_large_clamp", 21: "061_foam_brick",
}
SEQUENCES_PER_SUBJECT = 100
IMAGE_WIDTH, IMAGE_HEIGHT = 640, 480
HAND_SEG_LABEL = 255
META_KEYS = ("num_frames", "ycb_ids", "ycb_grasp_ind", "mano_sides", "mano_calib")
LABEL_KEYS = ("seg", "pose_y", "pose_m", "joint_3d", "joint_2d")

Setup = Literal["s0", "s1", "s2", "s3"]
Split = Literal["train", "val", "test"]
_ALL_SUBJECTS = list(range(10))
_ALL_SERIALS = list(range(8))
_ALL_SEQUENCES = list(range(SEQUENCES_PER_SUBJECT))
# (subject indices, serial indices, sequence indices) per setup and split, from the toolkit.
SPLITS: dict[str, dict[str, tuple[list[int], list[int], list[int]]]] = {
    "s0": {  # seen subjects, views and objects
        "train": (_ALL_SUBJECTS, _ALL_SERIALS, [i for i in _ALL_SEQUENCES if i % 5 != 4]),
        "val": ([0, 1], _ALL_SERIALS, [i for i in _ALL_SEQUENCES if i % 5 == 4]),
        "test": (list(range(2, 10)), _ALL_SERIALS, [i for i in _ALL_SEQUENCES if i % 5 == 4]),
    },
    "s1": {  # unseen subjects
        "train": ([0, 1, 2, 3, 4, 5, 9], _ALL_SERIALS, _ALL_SEQUENCES),
        "val": ([6], _ALL_SERIALS, _ALL_SEQUENCES),
        "test": ([7, 8], _ALL_SERIALS, _ALL_SEQUENCES),
    },
    "s2": {  # unseen camera views
        "train": (_ALL_SUBJECTS, [0, 1, 2, 3, 4, 5], _ALL_SEQUENCES),
        "val": (_ALL_SUBJECTS, [6], _ALL_SEQUENCES),
        "test": (_ALL_SUBJECTS, [7], _ALL_SEQUENCES),
    },
    "s3": {  # unseen grasped objects
        "train": (_ALL_SUBJECTS, _ALL_SERIALS, [i for i in _ALL_SEQUENCES if i // 5 not in (3, 7, 11, 15, 19)]),
        "val": (_ALL_SUBJECTS, _ALL_SERIALS, [i for i in _ALL_SEQUENCES if i // 5 in (3, 19)]),
        "test": (_ALL_SUBJECTS, _ALL_SERIALS, [i for i in _ALL_SEQUENCES if i // 5 in (7, 11, 15)]),
    },
}


@dataclass
class DexYCBConfig:
    """Where DexYCB lives, which split to read, and the MANO files for its PCA hand poses.

    Without ``mano_dir`` the MANO labels are left out (joints, boxes, masks and object
    poses are still read); with it, ``MANO_RIGHT`` and ``MANO_LEFT`` (.pkl or .npz) must be
    the real MANO files, since DexYCB's PCA coefficients refer to their components (the
    shipped stand-in hand's components would give wrong poses, so it is never used here).
    """

    root: Path
    setup: Setup = "s0"
    split: Split = "train"
    mano_dir: Path | None = None
    load_masks: bool = True

    def validate(self) -> None:
        if not Path(self.root).is_dir():
            raise ConfigError(f"DexYCB root '{self.root}' is not a folder (expected subject folders and calibration/)")
        if self.mano_dir is not None and not Path(self.mano_dir).is_dir():
            raise ConfigError(f"mano_dir '{self.mano_dir}' is not a folder")


@dataclass(frozen=True)
class ManoPCA:
    """MANO's articulation basis for one side: ``hands_components`` (45, 45, rows are
    components) and ``hands_mean`` (45,)."""

    components: np.ndarray
    mean: np.ndarray


def load_mano_pca(mano_dir: Path, side: str) -> ManoPCA:
    """``hands_components`` and ``hands_mean`` of the MANO file for ``side`` in ``mano_dir``
    (read by the hand model's loader: released .pkl without chumpy, or .npz)."""
    arrays = load_mano_arrays(resolve_mano_file(side, mano_dir))
    return ManoPCA(components=np.asarray(arrays["hands_components"], dtype=np.float64),
                   mean=np.asarray(arrays["hands_mean"], dtype=np.float64).reshape(45))


def pca_pose_to_axis_angle(pose_pca: np.ndarray, pca: ManoPCA) -> np.ndarray:
    """DexYCB's 48 pose values (global + 45 PCA coefficients, non-flat mean) to 48 flat-mean axis-angles."""
    pose_pca = np.asarray(pose_pca, dtype=np.float64).reshape(48)
    articulation = pose_pca[3:] @ pca.components + pca.mean
    return np.concatenate([pose_pca[:3], articulation])


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise DatasetFormatError(f"DexYCB file '{path}' not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DatasetFormatError(f"DexYCB file '{path}' is not valid YAML: {exc}") from exc


def read_intrinsics(calibration_dir: Path, serial: str) -> np.ndarray:
    """The colour camera matrix of ``serial`` at 640x480."""
    path = calibration_dir / "intrinsics" / f"{serial}_{IMAGE_WIDTH}x{IMAGE_HEIGHT}.yml"
    data = _read_yaml(path)
    try:
        color = data["color"]
        fx, fy, cx, cy = (float(color[k]) for k in ("fx", "fy", "ppx", "ppy"))
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetFormatError(f"{path}: expected 'color' with fx, fy, ppx, ppy ({exc})") from None
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def read_obj_vertices(path: Path) -> np.ndarray:
    """Vertex positions of an OBJ file (only 'v' lines are needed for the bounding box)."""
    if not path.is_file():
        raise DatasetFormatError(f"object model '{path}' not found")
    rows = [line.split()[1:4] for line in path.read_text().splitlines() if line.startswith("v ")]
    try:
        vertices = np.asarray(rows, dtype=np.float64)
    except ValueError as exc:
        raise DatasetFormatError(f"object model '{path}': malformed vertex line ({exc})") from None
    if vertices.ndim != 2 or vertices.shape[0] < 1 or vertices.shape[1] != 3:
        raise DatasetFormatError(f"object model '{path}' has no vertices")
    return vertices


@dataclass(frozen=True)
class _SequenceInfo:
    name: str  # "<subject>/<sequence folder>"
    num_frames: int
    ycb_ids: tuple[int, ...]
    grasp_index: int
    side: str
    betas: np.ndarray


def read_sequence_meta(root: Path, name: str) -> _SequenceInfo:
    """The parts of a sequence's meta.yml (and its MANO calibration) that samples need."""
    path = root / name / "meta.yml"
    meta = _read_yaml(path)
    if not isinstance(meta, dict) or any(k not in meta for k in META_KEYS):
        missing = [k for k in META_KEYS if not isinstance(meta, dict) or k not in meta]
        raise DatasetFormatError(f"{path}: missing key(s) {missing}")
    ycb_ids = tuple(int(i) for i in meta["ycb_ids"])
    grasp = int(meta["ycb_grasp_ind"])
    if not 0 <= grasp < len(ycb_ids):
        raise DatasetFormatError(f"{path}: ycb_grasp_ind {grasp} is outside ycb_ids {list(ycb_ids)}")
    unknown = [i for i in ycb_ids if i not in YCB_CLASSES]
    if unknown:
        raise DatasetFormatError(f"{path}: unknown YCB id(s) {unknown}")
    side = str(meta["mano_sides"][0])
    if side not in ("right", "left"):
        raise DatasetFormatError(f"{path}: mano_sides[0] must be 'right' or 'left', got {side!r}")
    calib_path = root / "calibration" / f"mano_{meta['mano_calib'][0]}" / "mano.yml"
    calib = _read_yaml(calib_path)
    try:
        betas = np.asarray(calib["betas"], dtype=np.float64).reshape(10)
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetFormatError(f"{calib_path}: expected 'betas' with 10 values ({exc})") from None
    return _SequenceInfo(name=name, num_frames=int(meta["num_frames"]), ycb_ids=ycb_ids, grasp_index=grasp,
                         side=side, betas=betas)


def read_labels(path: Path) -> dict[str, np.ndarray]:
    """One labels_XXXXXX.npz with its shapes checked."""
    if not path.is_file():
        raise DatasetFormatError(f"DexYCB labels '{path}' not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            labels = {k: data[k] for k in LABEL_KEYS if k in data}
    except (OSError, ValueError) as exc:
        raise DatasetFormatError(f"DexYCB labels '{path}' could not be read: {exc}") from exc
    missing = [k for k in LABEL_KEYS if k not in labels]
    if missing:
        raise DatasetFormatError(f"{path}: missing array(s) {missing}")
    expected = {"pose_m": (1, 51), "joint_3d": (1, 21, 3), "joint_2d": (1, 21, 2)}
    for key, shape in expected.items():
        if labels[key].shape != shape:
            raise DatasetFormatError(f"{path}: '{key}' should have shape {shape}, got {labels[key].shape}")
    if labels["pose_y"].ndim != 3 or labels["pose_y"].shape[1:] != (3, 4):
        raise DatasetFormatError(f"{path}: 'pose_y' should have shape (num_objects, 3, 4), "
                                 f"got {labels['pose_y'].shape}")
    return labels


class DexYCBDataset(Dataset):
    """DexYCB frames of one setup/split as :class:`HandObjectSample`, optionally transformed."""

    def __init__(self, config: DexYCBConfig,
                 transform: Callable[[HandObjectSample], HandObjectSample] | None = None):
        config.validate()
        self.config = config
        self.root = Path(config.root)
        self.transform = transform
        subject_ids, serial_ids, sequence_ids = SPLITS[config.setup][config.split]
        self.serials = [SERIALS[i] for i in serial_ids]
        calibration = self.root / "calibration"
        self.intrinsics = {s: read_intrinsics(calibration, s) for s in self.serials}
        self.sequences: list[_SequenceInfo] = []
        for subject in (SUBJECTS[i] for i in subject_ids):
            subject_dir = self.root / subject
            if not subject_dir.is_dir():
                raise DatasetFormatError(f"DexYCB subject folder '{subject_dir}' not found")
            names = sorted(p.name for p in subject_dir.iterdir() if p.is_dir())
            if len(names) != SEQUENCES_PER_SUBJECT:
                raise DatasetFormatError(f"'{subject_dir}' holds {len(names)} sequence folders; DexYCB has "
                                         f"{SEQUENCES_PER_SUBJECT} per subject and its splits index them by position")
            for i in sequence_ids:
                self.sequences.append(read_sequence_meta(self.root, f"{subject}/{names[i]}"))
        # One row per (sequence, camera, frame), cameras outer and frames inner as in the toolkit.
        self.index = np.array([(s, c, f) for s, seq in enumerate(self.sequences)
                               for c in range(len(self.serials)) for f in range(seq.num_frames)],
                              dtype=np.int64).reshape(-1, 3)
        self.pca: dict[str, ManoPCA] = {}
        if config.mano_dir is not None:
            for side in sorted({seq.side for seq in self.sequences}):
                self.pca[side] = load_mano_pca(Path(config.mano_dir), side)
        self._control_points: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.index)

    def control_points(self, object_name: str) -> np.ndarray:
        """The 21 control points of a YCB model, from its OBJ's bounding box (cached)."""
        if object_name not in self._control_points:
            vertices = read_obj_vertices(self.root / "models" / object_name / "textured_simple.obj")
            self._control_points[object_name] = bbox_control_points(vertices.min(0), vertices.max(0))
        return self._control_points[object_name]

    def load(self, index: int) -> HandObjectSample:
        """The untransformed sample ``index``."""
        s, c, f = (int(v) for v in self.index[index])
        seq, serial = self.sequences[s], self.serials[c]
        frame_dir = self.root / seq.name / serial
        labels = read_labels(frame_dir / f"labels_{f:06d}.npz")
        image = read_rgb(frame_dir / f"color_{f:06d}.jpg")
        K = self.intrinsics[serial]  # noqa: N806
        ycb_id = seq.ycb_ids[seq.grasp_index]
        fields: dict[str, Any] = {}
        joints_3d = labels["joint_3d"][0].astype(np.float64)
        if not np.all(joints_3d == -1):
            fields["joints_3d"] = simple_to_ho3d(joints_3d)
            fields["joints_2d"] = simple_to_ho3d(labels["joint_2d"][0].astype(np.float64))
            fields["hand_box"] = box_from_points(fields["joints_2d"])
            pose_m = labels["pose_m"][0].astype(np.float64)
            if seq.side in self.pca and not np.all(pose_m == 0):
                fields["mano_pose"] = pca_pose_to_axis_angle(pose_m[:48], self.pca[seq.side])
                fields["mano_shape"] = seq.betas.copy()
                fields["mano_trans"] = pose_m[48:51].copy()
        pose_y = labels["pose_y"]
        if pose_y.shape[0] != len(seq.ycb_ids):
            raise DatasetFormatError(f"{frame_dir / f'labels_{f:06d}.npz'}: pose_y has {pose_y.shape[0]} objects, "
                                     f"meta.yml lists {len(seq.ycb_ids)}")
        pose = pose_y[seq.grasp_index].astype(np.float64)
        object_name = YCB_CLASSES[ycb_id]
        if not np.all(pose == 0):
            fields["object_rotation"] = pose[:, :3]
            fields["object_translation"] = pose[:, 3]
            fields["object_control_points"] = self.control_points(object_name)
            posed = fields["object_control_points"] @ pose[:, :3].T + pose[:, 3]
            fields["object_points_2d"] = project(posed, K)
            fields["object_box"] = box_from_points(fields["object_points_2d"][:8])
        if self.config.load_masks:
            seg = labels["seg"]
            if seg.shape != image.shape[:2]:
                raise DatasetFormatError(f"{frame_dir / f'labels_{f:06d}.npz'}: seg has shape {seg.shape}, "
                                         f"the image {image.shape[:2]}")
            fields["hand_mask"] = seg == HAND_SEG_LABEL
            fields["object_mask"] = seg == ycb_id
        sample = HandObjectSample(image=image, K=K.copy(), dataset=f"dexycb_{self.config.setup}",
                                  sequence=f"{seq.name}/{serial}", frame=f"{f:06d}", hand_side=seq.side,
                                  object_name=object_name, **fields)
        return sample.validate()

    def __getitem__(self, index: int) -> HandObjectSample:
        sample = self.load(index)
        return self.transform(sample) if self.transform is not None else sample
