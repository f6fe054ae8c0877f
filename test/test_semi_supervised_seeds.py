"""benchmarks/semi_supervised_seeds.py: the semi-supervised table's rows over training seeds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import load_benchmark  # test/ is on sys.path under pytest

seeds_script = load_benchmark("semi_supervised_seeds")


def _run(folder: Path, seed: int, values: dict[str, float], sha: str = "ab" * 32) -> Path:
    rows = [{"name": name, "label": name.replace("_", " "), "trained": True, "pseudo_labels": 0 if name == "supervised"
             else 28, "metrics": {"pa_mpjpe_mm": value}} for name, value in values.items()]
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({
        "base_checkpoint": {"path": "model.pt", "sha256": sha, "step": 1}, "scale": "cpu_r18",
        "seeds": {"training": seed}, "rows": rows}))
    return folder


def test_rows_are_averaged_and_compared_against_the_spread(tmp_path):
    runs = [_run(tmp_path / f"s{seed}", seed, {"supervised": 12.0 + d, "semi_no_filter": 19.0 + d,
                                                "semi_all_constraints": 12.5 - d})
            for seed, d in ((0, 0.0), (1, 0.4), (2, -0.4))]
    summary = seeds_script.summarise([seeds_script.read_run(r) for r in runs], runs)
    assert summary["seeds"] == [0, 1, 2]
    supervised = summary["rows"]["supervised"]
    assert supervised["values"] == [12.0, 12.4, 11.6] and supervised["mean"] == pytest.approx(12.0)
    assert supervised["std"] == pytest.approx(0.4)
    # all constraints - supervised: +0.5, -0.3, +1.3 (mean +0.5) against a spread of 0.4: higher
    against_supervised = summary["comparisons"]["supervised"]
    assert against_supervised["gap_per_seed_mm"] == pytest.approx([0.5, -0.3, 1.3])
    assert against_supervised["mean_gap_mm"] == pytest.approx(0.5)
    assert against_supervised["all_constraints_is"] == "higher"
    assert summary["comparisons"]["semi_no_filter"]["all_constraints_is"] == "lower"  # -6.5 mm
    text = seeds_script.markdown(summary)
    assert "| supervised | 0 | 12.00 | 12.40 | 11.60 | 12.00 | 0.40 |" in text
    assert "all constraints is **higher**" in text and "sha256 abababababab" in text


def test_one_seed_decides_nothing_and_mixed_experiments_are_refused(tmp_path):
    one = _run(tmp_path / "one", 0, {"supervised": 12.0, "semi_no_filter": 19.0, "semi_all_constraints": 11.0})
    summary = seeds_script.summarise([seeds_script.read_run(one)], [one])
    assert math.isnan(summary["rows"]["supervised"]["std"])
    assert summary["comparisons"]["supervised"]["all_constraints_is"].startswith("undecided")
    other = _run(tmp_path / "other", 1, {"supervised": 1.0, "semi_no_filter": 1.0, "semi_all_constraints": 1.0},
                 sha="cd" * 32)
    with pytest.raises(ValueError, match="is another experiment"):
        seeds_script.summarise([seeds_script.read_run(one), seeds_script.read_run(other)], [one, other])
    same_seed = _run(tmp_path / "again", 0, {"supervised": 1.0, "semi_no_filter": 1.0, "semi_all_constraints": 1.0})
    with pytest.raises(ValueError, match="training seeds repeat"):
        seeds_script.summarise([seeds_script.read_run(one), seeds_script.read_run(same_seed)], [one, same_seed])
    with pytest.raises(FileNotFoundError, match="a finished semi_supervised.py run folder"):
        seeds_script.read_run(tmp_path / "missing")
