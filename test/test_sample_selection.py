"""Pseudo-label confidence and selection (eq. 8), the eq. 6 loss, the eq. 7 update, and the SemiHand config."""

import numpy as np
import pytest
import torch

from hoi_perception.config import ConfigError, config_dir
from hoi_perception.hand_model.kinematics import bone_lengths
from hoi_perception.hand_model.mano import HandModel
from hoi_training.semihand.config import SemiHandConfig, load_semihand_config
from hoi_training.semihand.consistency import HandPose25D, Perturbation
from hoi_training.semihand.label_correction import HandPoseLabel, correct_hand_pose, rest_pose_template
from hoi_training.semihand.selection import (
    DEFAULT_CONFIDENCE_THRESHOLD,
    PseudoLabelConfidence,
    pseudo_label_confidence,
    pseudo_label_loss,
    select_confident,
    update_pseudo_labels,
)

DEPTH_WEIGHT = 10.0
SCALE = 3.0  # box units per metre of the labels' weak-perspective camera


@pytest.fixture(scope="module")
def template() -> torch.Tensor:
    return rest_pose_template(HandModel("right"))[0].double()


def label_from_joints(joints3d: torch.Tensor) -> HandPoseLabel:
    joints3d = joints3d - joints3d[:, :1]
    return HandPoseLabel(uv=SCALE * joints3d[..., :2] + 0.5, joints3d=joints3d)


def test_feasible_and_stable_pseudo_label_has_zero_confidence_cost(template):
    label = label_from_joints(template.repeat(2, 1, 1))
    corrected = correct_hand_pose(label, template)
    shift = Perturbation(angle_deg=torch.tensor([90.0, 2.0], dtype=torch.float64),
                         translation=torch.zeros(2, 2, dtype=torch.float64))
    stable_prediction = shift.apply_pose(label.pose25d())
    confidence = pseudo_label_confidence(label.pose25d(), corrected.pose25d(), stable_prediction, shift, DEPTH_WEIGHT)
    assert confidence.value.abs().max() < 1e-20
    assert select_confident(confidence, DEFAULT_CONFIDENCE_THRESHOLD).all()


def test_confidence_terms_measure_instability_and_implausibility(template):
    joints = template.repeat(2, 1, 1).clone()
    joints[1, 17] += torch.tensor([0.0, 0.0, 0.03], dtype=torch.float64)  # index tip 3 cm off: implausible
    label = label_from_joints(joints)
    corrected = correct_hand_pose(label, template)
    identity = Perturbation.identity(2, dtype=torch.float64)
    unstable = label.pose25d()
    unstable = HandPose25D(uv=unstable.uv + torch.tensor([[0.02, 0.0], [0.0, 0.0]], dtype=torch.float64)[:, None],
                           depth=unstable.depth)
    confidence = pseudo_label_confidence(label.pose25d(), corrected.pose25d(), unstable, identity, DEPTH_WEIGHT)
    # Stability: every joint of sample 0 moved by 0.02 box units -> 0.02^2.
    torch.testing.assert_close(confidence.stability, torch.tensor([0.02 ** 2, 0.0], dtype=torch.float64))
    assert confidence.plausibility[0] < 1e-20 < confidence.plausibility[1]
    # Only the tip moves under correction (its parent is untouched) and the label's camera is
    # exactly uv = SCALE * xy + 0.5, so the term is that joint's squared shift over 21 joints.
    moved = corrected.joints3d[1, 17] - label.joints3d[1, 17]
    expected = ((SCALE * moved[:2]) ** 2).sum() / 21 + DEPTH_WEIGHT * moved[2] ** 2 / 21
    torch.testing.assert_close(confidence.plausibility[1], expected)
    # Without label correction the plausibility term is zero.
    without = pseudo_label_confidence(label.pose25d(), None, unstable, identity, DEPTH_WEIGHT)
    assert torch.equal(without.plausibility, torch.zeros(2, dtype=torch.float64))


def test_selection_threshold_is_inclusive_and_rejects_nan():
    confidence = PseudoLabelConfidence(stability=torch.tensor([1e-4, 2e-4, float("nan"), 0.0]),
                                       plausibility=torch.tensor([1e-4, 2e-4, 0.0, 5e-4]))
    assert select_confident(confidence, 2e-4).tolist() == [True, False, False, False]
    assert select_confident(confidence.value, 5e-4).tolist() == [True, True, False, True]
    with pytest.raises(ValueError, match="threshold"):
        select_confident(confidence, -1.0)


def test_default_threshold_is_the_papers_tau_in_box_units():
    assert DEFAULT_CONFIDENCE_THRESHOLD == pytest.approx(1.5 / 64 ** 2)
    rms_error_of_crop_side = DEFAULT_CONFIDENCE_THRESHOLD ** 0.5
    assert 0.018 < rms_error_of_crop_side < 0.02


def test_pseudo_label_loss_is_eq6():
    zeros = torch.zeros(3, 21, 2, dtype=torch.float64)
    prediction = HandPose25D(uv=zeros + 0.1, depth=torch.zeros(3, 21, dtype=torch.float64))
    pseudo = HandPose25D(uv=zeros.clone(), depth=torch.zeros(3, 21, dtype=torch.float64))
    corrected = HandPose25D(uv=zeros + 0.2, depth=torch.zeros(3, 21, dtype=torch.float64))
    keep = torch.tensor([True, False, True])
    first = 2 * 0.1 ** 2  # |(0.1, 0.1)|^2
    second = 2 * 0.1 ** 2
    torch.testing.assert_close(pseudo_label_loss(prediction, pseudo, corrected, keep, DEPTH_WEIGHT),
                               torch.tensor([first + second, second, first + second], dtype=torch.float64))
    torch.testing.assert_close(pseudo_label_loss(prediction, pseudo, None, None, DEPTH_WEIGHT),
                               torch.full((3,), first, dtype=torch.float64))
    with pytest.raises(ValueError, match="keep"):
        pseudo_label_loss(prediction, pseudo, None, torch.ones(3), DEPTH_WEIGHT)


def test_update_takes_the_midpoint_and_corrects_it(template):
    rng = np.random.default_rng(0)
    noisy = template[None] + torch.tensor(rng.normal(0.0, 0.006, (4, 21, 3)))
    prediction = label_from_joints(noisy)
    first = update_pseudo_labels(prediction, None, template)
    assert torch.equal(first.pseudo_label.uv, prediction.uv)
    np.testing.assert_allclose(bone_lengths(first.corrected.joints3d.numpy()),
                               np.broadcast_to(bone_lengths(template.numpy()), (4, 20)), atol=1e-12)
    second = update_pseudo_labels(prediction, first.corrected, template)
    torch.testing.assert_close(second.pseudo_label.joints3d, 0.5 * (prediction.joints3d + first.corrected.joints3d))
    torch.testing.assert_close(second.pseudo_label.uv, 0.5 * (prediction.uv + first.corrected.uv))
    # Each round moves the pseudo-label towards the feasible set.
    gap_first = (first.pseudo_label.joints3d - first.corrected.joints3d).norm(dim=-1).mean()
    gap_second = (second.pseudo_label.joints3d - second.corrected.joints3d).norm(dim=-1).mean()
    assert gap_second < 0.6 * gap_first
    assert update_pseudo_labels(prediction, None, None).corrected is None


def test_shipped_config_equals_the_defaults_with_everything_off():
    shipped = load_semihand_config()
    assert shipped == SemiHandConfig()
    assert (config_dir() / "semihand.yaml").is_file()
    switches = (shipped.pseudo_labels, shipped.label_correction, shipped.selection, shipped.view_consistency,
                shipped.cross_modal)
    assert not any(s.enabled for s in switches)
    assert shipped.selection.confidence_threshold == DEFAULT_CONFIDENCE_THRESHOLD


def test_schedule_drops_the_learning_rate_at_the_middle_round():
    schedule = load_semihand_config().schedule
    assert [schedule.learning_rate_at(t) for t in range(1, 11)] == pytest.approx([1e-4] * 4 + [1e-5] * 6)
    odd = load_semihand_config(None, ["schedule.rounds=7"]).schedule
    assert odd.drop_round == 4
    explicit = load_semihand_config(None, ["schedule.lr_drop_round=8"]).schedule
    assert explicit.learning_rate_at(7) == pytest.approx(1e-4) and explicit.learning_rate_at(8) == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="round_number"):
        schedule.learning_rate_at(11)


@pytest.mark.parametrize("override, message", [
    ("label_correction.enabled=true", "enable pseudo_labels"),
    ("selection.enabled=true", "enable pseudo_labels"),
    ("schedule.lr_drop_round=12", "lr_drop_round"),
    ("augmentation.perturbation.translation_probability=0.9", "summing to 1"),
    ("selection.confidence_threshold=-1", "confidence_threshold"),
    ("cross_modal.softness_px=0", "softness_px"),
    ("loss.depth_weight=-2", "depth_weight"),
    ("view_consistency.wrong_key=1", "--set view_consistency.wrong_key=1: unknown setting"),
])
def test_bad_config_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_semihand_config(None, [override])
