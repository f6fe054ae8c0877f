"""Hand and object metrics against hand-computed values and the official code's definitions."""

import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.transform import Rotation

from hoi_perception.geometry import metrics as m


def _random_hand(rng: np.random.Generator, frames: int = 3, points: int = 21) -> np.ndarray:
    return rng.normal(scale=0.04, size=(frames, points, 3)) + np.array([0.0, 0.0, 0.5])


# ----------------------------------------------------------------------------- hand errors


def test_mpjpe_of_a_3_4_5_offset_is_5_mm():
    gt = _random_hand(np.random.default_rng(0))
    pred = gt + np.array([0.003, 0.004, 0.0])
    np.testing.assert_allclose(m.point_errors(pred, gt), 0.005)
    assert m.mean_point_error(pred, gt) == pytest.approx(0.005)


def test_mean_point_error_averages_per_point_over_frames_then_points():
    gt = np.zeros((2, 2, 3))
    pred = gt.copy()
    pred[0, 0, 0] = 0.004  # frame 0, point 0
    pred[1, 1, 1] = 0.002  # frame 1, point 1
    # per point over frames: (0.002, 0.001); mean: 0.0015
    assert m.mean_point_error(pred, gt) == pytest.approx(0.0015)


def test_root_relative_removes_a_global_offset():
    gt = _random_hand(np.random.default_rng(1))
    pred = gt + np.array([0.1, -0.2, 0.3])
    rel = m.point_errors(m.root_relative(pred), m.root_relative(gt))
    np.testing.assert_allclose(rel, 0.0, atol=1e-12)
    np.testing.assert_allclose(m.root_relative(gt)[:, 0], 0.0)


def test_procrustes_undoes_similarity_transform():
    rng = np.random.default_rng(2)
    gt = _random_hand(rng)
    rot = Rotation.random(3, random_state=3).as_matrix()
    pred = 1.7 * np.einsum("fij,fnj->fni", rot, gt) + np.array([0.2, -0.1, 0.4])
    np.testing.assert_allclose(m.procrustes_align(pred, gt), gt, atol=1e-9)


def test_procrustes_allows_reflections():
    """A mirrored prediction aligns to zero error: R is only orthogonal, as in the official code."""
    gt = _random_hand(np.random.default_rng(4))
    mirrored = gt * np.array([-1.0, 1.0, 1.0])
    assert m.point_errors(mirrored, gt).max() > 0.01
    # residual only from the official code's 1e-8 added to the norms
    np.testing.assert_allclose(m.point_errors(m.procrustes_align(mirrored, gt), gt), 0.0, atol=1e-7)


def test_procrustes_matches_scipy_orthogonal_procrustes_per_frame():
    rng = np.random.default_rng(5)
    gt = _random_hand(rng, frames=4)
    pred = gt + rng.normal(scale=0.01, size=gt.shape)
    aligned = m.procrustes_align(pred, gt)
    for f in range(4):
        mu_g, mu_p = gt[f].mean(0), pred[f].mean(0)
        g, p = gt[f] - mu_g, pred[f] - mu_p
        ng, np_ = np.linalg.norm(g) + 1e-8, np.linalg.norm(p) + 1e-8
        R, s = orthogonal_procrustes(g / ng, p / np_)
        expected = (p / np_) @ R.T * s * ng + mu_g
        np.testing.assert_allclose(aligned[f], expected, atol=1e-12)


def test_procrustes_of_all_zero_prediction_is_the_ground_truth_centroid():
    gt = _random_hand(np.random.default_rng(6), frames=1)
    aligned = m.procrustes_align(np.zeros_like(gt), gt)
    np.testing.assert_allclose(aligned, np.broadcast_to(gt.mean(axis=1, keepdims=True), gt.shape), atol=1e-12)


def test_scale_translation_alignment_matches_bone_length_and_wrist():
    gt = _random_hand(np.random.default_rng(7))
    pred = 0.5 * gt + np.array([0.3, 0.0, -0.1])
    np.testing.assert_allclose(m.scale_translation_align_ho3d(pred, gt), gt, atol=1e-12)


def test_scale_translation_alignment_does_not_rotate():
    gt = np.zeros((1, 21, 3))
    gt[0, 4] = [0.0, 0.1, 0.0]  # middle MCP 10 cm above the wrist
    gt[0, 5] = [0.0, 0.2, 0.0]
    pred = gt @ Rotation.from_euler("z", 90, degrees=True).as_matrix().T  # same lengths, rotated
    aligned = m.scale_translation_align_ho3d(pred, gt)
    np.testing.assert_allclose(aligned, pred, atol=1e-12)  # scale 1, wrist already at the origin
    assert m.point_errors(aligned, gt)[0, 5] == pytest.approx(np.hypot(0.2, 0.2))


def test_f_score_threshold_is_strict():
    gt = np.array([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]])
    exactly_at = gt + np.array([0.25, 0.0, 0.0])
    assert m.f_scores(exactly_at, gt, [0.25])[0, 0] == 0.0  # distance == threshold does not count
    assert m.f_scores(gt + np.array([0.125, 0.0, 0.0]), gt, [0.25])[0, 0] == 1.0


def test_f_score_partial_match_is_harmonic_mean():
    gt = np.array([[[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0]]])
    # predicted: two points on GT points, two far away -> every GT point's nearest
    # prediction: 0, 0, 1 (2 -> 1), 2 (3 -> 1): 2/4 within 0.5; predictions: 2/4 within
    pred = np.array([[[0.0, 0, 0], [1.0, 0, 0], [1.0, 5.0, 0], [1.0, -5.0, 0]]])
    assert m.f_scores(pred, gt, [0.5])[0, 0] == pytest.approx(0.5)
    # one predicted point only, on GT point 0: P = 1/1, R = 1/4 -> F = 2 * 0.25 / 1.25 = 0.4
    assert m.f_scores(pred[:, :1], gt, [0.5])[0, 0] == pytest.approx(0.4)


def test_f_score_is_zero_when_nothing_matches():
    gt = np.zeros((1, 5, 3))
    pred = gt + 1.0
    np.testing.assert_array_equal(m.f_scores(pred, gt, (0.005, 0.015)), [[0.0, 0.0]])


def test_pck_curve_and_auc_by_hand():
    errors = np.array([[1.0]])
    curve = m.pck_curve(errors, np.array([0.0, 1.0, 2.0]))
    np.testing.assert_array_equal(curve.pck, [0.0, 1.0, 1.0])  # error <= threshold counts
    assert curve.auc == pytest.approx(0.75)  # trapezoid (0.5 + 1) / 2


def test_pck_auc_per_joint_then_averaged():
    errors = np.array([[0.0, 3.0], [0.0, 3.0]])  # joint 0 perfect, joint 1 never within 2
    curve = m.pck_curve(errors, np.array([0.0, 1.0, 2.0]))
    assert curve.auc == pytest.approx(0.5)
    np.testing.assert_allclose(curve.pck, [0.5, 0.5, 0.5])


def test_pck_auc_of_perfect_prediction_is_one_on_benchmark_grid():
    curve = m.pck_curve(np.zeros((4, 21)))
    assert curve.thresholds.shape == (100,) and curve.thresholds[-1] == pytest.approx(0.05)
    assert curve.auc == pytest.approx(1.0)


def test_acceleration_error_of_a_single_bump():
    t = np.arange(6, dtype=np.float64)
    gt = np.zeros((6, 2, 3))
    gt[:, :, 0] = t[:, None] * 0.01  # constant velocity: zero acceleration
    pred = gt.copy()
    pred[2, 0, 1] += 0.003  # joint 0 displaced in frame 2
    errors = m.acceleration_errors(pred, gt)
    # triplets centred on frames 1..4; second differences of the bump: +d, -2d, +d, 0; averaged over 2 joints
    np.testing.assert_allclose(errors, [0.0015, 0.003, 0.0015, 0.0])


def test_acceleration_error_skips_triplets_touching_invalid_frames():
    gt = np.zeros((5, 1, 3))
    pred = gt.copy()
    pred[:, 0, 0] = [0.0, 0.0, 0.0, 0.0, 0.004]
    valid = np.array([True, True, True, False, True])
    assert m.acceleration_errors(pred, gt, valid).shape == (1,)  # only (0, 1, 2) is usable
    np.testing.assert_allclose(m.acceleration_errors(pred, gt), [0.0, 0.0, 0.004])


# ----------------------------------------------------------------------------- objects


def _cube_points() -> np.ndarray:
    grid = np.linspace(-0.05, 0.05, 5)
    return np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), axis=-1).reshape(-1, 3)


def test_add_of_pure_translation_is_its_length():
    pts = _cube_points()
    eye = np.eye(3)
    add = m.add_errors(pts, eye, np.array([0.03, 0.04, 0.0]), eye, np.zeros(3))
    np.testing.assert_allclose(add, [0.05])


def test_adds_is_never_larger_than_add():
    rng = np.random.default_rng(8)
    pts = rng.normal(scale=0.05, size=(300, 3))
    rot_p = Rotation.random(5, random_state=9).as_matrix()
    rot_g = Rotation.random(5, random_state=10).as_matrix()
    t_p, t_g = rng.normal(scale=0.02, size=(5, 3)), rng.normal(scale=0.02, size=(5, 3))
    add = m.add_errors(pts, rot_p, t_p, rot_g, t_g)
    adds = m.adds_errors(pts, rot_p, t_p, rot_g, t_g)
    assert np.all(adds <= add + 1e-12) and np.all(adds < add)


def test_symmetric_object_rotated_about_its_axis_has_zero_adds():
    angles = np.deg2rad(np.arange(0, 360, 5.0))
    ring = np.stack([0.04 * np.cos(angles), 0.04 * np.sin(angles), np.zeros_like(angles)], axis=1)
    pts = np.concatenate([ring + [0, 0, z] for z in (-0.05, 0.0, 0.05)])  # a sampled cylinder about z
    rot = Rotation.from_euler("z", 35, degrees=True).as_matrix()  # a multiple of the 5 deg sampling
    t = np.array([0.0, 0.0, 0.5])
    adds = m.adds_errors(pts, rot, t, np.eye(3), t)
    add = m.add_errors(pts, rot, t, np.eye(3), t)
    assert adds[0] == pytest.approx(0.0, abs=1e-12)
    assert add[0] == pytest.approx(2 * 0.04 * np.sin(np.deg2rad(35) / 2))  # chord of a 35 deg turn


def test_diameter_is_largest_pairwise_distance_and_differs_from_bbox_diagonal():
    rng = np.random.default_rng(11)
    sphere = rng.normal(size=(2000, 3))
    sphere /= np.linalg.norm(sphere, axis=1, keepdims=True)
    sphere = np.concatenate([sphere, [[1.0, 0, 0], [-1.0, 0, 0]]]) * 0.05
    assert m.model_diameter(sphere) == pytest.approx(0.1)
    assert m.bounding_box_diagonal(sphere) == pytest.approx(0.1 * np.sqrt(3), rel=1e-2)
    assert m.model_diameter(_cube_points()) == pytest.approx(0.1 * np.sqrt(3))


def test_diameter_of_flat_point_set_falls_back_to_all_pairs():
    square = np.array([[0.0, 0, 0], [0.03, 0, 0], [0.0, 0.04, 0], [0.03, 0.04, 0], [0.01, 0.01, 0]])
    assert m.model_diameter(square) == pytest.approx(0.05)


def test_pose_accuracy_threshold_is_strict_and_missing_estimates_fail():
    diameter = 1.0
    errors = np.array([0.05, 0.1, 0.2, np.inf])
    assert m.pose_accuracy(errors, diameter) == pytest.approx(0.25)  # only 0.05 < 0.1 * 1.0


def test_ycb_video_auc_cases():
    assert m.ycb_video_auc(np.zeros(10)) == pytest.approx(1.0)
    assert m.ycb_video_auc(np.array([0.2, 0.5, np.inf])) == 0.0
    # VOCap: sorted [0.02, inf] -> area (0.02 - 0) * 0.5 + (0.1 - 0.02) * 0.5 = 0.05 -> 0.5
    assert m.ycb_video_auc(np.array([0.02, 0.2])) == pytest.approx(0.5)
    # [0, 0.05]: steps (0.05 - 0) * 1.0 + (0.1 - 0.05) * 1.0 -> 1.0 ... the toolbox's right-end rule
    assert m.ycb_video_auc(np.array([0.05, 0.0])) == pytest.approx(1.0)
    # [0.02, 0.06, 0.2, 0.3]: (0.02)(0.25) + (0.04)(0.5) + (0.04)(0.5) = 0.045 -> 0.45
    assert m.ycb_video_auc(np.array([0.06, 0.3, 0.02, 0.2])) == pytest.approx(0.45)


def test_rotation_error_degrees():
    rz = Rotation.from_euler("z", [[90], [180], [30]], degrees=True).as_matrix()
    np.testing.assert_allclose(m.rotation_errors_deg(rz, np.eye(3)[None].repeat(3, 0)), [90, 180, 30], atol=1e-6)


def test_translation_and_corner_errors():
    np.testing.assert_allclose(m.translation_errors(np.array([0.0, 0.03, 0.04]), np.zeros(3)), [0.05])
    corners = m.bounding_box_corners(_cube_points())
    assert corners.shape == (8, 3)
    np.testing.assert_allclose(corners[0], [-0.05, -0.05, -0.05])
    np.testing.assert_allclose(corners[7], [0.05, 0.05, 0.05])
    np.testing.assert_allclose(corners[1], [0.05, -0.05, -0.05])  # bit 0 = x
    err = m.mean_corner_errors(corners, np.eye(3), np.array([0.0, 0.0, 0.02]), np.eye(3), np.zeros(3))
    np.testing.assert_allclose(err, [0.02])
    # 180 deg about z moves each corner by twice its xy radius
    rz = Rotation.from_euler("z", 180, degrees=True).as_matrix()
    np.testing.assert_allclose(m.mean_corner_errors(corners, rz, np.zeros(3), np.eye(3), np.zeros(3)),
                               [2 * 0.05 * np.sqrt(2)])


def test_paired_box_iou():
    pred = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    gt = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], dtype=float)
    np.testing.assert_allclose(m.paired_box_iou(pred, gt), [50 / 150, 0.0, 1.0])


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="pred"):
        m.point_errors(np.zeros((2, 21, 2)), np.zeros((2, 21, 3)))
    with pytest.raises(ValueError, match="same shape"):
        m.procrustes_align(np.zeros((1, 21, 3)), np.zeros((1, 20, 3)))
    with pytest.raises(ValueError, match="gt"):
        m.point_errors(np.zeros((21, 3)), np.full((21, 3), np.nan))
    with pytest.raises(ValueError, match="boxes_pred"):
        m.paired_box_iou(np.array([10.0, 0, 0, 10]), np.array([0.0, 0, 10, 10]))
    with pytest.raises(ValueError, match="rot_pred"):
        m.rotation_errors_deg(np.eye(4), np.eye(3))
