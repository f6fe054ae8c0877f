"""HO-3D v2 and v3 in the official folder layout, read into :class:`HandObjectSample`.

Layout (``root`` is the folder holding ``train/`` and ``evaluation/``)::

    root/train.txt, root/evaluation.txt    one "SEQ/frame" per line
    root/<split>/<SEQ>/rgb/<frame>.png     v2 (.jpg in v3)
    root/<split>/<SEQ>/meta/<frame>.pkl    per-frame annotation (Python 2 pickle)

Annotation keys used (as the HO-3D authors' visualisation scripts read them):

* training split: ``handPose`` (48 axis-angle, global + 15 joints, flat-hand mean),
  ``handBeta`` (10), ``handTrans`` (3), ``handJoints3D`` (21, 3, MANO's 16 + tips: our
  order already), ``camMat`` (3, 3), ``objRot`` (3, 1 Rodrigues), ``objTrans`` (3),
  ``objCorners3DRest`` (8, 3 model-frame box), ``objName``. A few frames carry ``None``
  for the hand or object fields: those labels are left out of the sample.
* evaluation split: ``handJoints3D`` is the wrist only (3,), ``handBoundingBox`` is
  (x0, y0, x1, y1) in pixels; the object fields are as in training.

HO-3D stores OpenGL camera coordinates (hand at negative z). The flip to OpenCV,
``F = diag(1, -1, -1)``, is a rotation (180 degrees about x), so it is applied as one
rigid rotation of every 3D label: joints and object pose are multiplied by ``F``, the
MANO global orientation becomes ``F R``, and because MANO rotates about the rest wrist
``J0`` the translation becomes ``F wrist - J0`` with ``J0 = wrist - handTrans`` read from
the annotation itself (see :func:`~hoi_training.data.sample.rotate_mano_global`). The
converted MANO parameters therefore reproduce the flipped mesh exactly.

Derived labels: 2D joints and control points are projections with ``camMat``; the
training hand box is the tight box of the projected joints; the object box is the box
of the projected 8 corners; the 21 control points come from the min/max of
``objCorners3DRest`` (HO-3D's rest corners are the model's axis-aligned box). HO-3D
ships no hand mesh vertices (they need the licensed MANO model) and its masks are a
separate download, so neither is filled.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from torch.utils.data import Dataset

from hoi_perception.config import ConfigError
from hoi_perception.geometry.camera import box_from_points, project
from hoi_perception.objects.models import bbox_control_points
from hoi_perception.synth.sequence_files import DatasetFormatError, read_rgb
from hoi_training.data.sample import HandObjectSample, rotate_sample_3d

OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0])
IMAGE_EXTENSIONS = {"v2": ".png", "v3": ".jpg"}
SPLIT_FILES = {"train": "train.txt", "evaluation": "evaluation.txt"}
TRAIN_HAND_KEYS = ("handPose", "handBeta", "handTrans", "handJoints3D")
OBJECT_KEYS = ("objRot", "objTrans", "objCorners3DRest", "objName")


@dataclass
class HO3DConfig:
    """Where HO-3D lives and which part to read."""

    root: Path
    version: Literal["v2", "v3"] = "v3"
    split: Literal["train", "evaluation"] = "train"

    def validate(self) -> None:
        if not Path(self.root).is_dir():
            raise ConfigError(f"HO-3D root '{self.root}' is not a folder (expected train/, evaluation/, train.txt)")


def read_split_file(path: Path) -> list[tuple[str, str]]:
    """(sequence, frame) pairs from a split file of "SEQ/frame" lines."""
    if not path.is_file():
        raise DatasetFormatError(f"HO-3D split file '{path}' not found")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        parts = line.split("/")
        if len(parts) != 2 or not all(parts):
            raise DatasetFormatError(f"{path}:{number}: expected 'SEQ/frame', got {line!r}")
        entries.append((parts[0], parts[1]))
    if not entries:
        raise DatasetFormatError(f"HO-3D split file '{path}' lists no frames")
    return entries


def read_meta(path: Path) -> dict[str, Any]:
    """Load one HO-3D annotation pickle (written by Python 2: latin-1 strings)."""
    if not path.is_file():
        raise DatasetFormatError(f"HO-3D annotation '{path}' not found")
    try:
        with open(path, "rb") as f:
            meta = pickle.load(f, encoding="latin1")
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise DatasetFormatError(f"HO-3D annotation '{path}' could not be read: {exc}") from exc
    if not isinstance(meta, dict):
        raise DatasetFormatError(f"HO-3D annotation '{path}': expected a dict, got {type(meta).__name__}")
    if meta.get("camMat") is None:
        raise DatasetFormatError(f"HO-3D annotation '{path}': missing 'camMat'")
    return meta


def _array(meta: dict[str, Any], key: str, shape: tuple[int, ...], path: Path) -> np.ndarray:
    try:
        value = np.asarray(meta[key], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DatasetFormatError(f"{path}: '{key}' is not numeric: {exc}") from None
    if value.size != int(np.prod(shape)):
        raise DatasetFormatError(f"{path}: '{key}' should hold {shape} values, got shape {value.shape}")
    return value.reshape(shape)


def _present(meta: dict[str, Any], keys: tuple[str, ...], path: Path) -> bool:
    """True when all keys hold values; False when the frame marks them unannotated (None)."""
    missing = [k for k in keys if k not in meta]
    if missing:
        raise DatasetFormatError(f"{path}: missing key(s) {missing}")
    return all(meta[k] is not None for k in keys)


def sample_from_meta(meta: dict[str, Any], image: np.ndarray, split: str, sequence: str, frame: str,
                     dataset: str = "ho3d", meta_path: Path | None = None) -> HandObjectSample:
    """Convert one HO-3D annotation (OpenGL frame) into an OpenCV-frame sample."""
    where = meta_path or Path(f"{sequence}/meta/{frame}.pkl")
    K = _array(meta, "camMat", (3, 3), where)  # noqa: N806
    gl: dict[str, Any] = {}
    if split == "train":
        if _present(meta, TRAIN_HAND_KEYS, where):
            gl["joints_3d"] = _array(meta, "handJoints3D", (21, 3), where)
            gl["mano_pose"] = _array(meta, "handPose", (48,), where)
            gl["mano_shape"] = _array(meta, "handBeta", (10,), where)
            gl["mano_trans"] = _array(meta, "handTrans", (3,), where)
    else:
        if _present(meta, ("handJoints3D", "handBoundingBox"), where):
            gl["hand_root_3d"] = _array(meta, "handJoints3D", (3,), where)
            gl["hand_box"] = _array(meta, "handBoundingBox", (4,), where)
    object_name = ""
    if _present(meta, OBJECT_KEYS, where):
        rotvec = _array(meta, "objRot", (3,), where)
        gl["object_rotation"] = cv2.Rodrigues(rotvec.reshape(3, 1))[0]
        gl["object_translation"] = _array(meta, "objTrans", (3,), where)
        corners = _array(meta, "objCorners3DRest", (8, 3), where)
        gl["object_control_points"] = bbox_control_points(corners.min(0), corners.max(0))
        object_name = str(meta["objName"])
    sample = HandObjectSample(image=image, K=K, dataset=dataset, sequence=sequence, frame=frame,
                              hand_side="right", object_name=object_name, **gl)
    sample = rotate_sample_3d(sample, OPENGL_TO_OPENCV)
    derived: dict[str, Any] = {}
    if sample.joints_3d is not None:
        derived["joints_2d"] = project(sample.joints_3d, K)
        derived["hand_box"] = box_from_points(derived["joints_2d"])
    if sample.has_object_pose:
        derived["object_points_2d"] = project(sample.object_points_camera(), K)
        derived["object_box"] = box_from_points(derived["object_points_2d"][:8])
    return replace(sample, **derived)


class HO3DDataset(Dataset):
    """HO-3D frames of one split as :class:`HandObjectSample`, optionally transformed (augmented)."""

    def __init__(self, config: HO3DConfig, transform: Callable[[HandObjectSample], HandObjectSample] | None = None):
        config.validate()
        self.config = config
        self.root = Path(config.root)
        split_dir = self.root / config.split
        if not split_dir.is_dir():
            raise DatasetFormatError(f"HO-3D split folder '{split_dir}' not found")
        self.entries = read_split_file(self.root / SPLIT_FILES[config.split])
        self.transform = transform
        self.dataset_name = f"ho3d_{config.version}"

    def __len__(self) -> int:
        return len(self.entries)

    def paths(self, index: int) -> tuple[Path, Path]:
        """(image, annotation) paths of entry ``index``."""
        sequence, frame = self.entries[index]
        seq_dir = self.root / self.config.split / sequence
        return seq_dir / "rgb" / f"{frame}{IMAGE_EXTENSIONS[self.config.version]}", seq_dir / "meta" / f"{frame}.pkl"

    def load(self, index: int) -> HandObjectSample:
        """The untransformed sample ``index``."""
        sequence, frame = self.entries[index]
        image_path, meta_path = self.paths(index)
        meta = read_meta(meta_path)
        sample = sample_from_meta(meta, read_rgb(image_path), self.config.split, sequence, frame,
                                  dataset=self.dataset_name, meta_path=meta_path)
        return sample.validate()

    def __getitem__(self, index: int) -> HandObjectSample:
        sample = self.load(index)
        return self.transform(sample) if self.transform is not None else sample
