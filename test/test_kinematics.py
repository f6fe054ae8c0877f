"""Skeleton measurements, SHO's biomechanical check and mirror helpers."""

import numpy as np
import pytest
import torch

from hoi_perception.config import ConfigError, load_config
from hoi_perception.hand_model.joint_orders import HO3D_BONES, HO3D_FINGER_CHAINS
from hoi_perception.hand_model.kinematics import (
    BiomechanicsLimits,
    bone_lengths,
    check_biomechanics,
    finger_joint_angles,
    mirror_points,
    mirror_pose,
    normalized_bone_lengths,
)

# A flat, straight hand: wrist at the origin, fingers along -x, 9 cm metacarpals,
# phalanges 4, 3, 2 cm (thumb 3.5, 3, 2.5 cm from a 4 cm metacarpal).
FINGER_Z = {0: 0.04, 1: 0.02, 2: 0.0, 3: -0.02, 4: -0.04}


def straight_hand() -> np.ndarray:
    joints = np.zeros((21, 3))
    for f, chain in enumerate(HO3D_FINGER_CHAINS):
        segments = (0.04, 0.035, 0.03, 0.025) if f == 0 else (0.09, 0.04, 0.03, 0.02)
        x = 0.0
        for joint, length in zip(chain[1:], segments):
            x -= length
            joints[joint] = (x, 0.0, FINGER_Z[f])
    return joints


def bend(joints: np.ndarray, finger: int, k: int, degrees: float) -> np.ndarray:
    """Rotate the part of a finger beyond its k-th joint (1-based) about that joint's z axis."""
    chain = HO3D_FINGER_CHAINS[finger]
    out = joints.copy()
    pivot = out[chain[k]]
    a = np.radians(degrees)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    for j in chain[k + 1:]:
        out[j] = pivot + rot @ (out[j] - pivot)
    return out


def test_bone_lengths_of_a_hand_made_skeleton():
    joints = straight_hand()
    lengths = bone_lengths(joints)
    assert lengths.shape == (20,)
    by_child = {c: lengths[i] for i, (_, c) in enumerate(HO3D_BONES)}
    z_offset = np.hypot(0.09, 0.02)  # metacarpal of the index: 9 cm along x, 2 cm across
    assert by_child[1] == pytest.approx(z_offset)
    assert by_child[4] == pytest.approx(0.09)  # wrist to middle base
    assert by_child[5] == pytest.approx(0.04)
    assert by_child[18] == pytest.approx(0.02)  # middle tip
    normalized = normalized_bone_lengths(joints)
    assert normalized[HO3D_BONES.index((0, 4))] == pytest.approx(1.0)
    assert normalized[HO3D_BONES.index((6, 18))] == pytest.approx(0.02 / 0.09)
    # Scale-free: a hand twice as big has the same normalised lengths.
    np.testing.assert_allclose(normalized_bone_lengths(2.0 * joints), normalized)


def test_joint_angles_measure_the_bend_between_consecutive_bones():
    joints = straight_hand()
    angles = finger_joint_angles(joints)
    assert angles.shape == (5, 3)
    # Straight fingers: only the first joint bends, by the slant of the wrist-to-base bone
    # (its base sits |z| off the wrist's line, at 9 cm; the thumb's at 4 cm).
    expected_base = np.degrees(np.arctan2([0.04, 0.02, 0.0, 0.02, 0.04], [0.04, 0.09, 0.09, 0.09, 0.09]))
    np.testing.assert_allclose(angles[:, 0], expected_base, atol=1e-9)
    np.testing.assert_allclose(angles[:, 1:], 0.0, atol=1e-6)
    bent = finger_joint_angles(bend(joints, finger=2, k=2, degrees=35.0))  # middle finger, second joint
    assert bent[2, 1] == pytest.approx(35.0)
    # The bend happens at that joint only.
    changed = ~np.isclose(bent, angles, atol=1e-6)
    assert changed.sum() == 1 and changed[2, 1]


def test_batched_shapes():
    batch = np.broadcast_to(straight_hand(), (2, 3, 21, 3))
    assert bone_lengths(batch).shape == (2, 3, 20)
    assert finger_joint_angles(batch).shape == (2, 3, 5, 3)
    assert check_biomechanics(batch).valid.shape == (2, 3)
    with pytest.raises(ValueError, match=r"\(\.\.\., 21, 3\)"):
        bone_lengths(np.zeros((16, 3)))


def test_angle_limits_at_and_around_ninety_degrees():
    joints = straight_hand()
    exactly = joints.copy()
    # Index tip turned by exactly 90 degrees at the last joint: +y, exact in floating point.
    exactly[17] = exactly[3] + np.array([0.0, 0.02, 0.0])
    check = check_biomechanics(exactly)
    assert check.joint_angles_deg[1, 2] == 90.0
    assert bool(check.valid)
    for degrees, valid in ((89.5, True), (90.5, False), (120.0, False)):
        check = check_biomechanics(bend(joints, finger=4, k=2, degrees=degrees))
        assert bool(check.valid) is valid, degrees
    check = check_biomechanics(bend(joints, finger=4, k=2, degrees=95.0))
    assert check.bad_angles[4, 1] and check.bad_angles.sum() == 1
    assert check.violations() == ["pinky joint 2 angle 95.0 deg"]


def test_bone_length_limit_at_and_around_point_one():
    joints = straight_hand()
    tip_bone = HO3D_BONES.index((6, 18))
    for ratio, valid in ((0.1, True), (0.1001, True), (0.0999, False), (0.0, False)):
        short = joints.copy()
        short[18] = short[6] + np.array([-ratio * 0.09, 0.0, 0.0])
        check = check_biomechanics(short)
        assert bool(check.valid) is valid, ratio
        assert bool(check.short_bones[tip_bone]) is (not valid)
    check = check_biomechanics(short)
    assert check.violations() == ["bone middle3-middle_tip normalised length 0.000"]


def test_custom_limits_and_validation():
    joints = bend(straight_hand(), finger=1, k=2, degrees=60.0)
    assert bool(check_biomechanics(joints).valid)
    assert not bool(check_biomechanics(joints, BiomechanicsLimits(max_joint_angle_deg=45.0)).valid)
    with pytest.raises(ConfigError, match="joint angle limits"):
        load_config(BiomechanicsLimits, {"min_joint_angle_deg": 100.0})


def test_violations_index_into_a_batch():
    good, bad = straight_hand(), bend(straight_hand(), finger=0, k=3, degrees=100.0)
    check = check_biomechanics(np.stack([good, bad]))
    np.testing.assert_array_equal(check.valid, [True, False])
    assert check.violations(0) == []
    assert check.violations(1) == ["thumb joint 3 angle 100.0 deg"]
    with pytest.raises(ValueError, match="select one hand"):
        check.violations(())


def test_mirror_helpers_numpy_and_torch():
    pose = np.arange(48, dtype=np.float64).reshape(1, 48)
    mirrored = mirror_pose(pose)
    np.testing.assert_array_equal(mirrored[0, :6], [0, -1, -2, 3, -4, -5])
    np.testing.assert_array_equal(mirror_pose(mirrored), pose)
    tensor = torch.tensor(pose, dtype=torch.float32, requires_grad=True)
    out = mirror_pose(tensor)
    assert out.dtype == torch.float32 and out.requires_grad
    np.testing.assert_allclose(out.detach().numpy(), mirrored)
    points = np.array([[1.0, 2.0, 3.0], [-4.0, 5.0, -6.0]])
    np.testing.assert_array_equal(mirror_points(points), [[-1.0, 2.0, 3.0], [4.0, 5.0, -6.0]])
    np.testing.assert_array_equal(mirror_points(torch.tensor(points)).numpy(), mirror_points(points))
    with pytest.raises(ValueError, match="multiple of 3"):
        mirror_pose(np.zeros(44))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        mirror_points(np.zeros((4, 2)))


def test_mirrored_rotation_is_the_reflection_of_the_rotation():
    from scipy.spatial.transform import Rotation

    rotvec = np.array([0.3, -0.7, 1.1])
    reflect = np.diag([-1.0, 1.0, 1.0])
    expected = reflect @ Rotation.from_rotvec(rotvec).as_matrix() @ reflect
    np.testing.assert_allclose(Rotation.from_rotvec(mirror_pose(rotvec)).as_matrix(), expected, atol=1e-12)
