import math
from dataclasses import fields, replace

import numpy as np
import pytest
import torch

from hoi_perception.config import ConfigError, load_config
from hoi_perception.geometry.rotations import matrix_to_rot6d
from hoi_perception.models.detection_head import DetectionHeadOutput
from hoi_perception.models.hand_head import HandDecoderOutput
from hoi_perception.models.object_head import ObjectHeadOutput
from hoi_training.losses import (
    DetectionTargetBatch,
    HandObjectTargets,
    LossConfig,
    LossWeights,
    detection_loss,
    focal_loss,
    gaussian_heatmaps,
    hand_object_loss,
    nearest_symmetric_points,
)

B, J, R, V = 2, 3, 4, 5  # small sizes: the losses do not depend on 21 joints / 778 vertices


def _hand(requires_grad=False):
    identity6d = matrix_to_rot6d(torch.eye(3)).repeat(B, 16, 1)
    out = HandDecoderOutput(
        heatmaps=torch.zeros(B, J, R, R), joints2d=torch.zeros(B, J, 2), joint_confidence=torch.ones(B, J),
        pose=torch.zeros(B, 48), rot6d=identity6d, betas=torch.zeros(B, 10), vertices=torch.zeros(B, V, 3),
        joints3d=torch.zeros(B, J, 3))
    if requires_grad:
        for name in ("heatmaps", "joints2d", "rot6d", "betas", "vertices", "joints3d"):
            getattr(out, name).requires_grad_(True)
    return out


def _first_sample(hand: HandDecoderOutput) -> HandDecoderOutput:
    return replace(hand, **{f.name: getattr(hand, f.name)[:1] for f in fields(hand)
                            if getattr(hand, f.name) is not None})


def test_default_weights_are_the_papers():
    w = LossWeights()
    assert (w.heatmaps, w.joints2d, w.vertices, w.joints3d) == (100, 100, 10000, 10000)
    assert (w.mano_pose, w.mano_shape, w.object_votes, w.object_confidence) == (1, 1, 500, 100)
    assert load_config(LossConfig, {"weights": {"mano_pose": 10.0}}).weights.mano_pose == 10.0
    with pytest.raises(ConfigError, match="object_votes"):
        load_config(LossConfig, {"weights": {"object_votes": -1.0}})
    with pytest.raises(ConfigError, match="heatmap_sigma"):
        load_config(LossConfig, {"heatmap_sigma": 0.0})


def test_gaussian_heatmap_target():
    maps = gaussian_heatmaps(torch.tensor([[[0.375, 0.625]]]), 4, 4, sigma=1.0)
    # Joint at cell centre (1.5, 2.5) in cell units = column 1, row 2.
    assert maps[0, 0, 2, 1] == pytest.approx(1 / (2 * math.pi))
    assert maps[0, 0, 2, 2] == pytest.approx(math.exp(-0.5) / (2 * math.pi))
    assert maps[0, 0].argmax() == 2 * 4 + 1


def test_hand_terms_hand_computed_with_masks():
    hand = _hand()
    hand.joints2d[1] = 0.9  # sample 1 is far off but unlabelled for 2D
    targets = HandObjectTargets(
        joints2d=torch.full((B, J, 2), 0.1), has_hand2d=torch.tensor([1.0, 0.0]),
        joints3d=torch.full((B, J, 3), 0.01),
        pose=torch.zeros(B, 48), betas=torch.full((B, 10), 0.5), has_mano=torch.tensor([1.0, 1.0]))
    targets.pose[:, 2] = math.pi / 2  # global orientation: 90 degrees about z
    loss = hand_object_loss(hand, None, targets)
    assert loss.terms["joints2d"].item() == pytest.approx(100 * 0.01)
    assert loss.terms["joints3d"].item() == pytest.approx(10000 * 1e-4)
    # |Rz(90) - I|^2 = 4 over 16 x 9 entries.
    assert loss.terms["mano_pose"].item() == pytest.approx(4 / 144, rel=1e-5)
    assert loss.terms["mano_shape"].item() == pytest.approx(0.25)
    # Heatmaps all zero: each joint's loss is the sum of the squared target (NumPy reference).
    ys, xs = np.mgrid[0:R, 0:R] + 0.5
    g = np.exp(-((xs - 0.4) ** 2 + (ys - 0.4) ** 2) / 2) / (2 * np.pi)
    assert loss.terms["heatmaps"].item() == pytest.approx(100 * np.sum(g**2), rel=1e-5)
    assert "vertices" not in loss.terms and "object_votes" not in loss.terms
    assert loss.total.item() == pytest.approx(sum(v.item() for v in loss.terms.values()))


def test_cross_entropy_heatmap_loss_hand_computed_and_pulls_from_uniform():
    config = load_config(LossConfig, {"heatmap_loss": "cross_entropy"})
    targets = HandObjectTargets(joints2d=torch.full((B, J, 2), 0.1))
    uniform = _hand(requires_grad=True)
    uniform.heatmaps.data.fill_(1 / R**2)
    loss = hand_object_loss(uniform, None, targets, config)
    # -sum(q log(1/R^2)) = log(R^2) for any normalised target q.
    assert loss.terms["heatmaps"].item() == pytest.approx(100 * math.log(R**2), rel=1e-5)
    # The target itself is the minimum: its entropy, lower than the uniform's.
    ys, xs = np.mgrid[0:R, 0:R] + 0.5
    q = np.exp(-((xs - 0.4) ** 2 + (ys - 0.4) ** 2) / 2)
    q /= q.sum()
    exact = _hand()
    exact.heatmaps[:] = torch.from_numpy(q).float()
    best = hand_object_loss(exact, None, targets, config).terms["heatmaps"].item()
    assert best == pytest.approx(100 * -(q * np.log(q)).sum(), rel=1e-5) and best < loss.terms["heatmaps"].item()
    # Through a softmax the gradient on the logits is (p - q): non-vanishing at the start.
    logits = torch.zeros(B, J, R * R, requires_grad=True)
    soft = _hand()
    soft.heatmaps = torch.softmax(logits, -1).view(B, J, R, R)
    only_heatmaps = load_config(LossConfig, {"heatmap_loss": "cross_entropy", "weights": {"joints2d": 0.0}})
    hand_object_loss(soft, None, targets, only_heatmaps).total.backward()
    expected = 100 * (1 / R**2 - torch.from_numpy(q).float().flatten()) / (B * J)
    assert torch.allclose(logits.grad[0, 0], expected, atol=1e-6)
    with pytest.raises(ConfigError, match="heatmap_loss"):
        load_config(LossConfig, {"heatmap_loss": "l1"})


def test_hand_mask_term_is_cross_entropy_over_flagged_samples():
    logits = torch.zeros(B, 1, 2, 2)
    logits[0, 0, 0, 0] = 2.0
    logits[1] = -3.0  # sample 1 is badly wrong but has no mask label
    truth = torch.tensor([[[1, 0], [0, 0]], [[1, 1], [1, 1]]], dtype=torch.bool)
    hand = replace(_hand(), mask_logits=logits.requires_grad_(True))
    targets = HandObjectTargets(hand_mask=truth, has_hand_mask=torch.tensor([1.0, 0.0]))
    loss = hand_object_loss(hand, None, targets, load_config(LossConfig, {"weights": {"hand_mask": 3.0}}))
    # Sample 0: -log sigmoid(2) on the hand cell, -log(1 - 1/2) on three background cells.
    expected = (math.log1p(math.exp(-2.0)) + 3 * math.log(2.0)) / 4
    assert loss.terms["hand_mask"].item() == pytest.approx(3.0 * expected, rel=1e-6)
    assert set(loss.terms) == {"hand_mask"} and LossWeights().hand_mask == 1.0
    loss.total.backward()
    assert hand.mask_logits.grad[1].abs().max() == 0 and hand.mask_logits.grad[0].abs().min() > 0
    # No mask head (mask_logits None): mask labels alone are no term to train.
    with pytest.raises(ValueError, match="no labels"):
        hand_object_loss(_hand(), None, targets)
    with pytest.raises(ValueError, match="hand_mask"):
        hand_object_loss(hand, None, HandObjectTargets(hand_mask=truth[:, :1]))


def test_invisible_joints_are_ignored():
    hand = _hand()
    hand.joints2d[:, 0] = 0.5  # joint 0 wrong, but marked invisible
    visible = torch.ones(B, J)
    visible[:, 0] = 0
    targets = HandObjectTargets(joints2d=torch.zeros(B, J, 2), joints2d_visible=visible)
    assert hand_object_loss(hand, None, targets).terms["joints2d"].item() == 0.0


def _object(votes_value=0.5, conf_value=0.5):
    return ObjectHeadOutput(votes=torch.full((1, 1, 2, 2, 2), votes_value), confidence=torch.full((1, 1, 2, 2),
                                                                                                   conf_value))


def test_object_terms_hand_computed():
    hand = _first_sample(_hand())
    obj = _object()
    mask = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    targets = HandObjectTargets(object_points2d=torch.tensor([[[0.8, 0.1]]]), object_mask=mask)
    loss = hand_object_loss(hand, obj, targets)
    # One object cell with |dx| + |dy| = 0.3 + 0.4, averaged over the 4 cells.
    assert loss.terms["object_votes"].item() == pytest.approx(500 * 0.7 / 4, rel=1e-5)
    # Object cell: |0.5 - exp(-0.5)|; the 3 others: |0.5 - 0|.
    expected_conf = (abs(0.5 - math.exp(-0.5)) + 3 * 0.5) / 4
    assert loss.terms["object_confidence"].item() == pytest.approx(100 * expected_conf, rel=1e-5)


def test_symmetric_objects_are_trained_towards_the_nearest_look_alike_pose():
    """Votes on the 180-degree twin of the labelled pose cost nothing; without the twin they would."""
    label = torch.tensor([[[0.2, 0.3], [0.8, 0.7]]])  # two control points
    twin = torch.tensor([[[0.8, 0.7], [0.2, 0.3]]])  # the same points, swapped by the symmetry
    votes = twin[..., None, None].expand(1, 2, 2, 2, 2).clone()
    obj = ObjectHeadOutput(votes=votes, confidence=torch.ones(1, 2, 2, 2))
    plain = hand_object_loss(_first_sample(_hand()), obj, HandObjectTargets(object_points2d=label))
    assert plain.terms["object_votes"].item() == pytest.approx(500 * 1.0, rel=1e-5)  # |dx| + |dy| = 0.6 + 0.4
    symmetric = hand_object_loss(_first_sample(_hand()), obj, HandObjectTargets(
        object_points2d=label, object_symmetric_points2d=torch.stack([label, twin], dim=1)))
    assert symmetric.terms["object_votes"].item() == pytest.approx(0.0, abs=1e-6)
    assert symmetric.terms["object_confidence"].item() == pytest.approx(0.0, abs=1e-3)  # exp(-0) = 1
    # Votes halfway are as far from both: the labelled pose (index 0) is kept on a tie.
    halfway = ObjectHeadOutput(votes=torch.full((1, 2, 2, 2, 2), 0.5), confidence=torch.ones(1, 2, 2, 2))
    assert torch.equal(nearest_symmetric_points(halfway, torch.stack([label, twin], dim=1), None), label)
    with pytest.raises(ValueError, match="object_symmetric_points2d"):
        nearest_symmetric_points(halfway, label, None)


def test_pseudo_labelled_samples_drop_the_object_loss():
    """SHO eq. 8: the object loss is computed only on fully annotated samples."""
    hand = _hand()
    obj = ObjectHeadOutput(votes=torch.full((B, 1, 2, 2, 2), 0.5), confidence=torch.full((B, 1, 2, 2), 0.5))
    points = torch.tensor([[[0.8, 0.1]], [[0.0, 0.0]]])  # sample 1's "label" is garbage
    targets = HandObjectTargets(joints2d=torch.zeros(B, J, 2), object_points2d=points,
                                object_mask=torch.ones(B, 2, 2), has_object=torch.tensor([1.0, 0.0]))
    masked = hand_object_loss(hand, obj, targets)
    only_first = hand_object_loss(
        _first_sample(hand),
        ObjectHeadOutput(obj.votes[:1], obj.confidence[:1]),
        HandObjectTargets(joints2d=torch.zeros(1, J, 2), object_points2d=points[:1], object_mask=torch.ones(1, 2, 2)))
    assert masked.terms["object_votes"].item() == pytest.approx(only_first.terms["object_votes"].item())
    assert masked.terms["object_votes"].item() == pytest.approx(500 * 0.7)
    none = hand_object_loss(hand, obj, HandObjectTargets(joints2d=torch.zeros(B, J, 2), object_points2d=points,
                                                         has_object=torch.zeros(B)))
    assert none.terms["object_votes"].item() == 0.0 and none.terms["object_confidence"].item() == 0.0


def test_gradients_flow_to_predictions():
    hand = _hand(requires_grad=True)
    targets = HandObjectTargets(joints2d=torch.full((B, J, 2), 0.3), joints3d=torch.full((B, J, 3), 0.01),
                                vertices=torch.full((B, V, 3), 0.02), pose=0.1 * torch.ones(B, 48),
                                betas=torch.ones(B, 10))
    hand_object_loss(hand, None, targets).total.backward()
    for name in ("heatmaps", "joints2d", "rot6d", "betas", "vertices", "joints3d"):
        assert getattr(hand, name).grad.abs().sum() > 0, name


def test_bad_targets_raise():
    with pytest.raises(ValueError, match="joints3d"):
        hand_object_loss(_hand(), None, HandObjectTargets(joints3d=torch.zeros(B, J + 1, 3)))
    with pytest.raises(ValueError, match="has_hand2d"):
        hand_object_loss(_hand(), None, HandObjectTargets(joints2d=torch.zeros(B, J, 2), has_hand2d=torch.ones(3)))
    with pytest.raises(ValueError, match="no labels"):
        hand_object_loss(_hand(), None, HandObjectTargets())


def test_focal_loss_hand_computed():
    logits = torch.zeros(1, 1, 1, 2)
    target = torch.tensor([[[[1.0, 0.5]]]])
    pos = 0.25 * math.log(2)  # -(1 - 0.5)^2 log 0.5
    neg = 0.5**4 * 0.25 * math.log(2)  # -(1 - 0.5)^4 * 0.5^2 * log(1 - 0.5)
    assert focal_loss(logits, target).item() == pytest.approx(pos + neg, rel=1e-6)
    # Confident and right -> near zero; confident and wrong -> large.
    assert focal_loss(torch.tensor([[[[9.0, -9.0]]]]), torch.tensor([[[[1.0, 0.0]]]])).item() < 1e-3
    assert focal_loss(torch.tensor([[[[-9.0, 9.0]]]]), torch.tensor([[[[1.0, 0.0]]]])).item() > 5


def test_detection_loss_hand_computed():
    heat = torch.zeros(1, 3, 2, 2)
    heat[0, 2, 1, 0] = 1.0
    sizes = torch.zeros(1, 2, 2, 2)
    sizes[0, :, 1, 0] = torch.tensor([3.0, 5.0])
    offsets = torch.zeros(1, 2, 2, 2)
    offsets[0, :, 1, 0] = torch.tensor([0.25, 0.75])
    output = DetectionHeadOutput(heatmap_logits=torch.zeros(1, 3, 2, 2), sizes=sizes, offsets=offsets)
    targets = DetectionTargetBatch(heatmap=heat, indices=torch.tensor([[2, 0]]),
                                   sizes=torch.tensor([[[4.0, 4.0], [9.0, 9.0]]]),
                                   offsets=torch.tensor([[[0.5, 0.5], [9.0, 9.0]]]), mask=torch.tensor([[1.0, 0.0]]))
    loss = detection_loss(output, targets)
    assert loss.terms["detection_size"].item() == pytest.approx(0.1 * (1 + 1) / 2)
    assert loss.terms["detection_offset"].item() == pytest.approx((0.25 + 0.25) / 2)
    assert loss.terms["detection_heatmap"].item() == pytest.approx(focal_loss(torch.zeros(1, 3, 2, 2), heat).item())
    assert loss.total.item() == pytest.approx(sum(v.item() for v in loss.terms.values()))


def test_unknown_detection_classes_are_left_out_not_taught_absent():
    """A frame labelled with a hand but no object box: the object heatmap gets no gradient, and the
    loss equals that of the hand channels alone."""
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    heat = torch.zeros(2, 3, 4, 4)
    heat[:, 0, 1, 1] = 1.0  # a right hand in both frames
    heat[0, 2, 2, 2] = 1.0  # an object labelled in frame 0 only
    known = torch.tensor([[True, True, True], [True, True, False]])
    loss = focal_loss(logits, heat, known=known)
    loss.backward()
    assert logits.grad[1, 2].abs().max() == 0 and logits.grad[0, 2].abs().max() > 0
    masked = focal_loss(logits.detach()[1:, :2], heat[1:, :2]) * 1  # frame 1 without its object channel
    whole = focal_loss(logits.detach()[:1], heat[:1])
    assert loss.item() == pytest.approx((masked.item() * 1 + whole.item() * 2) / 3, rel=1e-5)


def test_training_examples_mark_missing_labels_unknown(tiny_set):
    from dataclasses import replace

    from hoi_training.data.augment import AugmentConfig, Augmenter
    from hoi_training.data.synthetic import SyntheticConfig, SyntheticDataset
    from hoi_training.training.batches import ExampleBuilder, collate_examples

    sample = SyntheticDataset(SyntheticConfig(tiny_set))[0]
    builder = ExampleBuilder(Augmenter(AugmentConfig(output_size=32), train=False), 32, object_loss=True)
    examples = [builder(sample), builder(replace(sample, object_box=None))]
    batch = collate_examples(examples)
    assert batch.detection.known.tolist() == [[True, True, True], [True, True, False]]
    assert examples[1].detection_classes.tolist() == [examples[0].detection_classes[0]]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_heads_and_losses_run_on_cuda():
    from hoi_perception.hand_model.mano import HandModel
    from hoi_perception.models.hand_head import HandDecoder
    from hoi_perception.models.object_head import ObjectHead

    device = torch.device("cuda")
    decoder = HandDecoder(HandModel("right"), channels=16).to(device)
    object_head = ObjectHead(in_channels=16).to(device)
    roi = torch.randn(2, 16, 32, 32, device=device)
    targets = HandObjectTargets(joints2d=torch.rand(2, 21, 2, device=device),
                                joints3d=torch.zeros(2, 21, 3, device=device),
                                vertices=torch.zeros(2, 778, 3, device=device), pose=torch.zeros(2, 48, device=device),
                                betas=torch.zeros(2, 10, device=device),
                                object_points2d=torch.rand(2, 21, 2, device=device),
                                object_mask=torch.ones(2, 32, 32, device=device),
                                has_object=torch.tensor([1.0, 0.0], device=device))
    loss = hand_object_loss(decoder(roi), object_head(roi), targets)
    loss.total.backward()
    assert torch.isfinite(loss.total) and loss.total.device.type == "cuda"
