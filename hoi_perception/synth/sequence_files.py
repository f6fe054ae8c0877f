"""Reading the files of a synthetic sequence (the format :mod:`hoi_perception.synth.generator` writes).

The demo reads back the sequence it rendered and the training side's synthetic dataset
reads whole datasets; both read the labels and images through these functions, which
name the file and what was expected when something is off.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

PER_FRAME_KEYS = (
    "joints3d", "joints2d", "vertices3d", "hand_pose", "hand_transl", "hand_box", "object_box",
    "object_rotation", "object_translation", "object_control_points2d",
)


class DatasetFormatError(ValueError):
    """A dataset file is missing, unreadable or does not hold what its format promises."""


def read_rgb(path: Path) -> np.ndarray:
    """An image file as an RGB uint8 array; a clear error naming the file when it is missing or undecodable."""
    if not path.is_file():
        raise DatasetFormatError(f"image '{path}' not found")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetFormatError(f"image '{path}' could not be decoded")
    return np.ascontiguousarray(image[..., ::-1])


def read_sequence_labels(path: Path, frames: int) -> dict[str, np.ndarray]:
    """A sequence's labels.npz with every per-frame array checked against ``frames``."""
    if not path.is_file():
        raise DatasetFormatError(f"synthetic labels '{path}' not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            labels = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise DatasetFormatError(f"synthetic labels '{path}' could not be read: {exc}") from exc
    missing = [k for k in (*PER_FRAME_KEYS, "betas") if k not in labels]
    if missing:
        raise DatasetFormatError(f"{path}: missing array(s) {missing}")
    short = [k for k in PER_FRAME_KEYS if labels[k].shape[0] != frames]
    if short:
        raise DatasetFormatError(f"{path}: array(s) {short} do not have {frames} frames as meta.json says")
    return labels
