"""The DMA refinement experiment: a first-stage checkpoint starting an hfl_r18_dma run, the refiner trained on
the frozen first stage, the shipped configs, and benchmarks/dma_refinement.py end to end at its smoke scale."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from benchmarks import dma_refinement as experiment
from hoi_perception.config import ConfigError, load_config, read_yaml, to_dict
from hoi_perception.models.config import load_model_config
from hoi_perception.models.network import HOINet
from hoi_training.train_config import TrainConfig
from hoi_training.trainer import Trainer
from hoi_training.training.state import CheckpointMismatchError

TINY_DMA = ["refine=dma", "dma.object_nodes=64", "dma.hidden_dim=16", "dma.attention_dim=16", "dma.num_blocks=1",
            "dma.gcn_layers=1"]
CONFIG = "experiments/dma_refinement.yaml"


def tiny_train_config(root: Path, out: Path, *extra: str, dma: bool = True) -> TrainConfig:
    data = read_yaml("train/tiny_test.yaml")
    if dma:
        data["model_overrides"] = [*data["model_overrides"], *TINY_DMA]
    return load_config(TrainConfig, data, [f"datasets.synthetic.config.root={root}", f"output_dir={out}",
                                           "batch_size=4", *extra])


def released_base(path: Path, *model_overrides: str) -> dict[str, torch.Tensor]:
    """A random tiny hfl_r18 saved as `hoi-train release` does (fp16 weights); returns its state dict."""
    torch.manual_seed(3)
    tiny = read_yaml("train/tiny_test.yaml")
    config = load_model_config(tiny["model"], [*tiny["model_overrides"], *model_overrides])
    weights = {k: (v.half() if v.is_floating_point() else v) for k, v in HOINet(config).state_dict().items()}
    torch.save({"format": "hoi_perception_release/1", "model_config": to_dict(config), "model": weights}, path)
    return weights


def first_stage_state(network: HOINet) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in network.state_dict().items() if not k.startswith("refiner.")}


# ----------------------------------------------------------------------------- trainer: first stage -> DMA model


def test_shipped_dma_model_has_hfl_r18_as_its_first_stage():
    plain, dma = (to_dict(load_model_config(f"models/{n}.yaml")) for n in ("hfl_r18", "hfl_r18_dma"))
    assert sorted(k for k in plain if plain[k] != dma[k]) == ["dma", "name", "refine"]
    assert dma["input_size"] == 128 and dma["backbone"]["fpn_channels"] == 64
    assert dma["detection_head"]["head_channels"] == 32 and dma["refine"] == "dma"


def test_released_first_stage_starts_the_dma_model_and_only_the_refiner_trains(tiny_set, tmp_path, caplog):
    base = released_base(tmp_path / "base.pt")
    config = tiny_train_config(tiny_set, tmp_path / "run", f"init_checkpoint={tmp_path / 'base.pt'}",
                               "trainable=refiner")
    with caplog.at_level(logging.INFO, logger="hoi_training"):
        trainer = Trainer(config)
    assert any("untrained: the refiner" in r.getMessage() for r in caplog.records)
    network = trainer.network
    start = first_stage_state(network)
    assert set(start) == set(base)
    assert all(torch.equal(start[k], base[k].to(start[k].dtype)) for k in base)
    refiner = {k: p.detach().clone() for k, p in network.refiner.named_parameters()}
    optimised = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert len(optimised) == len(refiner) and not trainer.train_detection

    batch = next(iter(trainer._loader()))
    results = [trainer.train_step(batch)[0] for _ in range(2)]
    for result in results:
        dma_terms = {k: v for k, v in result.terms.items() if k.startswith("dma_")}
        assert {"dma_mesh", "dma_object_pose"} <= set(dma_terms) and "joints3d" in result.terms
        assert not any(k.startswith("detection") for k in result.terms)
        # The first stage's terms are logged, not trained: the loss is the refiner's alone.
        assert result.total == pytest.approx(sum(dma_terms.values()), rel=1e-5)
    # First stage (weights and BatchNorm statistics) untouched, same outputs for the same batch; the refiner moved.
    after = first_stage_state(network)
    assert all(torch.equal(after[k], start[k]) for k in start)
    assert results[0].terms["joints3d"] == pytest.approx(results[1].terms["joints3d"], rel=1e-6)
    moved = {k for k, p in network.refiner.named_parameters() if not torch.equal(p, refiner[k])}
    assert {"hand_output.weight", "object_output.weight"} <= moved


def test_end_to_end_training_from_a_first_stage_checkpoint_trains_both_stages(tiny_set, tmp_path):
    released_base(tmp_path / "base.pt")
    trainer = Trainer(tiny_train_config(tiny_set, tmp_path / "run", f"init_checkpoint={tmp_path / 'base.pt'}"))
    start = first_stage_state(trainer.network)
    trainer.train_step(next(iter(trainer._loader())))
    after = first_stage_state(trainer.network)
    assert not torch.equal(after["backbone.resnet.conv1.weight"], start["backbone.resnet.conv1.weight"])


def test_first_stage_checkpoints_that_do_not_fit_are_refused(tiny_set, tmp_path):
    released_base(tmp_path / "wide.pt", "backbone.fpn_channels=32")
    config = tiny_train_config(tiny_set, tmp_path / "run", f"init_checkpoint={tmp_path / 'wide.pt'}")
    refused = r"wide\.pt.*cannot start 'hfl_r18'.*only the refiner added.*backbone\.fpn_channels"
    with pytest.raises(CheckpointMismatchError, match=refused):
        Trainer(config, config_source="dma.yaml")
    # A model without a refiner keeps the strict comparison: the same config loads, another is refused.
    released_base(tmp_path / "base.pt")
    Trainer(tiny_train_config(tiny_set, tmp_path / "plain", f"init_checkpoint={tmp_path / 'base.pt'}", dma=False))
    narrow = tiny_train_config(tiny_set, tmp_path / "narrow", f"init_checkpoint={tmp_path / 'wide.pt'}", dma=False)
    with pytest.raises(CheckpointMismatchError, match="they differ in backbone.fpn_channels"):
        Trainer(narrow)


def test_a_checkpoint_without_the_hand_mask_head_starts_a_model_with_it(tiny_set, tmp_path):
    base = released_base(tmp_path / "base.pt")
    data = read_yaml("train/tiny_test.yaml")
    data["model_overrides"] = [*data["model_overrides"], "hand_head.mask_head=true"]
    config = load_config(TrainConfig, data, [f"datasets.synthetic.config.root={tiny_set}", f"output_dir={tmp_path}",
                                             f"init_checkpoint={tmp_path / 'base.pt'}"])
    network = Trainer(config).network
    state = network.state_dict()
    assert {k for k in state if k not in base} == {k for k in state if k.startswith("hand_decoder.mask_decoder.")}
    assert all(torch.equal(state[k], base[k].to(state[k].dtype)) for k in base)


def test_init_exclude_leaves_a_module_at_its_fresh_initialisation(tiny_set, tmp_path):
    base = released_base(tmp_path / "base.pt")
    config = tiny_train_config(tiny_set, tmp_path / "run", f"init_checkpoint={tmp_path / 'base.pt'}",
                               'init_exclude=["detection_head."]', dma=False)
    state = Trainer(config).network.state_dict()
    head = [k for k in state if k.startswith("detection_head.")]
    assert head and all(torch.equal(state[k], base[k].to(state[k].dtype)) for k in state if k not in head)
    assert not torch.equal(state[head[0]], base[head[0]].to(state[head[0]].dtype))
    with pytest.raises(ConfigError, match=r"init_exclude: \['detector\.'\] match no weight"):
        Trainer(tiny_train_config(tiny_set, tmp_path / "typo", f"init_checkpoint={tmp_path / 'base.pt'}",
                                  'init_exclude=["detector."]', dma=False))
    with pytest.raises(ConfigError, match="no init_checkpoint is set"):
        tiny_train_config(tiny_set, tmp_path / "none", 'init_exclude=["detection_head."]', dma=False).validate()


def test_training_the_refiner_alone_needs_a_refiner_and_a_first_stage(tiny_set, tmp_path):
    with pytest.raises(ConfigError, match="trainable: refiner needs a model with a refinement stage"):
        tiny_train_config(tiny_set, tmp_path, "trainable=refiner", f"init_checkpoint={tmp_path / 'x.pt'}",
                          dma=False).validate()
    with pytest.raises(ConfigError, match="set init_checkpoint"):
        tiny_train_config(tiny_set, tmp_path, "trainable=refiner").validate()
    with pytest.raises(ConfigError, match="not one of"):
        tiny_train_config(tiny_set, tmp_path, "trainable=backbone")


# ----------------------------------------------------------------------------- experiment configuration


def test_cpu_scale_resolves_to_the_shipped_checkpoint_recipe(tmp_path):
    config = experiment.load_experiment_config(CONFIG)
    seeds = config.seeds
    assert seeds.train not in range(5) and seeds.test not in range(5) and seeds.train != seeds.test
    run = experiment.Experiment(config, "cpu", tmp_path / "out", CONFIG)
    for split in ("train", "test"):
        run.layout.data(split).mkdir(parents=True)
    train = load_config(TrainConfig, run.training_config("refiner"))
    model = train.model_config()
    assert (model.name, model.refine, model.input_size, model.backbone.fpn_channels) == ("hfl_r18_dma", "dma", 128, 64)
    assert model.new_layer_init == "pytorch"  # as the shipped checkpoint, so its model config matches
    assert train.trainable == "refiner" and train.max_steps == 400 and train.batch_size == 8
    assert train.init_checkpoint == Path("hoi_training/checkpoints/hfl_r18_synthetic.pt").resolve()
    assert train.optimizer.lr == 1e-3 and train.augmentation.output_size == 128
    assert list(train.datasets) == ["train"] and train.output_dir == run.layout.run("refiner")
    evaluation = yaml_load(run.evaluation_config())
    assert evaluation["boxes"] == "ground_truth" and evaluation["metrics"]["interaction_metrics"] is True
    # The same folder refuses other settings.
    with pytest.raises(ConfigError, match="other settings.*scale"):
        experiment.Experiment(config, "smoke", tmp_path / "out", CONFIG)


def yaml_load(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def test_bad_experiment_configs_are_refused(tmp_path):
    config = experiment.load_experiment_config(CONFIG)
    data = to_dict(config)
    data["seeds"]["test"] = data["seeds"]["train"]
    with pytest.raises(ConfigError, match="seeds.train and seeds.test are both 4004"):
        load_config(experiment.ExperimentConfig, data)
    data = to_dict(config)
    data["scales"]["smoke"]["base_checkpoint"] = "base.pt"
    with pytest.raises(ConfigError, match="exactly one of base_checkpoint"):
        load_config(experiment.ExperimentConfig, data)
    # A missing base checkpoint stops the refine stage with where to get it.
    run = experiment.Experiment(config, "cpu", tmp_path / "out", CONFIG)
    manifest = run.layout.data("train") / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}")
    run.scale.base_checkpoint = str(tmp_path / "missing.pt")
    with pytest.raises(experiment.StageError, match=r"missing\.pt does not exist; release"):
        run.train_refiner()


# ----------------------------------------------------------------------------- end to end


def test_smoke_scale_end_to_end_then_resumes(tmp_path):
    out, publish = tmp_path / "out", tmp_path / "results" / "dma_refinement"
    args = ["--config", CONFIG, "--out", str(out), "--scale", "smoke", "--publish", str(publish)]
    assert experiment.main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert json.loads(publish.with_suffix(".json").read_text()) == results
    markdown = publish.with_suffix(".md").read_text()
    assert "| refinement off (first stage) |" in markdown and "| refinement on (DMA) |" in markdown
    assert "bit-identical to the base checkpoint" in markdown and "--scale smoke" in markdown

    assert results["first_stage_matches_base"] is True and results["refined_model"]["refiner_steps"] == 3
    assert results["base_checkpoint"]["model"] == "hfl_r18" and results["base_checkpoint"]["step"] == 2
    assert [row["name"] for row in results["rows"]] == ["refinement_off", "refinement_on"]
    for row in results["rows"]:
        assert row["metrics"]["hand_frames_labelled"] == 4 and row["metrics"]["object_frames_labelled"] == 4
    # Synthetic grasps touch the object and keep out of it (2 mm tolerance).
    truth = results["ground_truth_interaction"]
    assert truth["frames_evaluated"] == 4 and truth["contact_pct"] == 100.0
    assert 0.0 <= truth["max_penetration_depth_mm"] <= 2.5
    latency = results["latency"]
    for runtime in ("torch", "onnxruntime"):
        medians = {g: latency["timings"][f"{g}/{runtime}"]["median_ms"] for g in ("crop_off", "crop_on", "refine")}
        assert all(value > 0 for value in medians.values())
        ratios = latency["ratios"][runtime]
        assert ratios["refine_over_first_stage"] == pytest.approx(medians["refine"] / medians["crop_off"])
        assert ratios["refined_total_over_first_stage"] == pytest.approx(
            (medians["crop_on"] + medians["refine"]) / medians["crop_off"])
    assert {"data/train", "data/test", "train/base", "train/refiner", "eval/refinement_on", "latency"} <= set(
        results["steps"])
    assert "hoi-train fit --config" in results["steps"]["train/refiner"]["command"]

    # A rerun skips every finished step and writes the same numbers.
    stamp = (out / "runs" / "refiner" / "checkpoints" / "last.pt").stat().st_mtime
    assert experiment.main(args[:-2]) == 0
    again = json.loads((out / "results.json").read_text())
    assert (out / "runs" / "refiner" / "checkpoints" / "last.pt").stat().st_mtime == stamp
    assert again["rows"] == results["rows"] and again["latency"] == results["latency"]
