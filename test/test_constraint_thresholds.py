"""benchmarks/constraint_thresholds.py: pseudo-label constraint thresholds chosen against the truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import load_benchmark  # test/ is on sys.path under pytest

script = load_benchmark("constraint_thresholds")


def test_auc_orders_good_above_bad_and_counts_nan_as_worst():
    good = np.array([True, True, False, False])
    assert script.auc(np.array([0.9, 0.8, 0.2, 0.1]), good, higher_is_better=True) == 1.0
    assert script.auc(np.array([0.9, 0.8, 0.2, 0.1]), good, higher_is_better=False) == 0.0
    assert script.auc(np.array([0.5, 0.5, 0.5, 0.5]), good, higher_is_better=True) == 0.5
    # A NaN score is the worst: the good row with NaN loses both its pairs, the other good row wins both.
    assert script.auc(np.array([np.nan, 0.8, 0.2, 0.1]), good, higher_is_better=True) == 0.5
    assert math.isnan(script.auc(np.array([0.1, 0.2]), np.array([True, True]), higher_is_better=True))


def test_selection_stats_counts_precision_recall_and_f1():
    kept = np.array([True, True, True, False, False])
    good = np.array([True, False, True, True, False])
    pa = np.array([5.0, 20.0, 7.0, 6.0, 30.0])
    stats = script.selection_stats(kept, good, pa)
    assert stats["kept"] == 3
    assert stats["precision"] == pytest.approx(2 / 3)
    assert stats["recall"] == pytest.approx(2 / 3)
    assert stats["f1"] == pytest.approx(2 / 3)
    assert stats["kept_pa_mpjpe_mm"] == pytest.approx(32.0 / 3)
    assert script.selection_stats(np.zeros(5, dtype=bool), good, pa)["f1"] == 0.0


def test_sweep_chooses_best_f1_and_the_loosest_of_ties():
    # IoU scores: good rows at 0.5 and 0.7, bad ones at 0.1 and 0.3: any minimum in (0.3, 0.5] separates them.
    rows = {"score.box_iou": np.array([0.5, 0.7, 0.1, 0.3])}
    good = np.array([True, True, False, False])
    spec = script.Sweep("box_iou", "score.box_iou", "min_box_iou", "at_least", (0.0, 0.2, 0.4, 0.5, 0.6))
    result = script.sweep(rows, spec, good, np.array([5.0, 6.0, 30.0, 40.0]), paper=0.6)
    assert result["chosen"]["threshold"] == 0.4  # 0.4 and 0.5 both keep exactly the good rows; 0.4 is looser
    assert result["chosen"]["f1"] == 1.0
    assert result["paper"]["kept"] == 1 and result["paper"]["recall"] == 0.5
    assert result["auc"] == 1.0
    # A maximum: the loosest is the highest.
    rows = {"score.reprojection_distance": np.array([0.1, 0.2, 0.9, 1.2])}
    spec = script.Sweep("reprojection", "score.reprojection_distance", "max_reprojection_distance", "at_most",
                        (0.15, 0.3, 0.5, 0.8, 1.0))
    assert script.sweep(rows, spec, good, np.zeros(4), paper=0.65)["chosen"]["threshold"] == 0.8


def test_oracle_pseudo_labels_are_all_good(oracle_pseudo_data):
    """An oracle job's pseudo-labels are the labels: the join of rows to labels must find that."""
    report = script.run(oracle_pseudo_data["labels"], oracle_pseudo_data["wild"], good_pa_mm=10.0, good_2d=0.05)
    assert report["rows"] == 8
    assert report["good"] == 8
    assert report["quality"]["pa_mpjpe_mm_mean"] < 0.5
    assert report["quality"]["joints_2d_box_sides_median"] < 1e-3
    assert report["filters"]["none"]["precision"] == 1.0
    assert report["true_hands"]["pass_paper_bone_length"] == 1.0
    text = script.markdown(report, "cmd")
    assert "| no filtering | 8 | 100.0 |" in text
