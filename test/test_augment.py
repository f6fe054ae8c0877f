from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import make_sample, reprojection_errors  # test/ is on sys.path under pytest
from scipy.spatial.transform import Rotation

from hoi_perception.config import ConfigError, load_config
from hoi_perception.geometry.camera import box_from_points, crop_intrinsics, project
from hoi_perception.hand_model.mano import HandModel
from hoi_training.data.augment import (
    AugmentConfig,
    Augmenter,
    apply_crop_transform,
    augment_sample,
    crop_box_of,
    draw_crop_transform,
    evaluation_crop,
    grayscale_and_erase_image,
    mirror_sample,
    plain_crop,
)
from hoi_training.data.sample import HandObjectSample, SampleError
from hoi_training.semihand.consistency import GrayscaleErasingConfig


@pytest.mark.parametrize("seed", range(6))
def test_3d_labels_still_project_onto_2d_labels_after_augmentation(seed):
    sample = make_sample(seed)
    out, transform = augment_sample(sample, AugmentConfig(output_size=128), np.random.default_rng(seed))
    out.validate()
    assert out.image.shape == (128, 128, 3)
    hand, obj, root = reprojection_errors(out)
    assert hand < 1e-6 and obj < 1e-6 and root < 1e-6
    # Every 3D label moved by the same rotation about the optical axis.
    Q = transform.camera_rotation
    assert np.allclose(Q[2], [0, 0, 1]) and np.isclose(np.linalg.det(Q), 1.0)
    np.testing.assert_allclose(out.joints_3d, sample.joints_3d @ Q.T, atol=1e-12)
    np.testing.assert_allclose(out.vertices_3d, sample.vertices_3d @ Q.T, atol=1e-12)
    np.testing.assert_allclose(Rotation.from_rotvec(out.mano_pose[:3]).as_matrix(),
                               Q @ Rotation.from_rotvec(sample.mano_pose[:3]).as_matrix(), atol=1e-9)
    np.testing.assert_allclose(out.object_rotation, Q @ sample.object_rotation, atol=1e-12)


def test_image_content_follows_the_2d_labels():
    """A bright dot drawn at a joint lands where the augmented 2D joint says (sub-pixel)."""
    sample = make_sample(3)
    u, v = np.round(sample.joints_2d[5]).astype(int)
    image = np.zeros_like(sample.image)
    image[v - 1:v + 2, u - 1:u + 2] = 255
    sample = replace(sample, image=image, joints_2d=sample.joints_2d + (np.array([u, v]) - sample.joints_2d[5]))
    config = AugmentConfig(output_size=200, color_jitter=0.0, blur_probability=0.0)
    for seed in range(4):
        out, _ = augment_sample(sample, config, np.random.default_rng(seed))
        gray = out.image[..., 0].astype(float)
        ys, xs = np.nonzero(gray > 0)
        centroid = np.array([np.average(xs, weights=gray[ys, xs]), np.average(ys, weights=gray[ys, xs])])
        assert np.linalg.norm(centroid - out.joints_2d[5]) < 0.6


def test_masks_are_warped_with_the_image():
    sample = make_sample(4)
    out, _ = augment_sample(sample, AugmentConfig(output_size=160), np.random.default_rng(7))
    u, v = np.round(out.joints_2d[0]).astype(int)
    assert out.hand_mask.dtype == bool and out.hand_mask[v, u]
    assert not out.object_mask[v, u]


def test_crop_box_is_union_of_enlarged_boxes_squared():
    # No mesh or masks: the crop's boxes are the source boxes mapped into it.
    sample = replace(make_sample(0), hand_box=np.array([100.0, 100, 140, 160]),
                     object_box=np.array([150.0, 120, 210, 180]), vertices_3d=None, hand_mask=None, object_mask=None)
    # hand -> (90, 85, 150, 175); object -> (135, 105, 225, 195); union (90, 85, 225, 195) squared.
    np.testing.assert_allclose(crop_box_of(sample, 1.5), [90.0, 72.5, 225.0, 207.5])
    out, transform = evaluation_crop(sample, AugmentConfig(output_size=256))
    np.testing.assert_allclose(out.K, crop_intrinsics(sample.K, [90.0, 72.5, 225.0, 207.5], 256), atol=1e-9)
    np.testing.assert_allclose(transform.camera_rotation, np.eye(3))
    np.testing.assert_allclose(out.hand_box, (np.array([100.0, 100, 140, 160]) - [90, 72.5, 90, 72.5]) * 256 / 135)
    np.testing.assert_allclose(transform.crop_to_image(out.joints_2d), sample.joints_2d, atol=1e-9)


def test_rotated_crop_boxes_stay_tight():
    """After a rotation the hand box is the projected mesh's bound, the object box its mask's: not the
    bound of the rotated box, which is larger (up to twice the area at 45 degrees)."""
    sample = make_sample(5)
    sample = replace(sample, hand_box=box_from_points(project(sample.vertices_3d, sample.K)))
    config = AugmentConfig(output_size=160, rotation_deg=45.0)
    ratios = []
    for seed in range(6):
        out, transform = augment_sample(sample, config, np.random.default_rng(seed))
        tight = np.clip(box_from_points(project(out.vertices_3d, out.K)), 0, 160)
        np.testing.assert_allclose(out.hand_box, tight, atol=1e-9)
        rows, cols = np.flatnonzero(out.object_mask.any(1)), np.flatnonzero(out.object_mask.any(0))
        np.testing.assert_allclose(out.object_box, [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
        corners = np.array([[sample.hand_box[0], sample.hand_box[1]], [sample.hand_box[2], sample.hand_box[1]],
                            [sample.hand_box[0], sample.hand_box[3]], [sample.hand_box[2], sample.hand_box[3]]])
        warped = corners @ transform.image_to_crop[:2, :2].T + transform.image_to_crop[:2, 2]
        bound = np.concatenate([warped.min(0), warped.max(0)])
        area = (tight[2] - tight[0]) * (tight[3] - tight[1])
        ratios.append((bound[2] - bound[0]) * (bound[3] - bound[1]) / area)
    assert min(ratios) >= 1.0 and max(ratios) > 1.2


def test_crop_falls_back_to_joints_then_to_the_image():
    sample = replace(make_sample(0), hand_box=None, object_box=None)
    np.testing.assert_allclose(crop_box_of(sample, 1.0)[2] - crop_box_of(sample, 1.0)[0],
                               np.ptp(sample.joints_2d, axis=0).max())
    bare = replace(sample, joints_2d=None)
    np.testing.assert_allclose(crop_box_of(bare, 1.5), [40.0, 0.0, 280.0, 240.0])
    with pytest.raises(SampleError, match="degenerate"):
        evaluation_crop(replace(sample, hand_box=np.array([5.0, 5, 5, 5])), AugmentConfig())


def test_augmentation_is_deterministic_per_seed():
    sample = make_sample(5)
    config = AugmentConfig(output_size=96)
    a, _ = augment_sample(sample, config, np.random.default_rng(11))
    b, _ = augment_sample(sample, config, np.random.default_rng(11))
    c, _ = augment_sample(sample, config, np.random.default_rng(12))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.joints_2d, b.joints_2d)
    assert not np.allclose(a.joints_2d, c.joints_2d)
    augmenter = Augmenter(config, seed=3)
    first, again = augmenter(sample), augmenter(sample)
    np.testing.assert_array_equal(first.K, again.K)
    augmenter.set_epoch(1)
    assert not np.allclose(augmenter(sample).K, first.K)
    assert np.allclose(Augmenter(config, train=False)(sample).K, evaluation_crop(sample, config)[0].K)


def test_generator_depends_on_seed_epoch_and_sample_only():
    sample, other = make_sample(5), make_sample(6)
    augmenter = Augmenter(AugmentConfig(output_size=96), seed=3)
    first = augmenter.generator_for(sample).random(4)
    np.testing.assert_array_equal(Augmenter(AugmentConfig(), seed=3).generator_for(sample).random(4), first)
    assert not np.allclose(augmenter.generator_for(other).random(4), first)
    assert not np.allclose(Augmenter(AugmentConfig(), seed=4).generator_for(sample).random(4), first)
    augmenter.set_epoch(2)
    assert not np.allclose(augmenter.generator_for(sample).random(4), first)
    # The augmenter's view is augment_sample with that stream.
    expected, _ = augment_sample(sample, augmenter.config, augmenter.generator_for(sample))
    np.testing.assert_array_equal(augmenter(sample).image, expected.image)


def test_plain_crop_mirrors_left_hands_and_adds_no_jitter():
    config = AugmentConfig(output_size=64, mirror_left_hands=True)
    right = make_sample(7)
    crop, transform = plain_crop(right, config)
    reference, reference_transform = evaluation_crop(right, config)
    assert not transform.mirrored
    np.testing.assert_array_equal(crop.image, reference.image)
    np.testing.assert_array_equal(transform.image_to_crop, reference_transform.image_to_crop)
    left = make_sample(7, side="left")
    crop, transform = plain_crop(left, config)
    mirrored, _ = evaluation_crop(mirror_sample(left), config)
    assert transform.mirrored and crop.hand_side == "right"
    np.testing.assert_array_equal(crop.image, mirrored.image)
    np.testing.assert_allclose(crop.joints_3d, left.joints_3d * [-1.0, 1.0, 1.0])  # no rotation
    assert max(reprojection_errors(crop)) < 1e-6
    # Mirroring off: the left hand stays left, exactly the evaluation crop.
    unmirrored, transform = plain_crop(left, replace(config, mirror_left_hands=False))
    assert unmirrored.hand_side == "left" and not transform.mirrored
    np.testing.assert_allclose(unmirrored.joints_2d, evaluation_crop(left, config)[0].joints_2d)


def test_grayscale_is_the_luma_in_every_channel():
    image = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    gray = grayscale_and_erase_image(image, GrayscaleErasingConfig(1.0, 0.0), np.random.default_rng(0))
    luma = image.astype(np.float64) @ [0.299, 0.587, 0.114]
    assert gray.dtype == np.uint8 and (gray == gray[..., :1]).all()
    assert np.abs(gray[..., 0] - luma).max() <= 0.5 + 1e-3
    untouched = grayscale_and_erase_image(image, GrayscaleErasingConfig(0.0, 0.0), np.random.default_rng(0))
    np.testing.assert_array_equal(untouched, image)
    with pytest.raises(ValueError, match="uint8"):
        grayscale_and_erase_image(image.astype(np.float32), GrayscaleErasingConfig(), np.random.default_rng(0))


def test_erasing_fills_one_rectangle_of_the_configured_area_deterministically():
    image = np.random.default_rng(1).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    config = GrayscaleErasingConfig(0.0, 1.0, erasing_min_area=0.05, erasing_max_area=0.2)
    fractions, aspects = [], []
    for seed in range(40):
        erased = grayscale_and_erase_image(image, config, np.random.default_rng(seed))
        np.testing.assert_array_equal(erased, grayscale_and_erase_image(image, config, np.random.default_rng(seed)))
        changed = (erased != image).any(-1)
        rows, cols = np.nonzero(changed)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert changed.sum() == height * width  # one filled rectangle
        # The target area is uniform in [0.05, 0.2] of the image; the sides are rounded to pixels.
        slack = 0.5 * (height + width) + 0.25
        assert 0.05 * 64 * 48 - slack <= height * width <= 0.2 * 64 * 48 + slack
        fractions.append(height * width / (64 * 48))
        aspects.append(height / width)
    assert min(fractions) < 0.08 and max(fractions) > 0.17  # the whole range is drawn
    assert 1 / 3.5 < min(aspects) < 0.6 and 1.7 < max(aspects) < 3.5
    assert not np.array_equal(grayscale_and_erase_image(image, config, np.random.default_rng(99)),
                              grayscale_and_erase_image(image, config, np.random.default_rng(0)))


def test_jitter_ranges_follow_the_config():
    sample = make_sample(6)
    config = AugmentConfig(output_size=64, rotation_deg=0.0, scale_jitter=0.0, center_jitter=0.0)
    transform = draw_crop_transform(sample, config, np.random.default_rng(0))
    np.testing.assert_allclose(transform.camera_rotation, np.eye(3))
    np.testing.assert_allclose(transform.image_to_crop, draw_crop_transform(sample, config, None).image_to_crop)
    rotations = [draw_crop_transform(sample, AugmentConfig(rotation_deg=30.0), np.random.default_rng(s)).camera_rotation
                 for s in range(20)]
    angles = [np.degrees(np.arctan2(Q[1, 0], Q[0, 0])) for Q in rotations]
    assert max(abs(a) for a in angles) <= 30.0 + 1e-9 and max(abs(a) for a in angles) > 5.0
    flat = replace(sample, image=np.full_like(sample.image, 100))
    out = apply_crop_transform(flat, draw_crop_transform(flat, AugmentConfig(), None))
    assert out.image[32, 32, 0] == 100


def test_mirroring_keeps_labels_consistent_and_is_an_involution():
    sample = make_sample(8, side="left")
    mirrored = mirror_sample(sample).validate()
    assert mirrored.hand_side == "right"
    hand, obj, _ = reprojection_errors(mirrored)
    assert hand < 1e-9 and obj < 1e-9
    np.testing.assert_array_equal(mirrored.image[:, 0], sample.image[:, -1])
    np.testing.assert_allclose(mirrored.mano_pose.reshape(16, 3)[:, 1:], -sample.mano_pose.reshape(16, 3)[:, 1:])
    u, v = np.round(mirrored.joints_2d[0]).astype(int)
    assert mirrored.hand_mask[v, u]
    back = mirror_sample(mirrored)
    for name in ("image", "K", "joints_2d", "joints_3d", "mano_pose", "object_rotation", "hand_box", "hand_mask"):
        np.testing.assert_allclose(getattr(back, name), getattr(sample, name), atol=1e-12, err_msg=name)
    out, transform = augment_sample(sample, AugmentConfig(mirror_left_hands=True, output_size=64),
                                    np.random.default_rng(0))
    assert out.hand_side == "right" and transform.mirrored
    assert max(reprojection_errors(out)) < 1e-6


@pytest.mark.parametrize("mirror_axis", [None, 0, 1])
def test_mirroring_keeps_the_object_symmetries_in_the_mirrored_frame(mirror_axis):
    """The symmetric poses R S of the mirrored object are the mirror images of the original's."""
    from hoi_perception.geometry.camera import project
    from hoi_perception.geometry.mirror import reflection
    from hoi_perception.objects.models import symmetry_group

    sample = replace(make_sample(8, side="left"), object_symmetry_rotations=symmetry_group([("z", 90)]),
                     object_mirror_axis=mirror_axis)
    mirrored = mirror_sample(sample).validate()
    width = sample.image.shape[1]
    # With a mirror plane, label j names the point across the plane (see the next test).
    points = sample.object_control_points if mirror_axis is None else \
        sample.object_control_points @ reflection(mirror_axis)
    for s_orig, s_mirr in zip(sample.object_symmetry_rotations, mirrored.object_symmetry_rotations):
        original = project(points @ (sample.object_rotation @ s_orig).T
                           + sample.object_translation, sample.K)
        flipped = project(mirrored.object_control_points @ (mirrored.object_rotation @ s_mirr).T
                          + mirrored.object_translation, mirrored.K)
        np.testing.assert_allclose(flipped[:, 0], width - 1.0 - original[:, 0], atol=1e-9)
        np.testing.assert_allclose(flipped[:, 1], original[:, 1], atol=1e-9)


@pytest.mark.parametrize("mirror_axis", [0, 1, 2])
def test_a_mirrored_object_with_a_mirror_plane_keeps_its_own_control_points(mirror_axis):
    """Mirrored, an object with a mirror plane is itself at the proper pose X R P: each label still names
    the same point of the object, which is the mirror image of the point across the plane."""
    from hoi_perception.geometry.mirror import reflection

    sample = replace(make_sample(8, side="left"), object_mirror_axis=mirror_axis)
    mirrored = mirror_sample(sample).validate()
    np.testing.assert_array_equal(mirrored.object_control_points, sample.object_control_points)
    assert np.linalg.det(mirrored.object_rotation) == pytest.approx(1.0)
    assert max(reprojection_errors(mirrored)) < 1e-9
    # Label j of the mirrored image lies where the image shows point j reflected across the plane:
    # the mirror of where the original image shows that reflected point.
    width = sample.image.shape[1]
    reflected = sample.object_control_points @ reflection(mirror_axis)
    original = project(reflected @ sample.object_rotation.T + sample.object_translation, sample.K)
    np.testing.assert_allclose(mirrored.object_points_2d[:, 0], width - 1.0 - original[:, 0], atol=1e-9)
    np.testing.assert_allclose(mirrored.object_points_2d[:, 1], original[:, 1], atol=1e-9)
    back = mirror_sample(mirrored)  # still an involution
    np.testing.assert_allclose(back.object_rotation, sample.object_rotation, atol=1e-12)
    np.testing.assert_allclose(back.object_points_2d, sample.object_points_2d, atol=1e-9)


@pytest.mark.parametrize("key, value", [("output_size", 4), ("box_expansion", 0.5), ("scale_jitter", 1.5),
                                        ("rotation_deg", 200.0), ("blur_probability", 2.0), ("color_jitter", -1.0)])
def test_config_rejects_out_of_range_values(key, value):
    with pytest.raises(ConfigError, match=key):
        load_config(AugmentConfig, {key: value})


def mano_sample(side: str, model) -> HandObjectSample:
    """A sample whose hand labels come from the hand model (stand-in), so MANO parameters can be checked."""
    rng = np.random.default_rng(21)
    pose, betas, trans = rng.normal(0, 0.3, 48), rng.normal(0, 1, 10), np.array([0.02, -0.01, 0.45])
    vertices, joints = run_hand(model, pose, betas, trans)
    return replace(make_sample(2, side=side), joints_3d=joints, vertices_3d=vertices,
                   joints_2d=project(joints, make_sample(2).K), mano_pose=pose, mano_shape=betas,
                   mano_trans=trans).validate()


def run_hand(model, pose, betas, trans):
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64)[None])  # noqa: E731
    out = model(global_orient=t(pose[:3]), hand_pose=t(pose[3:]), betas=t(betas), transl=t(trans))
    return out.vertices[0].numpy(), out.joints[0].numpy()


def test_augmented_mano_parameters_reproduce_the_augmented_mesh():
    model = HandModel("right").double()
    sample = mano_sample("right", model)
    for seed in range(3):
        out, _ = augment_sample(sample, AugmentConfig(output_size=128), np.random.default_rng(seed))
        vertices, joints = run_hand(model, out.mano_pose, out.mano_shape, out.mano_trans)
        np.testing.assert_allclose(vertices, out.vertices_3d, atol=1e-7)  # 0.1 micrometre
        np.testing.assert_allclose(project(joints, out.K), out.joints_2d, atol=1e-6)


def test_mirrored_left_hand_is_reproduced_by_the_right_model():
    """The stand-in left hand is the exact mirror of the right one, as MANO's are meant to be."""
    sample = mano_sample("left", HandModel("left").double())
    mirrored = mirror_sample(sample)
    vertices, _ = run_hand(HandModel("right").double(), mirrored.mano_pose, mirrored.mano_shape, mirrored.mano_trans)
    np.testing.assert_allclose(vertices, mirrored.vertices_3d, atol=1e-9)
