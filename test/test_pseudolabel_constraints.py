"""Pseudo-label constraints on a MANO hand seen by a known weak-perspective camera.

The base sequence is exact: 2D joints are 1000 px/m times the xy of the 3D joints plus
(100, 100), and the given hand box is the box of the projected mesh, so every spatial
score is at its ideal value and each test moves one quantity across its threshold.
Thresholds are inclusive: a score exactly at the threshold passes (tested by setting
the threshold to the score itself, and to the next float beyond it).
"""

import dataclasses

import numpy as np
import pytest
import torch

from hoi_perception.geometry.camera import box_from_points
from hoi_perception.hand_model.kinematics import finger_joint_angles
from hoi_perception.hand_model.mano import HandModel
from hoi_perception.tracking.hand_filter import joint2d_jump, mano_pose_jump
from hoi_training.pseudolabel.constraints import (
    CONSTRAINTS,
    Constraint,
    ConstraintConfig,
    SequencePredictions,
    compute_scores,
    filter_sequence,
    sum_counts,
    temporal_partners,
)

PIXELS_PER_METRE = 1000.0
OFFSET = 100.0


@pytest.fixture(scope="module")
def hand():
    """A right hand facing the camera, slightly curled: pose (48,), betas, joints (21, 3), vertices."""
    model = HandModel("right")
    pose = np.zeros(48)
    pose[0] = np.pi / 2  # palm towards the camera
    pose[3:] = 0.1 * np.sin(np.arange(45))
    with torch.no_grad():
        batch = torch.tensor(pose[None], dtype=torch.float32)
        out = model(batch[:, :3], batch[:, 3:])
    return {"pose": pose, "joints": out.joints[0].double().numpy(), "vertices": out.vertices[0].double().numpy()}


def project(points):
    return PIXELS_PER_METRE * points[..., :2] + OFFSET


def make_sequence(hand, count=8, frame_ids=None, shift_px=0.5, seed=0):
    """A hand drifting right by ``shift_px`` per frame, with slightly varying betas."""
    rng = np.random.default_rng(seed)
    frame_ids = np.arange(count) if frame_ids is None else np.asarray(frame_ids)
    count = len(frame_ids)
    drift = np.zeros((count, 1, 3))
    drift[:, 0, 0] = shift_px * np.arange(count) / PIXELS_PER_METRE
    joints = hand["joints"][None] + drift
    vertices = hand["vertices"][None] + drift
    return SequencePredictions(
        frame_ids=frame_ids,
        joints_2d=project(joints),
        joints_3d=joints,
        vertices=vertices,
        hand_pose=np.repeat(hand["pose"][None], count, axis=0),
        betas=rng.normal(scale=0.1, size=(count, 10)),
        hand_boxes=np.stack([box_from_points(project(v)) for v in vertices]),
        timestamps=frame_ids / 30.0,
        sequence="seq",
    )


def replace_frame(predictions, index, **changes):
    """A copy of the sequence with arrays of frame ``index`` replaced."""
    arrays = {f.name: getattr(predictions, f.name) for f in dataclasses.fields(predictions)}
    for name, value in changes.items():
        arrays[name] = arrays[name].copy()
        arrays[name][index] = value
    return SequencePredictions(**arrays)


def with_joints_3d(predictions, index, joints):
    """Frame ``index`` with new 3D joints and the matching exact 2D joints."""
    return replace_frame(predictions, index, joints_3d=joints, joints_2d=project(joints))


def rejected_frames(result):
    return {int(i): result.reasons(int(i)) for i in np.flatnonzero(~result.kept)}


SPATIAL_ONLY = {"temporal": False, "shape": False}
TEMPORAL_ONLY = {"spatial": False, "shape": False}


def test_clean_sequence_is_kept_with_ideal_scores(hand):
    predictions = make_sequence(hand)
    result = filter_sequence(predictions)
    assert result.kept.all()
    np.testing.assert_allclose(result.scores.box_iou, 1.0, atol=1e-9)
    np.testing.assert_allclose(result.scores.reprojection_distance, 0.0, atol=1e-9)
    np.testing.assert_allclose(result.scores.camera_scale, PIXELS_PER_METRE, rtol=1e-9)
    np.testing.assert_allclose(result.scores.pose_change, 0.0, atol=1e-12)
    side = np.max(predictions.hand_boxes[0, 2:] - predictions.hand_boxes[0, :2])
    np.testing.assert_allclose(result.scores.joint2d_change, 0.5 / side, rtol=1e-9)
    assert result.counts() == {"frames": 8, "kept": 8, "dropped": 0,
                               **{f"rejected_by.{c.value}": 0 for c in CONSTRAINTS}}
    np.testing.assert_array_equal(result.timestamps, predictions.timestamps)


@pytest.mark.parametrize("fraction, kept", [(0.59, False), (0.61, True)])
def test_box_iou_just_below_and_above_threshold(hand, fraction, kept):
    predictions = make_sequence(hand)
    x0, y0, x1, y1 = predictions.hand_boxes[3]
    # A given box inside the mesh box covering `fraction` of its width has IoU = fraction.
    predictions = replace_frame(predictions, 3, hand_boxes=[x0, y0, x0 + fraction * (x1 - x0), y1])
    result = filter_sequence(predictions, ConstraintConfig(**SPATIAL_ONLY))
    assert result.scores.box_iou[3] == pytest.approx(fraction, abs=1e-9)
    assert rejected_frames(result) == ({} if kept else {3: ["box_iou"]})


def test_box_iou_exactly_at_threshold_passes(hand):
    predictions = make_sequence(hand)
    x0, y0, x1, y1 = predictions.hand_boxes[3]
    predictions = replace_frame(predictions, 3, hand_boxes=[x0, y0, x0 + 0.6 * (x1 - x0), y1])
    iou = compute_scores(predictions, ConstraintConfig())[0].box_iou[3]
    at = filter_sequence(predictions, ConstraintConfig(min_box_iou=float(iou), **SPATIAL_ONLY))
    assert at.kept[3]
    beyond = filter_sequence(predictions, ConstraintConfig(min_box_iou=float(np.nextafter(iou, 2.0)), **SPATIAL_ONLY))
    assert rejected_frames(beyond) == {3: ["box_iou"]}


def _reprojection_case(hand, target):
    """Frame 5's 2D joints perturbed so the post-fit residual norm is `target` hand-box sides."""
    predictions = make_sequence(hand)
    rng = np.random.default_rng(7)
    # An offset orthogonal to what the camera fit can absorb (scale and shift) leaves the camera unchanged.
    xy = predictions.joints_3d[5, :, :2]
    basis = np.stack([xy.ravel(), np.tile([1.0, 0.0], 21), np.tile([0.0, 1.0], 21)], axis=1)
    q, _ = np.linalg.qr(basis)
    direction = rng.normal(size=42)
    direction = (direction - q @ (q.T @ direction)).reshape(21, 2)
    probe = replace_frame(predictions, 5, joints_2d=predictions.joints_2d[5] + direction)
    unit = compute_scores(probe, ConstraintConfig())[0].reprojection_distance[5]  # residual is linear in the offset
    return replace_frame(predictions, 5, joints_2d=predictions.joints_2d[5] + direction * target / unit)


@pytest.mark.parametrize("target, kept", [(0.64, True), (0.66, False)])
def test_reprojection_just_below_and_above_threshold(hand, target, kept):
    predictions = _reprojection_case(hand, target)
    result = filter_sequence(predictions, ConstraintConfig(**SPATIAL_ONLY))
    assert result.scores.reprojection_distance[5] == pytest.approx(target, rel=1e-9)
    assert result.scores.box_iou[5] == pytest.approx(1.0)
    assert result.scores.camera_scale[5] == pytest.approx(PIXELS_PER_METRE)
    assert rejected_frames(result) == ({} if kept else {5: ["reprojection"]})


def test_reprojection_exactly_at_threshold_passes(hand):
    predictions = _reprojection_case(hand, 0.65)
    distance = compute_scores(predictions, ConstraintConfig())[0].reprojection_distance[5]
    at = filter_sequence(predictions, ConstraintConfig(max_reprojection_distance=float(distance), **SPATIAL_ONLY))
    assert at.kept[5]
    beyond = filter_sequence(predictions, ConstraintConfig(max_reprojection_distance=float(np.nextafter(distance, 0)),
                                                           **SPATIAL_ONLY))
    assert rejected_frames(beyond) == {5: ["reprojection"]}


def test_reprojection_mean_joint_reduction_and_mirrored_hand(hand):
    predictions = _reprojection_case(hand, 0.66)
    config = ConstraintConfig(reprojection_reduction="mean_joint", **SPATIAL_ONLY)
    result = filter_sequence(predictions, config)
    # The same residual averaged per joint is far smaller than its norm over 21 joints.
    assert result.scores.reprojection_distance[5] < 0.66 / np.sqrt(21) * 1.5
    assert result.kept[5]
    # 2D joints that are the 3D joints turned by 180 degrees fit with a negative scale: rejected.
    joints = predictions.joints_3d[2]
    mirrored = replace_frame(predictions, 2, joints_2d=-PIXELS_PER_METRE * joints[:, :2] + 400.0)
    result = filter_sequence(mirrored, ConstraintConfig(**SPATIAL_ONLY))
    assert result.scores.camera_scale[2] == pytest.approx(-PIXELS_PER_METRE)
    assert "reprojection" in result.reasons(2)


def _shortened_tip(joints, normalized_length):
    """Index fingertip (17) moved along its bone so the bone is `normalized_length` palm lengths."""
    joints = joints.copy()
    palm = np.linalg.norm(joints[4] - joints[0])
    direction = (joints[17] - joints[3]) / np.linalg.norm(joints[17] - joints[3])
    joints[17] = joints[3] + direction * normalized_length * palm
    return joints


@pytest.mark.parametrize("length, kept", [(0.09, False), (0.11, True)])
def test_bone_length_just_below_and_above_threshold(hand, length, kept):
    predictions = make_sequence(hand)
    predictions = with_joints_3d(predictions, 4, _shortened_tip(predictions.joints_3d[4], length))
    result = filter_sequence(predictions, ConstraintConfig(**SPATIAL_ONLY))
    assert result.scores.min_normalized_bone_length[4] == pytest.approx(length, rel=1e-9)
    assert rejected_frames(result) == ({} if kept else {4: ["bone_length"]})


def test_bone_length_exactly_at_threshold_passes(hand):
    predictions = make_sequence(hand)
    predictions = with_joints_3d(predictions, 4, _shortened_tip(predictions.joints_3d[4], 0.1))
    length = compute_scores(predictions, ConstraintConfig())[0].min_normalized_bone_length[4]
    at = filter_sequence(predictions, ConstraintConfig(min_normalized_bone_length=float(length), **SPATIAL_ONLY))
    assert at.kept[4]
    beyond = filter_sequence(predictions, ConstraintConfig(
        min_normalized_bone_length=float(np.nextafter(length, 1.0)), **SPATIAL_ONLY))
    assert rejected_frames(beyond) == {4: ["bone_length"]}


def _bent_tip(joints, angle_deg):
    """Index fingertip (17) turned about joint 3 so the last joint bends by `angle_deg`."""
    joints = joints.copy()
    along = joints[3] - joints[2]
    along /= np.linalg.norm(along)
    across = np.cross(along, [0.0, 0.0, 1.0])
    across /= np.linalg.norm(across)
    length = np.linalg.norm(joints[17] - joints[3])
    angle = np.radians(angle_deg)
    joints[17] = joints[3] + length * (np.cos(angle) * along + np.sin(angle) * across)
    return joints


@pytest.mark.parametrize("angle, kept", [(89.0, True), (91.0, False)])
def test_joint_angle_just_below_and_above_threshold(hand, angle, kept):
    predictions = make_sequence(hand)
    joints = _bent_tip(predictions.joints_3d[6], angle)
    assert finger_joint_angles(joints)[1, 2] == pytest.approx(angle)  # index finger, third joint
    predictions = with_joints_3d(predictions, 6, joints)
    result = filter_sequence(predictions, ConstraintConfig(**SPATIAL_ONLY))
    assert result.scores.max_joint_angle_deg[6] == pytest.approx(angle)
    assert rejected_frames(result) == ({} if kept else {6: ["joint_angle"]})


def test_joint_angle_exactly_at_threshold_passes(hand):
    predictions = make_sequence(hand)
    predictions = with_joints_3d(predictions, 6, _bent_tip(predictions.joints_3d[6], 90.0))
    angle = compute_scores(predictions, ConstraintConfig())[0].max_joint_angle_deg[6]
    at = filter_sequence(predictions, ConstraintConfig(max_joint_angle_deg=float(angle), **SPATIAL_ONLY))
    assert at.kept[6]
    beyond = filter_sequence(predictions, ConstraintConfig(max_joint_angle_deg=float(np.nextafter(angle, 0)),
                                                           **SPATIAL_ONLY))
    assert rejected_frames(beyond) == {6: ["joint_angle"]}


def _jumped_2d(hand, change):
    """A still hand whose frame 4 2D joints are shifted by `change` hand-box sides."""
    predictions = make_sequence(hand, shift_px=0.0)
    side = np.max(predictions.hand_boxes[3, 2:] - predictions.hand_boxes[3, :2])
    return replace_frame(predictions, 4, joints_2d=predictions.joints_2d[4] + np.array([change * side, 0.0]))


@pytest.mark.parametrize("change, kept", [(0.49, True), (0.51, False)])
def test_joint2d_change_just_below_and_above_threshold(hand, change, kept):
    result = filter_sequence(_jumped_2d(hand, change), ConstraintConfig(**TEMPORAL_ONLY))
    assert result.scores.joint2d_change[4] == pytest.approx(change, rel=1e-9)
    # Frame 5 is compared with frame 4 and sees the same jump back.
    assert result.scores.joint2d_change[5] == pytest.approx(change, rel=1e-6)
    assert rejected_frames(result) == ({} if kept else {4: ["joint2d_change"], 5: ["joint2d_change"]})


def test_joint2d_change_exactly_at_threshold_passes(hand):
    predictions = _jumped_2d(hand, 0.5)
    change = compute_scores(predictions, ConstraintConfig())[0].joint2d_change[4]
    at = filter_sequence(predictions, ConstraintConfig(max_joint2d_change=float(change), **TEMPORAL_ONLY))
    assert at.kept[4]
    beyond = filter_sequence(predictions, ConstraintConfig(max_joint2d_change=float(np.nextafter(change, 0)),
                                                           **TEMPORAL_ONLY))
    assert 4 in rejected_frames(beyond)


def _jumped_pose(hand, mean_squared_angle):
    """A still hand whose frame 4 turns one finger joint by the angle giving `mean_squared_angle`."""
    predictions = make_sequence(hand, shift_px=0.0)
    hand_pose = predictions.hand_pose.copy()
    hand_pose[:, 9:12] = 0.0  # index joint 3 unrotated in every frame ...
    hand_pose[4, 11] = np.sqrt(mean_squared_angle * 48)  # ... but turned about z in frame 4
    return replace_frame(predictions, slice(None), hand_pose=hand_pose)


@pytest.mark.parametrize("value, kept", [(0.0099, True), (0.0101, False)])
def test_pose_change_just_below_and_above_threshold(hand, value, kept):
    result = filter_sequence(_jumped_pose(hand, value), ConstraintConfig(**TEMPORAL_ONLY))
    assert result.scores.pose_change[4] == pytest.approx(value, rel=1e-9)
    assert rejected_frames(result) == ({} if kept else {4: ["pose_change"], 5: ["pose_change"]})


def test_pose_change_exactly_at_threshold_passes_and_literal_norm(hand):
    predictions = _jumped_pose(hand, 0.01)
    change = compute_scores(predictions, ConstraintConfig())[0].pose_change[4]
    at = filter_sequence(predictions, ConstraintConfig(max_pose_change=float(change), **TEMPORAL_ONLY))
    assert at.kept.all()
    beyond = filter_sequence(predictions, ConstraintConfig(max_pose_change=float(np.nextafter(change, 0)),
                                                           **TEMPORAL_ONLY))
    assert set(rejected_frames(beyond)) == {4, 5}
    # SHO's literal |theta_t - theta_t-1|_2: the raw difference, sqrt(0.01 * 48) = 0.693 rad here.
    literal = compute_scores(predictions, ConstraintConfig(pose_change_metric="axis_angle_norm"))[0]
    assert literal.pose_change[4] == pytest.approx(np.sqrt(0.48))


def test_temporal_scores_match_the_runtime_filter(hand):
    predictions = make_sequence(hand, shift_px=7.0)
    rng = np.random.default_rng(3)
    hand_pose = predictions.hand_pose + rng.normal(scale=0.05, size=predictions.hand_pose.shape)
    predictions = replace_frame(predictions, slice(None), hand_pose=hand_pose)
    config = ConstraintConfig(scale_reference="joints_2d", joint2d_change_reduction="mean_joint")
    scores = compute_scores(predictions, config)[0]
    for t in range(1, len(predictions)):
        assert scores.joint2d_change[t] == pytest.approx(
            joint2d_jump(predictions.joints_2d[t - 1], predictions.joints_2d[t]), rel=1e-9)
        assert scores.pose_change[t] == pytest.approx(
            mano_pose_jump(predictions.hand_pose[t - 1], predictions.hand_pose[t]), rel=1e-9)


def test_temporal_partners_respect_gaps_and_frame_step():
    np.testing.assert_array_equal(temporal_partners(np.array([0, 1, 2, 5, 6, 9]), 1), [1, 0, 1, 4, 3, -1])
    np.testing.assert_array_equal(temporal_partners(np.array([0, 2, 4, 5]), 2), [1, 0, 1, -1])
    np.testing.assert_array_equal(temporal_partners(np.array([7]), 1), [-1])


def test_frames_across_a_gap_are_not_compared_and_isolated_frames_drop(hand):
    predictions = make_sequence(hand, frame_ids=[0, 1, 2, 5, 6, 9], shift_px=0.0)
    side = np.max(predictions.hand_boxes[0, 2:] - predictions.hand_boxes[0, :2])
    # Frames 5 and 6 (positions 3 and 4) are far from frame 2, but the gap separates them.
    joints_2d = predictions.joints_2d.copy()
    joints_2d[3:] += np.array([2.0 * side, 0.0])
    predictions = replace_frame(predictions, slice(None), joints_2d=joints_2d)
    result = filter_sequence(predictions, ConstraintConfig(**TEMPORAL_ONLY))
    assert rejected_frames(result) == {5: ["isolated_frame"]}
    assert np.isnan(result.scores.joint2d_change[5])
    assert filter_sequence(predictions, ConstraintConfig(keep_isolated_frames=True, **TEMPORAL_ONLY)).kept.all()
    # The same frames without the gap: the jump between positions 2 and 3 is caught.
    contiguous = replace_frame(predictions, slice(None), frame_ids=np.arange(6))
    result = filter_sequence(contiguous, ConstraintConfig(**TEMPORAL_ONLY))
    assert rejected_frames(result) == {3: ["joint2d_change"]}
    # The first frame of a run is compared with the next frame.
    assert result.scores.joint2d_change[0] == pytest.approx(0.0, abs=1e-12)


def _shape_case(hand, first):
    """Five frames whose betas differ only in component 0: [first, -first/4 x 4]; sigma_C = |first| / 2."""
    predictions = make_sequence(hand, count=5, shift_px=0.0)
    betas = np.zeros((5, 10))
    betas[:, 0] = [first, -first / 4, -first / 4, -first / 4, -first / 4]
    return replace_frame(predictions, slice(None), betas=betas)


def test_shape_filter_two_sigma_exactly_at_and_around(hand):
    predictions = _shape_case(hand, 2.0)  # deviations 2, 0.5 x 4; sigma_C = sqrt(5 / 5) = 1: frame 0 is at 2 sigma
    at = filter_sequence(predictions, ConstraintConfig(spatial=False, temporal=False))
    assert at.shape_sigma == 1.0
    assert at.scores.shape_deviation[0] == 2.0
    assert at.kept.all()
    above = filter_sequence(predictions, ConstraintConfig(spatial=False, temporal=False, shape_max_sigmas=1.999))
    assert rejected_frames(above) == {0: ["shape"]}
    below = filter_sequence(predictions, ConstraintConfig(spatial=False, temporal=False, shape_max_sigmas=2.001))
    assert below.kept.all()


def test_shape_statistics_use_only_frames_that_passed(hand):
    predictions = make_sequence(hand, count=10, shift_px=0.0)
    betas = np.zeros((10, 10))
    betas[:, 0] = np.linspace(-0.1, 0.1, 10)
    betas[7, 0] = 50.0  # an outlier shape ...
    x0, y0, x1, y1 = predictions.hand_boxes[7]
    predictions = replace_frame(predictions, slice(None), betas=betas)
    predictions = replace_frame(predictions, 7, hand_boxes=[x0, y0, x0 + 0.3 * (x1 - x0), y1])  # ... on a bad box
    result = filter_sequence(predictions, ConstraintConfig(temporal=False))
    assert rejected_frames(result) == {7: ["box_iou"]}  # judged by the box, not also by the shape
    passed = np.ones(10, dtype=bool)
    passed[7] = False
    np.testing.assert_allclose(result.shape_mean, betas[passed].mean(0))
    spread = np.sum((betas[passed] - betas[passed].mean(0)) ** 2, axis=1)
    assert result.shape_sigma == pytest.approx(np.sqrt(np.mean(spread)))
    # Without the spatial constraints frame 7 joins the population and is the shape outlier.
    result = filter_sequence(predictions, ConstraintConfig(spatial=False, temporal=False))
    assert rejected_frames(result) == {7: ["shape"]}


def test_ablation_switches_and_counts(hand):
    predictions = make_sequence(hand, count=12, shift_px=0.0)
    x0, y0, x1, y1 = predictions.hand_boxes[2]
    predictions = replace_frame(predictions, 2, hand_boxes=[x0, y0, x0 + 0.3 * (x1 - x0), y1])  # spatial
    side = np.max(predictions.hand_boxes[8, 2:] - predictions.hand_boxes[8, :2])
    predictions = replace_frame(predictions, 9, joints_2d=predictions.joints_2d[9] + [side, 0.0])  # temporal
    betas = np.zeros((12, 10))
    betas[:, 1] = np.linspace(-0.1, 0.1, 12)
    betas[5, 1] = 3.0  # shape
    predictions = replace_frame(predictions, slice(None), betas=betas)
    # Frame 9's 2D shift also moves its fitted camera, so its mesh box leaves the given box: spatial too.
    expected = {
        "all": {2: ["box_iou"], 9: ["box_iou", "joint2d_change"], 10: ["joint2d_change"], 5: ["shape"]},
        "no_spatial": {9: ["joint2d_change"], 10: ["joint2d_change"], 5: ["shape"]},
        "no_temporal": {2: ["box_iou"], 9: ["box_iou"], 5: ["shape"]},
        "no_shape": {2: ["box_iou"], 9: ["box_iou", "joint2d_change"], 10: ["joint2d_change"]},
        "none": {},
    }
    configs = {
        "all": ConstraintConfig(),
        "no_spatial": ConstraintConfig(spatial=False),
        "no_temporal": ConstraintConfig(temporal=False),
        "no_shape": ConstraintConfig(shape=False),
        "none": ConstraintConfig(spatial=False, temporal=False, shape=False),
    }
    for name, config in configs.items():
        result = filter_sequence(predictions, config)
        assert rejected_frames(result) == expected[name], name
    counts = filter_sequence(predictions).counts()
    assert counts["frames"] == 12 and counts["kept"] == 8 and counts["dropped"] == 4
    assert counts["rejected_by.box_iou"] == 2
    assert counts["rejected_by.joint2d_change"] == 2
    assert counts["rejected_by.shape"] == 1
    assert counts["rejected_by.pose_change"] == 0
    assert sum_counts([counts, counts])["rejected_by.box_iou"] == 4
    arrays = {**predictions.to_arrays(), **filter_sequence(predictions).to_arrays()}
    np.testing.assert_array_equal(np.flatnonzero(arrays["rejected_by.box_iou"]), [2, 9])
    np.testing.assert_array_equal(np.flatnonzero(~arrays["kept"]), [2, 5, 9, 10])
    assert arrays["score.camera_translation"].shape == (12, 2)
    assert arrays["vertices"].dtype == np.float32 and arrays["vertices"].shape == (12, 778, 3)
    assert all(len(a) == 12 for a in arrays.values())
    np.testing.assert_array_equal(np.flatnonzero(filter_sequence(predictions).rejected(Constraint.SHAPE)), [5])


def with_teacher(predictions, teacher):
    """The sequence with a teacher's (T, 21, 2) joints."""
    return dataclasses.replace(predictions, teacher_joints_2d=teacher)


def test_teacher_distance_passes_agreeing_joints_and_rejects_shifted_and_missing_ones(hand):
    predictions = make_sequence(hand)
    side = np.max(predictions.hand_boxes[:, 2:] - predictions.hand_boxes[:, :2], axis=1)
    threshold = ConstraintConfig().max_teacher_2d_distance
    teacher = predictions.joints_2d.copy()
    teacher[2] += [0.0, 0.99 * threshold * side[2]]  # every joint moved just under the threshold
    teacher[4] += [1.01 * threshold * side[4], 0.0]  # ... and just over it
    teacher[6] = np.nan  # the teacher found no matching hand
    result = filter_sequence(with_teacher(predictions, teacher))
    expected = np.zeros(8)
    expected[2], expected[4], expected[6] = 0.99 * threshold, 1.01 * threshold, np.nan
    np.testing.assert_allclose(result.scores.teacher_2d, expected, atol=1e-9)
    assert rejected_frames(result) == {4: ["teacher_2d"], 6: ["teacher_2d"]}
    counts = result.counts()
    assert counts["rejected_by.teacher_2d"] == 2 and counts["kept"] == 6 and counts["dropped"] == 2
    arrays = {**with_teacher(predictions, teacher).to_arrays(), **result.to_arrays()}
    np.testing.assert_array_equal(np.flatnonzero(arrays["rejected_by.teacher_2d"]), [4, 6])
    np.testing.assert_allclose(arrays["score.teacher_2d"], expected, atol=1e-9)
    assert arrays["teacher_joints_2d"].dtype == np.float32 and arrays["teacher_joints_2d"].shape == (8, 21, 2)
    # The ablation switch keeps the scores and rejects nothing.
    off = filter_sequence(with_teacher(predictions, teacher), ConstraintConfig(teacher=False))
    assert off.kept.all()
    np.testing.assert_allclose(off.scores.teacher_2d, expected, atol=1e-9)


def test_teacher_distance_exactly_at_threshold_passes(hand):
    predictions = make_sequence(hand)
    teacher = predictions.joints_2d.copy()
    teacher[3] += [7.0, -3.0]
    predictions = with_teacher(predictions, teacher)
    distance = compute_scores(predictions, ConstraintConfig())[0].teacher_2d[3]
    at = filter_sequence(predictions, ConstraintConfig(max_teacher_2d_distance=float(distance)))
    assert at.kept[3]
    beyond = filter_sequence(predictions, ConstraintConfig(max_teacher_2d_distance=float(np.nextafter(distance, 0))))
    assert rejected_frames(beyond) == {3: ["teacher_2d"]}


def test_teacher_distance_is_the_mean_joint_distance_over_the_scale_reference(hand):
    predictions = make_sequence(hand)
    teacher = predictions.joints_2d.copy()
    teacher[1, :7] += [3.0, 4.0]  # 7 of the 21 joints 5 px away: mean 5/3 px
    predictions = with_teacher(predictions, teacher)
    box_side = np.max(predictions.hand_boxes[1, 2:] - predictions.hand_boxes[1, :2])
    joints_side = np.max(predictions.joints_2d[1].max(0) - predictions.joints_2d[1].min(0))
    for reference, side in (("hand_box", box_side), ("joints_2d", joints_side)):
        scores, _ = compute_scores(predictions, ConstraintConfig(scale_reference=reference))
        assert scores.teacher_2d[1] == pytest.approx(5.0 / 3.0 / side, rel=1e-9), reference


def test_without_a_teacher_the_constraint_scores_nan_and_rejects_nothing(hand):
    result = filter_sequence(make_sequence(hand))
    assert np.isnan(result.scores.teacher_2d).all() and not result.rejected(Constraint.TEACHER_2D).any()
    assert result.counts()["rejected_by.teacher_2d"] == 0 and result.kept.all()


def test_a_frame_the_teacher_rejects_is_left_out_of_the_shape_statistics(hand):
    predictions = make_sequence(hand, count=10, shift_px=0.0)
    betas = np.zeros((10, 10))
    betas[:, 1] = np.linspace(-0.1, 0.1, 10)
    betas[7, 1] = 3.0
    teacher = predictions.joints_2d.copy()
    teacher[7] = np.nan
    predictions = with_teacher(replace_frame(predictions, slice(None), betas=betas), teacher)
    result = filter_sequence(predictions)
    assert rejected_frames(result) == {7: ["teacher_2d"]}  # not also the shape outlier
    np.testing.assert_allclose(result.shape_mean, np.delete(betas, 7, axis=0).mean(0))


def test_degenerate_prediction_fails_instead_of_raising(hand):
    predictions = make_sequence(hand)
    predictions = replace_frame(predictions, 1, joints_3d=np.zeros((21, 3)), vertices=np.zeros((778, 3)))
    result = filter_sequence(predictions, ConstraintConfig(**SPATIAL_ONLY))
    assert np.isnan(result.scores.camera_scale[1])
    # Zero-length bones have no angle (0 degrees), so the joint-angle check alone would pass them.
    assert set(result.reasons(1)) == {"box_iou", "reprojection", "bone_length"}


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"joints_2d: expected shape \(3, 21, 2\)"):
        SequencePredictions(frame_ids=np.arange(3), joints_2d=np.zeros((3, 20, 2)), joints_3d=np.zeros((3, 21, 3)),
                            vertices=np.zeros((3, 778, 3)), hand_pose=np.zeros((3, 48)), betas=np.zeros((3, 10)),
                            hand_boxes=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="strictly increasing"):
        SequencePredictions(frame_ids=np.array([0, 2, 1]), joints_2d=np.zeros((3, 21, 2)),
                            joints_3d=np.zeros((3, 21, 3)), vertices=np.zeros((3, 778, 3)),
                            hand_pose=np.zeros((3, 48)), betas=np.zeros((3, 10)), hand_boxes=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="min_box_iou"):
        ConstraintConfig(min_box_iou=1.5).validate()
    with pytest.raises(ValueError, match="frame_step"):
        ConstraintConfig(frame_step=0).validate()
    for bad in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="max_teacher_2d_distance: expected a positive number"):
            ConstraintConfig(max_teacher_2d_distance=bad).validate()
    with pytest.raises(ValueError, match=r"teacher_joints_2d: expected shape \(3, 21, 2\)"):
        SequencePredictions(frame_ids=np.arange(3), joints_2d=np.zeros((3, 21, 2)), joints_3d=np.zeros((3, 21, 3)),
                            vertices=np.zeros((3, 778, 3)), hand_pose=np.zeros((3, 48)), betas=np.zeros((3, 10)),
                            hand_boxes=np.zeros((3, 4)), teacher_joints_2d=np.zeros((2, 21, 2)))


def test_shipped_config_loads_with_the_paper_values():
    from hoi_perception.config import ConfigError, load_config
    from hoi_training.pseudolabel.config import PseudoLabelConfig, load_pseudolabel_config

    config = load_pseudolabel_config()
    assert config == load_config(PseudoLabelConfig, None)  # the YAML spells out the defaults
    c = config.constraints
    assert (c.min_box_iou, c.max_reprojection_distance, c.min_normalized_bone_length, c.max_joint_angle_deg,
            c.max_joint2d_change, c.max_pose_change, c.shape_max_sigmas) == (0.6, 0.65, 0.1, 90.0, 0.5, 0.01, 2.0)
    assert len(config.tta.augmentations()) == 8
    ablation = load_pseudolabel_config(overrides=["constraints.temporal=false"])
    assert not ablation.constraints.temporal and ablation.constraints.spatial
    with pytest.raises(ConfigError, match="frame_step"):
        load_pseudolabel_config(overrides=["source.kind=video", "source.video_stride=2"])
    with pytest.raises(ConfigError, match="reprojection_reduction"):
        load_pseudolabel_config(overrides=["constraints.reprojection_reduction=max"])
    # The teacher is off unless asked for; its settings are checked when it is.
    assert config.teacher.kind == "none" and not config.teacher.enabled and c.teacher
    taught = load_pseudolabel_config(overrides=["teacher.kind=mediapipe", "constraints.max_teacher_2d_distance=0.2"])
    assert taught.teacher.enabled and taught.constraints.max_teacher_2d_distance == 0.2
    with pytest.raises(ConfigError, match="teacher.kind.*'openpose' is not one of"):
        load_pseudolabel_config(overrides=["teacher.kind=openpose"])
    with pytest.raises(ConfigError, match=r"teacher.min_box_iou: expected a value in \(0, 1\]"):
        load_pseudolabel_config(overrides=["teacher.kind=mediapipe", "teacher.min_box_iou=0"])
    with pytest.raises(ConfigError, match="max_teacher_2d_distance"):
        load_pseudolabel_config(overrides=["constraints.max_teacher_2d_distance=-1"])


def test_a_sequence_without_frames_keeps_nothing():
    empty = SequencePredictions(
        frame_ids=np.zeros(0, dtype=np.int64), joints_2d=np.zeros((0, 21, 2)), joints_3d=np.zeros((0, 21, 3)),
        vertices=np.zeros((0, 778, 3)), hand_pose=np.zeros((0, 48)), betas=np.zeros((0, 10)),
        hand_boxes=np.zeros((0, 4)), timestamps=np.zeros(0), sequence="empty")
    result = filter_sequence(empty)
    assert result.kept.shape == (0,) and result.rejected_by.shape == (0, len(CONSTRAINTS))
