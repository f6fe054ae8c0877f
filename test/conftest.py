"""Fixtures shared by several test modules."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hoi_perception.config import load_config

# benchmarks/ (imported by the experiment tests) sits beside the packages. `colcon test` runs
# pytest from the build folder, where it is not importable; appended, not prepended, so that
# the installed hoi_perception (with its generated messages) keeps its place on the path there.
REPOSITORY = Path(__file__).resolve().parents[1]
if str(REPOSITORY) not in sys.path:
    sys.path.append(str(REPOSITORY))


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory) -> Path:
    """One 4-frame synthetic sequence at 64x64 in the `hoi-train synth` format (read-only)."""
    from hoi_perception.synth.config import SynthConfig
    from hoi_perception.synth.generator import generate_dataset

    out = tmp_path_factory.mktemp("synth") / "tiny"
    generate_dataset(load_config(SynthConfig, "synth.yaml", ["camera.width=64", "camera.height=64"]), out,
                     sequences=1, frames=4, seed=0)
    return out


@pytest.fixture(scope="session")
def oracle_pseudo_data(tmp_path_factory) -> dict[str, Path]:
    """A lab set, a wild set (a right and a left hand) and an oracle pseudo-labelling job over
    the wild one; read-only, shared by the pseudo-label dataset and SemiHand tests."""
    from pseudolabel_fixtures import make_synthetic, oracle_job, write_rigged_detector_checkpoint

    root = tmp_path_factory.mktemp("oracle_pseudo_data")
    lab = make_synthetic(root / "lab", "lab", 1, 4, 0)
    wild = make_synthetic(root / "wild", "wild", 2, 4, 5)
    checkpoint = write_rigged_detector_checkpoint(root / "tiny.pt", wild)
    with pytest.MonkeyPatch.context() as monkeypatch:
        labels = oracle_job(wild, checkpoint, root / "labels", monkeypatch)
    return {"lab": lab, "wild": wild, "labels": labels}
