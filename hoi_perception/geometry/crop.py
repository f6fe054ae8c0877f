"""The crop the network sees: the hand and object boxes, each enlarged about its centre, their
union made square.

One definition for training (:mod:`hoi_training.data.augment`), pseudo-labelling and the
runtime (:func:`hoi_perception.pipeline.crops.crop_geometry`). The enlargement a model
was trained with travels in its checkpoint (:data:`CROP_SETTINGS_KEY`) and in its exported
graphs' metadata, so the runtime crops as the model was trained.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from hoi_perception.geometry.camera import box_union, square_box

DEFAULT_BOX_EXPANSION = 1.5  # SHO and HFL's x1.5
CROP_SETTINGS_KEY = "crop"  # checkpoint entry: {"box_expansion": float}


def expand_box(box: np.ndarray, factor: float) -> np.ndarray:
    """``box`` (x0, y0, x1, y1) scaled by ``factor`` about its centre."""
    box = np.asarray(box, dtype=np.float64)
    centre, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2 * factor
    return np.concatenate([centre - half, centre + half])


def square_crop_box(boxes: Iterable[np.ndarray], box_expansion: float) -> np.ndarray:
    """The square crop around ``boxes``: each enlarged by ``box_expansion``, their union squared."""
    expanded = [expand_box(b, box_expansion) for b in boxes]
    if not expanded:
        raise ValueError("square_crop_box: expected at least one box")
    union = expanded[0]
    for box in expanded[1:]:
        union = box_union(union, box)
    return square_box(union)


def checkpoint_box_expansion(checkpoint: Mapping[str, Any]) -> float | None:
    """The crop enlargement a checkpoint's model was trained with; None for checkpoints that predate the record."""
    settings = checkpoint.get(CROP_SETTINGS_KEY)
    if not isinstance(settings, Mapping) or "box_expansion" not in settings:
        return None
    return float(settings["box_expansion"])


def resolve_box_expansion(configured: float | None, trained: float | None, source: str) -> float:
    """The enlargement to crop with: the model's (``trained``), or the configured one where the model records
    none. A configured value that contradicts the model's is an error naming both."""
    if configured is not None and trained is not None and not np.isclose(configured, trained):
        raise ValueError(f"crop_box_expansion {configured} is configured, but {source} was trained with crops "
                         f"enlarged x{trained}; remove the setting to crop as the model was trained")
    if trained is not None:
        return trained
    return DEFAULT_BOX_EXPANSION if configured is None else configured
