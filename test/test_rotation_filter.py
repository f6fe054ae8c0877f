import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hoi_perception.tracking.one_euro import OneEuroConfig, OneEuroFilter
from hoi_perception.tracking.rotation_filter import (
    SE3OneEuroFilter,
    SO3OneEuroFilter,
    align_quaternion_sign,
    quaternion_exp,
    quaternion_log,
    quaternion_multiply,
    quaternion_to_rotation_matrix,
    rotation_angle_between,
    rotation_matrix_to_quaternion,
)


def angle_deg(a, b):
    return np.degrees(rotation_angle_between(a, b))


def test_quaternion_helpers_agree_with_scipy():
    a, b = Rotation.random(20, random_state=1), Rotation.random(20, random_state=2)
    product = quaternion_multiply(a.as_quat(scalar_first=True), b.as_quat(scalar_first=True))
    expected = (a * b).as_quat(scalar_first=True)
    np.testing.assert_allclose(align_quaternion_sign(product, expected), expected, atol=1e-12)
    rotvec = a.as_rotvec()
    np.testing.assert_allclose(quaternion_log(a.as_quat(scalar_first=True)), rotvec, atol=1e-12)
    np.testing.assert_allclose(quaternion_log(-a.as_quat(scalar_first=True)), rotvec, atol=1e-12)  # sign-invariant
    np.testing.assert_allclose(angle_deg(quaternion_exp(rotvec), a.as_quat(scalar_first=True)), 0.0, atol=1e-5)
    np.testing.assert_allclose(quaternion_log(quaternion_exp(np.zeros(3))), np.zeros(3))
    np.testing.assert_allclose(quaternion_to_rotation_matrix(a.as_quat(scalar_first=True)), a.as_matrix(), atol=1e-12)


def test_sign_flipped_input_keeps_a_sign_consistent_output_where_naive_averaging_fails():
    q = Rotation.from_euler("xyz", [40, -20, 75], degrees=True).as_quat(scalar_first=True)
    stream = [q if i % 2 == 0 else -q for i in range(30)]  # same rotation, alternating sign (as PnP may give)
    ours = SO3OneEuroFilter(OneEuroConfig(1.0, 0.5))
    naive = OneEuroFilter(OneEuroConfig(1.0, 0.5))  # components filtered as if they were a vector
    out_ours = [ours(x, i / 30) for i, x in enumerate(stream)]
    out_naive = [naive(x, i / 30) for i, x in enumerate(stream)]
    assert max(angle_deg(o, q) for o in out_ours) < 1e-6
    assert min(np.dot(a, b) for a, b in zip(out_ours, out_ours[1:])) > 0.999999  # no output sign flips
    # The naive filter's output collapses towards the zero quaternion: not a rotation any more.
    assert np.linalg.norm(out_naive[-1]) < 0.5


def test_rotation_across_pi_is_not_averaged_through_identity():
    # 179 deg and 181 deg about z are 2 deg apart; their axis-angle vectors (+-179 deg) average to ~0.
    a = Rotation.from_rotvec([0, 0, np.radians(179)]).as_quat(scalar_first=True)
    b = Rotation.from_rotvec([0, 0, np.radians(-179)]).as_quat(scalar_first=True)
    f = SO3OneEuroFilter(OneEuroConfig(1.0, 0.0))
    outs = [f(a if i % 2 == 0 else b, i / 30) for i in range(40)]
    angles = np.degrees(np.abs(Rotation.from_quat(outs[-1], scalar_first=True).as_rotvec()[2]))
    assert angles > 178.0
    assert max(angle_deg(o, Rotation.from_rotvec([0, 0, np.pi]).as_quat(scalar_first=True)) for o in outs[1:]) < 1.01


def test_single_axis_rotation_matches_scalar_one_euro_on_the_angle():
    rng = np.random.default_rng(3)
    stamps = np.cumsum(rng.uniform(0.02, 0.05, 50))
    angles = np.cumsum(rng.normal(0, 0.05, 50))
    axis = np.array([1.0, 2.0, -0.5]) / np.linalg.norm([1.0, 2.0, -0.5])
    config = OneEuroConfig(0.8, 0.7, 1.3)
    so3, scalar = SO3OneEuroFilter(config), OneEuroFilter(config)
    for t, angle in zip(stamps, angles):
        q_out = so3(quaternion_exp(axis * angle), t)
        expected = scalar(np.array([angle]), t)[0]
    np.testing.assert_allclose(quaternion_log(q_out), axis * expected, atol=1e-10)


def test_batch_filter_reduces_rotation_noise():
    rng = np.random.default_rng(4)
    truth = Rotation.random(15, random_state=5)
    f = SO3OneEuroFilter(OneEuroConfig(1.0, 0.0))
    raw_err, out_err = [], []
    for i in range(120):
        noisy = (Rotation.from_rotvec(rng.normal(0, 0.05, (15, 3))) * truth).as_quat(scalar_first=True)
        noisy[rng.random(15) < 0.5] *= -1  # random signs must not matter
        out = f(noisy, i / 30)
        if i >= 30:
            raw_err.append(angle_deg(noisy, truth.as_quat(scalar_first=True)))
            out_err.append(angle_deg(out, truth.as_quat(scalar_first=True)))
    assert np.mean(out_err) < 0.45 * np.mean(raw_err)


def test_se3_filter_outputs_a_rotation_and_filters_translation():
    f = SE3OneEuroFilter(OneEuroConfig(1.0, 0.0), OneEuroConfig(1.0, 0.0))
    r0 = Rotation.from_euler("z", 10, degrees=True).as_matrix()
    r1 = Rotation.from_euler("z", 40, degrees=True).as_matrix()
    f(r0, np.zeros(3), 0.0)
    rotation, translation = f(r1, np.array([1.0, 0.0, 0.0]), 1 / 30)
    alpha = 1 / (1 + 30 / (2 * np.pi))
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-12)
    assert Rotation.from_matrix(rotation).as_euler("xyz", degrees=True)[2] == pytest.approx(10 + 30 * alpha)
    np.testing.assert_allclose(translation, [alpha, 0, 0])


def test_invalid_rotations_are_refused():
    with pytest.raises(ValueError, match="proper rotation"):
        rotation_matrix_to_quaternion(np.diag([1.0, 1.0, -1.0]))  # a reflection
    with pytest.raises(ValueError, match="proper rotation"):
        rotation_matrix_to_quaternion(np.eye(3) * 1.1)
    with pytest.raises(ValueError, match="shape"):
        rotation_matrix_to_quaternion(np.eye(4))
    f = SE3OneEuroFilter(OneEuroConfig(), OneEuroConfig())
    with pytest.raises(ValueError, match="translation"):
        f(np.eye(3), np.array([0.0, np.nan, 1.0]), 0.0)
    assert not f.initialized
    with pytest.raises(ValueError, match="non-zero"):
        SO3OneEuroFilter(OneEuroConfig())(np.zeros(4), 0.0)
