"""benchmarks/semi_supervised.py end to end at its smallest scale: data, training, pseudo-labelling
from bags, offline re-filtering per row, SemiHand rows, evaluation, the report, resuming, and bad
input; the shipped scales (smoke, cpu, full) resolved on that run's data; fine-tuning every row
from a released (fp16) base checkpoint."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import load_benchmark  # test/ is on sys.path under pytest

from hoi_perception.config import ConfigError, load_config
from hoi_training.pseudolabel.dataset import ablation_constraints, job_constraints, read_manifest, refilter

ROOT = Path(__file__).resolve().parents[1]
FRAMES_PER_SEQUENCE = 4
WILD_SEQUENCES = 2


experiment = load_benchmark("semi_supervised")

TINY_CONFIG = {
    "seeds": {"lab": 11, "wild": 22, "wild_test": 33, "training": 5},
    "pseudo_dataset_weight": 1.0,
    "pseudo_sample_weight": "one",
    "scales": {"tiny": {
        "initialization": "scratch",
        "semihand_rows": True,
        "synth_overrides": ["camera.width=64", "camera.height=64"],
        "lab": {"sequences": 2, "frames": FRAMES_PER_SEQUENCE},
        "wild": {"sequences": WILD_SEQUENCES, "frames": FRAMES_PER_SEQUENCE},
        "wild_test": {"sequences": 1, "frames": FRAMES_PER_SEQUENCE},
        "train_config": "train/tiny_test.yaml",
        "train_overrides": ["batch_size=2", "workers=0", "cpu_threads=1", "log_interval=1", "image_interval=0",
                            "optimizer.lr_decay=1.0", "semihand.augmentation.diversity.output_size=32"],
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
    assert list(rows) == [r.name for r in experiment.ALL_ROWS]
    assert rows["supervised"]["pseudo_labels"] == 0
    assert rows["semi_no_filter"]["pseudo_labels"] == WILD_SEQUENCES * FRAMES_PER_SEQUENCE
    # SemiHand rows train on the same pseudo-labels as the SHO row of their filter.
    assert rows["semihand_both"]["pseudo_labels"] == rows["semi_no_filter"]["pseudo_labels"]
    assert rows["semihand_all_constraints"]["pseudo_labels"] == rows["semi_all_constraints"]["pseudo_labels"]
    for row in experiment.ALL_ROWS[1:]:
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


def _reuse_finished_data(variant, layout) -> None:
    """Point ``variant``'s data and pseudo-label folders at the finished tiny run's."""
    for folder in ("data", "pseudo"):
        (variant.layout.root / folder).symlink_to(layout.root / folder)


def test_report_lists_rows_seeds_commands_and_wall_times(finished):
    out, _, results, _ = finished
    text = (out / "results.md").read_text()
    for row in experiment.ALL_ROWS:
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
    # The plot: a PNG beside the report, linked from it.
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![PA-MPJPE and pseudo-labels per row](results.png)" in text


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


def test_shipped_config_defines_its_scales():
    config = experiment.load_experiment_config("experiments/semi_supervised.yaml")
    assert list(config.scales) == ["smoke", "cpu", "cpu_r18", "cpu_r18_shipped", "full"]
    cpu_r18 = config.scales["cpu_r18"]
    assert cpu_r18.base_checkpoint == Path("hoi_training/checkpoints/cpu_r18_stage3.pt")  # the recorded base
    # The same experiment from the model shipped now: only the base differs.
    shipped = config.scales["cpu_r18_shipped"]
    assert shipped.base_checkpoint == Path("hoi_perception/checkpoints/cpu_r18_synthetic.pt")
    assert dataclasses.replace(shipped, base_checkpoint=cpu_r18.base_checkpoint) == cpu_r18
    assert cpu_r18.train_config == "train/cpu_r18_full.yaml" and cpu_r18.semihand_rows
    assert cpu_r18.supervised == cpu_r18.semi and cpu_r18.semi.max_steps == 90
    assert cpu_r18.pseudolabel_perception_overrides == []  # the runtime's own thresholds and side vote
    assert len({config.seeds.lab, config.seeds.wild, config.seeds.wild_test}) == 3
    full, smoke, cpu = config.scales["full"], config.scales["smoke"], config.scales["cpu"]
    assert full.initialization == smoke.initialization == "scratch"  # SHO retrains on the union from scratch
    assert cpu.initialization == "base_checkpoint" and cpu.semihand_rows
    assert cpu.base_checkpoint == Path("hoi_training/checkpoints/hfl_r18_synthetic.pt")
    assert cpu.supervised == cpu.semi and cpu.semi.max_steps == 90  # equal steps for every row
    assert cpu.synth_overrides == []  # synth.yaml's 256x256 frames, as the base model was trained on
    assert full.train_config == "train/synthetic_hfl_r18.yaml"
    assert smoke.train_config == "train/tiny_test.yaml"
    assert full.lab.sequences * full.lab.frames >= 10 * smoke.lab.sequences * smoke.lab.frames


def test_fine_tuning_variant_starts_from_the_supervised_checkpoint(finished, tmp_path):
    _, layout, _, _ = finished
    settings = json.loads(json.dumps(TINY_CONFIG))
    settings["scales"]["tiny"]["initialization"] = "supervised"
    path = tmp_path / "fine_tune.yaml"
    path.write_text(yaml.safe_dump(settings))
    variant = experiment.Experiment(experiment.load_experiment_config(path), "tiny", tmp_path / "out", str(path))
    _reuse_finished_data(variant, layout)
    from hoi_training.train_config import TrainConfig

    config = load_config(TrainConfig, variant.training_config(experiment.SEMI_ROWS[-1]))
    assert config.init_checkpoint == variant.layout.checkpoint(experiment.SUPERVISED)
    assert config.datasets["pseudo_wild"].config["filter"] == "all"
    assert load_config(TrainConfig, variant.training_config(experiment.SUPERVISED)).init_checkpoint is None
    assert variant.pseudo_label_model == variant.layout.checkpoint(experiment.SUPERVISED)


def _semihand_switches(config) -> tuple[bool, bool, bool, bool, bool]:
    semihand = config.semihand
    return (semihand.pseudo_labels.enabled, semihand.label_correction.enabled, semihand.selection.enabled,
            semihand.view_consistency.enabled, semihand.cross_modal.enabled)


# (pseudo_labels, label_correction, selection, view_consistency, cross_modal) of each SemiHand row.
SEMIHAND_SWITCHES = {
    "semihand_correction_selection": (True, True, True, False, False),
    "semihand_consistency": (False, False, False, True, False),
    "semihand_both": (True, True, True, True, False),
    "semihand_all_constraints": (True, True, True, True, False),
}


def test_semihand_rows_fine_tune_the_pseudo_labelling_model_with_their_switches(finished):
    out, layout, results, _ = finished
    from hoi_training.train_config import TrainConfig

    rows = {r["name"]: r for r in results["rows"]}
    trained = [row for row in experiment.SEMIHAND_ROWS if rows[row.name]["trained"]]
    assert [row.name for row in trained][:3] == ["semihand_correction_selection", "semihand_consistency",
                                                 "semihand_both"]  # filter 'none' keeps every frame
    for row in trained:
        config = load_config(TrainConfig, layout.config_file(f"train_{row.name}"))
        assert _semihand_switches(config) == SEMIHAND_SWITCHES[row.name]
        assert config.datasets["pseudo_wild"].config["filter"] == row.pseudo_filter
        assert not config.datasets["pseudo_wild"].object_loss
        # SemiHand fine-tunes the model that made the pseudo-labels, even at a scale that trains SHO's
        # rows from scratch.
        assert config.init_checkpoint == layout.checkpoint(experiment.SUPERVISED)
        assert rows[row.name]["starts_from"] == "supervised" and rows[row.name]["semihand"] == list(row.semihand)
        assert config.max_steps == 2 and config.optimizer.lr_decay == 1.0
        if row.rounds:  # 8 lab + 8 pseudo-labelled frames, batch 2: 8 steps per epoch, so 1 round covers 2 steps
            schedule = config.semihand.schedule
            assert (config.epochs, schedule.rounds, schedule.epochs_per_round) == (1, 1, 1)
            assert rows[row.name]["rounds"] == 1
            assert schedule.learning_rate == config.optimizer.lr and schedule.lr_drop_factor == 1.0
            assert schedule.batch_size == config.batch_size == 2
        else:
            assert rows[row.name]["rounds"] is None
        assert torch.load(layout.checkpoint(row), weights_only=True)["step"] == 2
    assert rows["semi_no_filter"]["starts_from"] == "scratch" and rows["semi_no_filter"]["semihand"] == []
    deltas = results["comparison"]["semihand_minus_semi_no_filter_pa_mpjpe_mm"]
    assert set(deltas) == {row.name for row in experiment.SEMIHAND_ROWS}
    for name, delta in deltas.items():
        metrics, reference = rows[name]["metrics"], rows["semi_no_filter"]["metrics"]
        if metrics is None or metrics["pa_mpjpe_mm"] is None or reference["pa_mpjpe_mm"] is None:
            assert delta is None
        else:
            assert delta == pytest.approx(metrics["pa_mpjpe_mm"] - reference["pa_mpjpe_mm"])
    assert 'SemiHand rows minus "semi, no filtering"' in (out / "results.md").read_text()


def test_cpu_scale_fine_tunes_every_row_from_the_base_checkpoint_for_equal_steps(finished, tmp_path):
    """The shipped cpu scale, resolved on the tiny run's data (it is not run here)."""
    _, layout, _, _ = finished
    config = experiment.load_experiment_config("experiments/semi_supervised.yaml")
    cpu = experiment.Experiment(config, "cpu", tmp_path / "cpu", "experiments/semi_supervised.yaml")
    _reuse_finished_data(cpu, layout)
    from hoi_training.train_config import TrainConfig

    base = (ROOT / "hoi_training" / "checkpoints" / "hfl_r18_synthetic.pt").resolve()
    assert cpu.rows == experiment.ALL_ROWS and cpu.pseudo_label_model == base
    counts = cpu.pseudo_label_counts()
    resolved = [row for row in cpu.rows if row.pseudo_filter is None or counts[row.pseudo_filter] > 0]
    assert {row.name for row in resolved} >= {"supervised", "semi_no_filter", "semihand_correction_selection",
                                              "semihand_consistency", "semihand_both"}  # 'none' keeps every frame
    for row in resolved:
        train = load_config(TrainConfig, cpu.training_config(row))
        model = train.model_config()
        assert model.name == "hfl_r18" and model.input_size == 128 == train.augmentation.output_size
        assert train.model_overrides == ["new_layer_init=pytorch"]  # the base model's architecture
        assert train.semihand.augmentation.diversity.output_size == 128
        assert train.init_checkpoint == base and cpu.starts_from(row) == "base_checkpoint"
        assert (train.batch_size, train.workers, train.cpu_threads, train.device, train.amp) == (8, 0, 2, "cpu", "off")
        assert train.optimizer.lr == 1e-4 and train.optimizer.lr_decay == 1.0
        assert train.loss.heatmap_loss == "cross_entropy"
        # Exactly 90 optimiser steps for every row: max_steps ends each run before its epochs do.
        per_epoch = experiment.batches_per_epoch(train)
        assert train.max_steps == 90 and per_epoch * train.epochs >= 90
        assert _semihand_switches(train) == SEMIHAND_SWITCHES.get(row.name, (False,) * 5)
        if row.rounds:  # the fewest rounds that span 90 steps
            assert train.semihand.schedule.rounds == train.epochs == math.ceil(90 / per_epoch)
            assert train.semihand.schedule.lr_drop_factor == 1.0 and train.semihand.schedule.batch_size == 8
    evaluation = yaml.safe_load(cpu.evaluation_config().read_text())
    assert evaluation["device"] == "cpu" and evaluation["boxes"] == "ground_truth"


def test_released_base_checkpoint_starts_every_row(finished, tmp_path):
    """A released fp16 file (hoi-train release) is a valid base: the trainer loads it as init_checkpoint,
    the weights arrive cast to fp32, the file is fingerprinted on first use and a changed file is refused.
    The base may predate a model option (the shipped model was trained before hand_head.mask_head
    existed): a missing key compares at its default."""
    _, layout, _, _ = finished
    from hoi_training.release import release_checkpoint
    from hoi_training.trainer import Trainer

    released = tmp_path / "base.pt"
    release_checkpoint(layout.checkpoint(experiment.SUPERVISED), released)
    data = torch.load(released, weights_only=True)
    assert data["model_config"]["hand_head"]["confidence_radius"] == 2.0  # tiny_test keeps the default
    del data["model_config"]["hand_head"]["confidence_radius"]
    torch.save(data, released)
    settings = json.loads(json.dumps(TINY_CONFIG))
    settings["scales"]["tiny"].update(initialization="base_checkpoint", base_checkpoint=str(released),
                                      semihand_rows=False)
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(settings))
    variant = experiment.Experiment(experiment.load_experiment_config(path), "tiny", tmp_path / "out", str(path))
    _reuse_finished_data(variant, layout)
    from hoi_training.train_config import TrainConfig

    trainer = Trainer(load_config(TrainConfig, variant.training_config(experiment.SEMI_ROWS[0])))
    stored = torch.load(released, weights_only=True)["model"]
    state = trainer.network.state_dict()
    floating = [name for name, tensor in stored.items() if tensor.is_floating_point()]
    assert floating and all(stored[name].dtype == torch.float16 for name in floating)
    for name in floating:
        assert state[name].dtype == torch.float32
        assert torch.equal(state[name], stored[name].float()), name
    assert variant.run(["supervised"]) == {"train/supervised": "ran"}
    record = json.loads(variant.layout.base_checkpoint_record.read_text())
    assert record["path"] == str(released.resolve()) and record["step"] == 2 and len(record["sha256"]) == 64
    assert torch.load(variant.layout.checkpoint(experiment.SUPERVISED), weights_only=True)["step"] == 2
    assert variant.pseudo_label_model == released.resolve()
    results = variant.write_report()
    assert results["initialization"] == "base_checkpoint" and results["base_checkpoint"] == record
    assert {row["starts_from"] for row in results["rows"]} == {"base_checkpoint"}
    text = (variant.layout.root / "results.md").read_text()
    assert f"fine-tuned from the base checkpoint `{released.resolve()}` (sha256 {record['sha256'][:12]})" in text
    assert "for the same number of steps (2)" in text and "trained for 2 steps" in text
    assert "| supervised only | 0 | not evaluated |" in text  # trained here, evaluation not run
    assert "| semi, no filtering | 8 | not trained |" in text  # the semi stage was not run
    released.write_bytes(released.read_bytes() + b"changed")
    again = experiment.Experiment(experiment.load_experiment_config(path), "tiny", tmp_path / "out", str(path))
    with pytest.raises(ConfigError, match="is not the file that earlier stages"):
        again.check_base_checkpoint("semi")
    released.unlink()
    with pytest.raises(experiment.StageError, match="needs the base checkpoint .*does not exist"):
        again.check_base_checkpoint("pseudolabel")


@pytest.mark.parametrize("change, message", [
    ({"base_checkpoint": "x.pt"}, "base_checkpoint is only read with initialization: base_checkpoint"),
    ({"initialization": "base_checkpoint"}, "needs base_checkpoint"),
    ({"initialization": "base_checkpoint", "base_checkpoint": "x.pt", "semi": {"epochs": 100, "max_steps": 3}},
     "same number of steps"),
    ({"initialization": "base_checkpoint", "base_checkpoint": "x.pt", "supervised": {"epochs": 3, "max_steps": 0},
      "semi": {"epochs": 3, "max_steps": 0}}, "set max_steps > 0"),
])
def test_scale_settings_that_break_the_protocol_are_refused(change, message):
    settings = json.loads(json.dumps(TINY_CONFIG))
    settings["scales"]["tiny"].update(change)
    with pytest.raises(ConfigError, match=None) as info:
        load_config(experiment.ExperimentConfig, settings)
    assert message in str(info.value)


def test_semihand_rows_need_a_constant_learning_rate(finished, tmp_path):
    _, layout, _, _ = finished
    settings = json.loads(json.dumps(TINY_CONFIG))
    settings["scales"]["tiny"]["train_overrides"].remove("optimizer.lr_decay=1.0")
    path = tmp_path / "decay.yaml"
    path.write_text(yaml.safe_dump(settings))
    variant = experiment.Experiment(experiment.load_experiment_config(path), "tiny", tmp_path / "out", str(path))
    (variant.layout.root / "data").symlink_to(layout.root / "data")
    with pytest.raises(ConfigError, match="add optimizer.lr_decay=1.0 to train_overrides"):
        variant.training_config(experiment.SUPERVISED)


def test_full_and_smoke_scales_resolve_to_valid_training_and_evaluation_configs(finished, tmp_path):
    """The full and smoke scales are not run here; their configs must still resolve (on the tiny run's data)."""
    _, layout, _, _ = finished
    config = experiment.load_experiment_config("experiments/semi_supervised.yaml")
    full = experiment.Experiment(config, "full", tmp_path / "full", "experiments/semi_supervised.yaml")
    _reuse_finished_data(full, layout)
    from hoi_training.evaluate import EvaluationRunConfig
    from hoi_training.train_config import TrainConfig

    assert full.rows == experiment.ROWS  # no SemiHand rows: the GPU recipe decays the learning rate
    for row in experiment.ROWS:
        resolved = load_config(TrainConfig, full.training_config(row))
        assert resolved.model_config().name == "hfl_r18" and resolved.model_config().input_size == 128
        assert (resolved.epochs, resolved.max_steps, resolved.batch_size) == (70, 0, 64)
        assert resolved.seed == config.seeds.training and resolved.init_checkpoint is None
    evaluation = load_config(EvaluationRunConfig, full.evaluation_config())
    assert evaluation.boxes == "ground_truth" and not evaluation.metrics.interaction_metrics
    smoke = experiment.Experiment(config, "smoke", tmp_path / "smoke", "experiments/semi_supervised.yaml")
    _reuse_finished_data(smoke, layout)
    assert smoke.rows == experiment.ROWS
    for row in experiment.ROWS:
        resolved = load_config(TrainConfig, smoke.training_config(row))
        assert (resolved.max_steps, resolved.batch_size, resolved.init_checkpoint) == (60, 8, None)
