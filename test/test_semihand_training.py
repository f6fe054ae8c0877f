"""SemiHand in the trainer: off is bit-identical, view consistency, selection, correction, rounds."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_pseudolabel_dataset import make_synthetic  # test/ is on sys.path under pytest
from test_pseudolabel_pipeline import oracle_job, write_tiny_checkpoint

from hoi_perception.config import ConfigError, load_config
from hoi_perception.models.object_head import points_to_box_units
from hoi_training.data.sample import HandObjectSample, collate_samples
from hoi_training.semihand.consistency import Perturbation
from hoi_training.semihand.training import (
    TERM_LABEL_CORRECTION,
    TERM_PSEUDO_LABEL,
    TERM_VIEW_CONSISTENCY,
    batch_pseudo_labels,
    hand_box_to_crop_units,
    perturb_boxes,
)
from hoi_training.train_config import TrainConfig
from hoi_training.trainer import Trainer, collate_examples

TINY = "train/tiny_test.yaml"
ROUNDS = ["semihand.pseudo_labels.enabled=true", "semihand.label_correction.enabled=true",
          "semihand.selection.enabled=true", "semihand.schedule.rounds=4", "semihand.schedule.batch_size=2",
          "epochs=4"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("semihand_data")
    lab = make_synthetic(root / "lab", "lab", 1, 4, 0)
    wild = make_synthetic(root / "wild", "wild", 2, 4, 5)  # a right and a left hand
    checkpoint = write_tiny_checkpoint(root / "tiny.pt", wild)
    with pytest.MonkeyPatch.context() as monkeypatch:
        labels = oracle_job(wild, checkpoint, root / "labels", monkeypatch)
    return {"lab": lab, "labels": labels}


def lab_config(data, tmp_path, *extra: str) -> TrainConfig:
    return load_config(TrainConfig, TINY, [f"datasets.synthetic.config.root={data['lab']}",
                                           f"output_dir={tmp_path / 'run'}", *extra])


def semi_config(data, tmp_path, *extra: str) -> TrainConfig:
    return lab_config(data, tmp_path, "datasets.wild.kind=pseudo", f"datasets.wild.config.root={data['labels']}",
                      "datasets.wild.object_loss=false", *extra)


def test_switches_off_train_bit_identically_to_no_section(data, tmp_path):
    plain = Trainer(lab_config(data, tmp_path))
    off = Trainer(lab_config(data, tmp_path, "semihand.loss.consistency_weight=0.5"))
    assert off.semihand is None and off.config.semihand.loss.consistency_weight == 0.5
    lab = plain.dataset.parts[0]
    batch = collate_examples([lab[0], lab[1]])
    first, _ = plain.train_step(batch)
    second, _ = off.train_step(batch)
    assert first.total == second.total and first.terms == second.terms
    assert not any(k.startswith("semihand") for k in first.terms)
    for (name, a), (_, b) in zip(plain.network.state_dict().items(), off.network.state_dict().items()):
        assert torch.equal(a, b), name
    assert type(plain.scheduler) is type(off.scheduler) is torch.optim.lr_scheduler.StepLR


def test_view_consistency_is_positive_logged_and_zero_for_the_identity(data, tmp_path):
    trainer = Trainer(lab_config(data, tmp_path, "semihand.view_consistency.enabled=true"))
    lab = trainer.dataset.parts[0]
    batch = collate_examples([lab[0], lab[1]])
    result, output = trainer.train_step(batch)
    assert result.terms[TERM_VIEW_CONSISTENCY] > 0
    assert output.hand.joints2d.shape[0] == 2  # the perturbed half is split off
    assert math.isclose(result.total, sum(result.terms.values()), rel_tol=1e-5)
    # A zero translation: both halves see the same crops, so the prediction already commutes.
    identity = Trainer(lab_config(data, tmp_path, "semihand.view_consistency.enabled=true",
                                  "semihand.augmentation.perturbation.translation_probability=1.0",
                                  "semihand.augmentation.perturbation.small_rotation_probability=0.0",
                                  "semihand.augmentation.perturbation.quarter_turn_probability=0.0",
                                  "semihand.augmentation.perturbation.max_translation=0.0"))
    still, _ = identity.train_step(batch)
    assert still.terms[TERM_VIEW_CONSISTENCY] < 1e-10


def test_perturbed_boxes_and_crop_units():
    boxes = torch.tensor([[8.0, 4.0, 16.0, 12.0]])
    quarter = Perturbation(angle_deg=torch.tensor([90.0]), translation=torch.zeros(1, 2))
    # 90 degrees clockwise about the centre (16, 16) of a 32 px crop: (x, y) -> (32 - y, x).
    assert torch.allclose(perturb_boxes(boxes, quarter, 32), torch.tensor([[20.0, 8.0, 28.0, 16.0]]))
    shift = Perturbation(angle_deg=torch.zeros(1), translation=torch.tensor([[0.25, 0.0]]))
    assert torch.allclose(perturb_boxes(boxes, shift, 32), torch.tensor([[16.0, 4.0, 24.0, 12.0]]))
    centre = torch.full((1, 21, 2), 0.5)
    assert torch.allclose(hand_box_to_crop_units(centre, boxes, 32), torch.tensor([12.0, 8.0]) / 32)


def _pseudo_sample(joints_3d: np.ndarray, frame: str) -> HandObjectSample:
    """A pseudo-labelled sample whose 2D joints are an orthographic view of ``joints_3d`` (50 px per 0.1 m)."""
    joints_2d = joints_3d[:, :2] * 500.0 + 16.0
    box = np.concatenate([joints_2d.min(0) - 1, joints_2d.max(0) + 1])
    return HandObjectSample(image=np.zeros((32, 32, 3), np.uint8), K=np.array([[50.0, 0, 16], [0, 50, 16], [0, 0, 1]]),
                            dataset="pseudo", sequence="s", frame=frame, hand_box=box, joints_2d=joints_2d,
                            joints_3d=joints_3d)


def test_label_correction_in_the_batch_path_fixes_only_wrong_bones(data, tmp_path):
    trainer = Trainer(semi_config(data, tmp_path, *ROUNDS))
    semihand = trainer.semihand
    template = semihand.template.double().numpy()
    feasible = template - template[:1] + [0.0, 0.0, 0.5]
    wrong = feasible.copy()
    wrong[[2, 3, 16]] += (wrong[2] - wrong[1]) * 0.5  # the index finger's middle phalanx 50 % too long
    crop = collate_samples([_pseudo_sample(feasible, "000000"), _pseudo_sample(wrong, "000001")])
    rows, label = batch_pseudo_labels(crop, 32)
    assert rows.tolist() == [0, 1]
    corrected = semihand.correct(label)
    assert torch.allclose(corrected.joints3d[0], label.joints3d[0], atol=1e-6)
    assert torch.allclose(corrected.uv[0], label.uv[0], atol=1e-6)
    assert (corrected.joints3d[1] - label.joints3d[1]).abs().max() > 0.005
    bones = corrected.joints3d[1, 2] - corrected.joints3d[1, 1]
    assert math.isclose(float(bones.norm()), float(np.linalg.norm(template[2] - template[1])), rel_tol=1e-5)
    # Predict the labels exactly: only the wrong one leaves a correction term.
    hand_box = crop["hand_box"]
    joints2d = points_to_box_units(crop["joints_2d"], hand_box)
    semihand.rounds._keep.update({crop["sample_id"][0]: True, crop["sample_id"][1]: True})
    both = semihand.step_losses(crop, joints2d, label.joints3d, hand_box)
    only_feasible = semihand.step_losses({k: v[:1] for k, v in crop.items()}, joints2d[:1], label.joints3d[:1],
                                         hand_box[:1])
    assert both.loss.terms[TERM_PSEUDO_LABEL] < 1e-10
    assert only_feasible.loss.terms[TERM_LABEL_CORRECTION] < 1e-10 < both.loss.terms[TERM_LABEL_CORRECTION]


def test_selection_masks_samples_above_the_threshold_and_rounds_update_labels(data, tmp_path):
    config = semi_config(data, tmp_path, *ROUNDS)
    trainer = Trainer(config)
    rounds = trainer.semihand_rounds
    torch.manual_seed(0)
    first = rounds.start_round(trainer.network, 1, torch.device("cpu"))
    assert first.samples >= 6 and first.updated == 0 and not rounds.labels
    ordered = sorted(rounds.confidence, key=rounds.confidence.get)
    low, high = ordered[0], ordered[-1]
    assert rounds.confidence[low] < rounds.confidence[high]
    config.semihand.selection.confidence_threshold = 0.5 * (rounds.confidence[low] + rounds.confidence[high])
    torch.manual_seed(0)
    rounds.start_round(trainer.network, 1, torch.device("cpu"))
    threshold = config.semihand.selection.confidence_threshold
    assert all(rounds.keep(s) == (c <= threshold) for s, c in rounds.confidence.items())
    assert rounds.keep(low) and not rounds.keep(high)

    wild = trainer.dataset.parts[1]
    index = {wild.base.load(i).sample_id: i for i in range(len(wild.base))}
    crop = collate_examples([wild[index[low]], wild[index[high]]]).crop
    rows, label = batch_pseudo_labels(crop, 32)
    assert rows.tolist() == [0, 1]
    off_target = torch.full((2, 21, 2), 0.5)
    masked = trainer.semihand.step_losses(crop, off_target, torch.zeros(2, 21, 3), crop["hand_box"])
    rounds._keep[high] = True
    unmasked = trainer.semihand.step_losses(crop, off_target, torch.zeros(2, 21, 3), crop["hand_box"])
    assert 0 < masked.loss.terms[TERM_PSEUDO_LABEL] < unmasked.loss.terms[TERM_PSEUDO_LABEL]
    assert masked.pseudo_rows.tolist() == [0, 1]

    # Round 2: eq. 7 replaces the stored labels, and the dataset serves the updated ones.
    second = rounds.start_round(trainer.network, 2, torch.device("cpu"))
    assert second.updated == first.samples and len(rounds.labels) == first.samples
    stored = wild.base.load(index[low])
    served = wild.base[index[low]]
    assert np.allclose(served.joints_2d, rounds.labels[low][0]) and not np.allclose(served.joints_2d,
                                                                                     stored.joints_2d)
    # The learning rate drops from the middle round (ceil(4 / 2) = 2) on.
    assert trainer.optimizer.param_groups[0]["lr"] == 1e-4
    lrs = [1e-4 * trainer.scheduler.lr_lambdas[0](epoch) for epoch in range(5)]
    assert np.allclose(lrs, [1e-4, 1e-5, 1e-5, 1e-5, 1e-5])  # epoch 4: the step after the last epoch


def test_semihand_fit_logs_named_terms(data, tmp_path):
    config = semi_config(data, tmp_path, *ROUNDS, "semihand.view_consistency.enabled=true", "max_steps=2",
                         "image_interval=0", "semihand.selection.confidence_threshold=1.0")
    trainer = Trainer(config)
    seen = []
    step = trainer.train_step

    def record(batch):
        result = step(batch)
        seen.append(result[0].terms)
        return result

    trainer.train_step = record
    assert trainer.fit() == 2
    assert all({TERM_PSEUDO_LABEL, TERM_LABEL_CORRECTION, TERM_VIEW_CONSISTENCY} <= set(t) for t in seen)
    assert trainer.semihand_rounds.round_number == 1


@pytest.mark.parametrize("override, message", [
    ("semihand.cross_modal.enabled=true", "needs a hand-mask output"),
    ("epochs=3", "must equal semihand.schedule.rounds x epochs_per_round"),
    ("optimizer.lr=0.001", "must equal semihand.schedule.learning_rate"),
])
def test_semihand_config_errors(data, tmp_path, override, message):
    with pytest.raises(ConfigError) as info:
        semi_config(data, tmp_path, *ROUNDS, override)
    assert message in str(info.value)
    with pytest.raises(ConfigError, match="expected a dataset of kind 'pseudo'"):
        lab_config(data, tmp_path, *ROUNDS)


def test_shipped_semihand_config_loads(data):
    config = load_config(TrainConfig, "train/semihand_synthetic_hfl_r18.yaml", [
        f"datasets.synthetic_lab.config.root={data['lab']}", f"datasets.pseudo_wild.config.root={data['labels']}",
        "init_checkpoint=null"])
    semihand = config.semihand
    assert semihand.pseudo_labels.enabled and semihand.label_correction.enabled and semihand.selection.enabled
    assert semihand.view_consistency.enabled and not semihand.cross_modal.enabled
    assert semihand.schedule.drop_round == 5 and config.epochs == 10
    assert semihand.selection.confidence_threshold == 1.5 / 64 ** 2
