"""The shipped checkpoint as the estimator's default model, so the node runs with no parameters.

An estimator config that names no model (no ``checkpoint``, ``crop_model`` or
``detector_model``) gets the shipped ``cpu_r18_synthetic.pt``, as ``hoi-perception demo``
runs it: directly for ``engine.kind torch``, else exported once to ONNX into a cache
folder keyed by the checkpoint's hash (``$XDG_CACHE_HOME/hoi_perception/models/<sha>``)
and reused while the checkpoint and the code are unchanged (the demo's export check).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hoi_perception

log = logging.getLogger(__name__)

MODEL_SETTINGS = ("checkpoint", "crop_model", "detector_model")
SHIPPED_CHECKPOINT = Path(hoi_perception.__file__).resolve().parent / "checkpoints" / "cpu_r18_synthetic.pt"


class ShippedCheckpointMissingError(FileNotFoundError):
    """The default checkpoint is not part of this installation."""


def resolve_checkpoint(checkpoint: str | Path | None) -> Path:
    """The checkpoint to run: the given one, else the shipped one, with a clear error when it is absent."""
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--checkpoint '{path}' does not exist")
        return path
    if not SHIPPED_CHECKPOINT.is_file():
        raise ShippedCheckpointMissingError(
            f"the shipped checkpoint {SHIPPED_CHECKPOINT} is not in this installation (no trained checkpoint has "
            "been released with this version). Pass a training checkpoint with --checkpoint PATH, e.g. "
            "runs/cpu_r18_detector/checkpoints/last.pt written by "
            "'hoi-train fit --config train/cpu_r18_detector.yaml' (the CPU recipe's last stage)")
    return SHIPPED_CHECKPOINT


def _exported_files_current(files: dict[str, Path], checkpoint_sha: str, version: str,
                            object_name: str | None) -> bool:
    from hoi_perception.engines.export import OBJECT_NAME_KEY, REFINE_GRAPHS, ModelMetadata, read_onnx_metadata

    for graph, path in files.items():
        if not path.is_file():
            return False
        try:
            props = read_onnx_metadata(path)
            metadata = ModelMetadata.from_props(props, str(path))
        except Exception:  # noqa: BLE001 - an unreadable leftover is simply exported again
            return False
        if (metadata.graph, metadata.checkpoint_sha256, metadata.code_version) != (graph, checkpoint_sha, version):
            return False
        if graph in REFINE_GRAPHS and props.get(OBJECT_NAME_KEY) != object_name:
            return False
    return True


def export_models(checkpoint: Path, checkpoint_sha: str, network: Any, models_dir: Path,
                  object_name: str | None, objects: Path | None) -> dict[str, Path]:
    """ONNX files of ``checkpoint`` in ``models_dir``: reused when exported from these bytes by this
    code version, else exported (``hoi-perception export``)."""
    from hoi_perception.engines.export import REFINE_GRAPHS, export_main
    from hoi_perception.models.checkpoint import code_version

    name = network.config.name
    graphs = ["crop", "detector"] + (list(REFINE_GRAPHS) if network.refiner is not None else [])
    files = {graph: models_dir / f"{name}_{graph}.onnx" for graph in graphs}
    refine_object = object_name if network.refiner is not None else None
    if _exported_files_current(files, checkpoint_sha, code_version(), refine_object):
        log.info("reusing the ONNX export in %s", models_dir)
        return files
    log.info("exporting %s to ONNX in %s (half a minute or more on a CPU, once: later runs reuse it)",
             checkpoint, models_dir)
    return export_main(checkpoint, "onnx", models_dir, object_name=refine_object, objects=objects)


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

    checkpoint = resolve_checkpoint(None)
    if config.engine.kind == "torch":
        return dataclasses.replace(config, checkpoint=checkpoint)
    from hoi_perception.models.checkpoint import load_network_checkpoint

    sha = file_sha256(checkpoint)
    network = load_network_checkpoint(checkpoint)
    models_dir = Path(cache_dir) if cache_dir is not None else default_models_cache() / sha[:16]
    files = export_models(checkpoint, sha, network, models_dir, config.object_name, config.objects)
    return dataclasses.replace(config, crop_model=files["crop"], detector_model=files["detector"])


def runtime_estimator(config: str | Path | None, overrides: Sequence[str] = ()) -> Any:
    """The estimator a command runs: the settings file (default: the shipped perception.yaml) with
    ``overrides``, on the shipped checkpoint when they name no model; says what it estimates."""
    from hoi_perception.pipeline.config import DEFAULT_PERCEPTION_CONFIG, load_estimator_config
    from hoi_perception.pipeline.estimator import Estimator, describe_targets

    estimator_config = load_estimator_config(config or DEFAULT_PERCEPTION_CONFIG, overrides)
    if estimator_config.needs_network:  # MediaPipe hands alone need none
        if not names_a_model(estimator_config):
            log.info("no model given: running the shipped checkpoint, as the demo does")
        estimator_config = with_shipped_model(estimator_config)
    print(describe_targets(estimator_config))
    return Estimator(estimator_config)
