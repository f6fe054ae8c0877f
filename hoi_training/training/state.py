"""Training checkpoints: RNG state, reading, model-config checks and initial weights."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hoi_perception.config import ConfigError, from_dict, to_dict
from hoi_perception.models.checkpoint import read_training_checkpoint
from hoi_perception.models.config import ModelConfig
from hoi_perception.models.network import HOINet

log = logging.getLogger(__name__)

REFINER_PREFIX = "refiner."  # state-dict prefix of HOINet's refinement stage
MASK_HEAD_PREFIX = "hand_decoder.mask_decoder."  # state-dict prefix of the optional hand-mask head
SIDE_HEAD_PREFIX = "hand_decoder.side_classifier."  # and of the optional side head
DETECTOR_TRUNK_PREFIX = "detector_trunk."  # the detector's own trunk (detection_head.trunk: own)
DETECTION_HEAD_PREFIX = "detection_head."


class CheckpointMismatchError(ValueError):
    """A checkpoint was made for another model config (or is not a training checkpoint)."""


def rng_state(device: torch.device) -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint's dict (tensors on CPU); clear errors for a missing or foreign file."""
    try:
        return read_training_checkpoint(path)
    except ValueError as exc:
        raise CheckpointMismatchError(str(exc)) from exc


def check_model_config(checkpoint: dict[str, Any], path: str | Path, expected: ModelConfig, source: str) -> None:
    """Refuse a checkpoint whose model config differs from ``expected`` (naming both and the differences)."""
    try:  # through the dataclass, so options added since the checkpoint compare at their defaults
        saved = to_dict(from_dict(ModelConfig, checkpoint["model_config"], f"checkpoint '{path}': model_config"))
    except ConfigError as exc:
        raise CheckpointMismatchError(str(exc)) from None
    wanted = to_dict(expected)
    if saved == wanted:
        return
    differing = sorted(config_differences(saved, wanted))
    raise CheckpointMismatchError(
        f"checkpoint '{path}' was trained with model config '{saved.get('name', '?')}', but this run uses "
        f"'{expected.name}' ({source}); they differ in {', '.join(differing[:8])}")


def load_initial_weights(network: HOINet, path: str | Path, source: str, exclude: Sequence[str] = ()) -> None:
    """Start ``network`` from the weights of checkpoint ``path`` (a training or released checkpoint).

    The checkpoint must have been made for the same model config, or for the same model
    without the optional parts this network adds: a refinement stage (the released
    hfl_r18 for an hfl_r18_dma run), a hand-mask head (SemiHand's cross-modal term on
    a checkpoint trained without it) or the detector's own trunk (``detection_head.trunk:
    own`` on a shared-trunk checkpoint). Every other weight is loaded; an added part keeps
    its initialisation (the refiner's zero output layers make the refined model start as
    the first stage), except the detector's trunk, which starts as a copy of the loaded
    crop backbone. Weights under an ``exclude`` prefix are not loaded either.
    """
    data = read_checkpoint(path)
    # The detector's frame size changes no weight: a run may start from one trained at another size.
    saved_detection = data["model_config"].get("detection_head", {})
    wanted_size = network.config.detection_head.input_size
    if saved_detection.get("input_size") != wanted_size:
        data = {**data, "model_config": {**data["model_config"],
                                         "detection_head": {**saved_detection, "input_size": wanted_size}}}
    if exclude:
        unknown = [p for p in exclude if not any(k.startswith(p) for k in network.state_dict())]
        if unknown:
            raise ConfigError(f"init_exclude: {unknown} match no weight of model '{network.config.name}'")
        data = {**data, "model": {k: v for k, v in data["model"].items() if not k.startswith(tuple(exclude))}}
    expected = network.config
    try:
        saved = from_dict(ModelConfig, data["model_config"], f"checkpoint '{path}': model_config")
    except ConfigError as exc:
        raise CheckpointMismatchError(str(exc)) from None
    added = _added_parts(saved, expected)
    if not added and not exclude:
        check_model_config(data, path, expected, source)
        network.load_state_dict(data["model"])
        return
    added.update({f"'{prefix}' (init_exclude)": prefix for prefix in exclude})
    # Compare with the added parts' settings taken from this network: only they may differ.
    aligned = replace(saved, name=expected.name, refine=expected.refine, dma=expected.dma,
                      hand_head=replace(saved.hand_head, mask_head=expected.hand_head.mask_head,
                                        side_head=expected.hand_head.side_head),
                      detection_head=replace(saved.detection_head, trunk=expected.detection_head.trunk))
    differing = config_differences(to_dict(aligned), to_dict(expected))
    if differing:
        raise CheckpointMismatchError(
            f"checkpoint '{path}' (model '{saved.name}') cannot start '{expected.name}' ({source}) with only "
            f"{', '.join(added)} added: they also differ in {', '.join(sorted(differing)[:8])}")
    kept = {k: v for k, v in data["model"].items() if not k.startswith(tuple(added.values()))}
    result = network.load_state_dict(kept, strict=False)
    missing = [key for key in result.missing_keys if not key.startswith(tuple(added.values()))]
    if missing or result.unexpected_keys:
        raise CheckpointMismatchError(
            f"checkpoint '{path}': its weights do not fit '{expected.name}' ({source}): "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(result.unexpected_keys)} unexpected "
            f"(e.g. {result.unexpected_keys[:3]})")
    if DETECTOR_TRUNK_PREFIX in added.values():
        assert network.detector_trunk is not None  # trunk "own" builds it
        network.detector_trunk.copy_from(network.backbone)
    log.info("initialised %s from %s (model '%s'); untrained: %s", expected.name, path, saved.name,
             ", ".join(added))


def _added_parts(saved: ModelConfig, expected: ModelConfig) -> dict[str, str]:
    """Optional parts ``expected`` has and ``saved`` lacks: {description: state-dict key prefix}."""
    added = {}
    if expected.refine != "none" and saved.refine == "none":
        added["the refiner"] = REFINER_PREFIX
    if expected.hand_head.mask_head and not saved.hand_head.mask_head:
        added["the hand-mask head"] = MASK_HEAD_PREFIX
    if expected.hand_head.side_head and not saved.hand_head.side_head:
        added["the side head"] = SIDE_HEAD_PREFIX
    if expected.detection_head.trunk == "own" and saved.detection_head.trunk == "shared":
        added["the detector's own trunk (a copy of the crop backbone)"] = DETECTOR_TRUNK_PREFIX
        if saved.backbone.streams == "harmonious":  # the head read both streams' P2: its input width changes
            added["the detection head"] = DETECTION_HEAD_PREFIX
    return added


def freeze_first_stage(network: HOINet) -> None:
    """Stop gradients to every weight but the refiner's (``trainable: refiner``)."""
    if network.refiner is None:
        raise ValueError(f"freeze_first_stage: model '{network.config.name}' has no refiner (refine: none)")
    for name, parameter in network.named_parameters():
        parameter.requires_grad_(name.startswith(REFINER_PREFIX))


def config_differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += config_differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".") or "<root>"]
