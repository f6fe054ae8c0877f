"""Reading model checkpoints, and the code version that training runs and exports record.

One module for every reader: the exporter, the runtime's PyTorch engine, the trainer,
evaluation, release and pseudo-labelling all load checkpoints through it, with the same
clear errors for a missing, empty, foreign or mismatched file.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path

import torch

from hoi_perception.config import ConfigError, from_dict
from hoi_perception.models.config import ModelConfig
from hoi_perception.models.network import HOINet


def code_version() -> str:
    """The installed package version and, in a git checkout, the commit (``0.1.0+gabc1234``),
    marked ``.dirty`` when tracked files differ from it (the commit alone would then not
    reproduce the run)."""
    try:
        version: str | None = importlib.metadata.version("hoi_perception")
    except importlib.metadata.PackageNotFoundError:
        version = None
    commit = None
    root = Path(__file__).resolve().parents[2]
    if (root / ".git").exists():
        try:
            result = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True, timeout=5, check=False)
        except (OSError, subprocess.TimeoutExpired):
            result = None
        if result is not None and result.returncode == 0:
            commit = result.stdout.strip()
            try:
                status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                        capture_output=True, text=True, timeout=5, check=False)
            except (OSError, subprocess.TimeoutExpired):
                status = None
            if status is not None and status.returncode == 0 and status.stdout.strip():
                commit += ".dirty"
    if version and commit:
        return f"{version}+g{commit}"
    if version or commit:
        return version or f"git-{commit}"
    return "unknown"


def read_training_checkpoint(checkpoint: str | Path) -> dict:
    """A training checkpoint's dict (tensors on CPU), with clear errors for a missing,
    unreadable or foreign file: it must hold ``model_config`` and ``model``."""
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        found = sorted(p.relative_to(path).as_posix() for p in path.glob("**/*.pt"))[:3]
        hint = f" (it holds {', '.join(found)})" if found else ""
        raise ValueError(f"checkpoint '{path}' is a folder; expected a .pt file{hint}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint '{path}' is empty (0 bytes); an interrupted copy or download?")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unreadable files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"checkpoint '{path}' cannot be read as a PyTorch checkpoint: {reason}") from exc
    if not isinstance(data, dict) or "model_config" not in data or "model" not in data:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"checkpoint '{path}': expected a dict with 'model_config' and 'model', got {keys}")
    return data


def load_network_checkpoint(checkpoint: str | Path) -> HOINet:
    """HOINet from a training checkpoint: a dict with ``model_config`` (ModelConfig as a plain
    dict) and ``model`` (its state dict)."""
    path = Path(checkpoint).expanduser()
    data = read_training_checkpoint(path)
    try:
        config = from_dict(ModelConfig, data["model_config"], f"{path}: model_config")
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    network = HOINet(config)
    where = f"checkpoint '{path}': weights do not fit model '{config.name}'"
    try:
        result = network.load_state_dict(data["model"], strict=False)
    except RuntimeError as exc:  # shape mismatches; the message lists one line per tensor
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise ValueError(f"{where}: " + "; ".join(lines[1:4] or lines) + ("; ..." if len(lines) > 4 else "")) from None
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{where}: {len(result.missing_keys)} missing tensors (e.g. {result.missing_keys[:3]}), "
                         f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:3]})")
    return network.eval()
