"""The project's synthetic datasets (written by ``hoi-train synth``) read into :class:`HandObjectSample`.

Format version 1, as documented in :mod:`hoi_perception.synth.generator`::

    DIR/manifest.json            format_version, sequences [{name, hand_side, object_name, frames}], ...
    DIR/seq_XXXX/meta.json       format_version, hand_side, object_name, frames, width, height, K,
                                 hand_label, object_label
    DIR/seq_XXXX/labels.npz      per frame (F leading): joints3d (21, 3), joints2d (21, 2),
                                 vertices3d (778, 3), hand_pose (48), hand_transl (3), hand_box,
                                 object_box, object_rotation (3, 3), object_translation (3),
                                 object_control_points2d (21, 2), timestamps; once: K (3, 3), betas (10)
    DIR/seq_XXXX/rgb/000000.png  RGB frames; mask/000000.png: 0 background, hand_label, object_label

The labels are already in this package's conventions (metres, OpenCV camera frame,
HO-3D joint order, flat-mean MANO with smplx's translation). The 3D control points are
not stored per sequence: they come from the object library the data was rendered with
(``objects``, by default the shipped ``config/objects.yaml``), and a sequence naming an
object the library lacks is an error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from torch.utils.data import Dataset

from hoi_perception.config import ConfigError
from hoi_perception.objects.models import UnknownObjectError, load_object_library
from hoi_perception.synth.sequence_files import DatasetFormatError, read_rgb, read_sequence_labels
from hoi_training.data.sample import HandObjectSample

SUPPORTED_FORMAT_VERSION = 1
META_KEYS = ("format_version", "hand_side", "object_name", "frames", "width", "height", "K", "hand_label",
             "object_label")


@dataclass
class SyntheticConfig:
    """A finished synthetic dataset folder and the object library it was rendered with."""

    root: Path
    objects: Path | None = None
    load_masks: bool = True

    def validate(self) -> None:
        if not Path(self.root).is_dir():
            raise ConfigError(f"synthetic dataset '{self.root}' is not a folder")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DatasetFormatError(f"'{path}' not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(f"'{path}' is not valid JSON: {exc}") from exc


def _check_version(data: dict, path: Path) -> None:
    version = data.get("format_version")
    if version != SUPPORTED_FORMAT_VERSION:
        raise DatasetFormatError(f"{path}: format_version {version!r} is not supported "
                                 f"(this reader handles {SUPPORTED_FORMAT_VERSION})")


@dataclass(frozen=True)
class _Sequence:
    name: str
    frames: int
    meta: dict[str, Any]


class SyntheticDataset(Dataset):
    """Every frame of a synthetic dataset as :class:`HandObjectSample`, optionally transformed."""

    def __init__(self, config: SyntheticConfig,
                 transform: Callable[[HandObjectSample], HandObjectSample] | None = None):
        config.validate()
        self.config = config
        self.root = Path(config.root)
        self.transform = transform
        manifest_path = self.root / "manifest.json"
        if not manifest_path.is_file():
            raise DatasetFormatError(f"'{self.root}' has no manifest.json: not a finished synthetic dataset "
                                     "(rerun the same 'hoi-train synth' command to finish it)")
        manifest = _read_json(manifest_path)
        _check_version(manifest, manifest_path)
        self.sequences: list[_Sequence] = []
        for i, entry in enumerate(manifest.get("sequences", [])):
            if not isinstance(entry, dict) or "name" not in entry:
                raise DatasetFormatError(f"{manifest_path}: sequences[{i}] has no 'name'")
            meta_path = self.root / entry["name"] / "meta.json"
            meta = _read_json(meta_path)
            missing = [k for k in META_KEYS if k not in meta]
            if missing:
                raise DatasetFormatError(f"{meta_path}: missing key(s) {missing}")
            _check_version(meta, meta_path)
            self.sequences.append(_Sequence(name=entry["name"], frames=int(meta["frames"]), meta=meta))
        if not self.sequences:
            raise DatasetFormatError(f"{manifest_path}: lists no sequences")
        library = load_object_library(config.objects)
        self.control_points: dict[str, np.ndarray] = {}
        self.symmetry_rotations: dict[str, np.ndarray] = {}
        self.mirror_axes: dict[str, int | None] = {}
        for seq in self.sequences:
            name = seq.meta["object_name"]
            try:
                self.control_points[name] = library.get(name).control_points
                self.symmetry_rotations[name] = library.get(name).symmetry_rotations
                self.mirror_axes[name] = library.get(name).mirror_axis
            except UnknownObjectError as exc:
                raise DatasetFormatError(f"{self.root / seq.name / 'meta.json'}: {exc}") from None
        self.index = [(s, f) for s, seq in enumerate(self.sequences) for f in range(seq.frames)]
        # Each sequence's labels are read once and kept: under shuffled access a small cache
        # re-read labels.npz for most samples. A 40,000-frame set holds about 0.5 GB of labels.
        self._labels: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.index)

    def _sequence_labels(self, s: int) -> dict[str, np.ndarray]:
        labels = self._labels.get(s)
        if labels is None:
            seq = self.sequences[s]
            labels = read_sequence_labels(self.root / seq.name / "labels.npz", seq.frames)
            self._labels[s] = labels
        return labels

    def load(self, index: int) -> HandObjectSample:
        """The untransformed sample ``index``."""
        s, f = self.index[index]
        seq = self.sequences[s]
        labels = self._sequence_labels(s)
        seq_dir = self.root / seq.name
        name = f"{f:06d}.png"
        image = read_rgb(seq_dir / "rgb" / name)
        expected = (int(seq.meta["height"]), int(seq.meta["width"]))
        if image.shape[:2] != expected:
            raise DatasetFormatError(f"{seq_dir / 'rgb' / name}: size {image.shape[:2]} differs from meta.json's "
                                     f"{expected}")
        masks: dict[str, np.ndarray] = {}
        if self.config.load_masks:
            mask_path = seq_dir / "mask" / name
            mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
            if mask is None:
                raise DatasetFormatError(f"mask '{mask_path}' is missing or could not be decoded")
            if mask.shape != expected:
                raise DatasetFormatError(f"mask '{mask_path}': shape {mask.shape} differs from the image's {expected}")
            masks = {"hand_mask": mask == int(seq.meta["hand_label"]),
                     "object_mask": mask == int(seq.meta["object_label"])}
        object_name = seq.meta["object_name"]
        sample = HandObjectSample(
            image=image, K=np.asarray(labels["K"], dtype=np.float64), dataset="synthetic", sequence=seq.name,
            frame=f"{f:06d}", hand_side=str(seq.meta["hand_side"]), object_name=object_name,
            hand_box=_f64(labels["hand_box"][f]), object_box=_f64(labels["object_box"][f]),
            joints_2d=_f64(labels["joints2d"][f]), joints_3d=_f64(labels["joints3d"][f]),
            vertices_3d=_f64(labels["vertices3d"][f]), mano_pose=_f64(labels["hand_pose"][f]),
            mano_shape=_f64(labels["betas"]), mano_trans=_f64(labels["hand_transl"][f]),
            object_rotation=_f64(labels["object_rotation"][f]),
            object_translation=_f64(labels["object_translation"][f]),
            object_control_points=self.control_points[object_name].copy(),
            object_points_2d=_f64(labels["object_control_points2d"][f]),
            object_symmetry_rotations=self.symmetry_rotations[object_name],
            object_mirror_axis=self.mirror_axes[object_name], **masks)
        return sample.validate()

    def __getitem__(self, index: int) -> HandObjectSample:
        sample = self.load(index)
        return self.transform(sample) if self.transform is not None else sample


def _f64(value: np.ndarray) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)
