import numpy as np
import pytest

from hoi_perception.config import ConfigError, load_config
from hoi_perception.geometry.camera import project
from hoi_perception.geometry.hand_translation import (
    HandTranslationConfig,
    estimate_hand_translation,
    fit_translation_to_box,
    locate_hand,
)

K = np.array([[605.0, 0.0, 321.0], [0.0, 603.0, 239.0], [0.0, 0.0, 1.0]])
TRUE_T = np.array([0.06, -0.04, 0.48])


def _hand(seed=0):
    """A hand-sized root-relative joint cloud (wrist at the origin), metres."""
    rng = np.random.default_rng(seed)
    joints = rng.uniform([-0.05, -0.09, -0.03], [0.05, 0.0, 0.03], size=(21, 3))
    joints[0] = 0.0
    return joints


def _depth_image(joints_cam, surface_offset=0.008, background=1.5, radius_px=4):
    """Depth (metres) of a hand-shaped blob: each joint's skin (depth - offset) within radius_px, else background.

    A small radius leaves most noisy 2D joints reading the background, which the solver must ignore.
    """
    depth = np.full((480, 640), background)
    uv = project(joints_cam, K)
    vv, uu = np.mgrid[0:480, 0:640]
    nearest = np.full((480, 640), np.inf)
    for (u, v), z in zip(uv, joints_cam[:, 2]):
        d2 = (uu - u) ** 2 + (vv - v) ** 2
        closer = (d2 <= radius_px**2) & (d2 < nearest)
        depth[closer] = z - surface_offset
        nearest[closer] = d2[closer]
    return depth


def test_exact_projections_give_exact_translation():
    joints = _hand()
    uv = project(joints + TRUE_T, K)
    result = estimate_hand_translation(uv, joints, K)
    assert result.success, result.reason
    np.testing.assert_allclose(result.translation, TRUE_T, atol=1e-10)
    assert result.reprojection_error_px < 1e-8
    assert 1 < result.condition_number < 1e3
    linear_only = estimate_hand_translation(uv, joints, K, config=HandTranslationConfig(refine_iterations=0))
    np.testing.assert_allclose(linear_only.translation, TRUE_T, atol=1e-10)


def test_noise_robustness_and_gauss_newton_helps():
    rng = np.random.default_rng(1)
    errors_refined, errors_linear = [], []
    for seed in range(30):
        joints = _hand(seed)
        uv = project(joints + TRUE_T, K) + rng.normal(0.0, 3.0, (21, 2))
        refined = estimate_hand_translation(uv, joints, K)
        linear = estimate_hand_translation(uv, joints, K, config=HandTranslationConfig(refine_iterations=0))
        errors_refined.append(np.linalg.norm(refined.translation - TRUE_T))
        errors_linear.append(np.linalg.norm(linear.translation - TRUE_T))
        assert refined.reprojection_error_px <= linear.reprojection_error_px + 1e-9
    # 3 px of noise on a 0.48 m hand: about a centimetre, dominated by depth.
    assert np.mean(errors_refined) < 0.02
    assert np.mean(errors_refined) <= np.mean(errors_linear) + 1e-4


def test_confidence_weights_suppress_bad_joints():
    joints = _hand(2)
    uv = project(joints + TRUE_T, K)
    uv[3] += 80.0
    uv[7] -= 60.0
    conf = np.ones(21)
    conf[[3, 7]] = 0.0
    result = estimate_hand_translation(uv, joints, K, joint_confidence=conf)
    np.testing.assert_allclose(result.translation, TRUE_T, atol=1e-9)
    unweighted = estimate_hand_translation(uv, joints, K)
    assert np.linalg.norm(unweighted.translation - TRUE_T) > 0.005


def test_depth_refinement_reduces_z_error_with_noisy_2d():
    rng = np.random.default_rng(3)
    z_err_2d, z_err_depth = [], []
    for seed in range(20):
        joints = _hand(seed)
        uv = project(joints + TRUE_T, K) + rng.normal(0.0, 4.0, (21, 2))
        depth = _depth_image(joints + TRUE_T)
        without = estimate_hand_translation(uv, joints, K)
        with_depth = estimate_hand_translation(uv, joints, K, depth=depth)
        assert with_depth.depth_used and with_depth.depth_joints >= 3
        z_err_2d.append(abs(without.translation[2] - TRUE_T[2]))
        z_err_depth.append(abs(with_depth.translation[2] - TRUE_T[2]))
    assert np.mean(z_err_depth) < 0.003
    assert np.mean(z_err_depth) < 0.3 * np.mean(z_err_2d)


def test_depth_fixes_a_wrong_hand_scale():
    joints = _hand(4)
    uv = project(joints + TRUE_T, K)
    predicted = joints * 1.15  # network thinks the hand is 15% larger -> 2D-only puts it 15% farther
    without = estimate_hand_translation(uv, predicted, K)
    assert without.translation[2] == pytest.approx(TRUE_T[2] * 1.15, rel=0.02)
    with_depth = estimate_hand_translation(uv, predicted, K, depth=_depth_image(joints + TRUE_T))
    assert abs(with_depth.translation[2] - TRUE_T[2]) < 0.006


def test_depth_rejects_occluded_and_missing_readings():
    joints = _hand(5)
    uv = project(joints + TRUE_T, K)
    depth = _depth_image(joints + TRUE_T)
    occluded = np.round(uv[:6]).astype(int)
    for u, v in occluded:  # an object 10 cm in front of six joints
        depth[v - 3:v + 4, u - 3:u + 4] = 0.38
    for u, v in np.round(uv[6:9]).astype(int):  # three joints without a reading
        depth[v - 3:v + 4, u - 3:u + 4] = 0.0
    result = estimate_hand_translation(uv, joints, K, depth=depth)
    assert result.depth_used
    assert result.depth_joints <= 12
    np.testing.assert_allclose(result.translation, TRUE_T, atol=0.004)


def test_depth_in_millimetres_and_missing_depth():
    joints = _hand(6)
    uv = project(joints + TRUE_T, K)
    depth_mm = np.round(_depth_image(joints + TRUE_T) * 1000).astype(np.uint16)
    result = estimate_hand_translation(uv, joints, K, depth=depth_mm, depth_scale=0.001)
    assert result.depth_used
    np.testing.assert_allclose(result.translation, TRUE_T, atol=0.002)
    empty = estimate_hand_translation(uv, joints, K, depth=np.zeros((480, 640), np.uint16), depth_scale=0.001)
    assert empty.success and not empty.depth_used and "valid depth" in empty.depth_note
    np.testing.assert_allclose(empty.translation, TRUE_T, atol=1e-9)


def test_failures_are_reported():
    joints = _hand(7)
    uv = project(joints + TRUE_T, K)
    conf = np.zeros(21)
    conf[:3] = 1.0
    few = estimate_hand_translation(uv, joints, K, joint_confidence=conf)
    assert not few.success and "too few" in few.reason and np.isnan(few.translation).all()

    collapsed = estimate_hand_translation(np.tile(uv[:1], (21, 1)), joints, K)
    assert not collapsed.success and "ill-conditioned" in collapsed.reason

    nan_uv = uv.copy()
    nan_uv[:19] = np.nan
    assert "too few" in estimate_hand_translation(nan_uv, joints, K).reason

    # A hand that only fits behind the camera (mirrored 2D layout of a tiny depth).
    behind = estimate_hand_translation(uv, joints, K, config=HandTranslationConfig(min_depth_m=1.0))
    assert not behind.success and "behind" in behind.reason


def test_bad_inputs_raise():
    joints = _hand()
    uv = project(joints + TRUE_T, K)
    with pytest.raises(ValueError, match="joints3d"):
        estimate_hand_translation(uv, joints[:20], K)
    with pytest.raises(ValueError, match="K"):
        estimate_hand_translation(uv, joints, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="joint_confidence"):
        estimate_hand_translation(uv, joints, K, joint_confidence=np.ones(5))
    with pytest.raises(ValueError, match="depth"):
        estimate_hand_translation(uv, joints, K, depth=np.zeros((2, 3, 4)))
    with pytest.raises(ConfigError, match="min_joints"):
        load_config(HandTranslationConfig, {"min_joints": 1})


def _mesh(seed=0, count=300):
    """A hand-sized root-relative vertex cloud (wrist at the origin), metres."""
    rng = np.random.default_rng(100 + seed)
    vertices = rng.uniform([-0.05, -0.10, -0.03], [0.05, 0.01, 0.03], size=(count, 3))
    vertices[0] = 0.0
    return vertices


def _box(points_cam):
    uv = project(points_cam, K)
    return np.concatenate([uv.min(0), uv.max(0)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_box_fit_recovers_the_translation_of_the_projected_mesh(seed):
    vertices = _mesh(seed)
    box = _box(vertices + TRUE_T)
    result = fit_translation_to_box(vertices, box, K, image_size=(640, 480))
    assert result.success and result.method == "box", result.reason
    np.testing.assert_allclose(result.translation, TRUE_T, atol=1e-8)
    assert result.reprojection_error_px < 1e-6


def test_box_fit_leaves_out_clipped_sides():
    vertices = _mesh(3)
    t = np.array([-0.30, 0.02, 0.5])  # the hand hangs over the image's left edge
    box = _box(vertices + t)
    assert box[0] < 0
    clipped = box.copy()
    clipped[0] = 0.0
    result = fit_translation_to_box(vertices, clipped, K, image_size=(640, 480))
    assert result.success, result.reason
    np.testing.assert_allclose(result.translation, t, atol=1e-6)
    # Without the image size the clipped side is taken as the hand's extent: a wrong, smaller hand farther away.
    naive = fit_translation_to_box(vertices, clipped, K)
    assert naive.translation[2] < t[2] - 0.02 or naive.translation[2] > t[2] + 0.02


def test_box_fit_needs_three_free_sides_and_a_valid_box():
    vertices = _mesh(4)
    corner = fit_translation_to_box(vertices, np.array([0.0, 0.0, 100.0, 80.0]), K, image_size=(640, 480))
    assert not corner.success and "clipped by the image border on 2 sides" in corner.reason
    empty = fit_translation_to_box(vertices, np.array([50.0, 50.0, 50.0, 90.0]), K)
    assert not empty.success and "empty" in empty.reason
    with pytest.raises(ValueError, match="box"):
        fit_translation_to_box(vertices, np.zeros(3), K)


def test_locate_hand_falls_back_on_the_box_when_the_joint_fit_fails():
    joints, vertices = _hand(5), _mesh(5)
    uv = project(joints + TRUE_T, K)
    box = _box(vertices + TRUE_T)
    confident = locate_hand(uv, joints, vertices, box, K)
    assert confident.success and confident.method == "joints"
    diffuse = np.full(21, 0.02)  # below min_joint_confidence: the joint fit fails
    fallback = locate_hand(uv, joints, vertices, box, K, diffuse, image_size=(640, 480))
    assert fallback.success and fallback.method == "box"
    assert "too few confident joints" in fallback.reason
    np.testing.assert_allclose(fallback.translation, TRUE_T, atol=1e-8)
    off = locate_hand(uv, joints, vertices, box, K, diffuse, config=HandTranslationConfig(box_fallback=False))
    assert not off.success and off.method == "joints"
    no_box = locate_hand(uv, joints, vertices, None, K, diffuse)
    assert not no_box.success


def test_box_fallback_uses_depth_at_the_reprojected_joints():
    joints, vertices = _hand(6), _mesh(6)
    true_cam = joints + TRUE_T
    depth = _depth_image(true_cam, radius_px=6)
    # A hand predicted 15 % too small: its box fit lands too far; depth brings it back.
    small_joints, small_vertices = 0.85 * joints, 0.85 * vertices
    box = _box(vertices + TRUE_T)
    diffuse = np.zeros(21)
    plain = locate_hand(project(true_cam, K), small_joints, small_vertices, box, K, diffuse)
    with_depth = locate_hand(project(true_cam, K), small_joints, small_vertices, box, K, diffuse, depth=depth)
    assert plain.success and with_depth.success and with_depth.depth_used
    assert abs(plain.translation[2] - TRUE_T[2]) > 0.05
    assert abs(with_depth.translation[2] - TRUE_T[2]) < 0.02
