import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hoi_perception.config import ConfigError, load_config
from hoi_perception.geometry.camera import crop_intrinsics, project
from hoi_perception.geometry.pnp import (
    PnPConfig,
    bbox_control_points,
    pose_failure_reason,
    select_votes,
    solve_control_point_pnp,
    solve_pnp,
    top_k_per_row,
)
from hoi_perception.geometry.rotations import rotation_angle_deg_np

K = np.array([[615.0, 0.0, 320.0], [0.0, 612.0, 241.0], [0.0, 0.0, 1.0]])
GRID = 32


def _object_points(seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform([-0.04, -0.06, -0.1], [0.04, 0.06, 0.1], size=(500, 3))


def _scene(seed=0):
    control = bbox_control_points(_object_points(seed))
    rotation = Rotation.random(random_state=seed).as_matrix()
    translation = np.array([0.05, -0.03, 0.55])
    points_2d = project(control @ rotation.T + translation, K)
    return control, rotation, translation, points_2d


def _vote_grid(points_2d, rng, noise_px=0.0, outlier_fraction=0.0):
    """Every cell votes for every control point; confidences uniform in (0.5, 1)."""
    votes = np.broadcast_to(points_2d[:, :, None, None], (21, 2, GRID, GRID)).copy()
    votes += rng.normal(0.0, noise_px, votes.shape) if noise_px else 0.0
    confidence = rng.uniform(0.51, 1.0, (21, GRID, GRID))
    if outlier_fraction:
        outlier = rng.random((21, GRID, GRID)) < outlier_fraction
        random_xy = rng.uniform([0, 0], [640, 480], (21, GRID, GRID, 2)).transpose(0, 3, 1, 2)
        votes = np.where(outlier[:, None], random_xy, votes)
    return votes, confidence


def _errors(result, rotation, translation):
    return rotation_angle_deg_np(result.rotation, rotation), float(np.linalg.norm(result.translation - translation))


def test_control_points_layout():
    pts = np.array([[0.0, 0, 0], [1, 2, 3]])
    cp = bbox_control_points(pts)
    assert cp.shape == (21, 3)
    np.testing.assert_allclose(cp[0], [0, 0, 0])
    np.testing.assert_allclose(cp[7], [1, 2, 3])
    np.testing.assert_allclose(cp[20], [0.5, 1, 1.5])
    np.testing.assert_allclose(cp[8:20].mean(0), [0.5, 1, 1.5])  # edge midpoints are symmetric about the centre
    with pytest.raises(ValueError, match="points"):
        bbox_control_points(np.zeros((0, 3)))


def test_select_votes_takes_top_k_above_threshold():
    votes = np.arange(21 * 2 * 4 * 4, dtype=float).reshape(21, 2, 4, 4)
    conf = np.full((21, 4, 4), 0.2)
    conf[0, 0, :3] = [0.9, 0.7, 0.6]
    conf[3, 2, 1] = 0.95
    conf[5, 1, 1] = np.nan
    sel = select_votes(votes, conf, PnPConfig(votes_per_point=2))
    np.testing.assert_array_equal(sel.point_ids, [0, 0, 3])
    np.testing.assert_allclose(sel.confidences, [0.9, 0.7, 0.95])
    np.testing.assert_allclose(sel.points_2d[0], [votes[0, 0, 0, 0], votes[0, 1, 0, 0]])
    np.testing.assert_allclose(sel.points_2d[2], [votes[3, 0, 2, 1], votes[3, 1, 2, 1]])
    assert select_votes(votes, np.full((21, 4, 4), 0.99)).points_2d.shape == (210, 2)
    with pytest.raises(ValueError, match="confidence"):
        select_votes(votes, conf[:, :3])


def test_recovers_known_pose_exactly_from_noise_free_votes():
    control, rotation, translation, points_2d = _scene(1)
    votes, conf = _vote_grid(points_2d, np.random.default_rng(1))
    result = solve_control_point_pnp(votes, conf, control, K)
    assert result.success, result.reason
    assert result.num_correspondences == 210 and len(result.inliers) == 210
    rot_err, trans_err = _errors(result, rotation, translation)
    assert rot_err < 1e-5 and trans_err < 1e-8
    assert result.reprojection_error_px < 1e-6


def test_crop_frame_gives_the_same_pose():
    control, rotation, translation, points_2d = _scene(2)
    box = np.array([200.0, 120.0, 456.0, 376.0])
    K_crop = crop_intrinsics(K, box, 512)
    crop_px = (points_2d - box[:2]) * 512 / 256
    votes, conf = _vote_grid(crop_px, np.random.default_rng(2))
    result = solve_control_point_pnp(votes, conf, control, K_crop)
    assert result.success
    rot_err, trans_err = _errors(result, rotation, translation)
    assert rot_err < 1e-5 and trans_err < 1e-8


@pytest.mark.parametrize("noise_px, max_rot_deg, max_trans_m", [(1.0, 1.0, 0.005), (3.0, 3.0, 0.015)])
def test_degrades_gracefully_with_gaussian_noise(noise_px, max_rot_deg, max_trans_m):
    rot_errs, trans_errs = [], []
    for seed in range(5):
        control, rotation, translation, points_2d = _scene(seed)
        votes, conf = _vote_grid(points_2d, np.random.default_rng(100 + seed), noise_px=noise_px)
        result = solve_control_point_pnp(votes, conf, control, K)
        assert result.success, result.reason
        r, t = _errors(result, rotation, translation)
        rot_errs.append(r)
        trans_errs.append(t)
    assert np.mean(rot_errs) < max_rot_deg
    assert np.mean(trans_errs) < max_trans_m


def test_robust_to_thirty_percent_outliers():
    rng = np.random.default_rng(7)
    for seed in range(5):
        control, rotation, translation, points_2d = _scene(seed)
        votes, conf = _vote_grid(points_2d, rng, noise_px=1.0, outlier_fraction=0.3)
        result = solve_control_point_pnp(votes, conf, control, K)
        assert result.success, result.reason
        r, t = _errors(result, rotation, translation)
        assert r < 1.5 and t < 0.008, (seed, r, t)
        # RANSAC keeps roughly the 70% good votes and rejects the random ones.
        assert 0.55 * 210 < len(result.inliers) < 0.85 * 210


def test_refinement_lowers_reprojection_error():
    control, rotation, translation, points_2d = _scene(3)
    votes, conf = _vote_grid(points_2d, np.random.default_rng(3), noise_px=2.0)
    raw = solve_control_point_pnp(votes, conf, control, K, PnPConfig(refine=False))
    refined = solve_control_point_pnp(votes, conf, control, K)
    assert refined.reprojection_error_px <= raw.reprojection_error_px + 1e-9


def test_too_few_confident_votes_fails_without_identity():
    control, _, _, points_2d = _scene(4)
    votes, conf = _vote_grid(points_2d, np.random.default_rng(4))
    conf[:] = 0.3
    conf[0, 0, :5] = 0.9  # five votes for one point
    result = solve_control_point_pnp(votes, conf, control, K)
    assert not result.success
    assert "too few" in result.reason
    assert np.isnan(result.rotation).all() and np.isnan(result.translation).all()


def test_votes_for_too_few_distinct_points_fail():
    control, _, _, points_2d = _scene(5)
    votes, conf = _vote_grid(points_2d, np.random.default_rng(5))
    conf[3:] = 0.1  # only three control points have confident votes (30 pairs)
    result = solve_control_point_pnp(votes, conf, control, K)
    assert not result.success and "control points" in result.reason
    assert result.num_correspondences == 30


def test_random_votes_fail_ransac():
    control, _, _, _ = _scene(6)
    rng = np.random.default_rng(6)
    votes = rng.uniform(0, 640, (21, 2, GRID, GRID))
    conf = rng.uniform(0.6, 1.0, (21, GRID, GRID))
    result = solve_control_point_pnp(votes, conf, control, K, PnPConfig(ransac_reprojection_px=1.0))
    assert not result.success
    assert np.isnan(result.translation).all()


def test_pose_failure_reasons():
    control = bbox_control_points(_object_points())
    assert pose_failure_reason(np.eye(3), np.array([0, 0, 0.5]), control, 0.01) == ""
    assert "behind" in pose_failure_reason(np.eye(3), np.array([0, 0, -0.5]), control, 0.01)
    assert "behind" in pose_failure_reason(np.eye(3), np.array([0, 0, 0.05]), control, 0.01)  # box straddles z=0
    assert "non-finite" in pose_failure_reason(np.full((3, 3), np.nan), np.zeros(3), control, 0.01)
    assert "not a rotation" in pose_failure_reason(np.diag([1.0, 1.0, -1.0]), np.array([0, 0, 1.0]), control, 0.01)
    far = np.array([0, 0, 1e12])  # what near-degenerate votes produced from a weak model
    assert "beyond max_depth_m = 10 m" in pose_failure_reason(np.eye(3), far, control, 0.01, 10.0)
    assert pose_failure_reason(np.eye(3), np.array([0, 0, 9.5]), control, 0.01, 10.0) == ""
    with pytest.raises(ConfigError, match="max_depth_m"):
        load_config(PnPConfig, {"min_depth_m": 2.0, "max_depth_m": 1.0})


def test_non_finite_points_and_bad_inputs():
    pts3 = np.random.default_rng(0).normal(size=(10, 3))
    pts2 = np.random.default_rng(1).normal(size=(10, 2))
    pts2[0, 0] = np.inf
    assert "non-finite" in solve_pnp(pts3, pts2, K).reason
    with pytest.raises(ValueError, match="K"):
        solve_pnp(pts3, pts2, np.eye(2))
    with pytest.raises(ValueError, match="pair up"):
        solve_pnp(pts3, pts2[:5], K)
    with pytest.raises(ValueError, match="control_points_3d"):
        solve_control_point_pnp(np.zeros((21, 2, 4, 4)), np.zeros((21, 4, 4)), np.zeros((8, 3)), K)


def test_config_validation():
    assert load_config(PnPConfig, {"votes_per_point": 5}).votes_per_point == 5
    with pytest.raises(ConfigError, match="min_correspondences"):
        load_config(PnPConfig, {"min_correspondences": 3})
    with pytest.raises(ConfigError, match="confidence_threshold"):
        load_config(PnPConfig, {"confidence_threshold": 1.5})


@pytest.mark.parametrize("k", [1, 3, 10, 64])
def test_top_k_per_row_equals_a_stable_argsort(k):
    rng = np.random.default_rng(k)
    values = rng.integers(0, 5, size=(21, 64)).astype(np.float64)  # many ties
    values[3] = 1.0  # a row of one value: ties decide every pick
    values[4, :10] = -np.inf
    expected = np.argsort(-values, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(top_k_per_row(values, k), expected)
    continuous = rng.random((21, 1024))
    np.testing.assert_array_equal(top_k_per_row(continuous, k),
                                  np.argsort(-continuous, axis=1, kind="stable")[:, :k])
