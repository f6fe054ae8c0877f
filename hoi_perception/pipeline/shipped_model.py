"""The shipped checkpoint as the estimator's default model, so the node runs with no parameters.

An estimator config that names no model (no ``checkpoint``, ``crop_model`` or
``detector_model``) gets the shipped ``hfl_r18_synthetic.pt``, as ``hoi-perception demo``
runs it: directly for ``engine.kind torch``, else exported once to ONNX into a cache
folder keyed by the checkpoint's hash (``$XDG_CACHE_HOME/hoi_perception/models/<sha>``)
and reused while the checkpoint and the code are unchanged (the demo's export check).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

MODEL_SETTINGS = ("checkpoint", "crop_model", "detector_model")


def default_models_cache() -> Path:
    """``$XDG_CACHE_HOME/hoi_perception/models`` (``~/.cache/...`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hoi_perception" / "models"


def names_a_model(config: Any) -> bool:
    return any(getattr(config, name) is not None for name in MODEL_SETTINGS)


def with_shipped_model(config: Any, cache_dir: str | Path | None = None) -> Any:
    """``config`` unchanged when it names a model, else with the shipped checkpoint (exported for ONNX engines).

    Raises FileNotFoundError naming the checkpoint when this installation lacks it.
    """
    if names_a_model(config):
        return config
    from hoi_perception.engines.base import file_sha256
    from hoi_perception.pipeline.demo import resolve_checkpoint

    checkpoint = resolve_checkpoint(None)
    if config.engine.kind == "torch":
        return dataclasses.replace(config, checkpoint=checkpoint)
    from hoi_perception.engines.export import load_network_checkpoint
    from hoi_perception.pipeline.demo import export_models

    sha = file_sha256(checkpoint)
    network = load_network_checkpoint(checkpoint)
    models_dir = Path(cache_dir) if cache_dir is not None else default_models_cache() / sha[:16]
    files = export_models(checkpoint, sha, network, models_dir, config.object_name, config.objects)
    return dataclasses.replace(config, crop_model=files["crop"], detector_model=files["detector"])
