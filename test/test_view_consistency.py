"""Perturbations as exact affine maps and SemiHand's view-consistency loss (eq. 10)."""

import math

import pytest
import torch

from hoi_perception.config import ConfigError
from hoi_training.semihand.circle_model import box_pixel_centres
from hoi_training.semihand.consistency import (
    HandPose25D,
    HandViewPrediction,
    Perturbation,
    PerturbationConfig,
    pose_distance,
    resample_box_mask,
    sample_perturbations,
    view_consistency_loss,
)

SIZE = 32


def perturbation(angles, translations_px=None, size=SIZE) -> Perturbation:
    angles = torch.tensor(angles, dtype=torch.float64)
    if translations_px is None:
        translations_px = [[0.0, 0.0]] * len(angles)
    return Perturbation(angle_deg=angles, translation=torch.tensor(translations_px, dtype=torch.float64) / size)


def blob_images(centres_px: torch.Tensor, size: int = SIZE, sigma: float = 1.5) -> torch.Tensor:
    """(B, J, S, S) one gaussian blob per joint channel at the given pixel-centre coordinates."""
    coords = torch.arange(size, dtype=torch.float64)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    d2 = (xs - centres_px[..., 0, None, None]) ** 2 + (ys - centres_px[..., 1, None, None]) ** 2
    return torch.exp(-d2 / (2 * sigma ** 2))


class CentroidPredictor:
    """A toy network: joint j = intensity centroid of channel j (box units), depth = channel mean,
    mask = half the first channel. Pointwise-linear and centroid operations make it equivariant
    to every warp that moves whole pixels (quarter turns, integer translations)."""

    def __call__(self, images: torch.Tensor) -> HandViewPrediction:
        size = images.shape[-1]
        centres = (torch.arange(size, dtype=images.dtype) + 0.5) / size
        mass = images.sum((-1, -2))
        u = (images.sum(-2) * centres).sum(-1) / mass
        v = (images.sum(-1) * centres).sum(-1) / mass
        pose = HandPose25D(uv=torch.stack([u, v], -1), depth=images.mean((-1, -2)))
        return HandViewPrediction(pose=pose, mask=0.5 * images[:, :1])


def test_quarter_turns_move_pixels_exactly_like_rot90():
    images = torch.rand(3, 2, SIZE, SIZE, dtype=torch.float64)
    turned = perturbation([90.0, 180.0, 270.0]).apply_image(images)
    for i, k in enumerate((-1, -2, -3)):  # positive angles turn clockwise on screen = negative rot90
        torch.testing.assert_close(turned[i], torch.rot90(images[i], k=k, dims=(-2, -1)), atol=1e-12, rtol=0)
    assert perturbation([90.0, 180.0, 270.0]).valid_mask(SIZE, images).min() == 1.0


def test_points_and_images_move_together():
    # A single lit pixel lands where the point map sends its centre.
    cases = perturbation([90.0, 270.0, 0.0, 180.0], [[0, 0], [0, 0], [3, -2], [1, 4]])
    images = torch.zeros(4, 1, SIZE, SIZE, dtype=torch.float64)
    row, col = 5, 11
    images[:, 0, row, col] = 1.0
    centre = torch.tensor([[[(col + 0.5) / SIZE, (row + 0.5) / SIZE]]], dtype=torch.float64).repeat(4, 1, 1)
    moved = cases.apply_points(centre)[:, 0] * SIZE - 0.5
    warped = cases.apply_image(images)
    for i in range(4):
        lit = torch.nonzero(warped[i, 0] > 0.999)
        assert lit.tolist() == [[round(float(moved[i, 1])), round(float(moved[i, 0]))]]
    # A small rotation moves a smooth blob's centroid where the point map says (sub-pixel).
    centre_px = torch.tensor([[[10.3, 20.7]]], dtype=torch.float64).repeat(1, 21, 1)
    small = perturbation([1.7])
    blob = blob_images(centre_px)
    predicted = CentroidPredictor()(small.apply_image(blob)).pose.uv
    expected = small.apply_points((centre_px + 0.5) / SIZE)
    assert (predicted - expected).abs().max() * SIZE < 0.01


def test_inverse_undoes_the_perturbation():
    cases = perturbation([1.5, -2.0, 90.0, 0.0], [[0, 0], [2, 3], [0, 0], [-5, 1]])
    points = torch.rand(4, 21, 2, dtype=torch.float64)
    torch.testing.assert_close(cases.inverse().apply_points(cases.apply_points(points)), points)
    torch.testing.assert_close(cases.apply_points(cases.inverse().apply_points(points)), points)
    images = torch.rand(1, 3, SIZE, SIZE, dtype=torch.float64)
    quarter = perturbation([270.0])
    torch.testing.assert_close(quarter.inverse().apply_image(quarter.apply_image(images)), images)
    pose = HandPose25D(uv=points, depth=torch.rand(4, 21, dtype=torch.float64))
    assert torch.equal(cases.apply_pose(pose).depth, pose.depth)  # in-plane motion keeps relative depth


def test_valid_mask_marks_pixels_without_a_source():
    shift = perturbation([0.0], [[1.0, 0.0]])
    valid = shift.valid_mask(SIZE, torch.zeros(1, dtype=torch.float64))[0, 0]
    assert valid[:, 0].sum() == 0 and valid[:, 1:].min() == 1.0
    tilted = perturbation([2.0]).valid_mask(SIZE, torch.zeros(1, dtype=torch.float64))
    assert 0.85 < tilted.mean() < 1.0  # the corners lose their source


def test_loss_is_zero_for_an_equivariant_predictor_and_positive_otherwise():
    generator = torch.Generator().manual_seed(0)
    # Blobs well inside the crop (7 sigma from the border after the largest shift), so no mass leaves it.
    centres = 12.0 + 8.0 * torch.rand(4, 21, 2, generator=generator, dtype=torch.float64)
    images = blob_images(centres, sigma=1.0)
    cases = perturbation([90.0, 180.0, 0.0, 0.0], [[0, 0], [0, 0], [3, -2], [-4, 5]])
    net = CentroidPredictor()
    loss = view_consistency_loss(net(images), net(cases.apply_image(images)), cases, depth_weight=10.0)
    assert loss.total.item() < 1e-20
    assert loss.pose.shape == (4,) and loss.mask.shape == (4,)

    # Small rotations resample: still consistent to a tiny fraction of a pixel.
    small = perturbation([2.0, -1.5, 2.0, -2.0])
    loss_small = view_consistency_loss(net(images), net(small.apply_image(images)), small, depth_weight=10.0)
    assert loss_small.pose.max().item() < (0.05 / SIZE) ** 2

    # A network that ignores its input is not equivariant: the pose term is exactly |t|^2.
    def frozen(_images):
        pose = HandPose25D(uv=torch.full((4, 21, 2), 0.5, dtype=torch.float64),
                           depth=torch.zeros(4, 21, dtype=torch.float64))
        return HandViewPrediction(pose=pose, mask=torch.zeros(4, 1, SIZE, SIZE, dtype=torch.float64) + 0.3)

    shifts = perturbation([0.0] * 4, [[3, 4], [0, 5], [-5, 0], [1, 1]])
    frozen_loss = view_consistency_loss(frozen(images), frozen(shifts.apply_image(images)), shifts, 10.0)
    expected = (shifts.translation ** 2).sum(-1)
    torch.testing.assert_close(frozen_loss.pose, expected)
    # Mask: 0.3 everywhere vs 0.3 shifted in with zeros; only pixels with a source count -> 0.
    assert frozen_loss.mask.max().item() < 1e-12
    # Mixing the toy network's reference view with the frozen perturbed view is inconsistent.
    net_loss = view_consistency_loss(net(images), frozen(shifts.apply_image(images)), shifts, 10.0)
    assert net_loss.total.item() > 0.01


def test_gradients_reach_both_views_unless_the_reference_is_detached():
    uv = torch.rand(2, 21, 2, dtype=torch.float64, requires_grad=True)
    uv_perturbed = torch.rand(2, 21, 2, dtype=torch.float64, requires_grad=True)
    depth = torch.zeros(2, 21, dtype=torch.float64)
    reference = HandViewPrediction(HandPose25D(uv, depth))
    perturbed = HandViewPrediction(HandPose25D(uv_perturbed, depth))
    cases = perturbation([2.0, 90.0])
    view_consistency_loss(reference, perturbed, cases, 10.0).total.backward()
    assert uv.grad.abs().sum() > 0 and uv_perturbed.grad.abs().sum() > 0
    uv.grad = None
    detached = HandViewPrediction(reference.pose.detach())
    out = view_consistency_loss(detached, perturbed, cases, 10.0)
    assert out.mask is None
    out.total.backward()
    assert uv.grad is None


def test_pose_distance_is_eq2_averaged_over_joints():
    a = HandPose25D(uv=torch.zeros(1, 21, 2), depth=torch.zeros(1, 21))
    b = HandPose25D(uv=torch.zeros(1, 21, 2), depth=torch.zeros(1, 21))
    b.uv[0, 3] = torch.tensor([0.3, 0.4])  # |duv|^2 = 0.25 on one joint
    b.depth[0, 5] = 0.02  # 2 cm on one joint
    torch.testing.assert_close(pose_distance(a, b, depth_weight=10.0),
                               torch.tensor([(0.25 + 10.0 * 0.02 ** 2) / 21]))


def test_sampled_perturbations_follow_the_config():
    config = PerturbationConfig()
    cases = sample_perturbations(3000, config, torch.Generator().manual_seed(1), dtype=torch.float64)
    angle, shift = cases.angle_deg, cases.translation
    quarter = torch.isin(angle, torch.tensor([90.0, 180.0, 270.0], dtype=torch.float64))
    small = (angle != 0) & ~quarter
    moved = shift.abs().sum(-1) > 0
    assert small.eq(angle.abs() <= 2.0).logical_or(~small).all() and angle[small].abs().max() <= 2.0
    assert shift.abs().max() <= config.max_translation and not (moved & (angle != 0)).any()
    for fraction in (quarter.double().mean(), small.double().mean(), moved.double().mean()):
        assert abs(float(fraction) - 1 / 3) < 0.04
    again = sample_perturbations(3000, config, torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.equal(again.angle_deg, angle)
    only_turns = PerturbationConfig(translation_probability=0.0, small_rotation_probability=0.0,
                                    quarter_turn_probability=1.0)
    assert torch.isin(sample_perturbations(50, only_turns).angle_deg, torch.tensor([90.0, 180.0, 270.0])).all()
    with pytest.raises(ConfigError, match="summing to 1"):
        sample_perturbations(4, PerturbationConfig(translation_probability=0.5))


def test_exact_quarter_turn_matrix():
    linear = perturbation([90.0, -90.0, 450.0]).linear()
    torch.testing.assert_close(linear[0], torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64),
                               atol=0, rtol=0)
    torch.testing.assert_close(linear[1], linear[0].T, atol=0, rtol=0)
    torch.testing.assert_close(linear[2], linear[0], atol=0, rtol=0)
    c, s = math.cos(math.radians(2.0)), math.sin(math.radians(2.0))
    torch.testing.assert_close(perturbation([2.0]).linear()[0], torch.tensor([[c, -s], [s, c]], dtype=torch.float64))


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="square"):
        perturbation([90.0]).apply_image(torch.zeros(1, 1, 8, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="points"):
        perturbation([90.0]).apply_points(torch.zeros(2, 21, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="HandPose25D.uv"):
        HandPose25D(uv=torch.zeros(1, 20, 2), depth=torch.zeros(1, 20))
    with pytest.raises(ValueError, match="Perturbation.translation"):
        Perturbation(angle_deg=torch.zeros(2), translation=torch.zeros(3, 2))


def blob_on_boxes(centres: torch.Tensor, boxes: torch.Tensor, size: int, sigma: float = 0.06) -> torch.Tensor:
    """(B, 1, S, S) a gaussian blob at ``centres`` (B, 2) drawn on each box's S x S grid, all in crop units."""
    points = box_pixel_centres(boxes, size)
    d2 = ((points - centres[:, None]) ** 2).sum(-1)
    return torch.exp(-d2 / (2 * sigma ** 2)).view(-1, 1, size, size)


def test_masks_on_boxes_follow_the_perturbation():
    """A mask predicted on each view's (hand) box, of a blob that moves with the crop, is consistent."""
    from hoi_training.semihand.training import perturb_boxes

    boxes = torch.tensor([[0.20, 0.15, 0.60, 0.85], [0.30, 0.25, 0.75, 0.60], [0.1, 0.2, 0.5, 0.6],
                          [0.25, 0.2, 0.7, 0.8]], dtype=torch.float64)  # crop units; not square
    centres = torch.tensor([[0.35, 0.45], [0.5, 0.4], [0.3, 0.4], [0.5, 0.5]], dtype=torch.float64)
    cases = perturbation([90.0, 270.0, 0.0, 2.0], [[0, 0], [0, 0], [4, -3], [0, 0]])
    moved_boxes = perturb_boxes(boxes, cases, 1)
    size = 16
    reference = blob_on_boxes(centres, boxes, size)
    moved = blob_on_boxes(cases.apply_points(centres[:, None])[:, 0], moved_boxes, size)
    target, valid = resample_box_mask(reference, boxes, moved_boxes, cases)
    error = ((target - moved).abs() * valid).flatten(1).amax(-1)
    # Quarter turns and translations map pixel centres onto pixel centres; a 2 degree turn resamples.
    assert error[:3].max() < 1e-9 and error[3] < 0.05
    assert valid[:3].min() == 1.0 and 0.5 < valid[3].mean() < 1.0  # the grown box has cells without a source
    # Identity: the mask itself, everywhere valid.
    same, everywhere = resample_box_mask(reference, boxes, boxes, Perturbation.identity(4, torch.float64))
    torch.testing.assert_close(same, reference)
    assert everywhere.min() == 1.0

    pose = HandPose25D(uv=centres[:, None].expand(4, 21, 2), depth=torch.zeros(4, 21, dtype=torch.float64))
    moved_pose = cases.apply_pose(pose)
    loss = view_consistency_loss(HandViewPrediction(pose, reference, boxes),
                                 HandViewPrediction(moved_pose, moved, moved_boxes), cases, depth_weight=10.0)
    assert loss.mask[:3].max() < 1e-9 and loss.mask[3] < 0.01
    # A mask that stays put on its grid is consistent under a translation (the box moves along),
    # not under a quarter turn.
    frozen = view_consistency_loss(HandViewPrediction(pose, reference, boxes),
                                   HandViewPrediction(moved_pose, reference, moved_boxes), cases, depth_weight=10.0)
    assert frozen.mask[:2].min() > 0.05 and frozen.mask[2] < 1e-9
    with pytest.raises(ValueError, match="mask boxes"):
        view_consistency_loss(HandViewPrediction(pose, reference, boxes), HandViewPrediction(moved_pose, moved),
                              cases, depth_weight=10.0)
    with pytest.raises(ValueError, match="mask_box"):
        HandViewPrediction(pose, None, boxes)
