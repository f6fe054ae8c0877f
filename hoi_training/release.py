"""`hoi-train release`: turn a training checkpoint into the small file the runtime ships.

A training checkpoint carries the optimiser, scheduler and RNG states needed to resume
(several times the model's size); the runtime needs only the model config and weights.
Floating-point weights are stored in fp16 by default, which halves the file again;
``load_network_checkpoint`` casts them back when it loads them into the network.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from hoi_perception.atomic import atomic_save_with
from hoi_perception.geometry.crop import CROP_SETTINGS_KEY
from hoi_perception.models.checkpoint import load_network_checkpoint, read_training_checkpoint
from hoi_perception.output_paths import OutputKind, check_output

RELEASE_FORMAT = "hoi_perception_release/1"


def is_release_file(path: Path) -> bool:
    """A file this command wrote (``format`` is :data:`RELEASE_FORMAT`); a training checkpoint is not one."""
    if not path.is_file():
        return False
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - unreadable: certainly not our release file
        return False
    return isinstance(data, dict) and data.get("format") == RELEASE_FORMAT


RELEASE_FILE = OutputKind("released checkpoint (hoi-train release)", is_release_file)


def release_checkpoint(source: str | Path, destination: str | Path, fp16: bool = True, overwrite: bool = False
                       ) -> dict:
    """Write ``destination`` with the model config and (fp16) weights of ``source``; returns its summary.

    ``destination`` may never be ``source``; an existing one is replaced only with ``overwrite``
    and only when it is itself a released file (a training checkpoint never is)."""
    check_output(destination, kind=RELEASE_FILE, inputs=[source], overwrite=overwrite, option="--out")
    data = read_training_checkpoint(source)
    weights = {name: (t.half() if fp16 and t.is_floating_point() else t).contiguous()
               for name, t in data["model"].items()}
    release = {"format": RELEASE_FORMAT, "model_config": data["model_config"], "model": weights,
               **({CROP_SETTINGS_KEY: data[CROP_SETTINGS_KEY]} if CROP_SETTINGS_KEY in data else {}),
               "step": data.get("step"), "epoch": data.get("epoch"), "code_version": data.get("code_version"),
               "source_sha256": hashlib.sha256(Path(source).expanduser().read_bytes()).hexdigest()}
    destination = Path(destination).expanduser()
    atomic_save_with(destination, lambda handle: torch.save(release, handle))
    load_network_checkpoint(destination)  # the released file must load into the runtime's network
    return {"path": str(destination), "bytes": destination.stat().st_size,
            "parameters": sum(t.numel() for t in weights.values() if t.is_floating_point()),
            "step": release["step"], "dtype": "float16" if fp16 else "float32"}
