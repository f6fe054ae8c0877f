"""The dataset kinds a training or evaluation config can name: each kind's config class and loader.

One place for both, so the trainer, ``hoi-train eval`` and the experiment drivers build
datasets the same way (``kind`` + a ``config`` mapping read into the kind's dataclass).
"""

from __future__ import annotations

from typing import Any, Literal

from hoi_perception.config import from_dict
from hoi_training.data.dexycb import DexYCBConfig, DexYCBDataset
from hoi_training.data.ho3d import HO3DConfig, HO3DDataset
from hoi_training.data.synthetic import SyntheticConfig, SyntheticDataset
from hoi_training.pseudolabel.dataset import PseudoLabelDataset, PseudoLabelDatasetConfig

DatasetKind = Literal["ho3d", "dexycb", "synthetic", "pseudo"]
# kind -> (config dataclass, dataset class taking that config)
DATASET_KINDS: dict[str, tuple[type, type]] = {
    "ho3d": (HO3DConfig, HO3DDataset),
    "dexycb": (DexYCBConfig, DexYCBDataset),
    "synthetic": (SyntheticConfig, SyntheticDataset),
    "pseudo": (PseudoLabelDatasetConfig, PseudoLabelDataset),
}


def dataset_config(kind: str, fields: dict[str, Any]) -> Any:
    """A config mapping read into ``kind``'s config class (checks the fields and paths)."""
    return from_dict(DATASET_KINDS[kind][0], dict(fields), f"{kind} config")


def open_dataset(kind: str, config: Any) -> Any:
    """The dataset of ``kind`` for its (already read) config."""
    return DATASET_KINDS[kind][1](config)
