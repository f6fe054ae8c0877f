"""Fixtures shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from hoi_perception.config import load_config


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory) -> Path:
    """One 4-frame synthetic sequence at 64x64 in the `hoi-train synth` format (read-only)."""
    from hoi_training.synth.config import SynthConfig
    from hoi_training.synth.generator import generate_dataset

    out = tmp_path_factory.mktemp("synth") / "tiny"
    generate_dataset(load_config(SynthConfig, "synth.yaml", ["camera.width=64", "camera.height=64"]), out,
                     sequences=1, frames=4, seed=0)
    return out
