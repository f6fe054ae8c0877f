"""SemiHand in the trainer: off is bit-identical, view consistency, selection, correction, rounds,
the diversity/perturbation augmentation split."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_sample, reprojection_errors  # test/ is on sys.path under pytest

from hoi_perception.config import ConfigError, load_config
from hoi_perception.hand_model.mano import HandModel
from hoi_perception.models.object_head import points_to_box_units
from hoi_training.data.augment import Augmenter, plain_crop
from hoi_training.data.sample import HandObjectSample, collate_samples
from hoi_training.semihand.circle_model import box_pixel_centres, cross_modal_consistency_loss, save_circle_radii
from hoi_training.semihand.config import DiversityAugmentConfig, SemiHandConfig
from hoi_training.semihand.consistency import GrayscaleErasingConfig, Perturbation
from hoi_training.semihand.training import (
    TERM_CROSS_MODAL,
    TERM_LABEL_CORRECTION,
    TERM_PSEUDO_LABEL,
    TERM_VIEW_CONSISTENCY,
    DiversityAugmenter,
    PerturbedView,
    SemiHandTraining,
    batch_pseudo_labels,
    hand_box_to_crop_units,
    labelled_mask_samples,
    perturb_boxes,
)
from hoi_training.train_config import TrainConfig
from hoi_training.trainer import Trainer, collate_examples

TINY = "train/tiny_test.yaml"
ROUNDS = ["semihand.pseudo_labels.enabled=true", "semihand.label_correction.enabled=true",
          "semihand.selection.enabled=true", "semihand.schedule.rounds=4", "semihand.schedule.batch_size=2",
          "epochs=4", "semihand.augmentation.diversity.output_size=32"]  # the tiny model's input


@pytest.fixture
def data(oracle_pseudo_data) -> dict[str, Path]:
    return oracle_pseudo_data


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
    ("semihand.augmentation.diversity.output_size=64",
     "semihand.augmentation.diversity.output_size (64) must equal the model's input_size (32, from "),
    ("semihand.augmentation.diversity.mirror_left_hands=false", "diversity.mirror_left_hands must be true"),
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
    diversity = semihand.augmentation.diversity
    assert diversity.output_size == config.model_config().input_size == 128 and diversity.mirror_left_hands
    # A partial diversity section keeps SemiHand's defaults for the keys it leaves out.
    partial = load_config(SemiHandConfig, {}, ["augmentation.diversity.rotation_deg=45"])
    assert partial.augmentation.diversity.rotation_deg == 45.0
    assert partial.augmentation.diversity.output_size == 128 and partial.augmentation.diversity.mirror_left_hands


# ----------------------------------------------------------------------------- diversity augmentation (section 3.4)


def diversity_config(grayscale: float, erasing: float) -> SemiHandConfig:
    config = SemiHandConfig()
    config.augmentation.diversity = DiversityAugmentConfig(output_size=64)
    config.augmentation.diversity_appearance = GrayscaleErasingConfig(grayscale_probability=grayscale,
                                                                      erasing_probability=erasing,
                                                                      erasing_min_area=0.05, erasing_max_area=0.2)
    return config


LABEL_FIELDS = ("K", "hand_side", "hand_box", "object_box", "joints_2d", "joints_3d", "vertices_3d", "mano_pose",
                "mano_shape", "mano_trans", "object_rotation", "object_translation", "object_control_points",
                "object_points_2d", "hand_mask", "object_mask", "weight")


def test_diversity_augmenter_changes_pixels_only():
    sample = make_sample(3, side="left")
    config = diversity_config(grayscale=1.0, erasing=1.0).augmentation
    augmenter = DiversityAugmenter(config, seed=5)
    out = augmenter(sample)
    geometric = Augmenter(config.diversity, seed=5)(sample)  # the same draws without the appearance step
    for name in LABEL_FIELDS:
        np.testing.assert_array_equal(getattr(out, name), getattr(geometric, name), err_msg=name)
    assert out.hand_side == "right" and max(reprojection_errors(out)) < 1e-6
    assert out.image.shape == geometric.image.shape == (64, 64, 3)
    changed = (out.image != geometric.image).any(-1)
    assert changed.mean() > 0.5  # grayscale changes (nearly) every coloured pixel
    np.testing.assert_array_equal(augmenter(sample).image, out.image)  # deterministic per (seed, epoch, sample)
    augmenter.set_epoch(1)
    assert not np.array_equal(augmenter(sample).image, out.image)
    plain = DiversityAugmenter(diversity_config(grayscale=0.0, erasing=0.0).augmentation, seed=5)(sample)
    np.testing.assert_array_equal(plain.image, geometric.image)
    # A sample the round does not trust gets the plain crop; a trusted one the diversity view.
    unsure = DiversityAugmenter(config, seed=5, confident=lambda sample_id: False)(sample)
    reference, _ = plain_crop(sample, config.diversity)
    for name in ("image", *LABEL_FIELDS):
        np.testing.assert_array_equal(getattr(unsure, name), getattr(reference, name), err_msg=name)
    trusted = DiversityAugmenter(config, seed=5, confident=lambda sample_id: True)(sample)
    np.testing.assert_array_equal(trusted.image, out.image)


def test_trainer_applies_diversity_to_labelled_and_confident_samples_only(data, tmp_path):
    consistency_only = Trainer(lab_config(data, tmp_path, "semihand.view_consistency.enabled=true"))
    augmenter = consistency_only.dataset.parts[0].builder.augmenter
    assert type(augmenter) is Augmenter and augmenter.config == consistency_only.config.augmentation

    config = semi_config(data, tmp_path, *ROUNDS, "semihand.augmentation.diversity_appearance.grayscale_probability=1",
                         "semihand.augmentation.diversity_appearance.erasing_probability=0")
    trainer = Trainer(config)
    rounds = trainer.semihand_rounds
    lab, wild = trainer.dataset.parts
    assert isinstance(lab.builder.augmenter, DiversityAugmenter) and lab.builder.augmenter.confident is None
    assert wild.builder.augmenter.confident == rounds.confident
    assert rounds.augment is config.semihand.augmentation.diversity
    with pytest.raises(RuntimeError, match="start_round"):
        wild[0]
    torch.manual_seed(0)
    rounds.start_round(trainer.network, 1, torch.device("cpu"))
    ordered = sorted(rounds.confidence, key=rounds.confidence.get)
    low, high = ordered[0], ordered[-1]
    config.semihand.selection.confidence_threshold = 0.5 * (rounds.confidence[low] + rounds.confidence[high])
    torch.manual_seed(0)
    rounds.start_round(trainer.network, 1, torch.device("cpu"))
    assert rounds.confident(low) and not rounds.confident(high) and not rounds.confident("pseudo/never/scored")

    def is_gray(image: np.ndarray) -> bool:
        return bool((image == image[..., :1]).all())

    assert is_gray(lab[0].crop.image) and is_gray(lab[1].crop.image)  # labelled: diversity
    index = {wild.base.load(i).sample_id: i for i in range(len(wild.base))}
    assert is_gray(wild[index[low]].crop.image)  # confidently pseudo-labelled: diversity
    unsure = wild[index[high]].crop  # the rest: the crop the round scored, perturbed only in the step
    assert not is_gray(unsure.image)
    np.testing.assert_array_equal(unsure.image, plain_crop(wild.base[index[high]], rounds.augment)[0].image)
    config.semihand.selection.enabled = False  # without selection every scored pseudo-label counts
    assert rounds.confident(high) and is_gray(wild[index[high]].crop.image)


# ----------------------------------------------------------------------------- hand masks (eq. 10 mask term, eq. 11)

CROP = 64
RADII_M = 0.009  # one radius for every circle keeps the hand-built case simple


@pytest.fixture(scope="module")
def hand_model() -> HandModel:
    return HandModel("right")


def mask_training(hand_model, tmp_path, *, cross_modal: bool = False, view: bool = False,
                  mask_head: bool = True) -> SemiHandTraining:
    config = SemiHandConfig()
    config.view_consistency.enabled = view
    config.cross_modal.enabled = cross_modal
    config.cross_modal.radii_file = save_circle_radii(tmp_path / "radii.npz", torch.full((55,), RADII_M))
    return SemiHandTraining(config, hand_model, CROP, supervised_2d_weight=100.0, mask_head=mask_head)


def template_hand(training: SemiHandTraining) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(joints2d in hand-box units (1, 21, 2), the hand box (1, 4) in crop pixels, the joints in crop units):
    the rest-pose template seen orthographically at 3 crop units per metre, boxed with a margin."""
    template = training.template.double()
    uv = (0.5 + 3.0 * (template - template[:1])[None, :, :2]).float()
    low, high = uv.amin(1) - 0.08, uv.amax(1) + 0.08
    box = torch.cat([low, high], 1) * CROP
    joints2d = (uv * CROP - box[:, None, :2]) / (box[:, None, 2:] - box[:, None, :2])
    return joints2d, box, uv


def test_cross_modal_needs_a_mask_head(hand_model, tmp_path):
    with pytest.raises(ConfigError, match="hand_head.mask_head"):
        mask_training(hand_model, tmp_path, cross_modal=True, mask_head=False)
    training = mask_training(hand_model, tmp_path, cross_modal=True)
    assert not training.needs_circle_radii and not training.circle_model.log_radii.requires_grad
    joints2d, box, _ = template_hand(training)
    with pytest.raises(ValueError, match="mask logits are needed"):
        training.step_losses({"weight": torch.ones(1)}, joints2d, torch.zeros(1, 21, 3), box)


def test_cross_modal_term_is_small_for_the_models_own_mask_and_moves_only_the_joints(hand_model, tmp_path):
    training = mask_training(hand_model, tmp_path, cross_modal=True)
    joints2d, box, uv = template_hand(training)
    size = 32  # the hand RoI's grid
    sdf = training.circle_model.signed_distance_at(uv, box_pixel_centres(box / CROP, size)).view(1, 1, size, size)
    assert 0.1 < float((sdf < 0).float().mean()) < 0.6  # the circles fill a fair part of the hand box
    own = torch.where(sdf < 0, 20.0, -20.0)  # mask logits of the circle rendering itself
    joints2d = joints2d.clone().requires_grad_(True)
    logits = own.clone().requires_grad_(True)
    crop = {"weight": torch.ones(1)}
    exact = training.step_losses(crop, joints2d, torch.zeros(1, 21, 3), box, mask_logits=logits)
    # Eq. 11 in crop units on the hand-box grid: only the soft edge differs (model to data), no
    # pixel is misplaced (data to model), scaled by lambda_c (0.1) x the supervised 2D weight (100).
    assert set(exact.loss.terms) == {TERM_CROSS_MODAL}
    direct = cross_modal_consistency_loss(training.circle_model, uv, torch.sigmoid(own), box / CROP)
    assert direct.data_to_model.item() < 1e-9 and 0 < direct.model_to_data.item() < 0.3
    torch.testing.assert_close(exact.loss.terms[TERM_CROSS_MODAL], 10.0 * direct.model_to_data[0])
    exact.loss.total.backward()
    assert logits.grad is None  # stop-gradient on the mask
    assert joints2d.grad.abs().sum() > 0
    # A mask shifted by 5 of 32 cells: hand pixels outside the circles now cost their distance.
    moved = own.roll(5, dims=-1)
    shifted = training.step_losses(crop, joints2d, torch.zeros(1, 21, 3), box, mask_logits=moved)
    assert shifted.loss.terms[TERM_CROSS_MODAL] > 1.4 * exact.loss.terms[TERM_CROSS_MODAL]  # measured 1.62x
    direct_shifted = cross_modal_consistency_loss(training.circle_model, uv, torch.sigmoid(moved), box / CROP)
    assert direct_shifted.data_to_model.item() > 1e-3  # crop units, mean over the grid


def test_view_consistency_adds_the_mask_term_with_a_mask_head(hand_model, tmp_path):
    training = mask_training(hand_model, tmp_path, view=True)
    joints2d, box, _ = template_hand(training)
    joints3d = torch.zeros(1, 21, 3)
    view = PerturbedView(image=torch.zeros(1, 3, CROP, CROP), hand_box=box, object_box=box,
                         perturbation=Perturbation.identity(1))
    logits = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    crop = {"weight": torch.ones(1)}
    same = training.step_losses(crop, joints2d, joints3d, box, view, joints2d, joints3d, mask_logits=logits,
                                perturbed_mask_logits=logits)
    assert same.loss.terms[TERM_VIEW_CONSISTENCY] < 1e-5  # float32 resampling at the pixel centres
    other = logits + 1.0
    changed = training.step_losses(crop, joints2d, joints3d, box, view, joints2d, joints3d, mask_logits=logits,
                                   perturbed_mask_logits=other)
    # lambda_c (0.1) x the supervised 2D weight (100) x mask_weight (1) x mean |w' - w|.
    expected = 0.1 * 100.0 * (torch.sigmoid(other) - torch.sigmoid(logits)).abs().mean()
    torch.testing.assert_close(changed.loss.terms[TERM_VIEW_CONSISTENCY], expected)
    with pytest.raises(ValueError, match="perturbed view's mask logits"):
        training.step_losses(crop, joints2d, joints3d, box, view, joints2d, joints3d, mask_logits=logits)


def test_trainer_fits_radii_and_trains_with_mask_consistency(data, tmp_path):
    config = lab_config(data, tmp_path, "semihand.view_consistency.enabled=true", "semihand.cross_modal.fit_frames=3")
    config.model_overrides.append("hand_head.mask_head=true")
    config.semihand.cross_modal.enabled = True  # train_config refuses it for models without the mask head
    trainer = Trainer(config)
    semihand = trainer.semihand
    assert semihand.circle_radii_ready
    radii_mm = semihand.circle_model.radii_m * 1000
    # 32 px crops: circles on fingers thinner than a pixel get the fit's 1 mm floor.
    assert 0.999 <= float(radii_mm.min()) and float(radii_mm.max()) < 40.0
    assert radii_mm[45:].mean() > radii_mm[:45].mean()  # the palm's circles are the larger ones
    lab = trainer.dataset.parts[0]
    assert len(labelled_mask_samples([lab.base], 3)) == 3
    result, _ = trainer.train_step(collate_examples([lab[0], lab[1]]))
    assert {TERM_CROSS_MODAL, TERM_VIEW_CONSISTENCY, "hand_mask"} <= set(result.terms)
    assert result.terms[TERM_CROSS_MODAL] > 0 and result.terms[TERM_VIEW_CONSISTENCY] > 0
    assert math.isclose(result.total, sum(result.terms.values()), rel_tol=1e-5)
