"""The model ``process-bag`` and ``run`` use when none is given: the shipped checkpoint, as in the demo.

``engine.kind: torch`` runs the checkpoint itself; ONNX engines run its export, made once
into a per-user cache folder keyed by the checkpoint's hash and reused afterwards
(:func:`hoi_perception.pipeline.demo.export_models`). :func:`describe_targets` is the
line both commands print so a user knows whether an object pose is being estimated.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from hoi_perception.pipeline.config import EstimatorConfig

log = logging.getLogger(__name__)


def model_cache_dir() -> Path:
    """``$HOI_PERCEPTION_CACHE`` or ``$XDG_CACHE_HOME/hoi_perception`` (default ``~/.cache/hoi_perception``)."""
    if os.environ.get("HOI_PERCEPTION_CACHE"):
        return Path(os.environ["HOI_PERCEPTION_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "hoi_perception"


def with_shipped_model(config: EstimatorConfig) -> EstimatorConfig:
    """``config`` unchanged when it names its models; else the shipped checkpoint (exported when needed)."""
    if config.engine.kind == "torch":
        if config.checkpoint is not None:
            return config
    elif config.crop_model is not None or config.detector_model is not None or config.checkpoint is not None:
        return config
    from hoi_perception.engines.base import file_sha256
    from hoi_perception.pipeline.demo import export_models, resolve_checkpoint

    checkpoint = resolve_checkpoint(None)
    if config.engine.kind == "torch":
        log.info("no model given: running the shipped checkpoint %s", checkpoint)
        return dataclasses.replace(config, checkpoint=checkpoint)
    from hoi_perception.engines.export import load_network_checkpoint

    sha = file_sha256(checkpoint)
    network = load_network_checkpoint(checkpoint)
    models_dir = model_cache_dir() / f"{checkpoint.stem}_{sha[:16]}"
    files = export_models(checkpoint, sha, network, models_dir, config.object_name, config.objects)
    log.info("no model given: running the shipped checkpoint %s (ONNX export in %s)", checkpoint, models_dir)
    return dataclasses.replace(config, crop_model=files["crop"], detector_model=files["detector"])


def describe_targets(config: EstimatorConfig) -> str:
    """One line: which hands and which object (or none, and how to choose one) are estimated."""
    hands = " and ".join(config.hand_sides)
    if config.object_name is not None:
        return f"estimating: {hands} hand(s) and the object '{config.object_name}'"
    from hoi_perception.pipeline.estimator import load_object_library_names

    names = load_object_library_names(config.objects)
    return (f"estimating: {hands} hand(s) only - no object_name is set, so no object pose; choose the object in view "
            f"with --set object_name=NAME (the library has: {', '.join(names)})")
