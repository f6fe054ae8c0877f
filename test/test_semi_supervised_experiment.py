"""benchmarks/semi_supervised.py end to end at its smallest scale: data, training, pseudo-labelling
from bags, offline re-filtering per row, evaluation, the report, resuming, and bad input."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hoi_perception.config import ConfigError, load_config
from hoi_training.pseudolabel.dataset import ablation_constraints, job_constraints, read_manifest, refilter

ROOT = Path(__file__).resolve().parents[1]
FRAMES_PER_SEQUENCE = 4
WILD_SEQUENCES = 2


def _load_script():
    spec = importlib.util.spec_from_file_location("semi_supervised", ROOT / "benchmarks" / "semi_supervised.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["semi_supervised"] = module
    spec.loader.exec_module(module)
    return module


experiment = _load_script()

TINY_CONFIG = {
    "seeds": {"lab": 11, "wild": 22, "wild_test": 33, "training": 5},
    "semi_initialization": "scratch",
    "pseudo_dataset_weight": 1.0,
    "pseudo_sample_weight": "one",
    "scales": {"tiny": {
        "synth_overrides": ["camera.width=64", "camera.height=64"],
        "lab": {"sequences": 2, "frames": FRAMES_PER_SEQUENCE},
        "wild": {"sequences": WILD_SEQUENCES, "frames": FRAMES_PER_SEQUENCE},
        "wild_test": {"sequences": 1, "frames": FRAMES_PER_SEQUENCE},
        "train_config": "train/tiny_test.yaml",
        "train_overrides": ["batch_size=2", "workers=0", "cpu_threads=1", "log_interval=1", "image_interval=0"],
        "supervised": {"epochs": 100, "max_steps": 2},
        "semi": {"epochs": 100, "max_steps": 2},
        "pseudolabel_overrides": ["batch_size=16", "sharding.units_per_shard=1", "tta.enabled=false"],
        "evaluation_overrides": ["batch_size=8", "device=cpu", "metrics.interaction_metrics=false"],
    }},
}


def rig_detector(checkpoint: Path) -> None:
    """Make the two-step model's detector fire on every frame: a right hand in every cell (logit 3,
    score 0.95, above the runtime's 0.3) with 20 px boxes, so the pseudo-label job finds a hand in
    each bag frame. Every other
    field of the training checkpoint is kept, so the experiment still sees a finished run."""
    data = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = data["model"]
    for branch, bias in (("heatmap", [3.0, -5.0, 2.0]), ("size", [5.0, 5.0]), ("offset", [0.5, 0.5])):
        last = max(int(k.split(".")[2]) for k in model if k.startswith(f"detection_head.{branch}."))
        model[f"detection_head.{branch}.{last}.weight"].zero_()
        model[f"detection_head.{branch}.{last}.bias"].copy_(torch.tensor(bias))
    torch.save(data, checkpoint)


@pytest.fixture(scope="module")
def config_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("experiment_config") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_CONFIG))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory, config_path):
    """The tiny scale run to the end (with the rigged detector), then run once more to resume."""
    out = tmp_path_factory.mktemp("experiment") / "out"
    args = ["--config", str(config_path), "--out", str(out), "--scale", "tiny"]
    assert experiment.main(args + ["--stages", "data", "supervised"]) == 0
    layout = experiment.ExperimentLayout(out.resolve())
    rig_detector(layout.checkpoint(experiment.SUPERVISED))
    assert experiment.main(args) == 0
    first = json.loads((out / "results.json").read_text())
    config = experiment.load_experiment_config(config_path)
    rerun = experiment.Experiment(config, "tiny", out, str(config_path)).run(experiment.STAGES)
    return out, layout, first, rerun


def test_pseudo_labels_come_from_every_bag_frame(finished):
    out, layout, results, _ = finished
    job = read_manifest(layout.pseudo)
    assert job["source"] == f"bag:{layout.wild_bags}"
    assert job["counts"]["source_frames"] == WILD_SEQUENCES * FRAMES_PER_SEQUENCE
    assert job["counts"]["frames"] == WILD_SEQUENCES * FRAMES_PER_SEQUENCE  # the rigged detector always fires
    assert results["pseudo_label_job"] == job["counts"]


def test_each_row_keeps_the_frames_its_filter_selects(finished):
    _, layout, results, _ = finished
    manifest = read_manifest(layout.pseudo)
    rows = {r["name"]: r for r in results["rows"]}
    assert list(rows) == [r.name for r in experiment.ROWS]
    assert rows["supervised"]["pseudo_labels"] == 0
    assert rows["semi_no_filter"]["pseudo_labels"] == WILD_SEQUENCES * FRAMES_PER_SEQUENCE
    for row in experiment.SEMI_ROWS:
        constraints = ablation_constraints(job_constraints(manifest), row.pseudo_filter)
        kept = sum(int(np.sum(result.kept)) for result in refilter(layout.pseudo, constraints).values())
        assert rows[row.name]["pseudo_labels"] == kept
        assert rows[row.name]["trained"] == (kept > 0)
    # The job itself ran with every constraint on: its kept count is the "all constraints" row.
    assert rows["semi_all_constraints"]["pseudo_labels"] == manifest["counts"]["kept"]


def test_trained_rows_are_scored_on_the_held_out_wild_test_set(finished):
    out, layout, results, _ = finished
    evaluation = yaml.safe_load(layout.config_file("eval_wild_test").read_text())
    assert evaluation["boxes"] == "ground_truth"
    assert Path(evaluation["dataset"]["config"]["root"]) == layout.data("wild_test")
    assert json.loads((layout.data("wild_test") / "manifest.json").read_text())["seed"] == 33
    assert json.loads((layout.data("wild") / "manifest.json").read_text())["seed"] == 22
    for row in results["rows"]:
        if not row["trained"]:
            assert row["metrics"] is None
            continue
        metrics = row["metrics"]
        assert metrics["hand_frames_labelled"] == FRAMES_PER_SEQUENCE
        assert metrics["object_frames_labelled"] == FRAMES_PER_SEQUENCE
        assert 0.0 <= metrics["add_adds_0.1d_pct"] <= 100.0
        summary = json.loads(layout.metrics(experiment.Row(row["name"], "", None)).read_text())
        assert metrics["pa_mpjpe_mm"] == summary["hand"]["pa_mpjpe_mm"]
        if metrics["hand_frames_evaluated"]:
            assert math.isfinite(metrics["pa_mpjpe_mm"]) and metrics["pa_mpjpe_mm"] > 0
    assert results["rows"][0]["trained"] and results["rows"][1]["trained"]  # supervised and no filtering


def test_semi_supervised_runs_retrain_from_scratch_on_lab_and_masked_pseudo_labels(finished):
    _, layout, _, _ = finished
    from hoi_training.train_config import TrainConfig

    config = load_config(TrainConfig, layout.config_file("train_semi_no_filter"))
    assert config.init_checkpoint is None and config.seed == 5 and config.max_steps == 2
    lab, pseudo = config.datasets["lab"], config.datasets["pseudo_wild"]
    assert lab.kind == "synthetic" and lab.object_loss
    assert pseudo.kind == "pseudo" and not pseudo.object_loss
    assert pseudo.config["filter"] == "none" and Path(pseudo.config["root"]) == layout.pseudo
    supervised = load_config(TrainConfig, layout.config_file("train_supervised"))
    assert list(supervised.datasets) == ["lab"]
    assert torch.load(layout.checkpoint(experiment.SUPERVISED), weights_only=True)["step"] == 2


def test_report_lists_rows_seeds_commands_and_wall_times(finished):
    out, _, results, _ = finished
    text = (out / "results.md").read_text()
    for row in experiment.ROWS:
        assert f"| {row.label} |" in text
    assert "wild 22, wild_test 33, training 5" in text
    assert results["steps"]["pseudolabel"]["command"].startswith("hoi-train pseudolabel --checkpoint ")
    assert results["steps"]["pseudolabel"]["command"].endswith("--set tta.enabled=false")  # the exact CLI call
    assert "hoi-train pseudolabel" in text and "--source bag" in text
    steps = results["steps"]
    assert steps["train/supervised"]["wall_s"] > 0 and steps["pseudolabel"]["wall_s"] > 0
    assert steps["train/supervised"]["command"].startswith("hoi-train fit --config")
    compared = results["comparison"]
    if results["rows"][-1]["metrics"] is None:
        assert compared["target_met"] is None


def test_rerun_skips_every_finished_step(finished):
    out, _, first, rerun = finished
    assert {status for step, status in rerun.items() if step != "report"} <= {"skipped", "not trained"}
    assert rerun["train/supervised"] == "skipped" and rerun["pseudolabel"] == "skipped"
    again = json.loads((out / "results.json").read_text())
    assert again["rows"] == first["rows"]
    assert again["steps"] == first["steps"]  # wall times of the finishing run are kept


def test_output_folder_of_other_settings_is_refused(finished, tmp_path):
    out, _, _, _ = finished
    other = json.loads(json.dumps(TINY_CONFIG))
    other["seeds"]["training"] = 6
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(other))
    with pytest.raises(ConfigError, match="other settings.*seeds"):
        experiment.Experiment(experiment.load_experiment_config(path), "tiny", out, str(path))


def test_bad_input_is_named(config_path, tmp_path, caplog):
    assert experiment.main(["--config", str(config_path), "--out", str(tmp_path / "a"), "--scale", "huge"]) == 2
    assert "--scale 'huge' is not defined" in caplog.text
    assert experiment.main(["--config", str(config_path), "--out", str(tmp_path / "b"), "--scale", "tiny",
                            "--stages", "semi"]) == 2
    assert "needs" in caplog.text and "--stages pseudolabel" in caplog.text
    config = experiment.load_experiment_config(config_path)
    with pytest.raises(ValueError, match="unknown stage"):
        experiment.Experiment(config, "tiny", tmp_path / "c", str(config_path)).run(["train"])
    same = json.loads(json.dumps(TINY_CONFIG))
    same["seeds"]["wild_test"] = same["seeds"]["wild"]
    with pytest.raises(ConfigError, match="seeds.wild and seeds.wild_test"):
        load_config(experiment.ExperimentConfig, same)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match="holds other files"):
        experiment.Experiment(config, "tiny", tmp_path / "d", str(config_path))


def test_shipped_config_defines_both_scales():
    config = experiment.load_experiment_config("experiments/semi_supervised.yaml")
    assert set(config.scales) == {"smoke", "full"}
    assert config.semi_initialization == "scratch"  # SHO retrains on the union from scratch
    assert len({config.seeds.lab, config.seeds.wild, config.seeds.wild_test}) == 3
    full, smoke = config.scales["full"], config.scales["smoke"]
    assert full.train_config == "train/synthetic_hfl_r18.yaml"
    assert smoke.train_config == "train/tiny_test.yaml"
    assert full.lab.sequences * full.lab.frames >= 10 * smoke.lab.sequences * smoke.lab.frames


def test_fine_tuning_variant_starts_from_the_supervised_checkpoint(finished, tmp_path):
    _, layout, _, _ = finished
    settings = json.loads(json.dumps(TINY_CONFIG))
    settings["semi_initialization"] = "supervised"
    path = tmp_path / "fine_tune.yaml"
    path.write_text(yaml.safe_dump(settings))
    variant = experiment.Experiment(experiment.load_experiment_config(path), "tiny", tmp_path / "out", str(path))
    for folder in ("data", "pseudo"):  # reuse the finished run's datasets
        (variant.layout.root / folder).symlink_to(layout.root / folder)
    from hoi_training.train_config import TrainConfig

    config = load_config(TrainConfig, variant.training_config(experiment.SEMI_ROWS[-1]))
    assert config.init_checkpoint == variant.layout.checkpoint(experiment.SUPERVISED)
    assert config.datasets["pseudo_wild"].config["filter"] == "all"
    assert load_config(TrainConfig, variant.training_config(experiment.SUPERVISED)).init_checkpoint is None


def test_full_scale_resolves_to_valid_training_and_evaluation_configs(finished, tmp_path):
    """The full scale is not run here; its configs must still resolve (on the tiny run's data)."""
    _, layout, _, _ = finished
    config = experiment.load_experiment_config("experiments/semi_supervised.yaml")
    full = experiment.Experiment(config, "full", tmp_path / "full", "experiments/semi_supervised.yaml")
    for folder in ("data", "pseudo"):
        (full.layout.root / folder).symlink_to(layout.root / folder)
    from hoi_training.evaluate import EvaluationRunConfig
    from hoi_training.train_config import TrainConfig

    for row in experiment.ROWS:
        resolved = load_config(TrainConfig, full.training_config(row))
        assert resolved.model_config().name == "hfl_r18" and resolved.model_config().input_size == 256
        assert (resolved.epochs, resolved.max_steps, resolved.batch_size) == (70, 0, 64)
        assert resolved.seed == config.seeds.training
    evaluation = load_config(EvaluationRunConfig, full.evaluation_config())
    assert evaluation.boxes == "ground_truth" and not evaluation.metrics.interaction_metrics
