import dataclasses

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hoi_perception.config import ConfigError
from hoi_perception.hand_model.kinematics import finger_joint_angles, normalized_bone_lengths
from hoi_perception.pipeline.config import DEFAULT_PERCEPTION_CONFIG, load_estimator_config
from hoi_perception.tracking import FilterConfig, load_filter_config
from hoi_perception.tracking.hand_filter import (
    FrameStatus,
    HandFilterConfig,
    HandFrame,
    HandTrackFilter,
    RejectionReason,
    joint2d_jump,
    mano_pose_jump,
)

K = np.array([[600.0, 0.0, 320.0], [0.0, 600.0, 240.0], [0.0, 0.0, 1.0]])
# (joint ids, root position, bone lengths, tip id), HO-3D order; fingers along +x, bending about +y.
FINGERS = [((1, 2, 3), (0.085, 0.025, 0.0), (0.040, 0.025, 0.020), 17),
           ((4, 5, 6), (0.090, 0.0, 0.0), (0.045, 0.028, 0.022), 18),
           ((7, 8, 9), (0.075, -0.036, 0.0), (0.032, 0.020, 0.018), 20),
           ((10, 11, 12), (0.085, -0.018, 0.0), (0.042, 0.026, 0.021), 19),
           ((13, 14, 15), (0.025, 0.030, 0.0), (0.040, 0.032, 0.027), 16)]


def hand_joints(bend_deg=20.0, pip_bend_deg=None):
    """Wrist-relative joints (21, 3): every finger joint bent by bend_deg (the PIP of the index by pip_bend_deg)."""
    joints = np.zeros((21, 3))
    for ids, root, lengths, tip in FINGERS:
        position, heading = np.array(root), 0.0
        joints[ids[0]] = position
        for level, (child, length) in enumerate(zip(list(ids[1:]) + [tip], lengths)):
            bend = pip_bend_deg if (ids[level] == 2 and pip_bend_deg is not None) else bend_deg
            heading += np.radians(bend)
            position = position + length * np.array([np.cos(heading), 0.0, -np.sin(heading)])
            joints[child] = position
    return joints


def make_frame(stamp, joints_3d=None, translation=(0.0, 0.0, 0.5), pose=None, betas=None, confidence=0.9,
               shift_2d=(0.0, 0.0)):
    joints_3d = hand_joints() if joints_3d is None else joints_3d
    translation = np.asarray(translation, dtype=float)
    uv = (joints_3d + translation) @ K.T
    joints_2d = uv[:, :2] / uv[:, 2:] + np.asarray(shift_2d)
    pose = np.zeros(48) if pose is None else pose
    betas = np.zeros(10) if betas is None else betas
    return HandFrame(stamp, joints_2d, joints_3d, translation, pose, betas, confidence)


def test_biomechanical_measures():
    joints = hand_joints(bend_deg=0.0)
    lengths = normalized_bone_lengths(joints)
    assert lengths[3] == pytest.approx(1.0)  # bone 0 -> 4 (joint 4's bone) is the reference
    assert lengths[4] == pytest.approx(0.045 / 0.090)  # middle proximal phalanx
    angles = finger_joint_angles(hand_joints(bend_deg=0.0, pip_bend_deg=45.0))
    assert angles.shape == (5, 3)  # thumb..pinky, at each finger's three joints
    assert angles[1, 1] == pytest.approx(45.0)  # index PIP
    assert angles[2, 0] == pytest.approx(0.0, abs=1e-6)  # middle MCP: straight on from the wrist


def test_joint2d_jump_is_mean_displacement_in_hand_box_sides():
    previous = np.array([[0.0, 0.0], [100.0, 50.0]] + [[50.0, 25.0]] * 19)  # box side 100 px
    assert joint2d_jump(previous, previous + [30.0, 40.0]) == pytest.approx(0.5)


def test_pose_jump_uses_relative_rotations_across_the_pi_wrap():
    a, b = np.zeros(48), np.zeros(48)
    a[3:6] = [np.pi - 0.01, 0, 0]
    b[3:6] = [-(np.pi - 0.01), 0, 0]  # 0.02 rad away, though the vectors differ by ~2 pi
    assert mano_pose_jump(a, b) == pytest.approx(0.02 ** 2 / 48, rel=1e-6)
    c = np.zeros(48)
    c[:] = 0.1
    # 16 rotations each moved by |(0.1, 0.1, 0.1)| rad
    assert mano_pose_jump(np.zeros(48), c) == pytest.approx(16 * 0.03 / 48, rel=1e-9)


def test_first_frame_resets_and_steady_stream_is_accepted_and_smoothed():
    rng = np.random.default_rng(0)
    truth = np.array([0.0, 0.0, 0.5])
    f = HandTrackFilter()
    first = f.update(make_frame(0.0))
    assert first.state.status is FrameStatus.RESET
    np.testing.assert_allclose(first.hand.translation, truth)
    raw_err, out_err = [], []
    for i in range(1, 150):
        noisy = make_frame(i / 30, translation=truth + rng.normal(0, 0.005, 3))
        result = f.update(noisy)
        assert result.state.status is FrameStatus.ACCEPTED and result.state.reasons == ()
        if i > 30:
            raw_err.append(np.linalg.norm(noisy.translation - truth))
            out_err.append(np.linalg.norm(result.hand.translation - truth))
    assert np.mean(out_err) < 0.7 * np.mean(raw_err)


BOX_SIDE = float(np.max(np.ptp(make_frame(0.0).joints_2d, axis=0)))  # ~200 px at 0.5 m


def test_jumps_are_held_with_their_reason():
    f = HandTrackFilter()
    for i in range(10):
        f.update(make_frame(i / 30))
    before = f.estimate
    jumped = f.update(make_frame(10 / 30, shift_2d=(0.6 * BOX_SIDE, 0.0)))
    assert jumped.state.status is FrameStatus.HELD
    assert jumped.state.reasons == (RejectionReason.JOINT2D_JUMP,)
    assert jumped.state.consecutive_rejections == 1
    assert jumped.hand.stamp == pytest.approx(10 / 30)
    np.testing.assert_array_equal(jumped.hand.joints_3d, before.joints_3d)
    pose = np.zeros(48)
    # 0.25 rad on every finger parameter: mean squared change 15 * 3 * 0.25^2 / 48 = 0.059, above
    # the 0.01 allowed per frame times 2^2 (two frame periods since the last accepted frame).
    pose[3:48] = 0.25
    jumped = f.update(make_frame(11 / 30, pose=pose))
    assert jumped.state.reasons == (RejectionReason.POSE_JUMP,)
    assert jumped.state.consecutive_rejections == 2
    jumped = f.update(make_frame(12 / 30, translation=(0.0, 0.0, 0.9)))  # 40 cm in 3 frames: 4 m/s
    assert RejectionReason.TRANSLATION_JUMP in jumped.state.reasons
    recovered = f.update(make_frame(13 / 30))
    assert recovered.state.status is FrameStatus.ACCEPTED
    assert recovered.state.consecutive_rejections == 0


def test_a_gap_of_dropped_frames_scales_the_allowed_jump():
    f = HandTrackFilter()
    f.update(make_frame(0.0))
    # 0.9 box sides: rejected one frame later, allowed two frames later.
    shift = (0.9 * BOX_SIDE, 0.0)
    assert f.update(make_frame(1 / 30, shift_2d=shift)).state.status is FrameStatus.HELD
    assert f.update(make_frame(2 / 30, shift_2d=shift)).state.status is FrameStatus.ACCEPTED


def test_implausible_hands_are_rejected():
    f = HandTrackFilter()
    assert f.update(make_frame(0.0, confidence=0.2)).state.reasons == (RejectionReason.LOW_CONFIDENCE,)
    bent = f.update(make_frame(0.1, joints_3d=hand_joints(bend_deg=10.0, pip_bend_deg=100.0)))
    assert bent.state.status is FrameStatus.DROPPED and bent.hand is None
    assert bent.state.reasons == (RejectionReason.JOINT_ANGLE,)
    collapsed = hand_joints()
    collapsed[3] = collapsed[2] + 0.001 * (collapsed[3] - collapsed[2])  # index middle phalanx ~0 long
    assert RejectionReason.SHORT_BONE in f.update(make_frame(0.2, joints_3d=collapsed)).state.reasons
    assert f.update(make_frame(0.3)).state.status is FrameStatus.RESET


def test_consecutive_rejections_restart_the_track_where_the_hand_really_is():
    f = HandTrackFilter(HandFilterConfig(reset_after_rejections=3))
    for i in range(10):
        f.update(make_frame(i / 30))
    shift = (3.0 * BOX_SIDE, 0.0)  # the hand is now elsewhere in the image
    statuses = [f.update(make_frame((10 + i) / 30, shift_2d=shift)).state for i in range(3)]
    assert [s.status for s in statuses] == [FrameStatus.HELD, FrameStatus.HELD, FrameStatus.RESET]
    assert [s.consecutive_rejections for s in statuses] == [1, 2, 0]
    assert statuses[-1].reasons == (RejectionReason.JOINT2D_JUMP,)
    after = f.update(make_frame(13 / 30, shift_2d=shift))
    assert after.state.status is FrameStatus.ACCEPTED
    np.testing.assert_allclose(after.hand.joints_2d, make_frame(0, shift_2d=shift).joints_2d, atol=1e-9)


def test_time_going_backwards_restarts_the_track():
    f = HandTrackFilter()
    for i in range(5):
        f.update(make_frame(10 + i / 30))
    assert f.update(make_frame(0.0, translation=(0.1, 0.0, 0.5))).state.status is FrameStatus.RESET


def test_shape_is_a_running_mean_with_two_sigma_rejection_then_frozen():
    rng = np.random.default_rng(2)
    config = HandFilterConfig(shape_rejection_min_samples=5, shape_freeze_after=20)
    f = HandTrackFilter(config)
    betas = [rng.normal(0, 0.1, 10) for _ in range(12)]
    for i, b in enumerate(betas):
        result = f.update(make_frame(i / 30, betas=b))
        assert not result.state.shape_outlier
    np.testing.assert_allclose(result.hand.betas, np.mean(betas, axis=0), atol=1e-12)
    outlier = f.update(make_frame(12 / 30, betas=np.full(10, 2.0)))
    assert outlier.state.status is FrameStatus.ACCEPTED  # the pose is fine; only its shape is ignored
    assert outlier.state.shape_outlier and outlier.state.shape_samples == 12
    np.testing.assert_allclose(outlier.hand.betas, np.mean(betas, axis=0), atol=1e-12)
    for i in range(13, 40):
        result = f.update(make_frame(i / 30, betas=rng.normal(0, 0.1, 10)))
    assert result.state.shape_frozen and result.state.shape_samples == 20
    frozen = result.hand.betas
    result = f.update(make_frame(40 / 30, betas=rng.normal(0, 0.1, 10)))
    np.testing.assert_array_equal(result.hand.betas, frozen)


def test_hand_frame_validation_names_the_field():
    with pytest.raises(ValueError, match="joints_3d"):
        HandFrame(0.0, np.zeros((21, 2)), np.zeros((20, 3)), np.zeros(3), np.zeros(48), np.zeros(10), 1.0)
    with pytest.raises(ValueError, match="mano_pose"):
        HandFrame(0.0, np.zeros((21, 2)), np.zeros((21, 3)), np.zeros(3), np.full(48, np.nan), np.zeros(10), 1.0)


def test_shipped_config_has_sho_defaults_and_validates():
    config = load_filter_config()
    assert isinstance(config, FilterConfig)
    hand = config.hand
    assert (hand.max_joint2d_jump, hand.max_pose_jump, hand.min_bone_length, hand.max_joint_angle_deg,
            hand.shape_outlier_sigmas) == (0.5, 0.01, 0.1, 90.0, 2.0)
    # The YAML and the dataclass defaults agree, except the confidence gate: the shipped model's,
    # chosen on its validation split, the same as perception.yaml's tracking.min_hand_confidence.
    tracking = load_estimator_config(DEFAULT_PERCEPTION_CONFIG).tracking
    assert hand.min_confidence == tracking.min_hand_confidence != HandFilterConfig().min_confidence
    assert hand == dataclasses.replace(HandFilterConfig(), min_confidence=tracking.min_hand_confidence)
    assert config.object == FilterConfig().object
    with pytest.raises(ConfigError, match="hand.joints_3d"):
        load_filter_config(overrides=["hand.joints_3d.min_cutoff_hz=-1"])
    with pytest.raises(ConfigError, match="max_pose_jump"):
        load_filter_config({"hand": {"max_pose_jump": 0}})
    with pytest.raises(ConfigError, match="unknown"):
        load_filter_config({"hand": {"max_pose_jmp": 0.1}})


def test_outputs_stay_root_relative_and_pose_is_smoothed_on_so3():
    f = HandTrackFilter()
    pose = np.zeros(48)
    for i in range(20):
        pose[:3] = Rotation.from_euler("z", 179 if i % 2 == 0 else -179, degrees=True).as_rotvec()
        result = f.update(make_frame(i / 30, pose=pose))
        assert result.state.status in (FrameStatus.RESET, FrameStatus.ACCEPTED)
    np.testing.assert_allclose(result.hand.joints_3d[0], 0.0, atol=1e-12)
    angle = np.degrees(np.linalg.norm(result.hand.mano_pose[:3]))
    assert angle > 178.0
