"""Trainer: config validation, epoch sampling, targets, end-to-end fit, exact resume, NaN stop."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hoi_perception.config import ConfigError, load_config
from hoi_perception.models.checkpoint import load_network_checkpoint
from hoi_training import trainer as trainer_module
from hoi_training.data.sample import HandObjectSample, collate_samples
from hoi_training.losses import LossOutput
from hoi_training.train_config import TrainConfig
from hoi_training.trainer import NON_FINITE_EXIT_CODE, Trainer, fit_main
from hoi_training.training.batches import build_hand_object_targets, mask_on_roi_grid
from hoi_training.training.distributed import EpochSampler
from hoi_training.training.state import CheckpointMismatchError, read_checkpoint

TINY = "train/tiny_test.yaml"


def tiny_overrides(root: Path, *extra: str) -> list[str]:
    return [f"datasets.synthetic.config.root={root}", *extra]


# ----------------------------------------------------------------------------- config


def test_shipped_configs_load_and_resolve_their_models(tiny_set):
    config = load_config(TrainConfig, "train/synthetic_hfl_r18.yaml",
                         [f"datasets.synthetic_lab.config.root={tiny_set}"])
    assert config.optimizer.lr == 1e-4 and config.optimizer.weight_decay == 5e-4
    assert config.optimizer.lr_decay == 0.7 and config.optimizer.lr_step_epochs == 10
    assert config.model_config().name == "hfl_r18" and config.model_config().input_size == 128
    tiny = load_config(TrainConfig, TINY, tiny_overrides(tiny_set))
    assert tiny.model_config().input_size == 32 and tiny.model_config().backbone.fpn_channels == 16


@pytest.mark.parametrize("override, message", [
    ("batch_size=1", "batch_size must be >= 2"),
    ("augmentation.mirror_left_hands=false", "mirror_left_hands must be true"),
    ("augmentation.output_size=64", "must equal the model's input_size (32"),
    ("datasets.synthetic.kind=coco", "'coco' is not one of"),
    ("datasets.synthetic.weight=0", "weight must be a finite number > 0"),
    ("model=models/missing.yaml", "model: config file 'models/missing.yaml' not found"),
    ("optimizer.lr_decay=1.5", "lr_decay must be in (0, 1]"),
])
def test_config_errors_name_the_problem(tiny_set, override, message):
    with pytest.raises(ConfigError, match=None) as info:
        load_config(TrainConfig, TINY, tiny_overrides(tiny_set, override))
    assert message in str(info.value)


def test_missing_dataset_folder_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="synthetic dataset '.*nowhere' is not a folder"):
        load_config(TrainConfig, TINY, tiny_overrides(tmp_path / "nowhere"))


# ----------------------------------------------------------------------------- sampling


def test_epoch_sampler_draws_by_weight_and_resumes_mid_epoch():
    sampler = EpochSampler([4, 6], [1.0, 0.5], batch_size=2, seed=3)
    assert sampler.draws_per_epoch() == 7 and sampler.batches_per_epoch() == 3
    sampler.set_epoch(0)
    indices = sampler.epoch_indices()
    assert len(indices) == 6 and len(set(indices.tolist())) == 6  # no repeats within weight <= 1
    full = sampler.epoch_indices()
    all_draws = EpochSampler([4, 6], [1.0, 0.5], batch_size=1, seed=3).epoch_indices()
    assert sorted(i for i in all_draws if i < 4) == [0, 1, 2, 3]  # weight 1: every sample once
    assert sum(i >= 4 for i in all_draws) == 3  # weight 0.5 of 6
    sampler.set_epoch(0, start_batch=2)
    assert list(sampler) == full[4:].tolist() and len(sampler) == 2
    sampler.set_epoch(1)
    assert not np.array_equal(sampler.epoch_indices(), full)  # a new order each epoch
    doubled = EpochSampler([3], [2.0], batch_size=1).epoch_indices()
    assert sorted(doubled.tolist()) == [0, 0, 1, 1, 2, 2]


def test_epoch_sampler_splits_an_epoch_between_ranks():
    ranks = [EpochSampler([10], [1.0], batch_size=5, seed=1, rank=r, world_size=2) for r in range(2)]
    parts = [set(s.epoch_indices().tolist()) for s in ranks]
    assert parts[0].isdisjoint(parts[1]) and parts[0] | parts[1] == set(range(10))
    # 5 per rank in batches of 2: the last partial batch is dropped, as with drop_last.
    short = [EpochSampler([10], [1.0], batch_size=2, seed=1, rank=r, world_size=2) for r in range(2)]
    assert [len(s.epoch_indices()) for s in short] == [4, 4] and short[0].batches_per_epoch() == 2
    with pytest.raises(ValueError, match="no full batch of 8"):
        EpochSampler([5], [1.0], batch_size=8, world_size=2)


# ----------------------------------------------------------------------------- targets


def test_mask_on_roi_grid_samples_cell_centres():
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, 0:4, 0:4] = True  # top-left quadrant
    grid = mask_on_roi_grid(mask, torch.tensor([[0.0, 0.0, 8.0, 8.0]]), 2)
    assert grid.tolist() == [[[True, False], [False, False]]]
    # A box hanging off the crop: cells outside the image are background.
    shifted = mask_on_roi_grid(mask, torch.tensor([[-4.0, -4.0, 4.0, 4.0]]), 2)
    assert shifted.tolist() == [[[False, False], [False, True]]]


def _sample(**changes) -> HandObjectSample:
    rng = np.random.default_rng(0)
    joints3d = rng.normal(0, 0.03, (21, 3)) + [0, 0, 0.5]
    base = HandObjectSample(
        image=np.zeros((16, 16, 3), np.uint8), K=np.array([[20.0, 0, 8], [0, 20, 8], [0, 0, 1]]),
        dataset="t", sequence="s", frame="000000", hand_box=np.array([2.0, 4.0, 10.0, 12.0]),
        object_box=np.array([4.0, 4.0, 12.0, 8.0]), joints_2d=np.full((21, 2), 6.0), joints_3d=joints3d,
        mano_pose=np.zeros(48), mano_shape=np.zeros(10), mano_trans=np.zeros(3),
        object_points_2d=np.full((21, 2), 8.0))
    return dataclasses.replace(base, **changes)


def test_hand_object_targets_units_flags_and_mano_vertices():
    from hoi_perception.hand_model.mano import HandModel

    batch = collate_samples([_sample(), _sample(weight=0.5)])
    hand_model = HandModel("right")
    targets, hand_box, _ = build_hand_object_targets(batch, torch.tensor([True, False]), hand_model, roi_size=4)
    # (6 - 2) / 8 and (6 - 4) / 8 in hand-box units; (8 - 4) / 8 and (8 - 4) / 4 in object-box units.
    assert torch.allclose(targets.joints2d[0, 0], torch.tensor([0.5, 0.25]))
    assert torch.allclose(targets.object_points2d[0, 0], torch.tensor([0.5, 1.0]))
    assert torch.allclose(targets.joints3d[:, 0], torch.zeros(2, 3))  # root-relative
    assert targets.has_object.tolist() == [1.0, 0.0]  # object_loss false drops the second sample
    assert targets.has_hand2d.tolist() == [1.0, 0.5]  # scaled by the sample weight
    assert targets.object_mask.shape == (2, 4, 4) and bool(targets.object_mask.all())  # no mask: every cell
    # No vertex labels but MANO labels: vertices of the flat mean hand, relative to its wrist.
    rest = hand_model(global_orient=torch.zeros(1, 3), hand_pose=torch.zeros(1, 45), betas=torch.zeros(1, 10))
    expected = (rest.vertices - rest.joints[:, :1])[0]
    assert torch.allclose(targets.vertices[0], expected, atol=1e-6)


def test_symmetric_object_targets_are_the_labels_under_each_symmetry_rotation():
    """Candidate control points of the poses R S: the identity gives the labels, a half turn about
    the object's z swaps opposite corners; a sample without an object pose keeps its labels."""
    from hoi_perception.geometry.camera import project
    from hoi_perception.objects.models import bbox_control_points, symmetry_group

    control_points = bbox_control_points(np.array([-0.02, -0.01, -0.03]), np.array([0.02, 0.01, 0.03]))
    rotation, translation = np.eye(3), np.array([0.0, 0.0, 0.4])
    K = np.array([[20.0, 0, 8], [0, 20, 8], [0, 0, 1]])
    posed = _sample(object_rotation=rotation, object_translation=translation, object_control_points=control_points,
                    object_points_2d=project(control_points @ rotation.T + translation, K),
                    object_symmetry_rotations=symmetry_group([("z", 180)]))
    batch = collate_samples([posed, _sample()])
    assert batch["object_symmetry_rotations"].shape == (2, 2, 3, 3)
    assert torch.equal(batch["object_symmetry_rotations"][1], torch.eye(3).repeat(2, 1, 1))  # padded: identity
    from hoi_perception.hand_model.mano import HandModel
    targets, _, object_box = build_hand_object_targets(batch, torch.tensor([True, True]), HandModel("right"), 4)
    candidates = targets.object_symmetric_points2d
    assert candidates.shape == (2, 2, 21, 2)
    assert torch.allclose(candidates[0, 0], targets.object_points2d[0], atol=1e-5)
    # Corner i = (x, y, z) bits; the half turn about z maps corner 0 (-x, -y, -z) onto corner 6 (+x, +y, -z).
    assert torch.allclose(candidates[0, 1, 0], targets.object_points2d[0, 6], atol=1e-5)
    assert torch.equal(candidates[1, 0], candidates[1, 1])  # no pose: the label for every rotation
    no_symmetries = collate_samples([_sample()])
    assert build_hand_object_targets(no_symmetries, torch.tensor([True]), HandModel("right"),
                                     4)[0].object_symmetric_points2d is None


# ----------------------------------------------------------------------------- end to end


def _state(path: Path) -> dict:
    return read_checkpoint(path)


def _assert_same_tensors(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same_tensors(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_fit_runs_end_to_end_and_writes_a_complete_run(tiny_set, tmp_path):
    out = tmp_path / "run"
    assert fit_main(TINY, tiny_overrides(tiny_set), resume=False, out_dir=out) == 0
    checkpoint = _state(out / "checkpoints" / "last.pt")
    assert checkpoint["step"] == 4 and checkpoint["epoch"] == 1 and checkpoint["batch_in_epoch"] == 2
    assert checkpoint["format"] == "hoi_training_checkpoint/1"
    assert checkpoint["model_config"]["input_size"] == 32
    assert checkpoint["train_config"]["output_dir"] == str(out)
    assert set(checkpoint["rng"]) >= {"python", "numpy", "torch"}
    assert checkpoint["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    assert checkpoint["code_version"] == (out / "code_version.txt").read_text().strip()
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["datasets"]["synthetic"]["config"]["root"] == str(tiny_set)
    # The export path reads the checkpoint as a network.
    network = load_network_checkpoint(out / "checkpoints" / "last.pt")
    assert torch.equal(network.state_dict()["detection_head.heatmap.3.bias"],
                       checkpoint["model"]["detection_head.heatmap.3.bias"])

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"loss/total", "loss/heatmaps", "loss/object_votes", "loss/detection_heatmap", "train/lr",
            "train/samples_per_s"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("loss/total")] == [1, 2, 3, 4]
    assert all(np.isfinite(e.value) and e.value > 0 for e in events.Scalars("loss/total"))
    assert [e.step for e in events.Images("train/crops_truth_vs_prediction")] == [2, 4]
    image = events.Images("train/crops_truth_vs_prediction")[0]
    assert (image.width, image.height) == (64, 64)  # 2 crops x [truth | prediction] of 32 px

    with pytest.raises(FileExistsError, match="already holds a training run; pass --resume"):
        fit_main(TINY, tiny_overrides(tiny_set), resume=False, out_dir=out)


def test_resume_after_a_kill_reaches_the_uninterrupted_state(tiny_set, tmp_path, monkeypatch):
    # 5 steps over 3 epochs (2 batches each) with the lr stepping every epoch; checkpoints every 3 steps.
    settings = tiny_overrides(tiny_set, "epochs=3", "max_steps=5", "checkpoint_interval=3",
                              "optimizer.lr_step_epochs=1", "optimizer.lr_decay=0.5", "image_interval=0")
    fit_main(TINY, settings, resume=False, out_dir=tmp_path / "straight")

    original_step = Trainer.train_step

    def killed_at_step_5(self, batch):
        if self.step == 4:  # after the checkpoint of step 3, during step 5
            raise KeyboardInterrupt
        return original_step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", killed_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        fit_main(TINY, settings, resume=False, out_dir=tmp_path / "killed")
    assert _state(tmp_path / "killed" / "checkpoints" / "last.pt")["step"] == 3
    monkeypatch.setattr(Trainer, "train_step", original_step)
    assert fit_main(None, [], resume=True, out_dir=tmp_path / "killed") == 0

    straight = _state(tmp_path / "straight" / "checkpoints" / "last.pt")
    resumed = _state(tmp_path / "killed" / "checkpoints" / "last.pt")
    assert resumed["step"] == straight["step"] == 5
    assert (resumed["epoch"], resumed["batch_in_epoch"]) == (straight["epoch"], straight["batch_in_epoch"]) == (2, 1)
    _assert_same_tensors(straight["model"], resumed["model"], "model")
    _assert_same_tensors(straight["optimizer"], resumed["optimizer"], "optimizer")
    assert resumed["scheduler"] == straight["scheduler"]
    assert resumed["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.25e-4)  # two epoch ends
    _assert_same_tensors(straight["rng"], resumed["rng"], "rng")


def test_resume_refuses_a_different_config(tiny_set, tmp_path):
    out = tmp_path / "run"
    fit_main(TINY, tiny_overrides(tiny_set, "max_steps=1"), resume=False, out_dir=out)
    with pytest.raises(ConfigError, match="differs from the run's saved config .* in seed"):
        fit_main(TINY, tiny_overrides(tiny_set, "max_steps=1", "seed=7"), resume=True, out_dir=out)
    with pytest.raises(FileNotFoundError, match="is '.*' a training run folder"):
        fit_main(None, [], resume=True, out_dir=tmp_path / "empty")


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_set, tmp_path, monkeypatch, caplog):
    real_loss = trainer_module.hand_object_loss
    calls = {"n": 0}

    def nan_on_third_step(*args, **kwargs):
        calls["n"] += 1
        out = real_loss(*args, **kwargs)
        if calls["n"] == 3:
            return LossOutput(total=out.total * float("nan"), terms={**out.terms, "joints3d": torch.tensor(np.nan)})
        return out

    monkeypatch.setattr(trainer_module, "hand_object_loss", nan_on_third_step)
    out = tmp_path / "run"
    with caplog.at_level(logging.ERROR, logger="hoi_training.trainer"):
        assert fit_main(TINY, tiny_overrides(tiny_set), resume=False, out_dir=out) == NON_FINITE_EXIT_CODE
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    message = errors[0]
    assert "at step 3 (epoch 1, batch 0" in message and "joints3d" in message
    assert "last good checkpoint" in message and "(step 2) is kept" in message
    kept = _state(out / "checkpoints" / "last.pt")
    assert kept["step"] == 2
    assert all(torch.isfinite(t).all() for t in kept["model"].values() if t.is_floating_point())


def test_checkpoint_of_another_model_config_is_refused(tiny_set, tmp_path):
    out = tmp_path / "run"
    fit_main(TINY, tiny_overrides(tiny_set, "max_steps=1"), resume=False, out_dir=out)
    checkpoint = out / "checkpoints" / "last.pt"
    other = load_config(TrainConfig, TINY, tiny_overrides(
        tiny_set, f"init_checkpoint={checkpoint}", f"output_dir={tmp_path / 'other'}",
        "model_overrides=[input_size=32, backbone.fpn_channels=32, roi.output_size=8, hand_head.hourglass_depth=2, "
        "hand_head.encoder_rounds=2]"))
    with pytest.raises(CheckpointMismatchError) as info:
        Trainer(other, config_source="other.yaml")
    message = str(info.value)
    assert str(checkpoint) in message and "'hfl_r18'" in message and "other.yaml" in message
    assert "backbone.fpn_channels" in message and "hand_head.regressor_hidden" in message
    # The same model config is accepted and starts from the checkpoint's weights.
    same = load_config(TrainConfig, TINY, tiny_overrides(tiny_set, f"init_checkpoint={checkpoint}",
                                                         f"output_dir={tmp_path / 'same'}"))
    started = Trainer(same)
    _assert_same_tensors(read_checkpoint(checkpoint)["model"], started.network.state_dict(), "init")
    # The detector's frame size changes no weight: a run at another size starts from the same weights.
    larger = load_config(TrainConfig, TINY, tiny_overrides(
        tiny_set, f"init_checkpoint={checkpoint}", f"output_dir={tmp_path / 'larger'}",
        "model_overrides=[input_size=32, backbone.fpn_channels=16, roi.output_size=8, hand_head.hourglass_depth=2, "
        "hand_head.encoder_rounds=2, hand_head.regressor_hidden=32, object_head.num_blocks=1, "
        "detection_head.head_channels=8, detection_head.input_size=64]"))
    started = Trainer(larger)
    assert started.model_config.detector_input_size == 64
    _assert_same_tensors(read_checkpoint(checkpoint)["model"], started.network.state_dict(), "init at 64 px frames")
