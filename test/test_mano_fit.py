"""MANO fit to 3D landmarks: exact joints of a known hand are recovered to a millimetre or so."""

from __future__ import annotations

import numpy as np
import pytest

from hoi_perception.config import ConfigError
from hoi_perception.frontends.mano_fit import HandShapeTrack, ManoFitConfig, ManoFitter, kabsch_rotation
from hoi_perception.geometry.metrics import procrustes_align
from hoi_perception.hand_model.mano import HandModel, NumpyHandPoser


@pytest.fixture(scope="module", params=["right", "left"])
def fitter(request) -> ManoFitter:
    return ManoFitter(HandModel(request.param))


def known_hand(fitter: ManoFitter, seed: int, scale: float = 0.4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pose (48,), betas (10,), root-relative joints (21, 3) of a random but plausible hand."""
    rng = np.random.default_rng(seed)
    pose = np.concatenate([rng.uniform(-np.pi, np.pi, 3) * 0.5, rng.normal(0.0, scale, 45)])
    betas = rng.normal(0.0, 0.7, 10)
    _, joints = fitter.poser(pose[None], betas[None])
    return pose, betas, joints[0] - joints[0, 0]


def pa_mpjpe(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(np.linalg.norm(procrustes_align(pred, gt)[0] - gt, axis=1).mean())


def test_the_fit_recovers_exact_joints_to_about_a_millimetre(fitter):
    errors = []
    for seed in range(4):
        _, _, target = known_hand(fitter, seed)
        fit = fitter.fit(target)
        assert fit.joints.shape == (21, 3) and fit.vertices.shape == (778, 3)
        np.testing.assert_array_equal(fit.joints[0], 0.0)
        errors.append(pa_mpjpe(fit.joints, target))
        assert fit.rms_m < 0.003
    # Measured: 0.93-1.77 mm on both sides (the shape prior holds betas near the mean hand).
    assert np.mean(errors) < 0.0025


def test_the_joint_only_poser_matches_the_full_mesh(fitter):
    pose, betas, target = known_hand(fitter, 7)
    np.testing.assert_allclose(fitter.joints(pose, betas)[0], target, atol=1e-12)
    full = NumpyHandPoser(HandModel(fitter.side))
    _, joints = full(pose[None], betas[None])
    np.testing.assert_allclose(joints[0] - joints[0, 0], target, atol=1e-12)


def test_a_warm_start_converges_in_fewer_steps_than_a_cold_one(fitter):
    pose, betas, target = known_hand(fitter, 3)
    cold = fitter.fit(target)
    # The next frame: the same hand, fingers moved a little.
    moved = pose.copy()
    moved[3:] += np.random.default_rng(1).normal(0.0, 0.05, 45)
    _, joints = fitter.poser(moved[None], betas[None])
    next_target = joints[0] - joints[0, 0]
    warm = fitter.fit(next_target, previous=cold)
    again_cold = fitter.fit(next_target)
    assert warm.iterations < again_cold.iterations
    assert warm.iterations <= fitter.config.warm_iterations
    assert pa_mpjpe(warm.joints, next_target) < 0.003


def test_a_track_holds_the_mean_of_its_first_shapes(fitter):
    track = HandShapeTrack(shape_frames=2)
    _, _, target = known_hand(fitter, 11)
    first = track.fit(fitter, target)
    second = track.fit(fitter, target)
    assert track.betas is not None
    np.testing.assert_allclose(track.betas, (first.betas + second.betas) / 2)
    third = track.fit(fitter, target)
    np.testing.assert_array_equal(third.betas, track.betas)
    assert pa_mpjpe(third.joints, target) < 0.003


def test_kabsch_finds_a_known_rotation():
    from scipy.spatial.transform import Rotation

    points = np.random.default_rng(0).normal(size=(5, 3))
    rotation = Rotation.from_rotvec([0.4, -1.0, 2.0]).as_matrix()
    np.testing.assert_allclose(kabsch_rotation(points, points @ rotation.T + 3.0), rotation, atol=1e-9)


def test_bad_targets_and_settings_are_refused(fitter):
    with pytest.raises(ValueError, match=r"\(21, 3\)"):
        fitter.fit(np.zeros((20, 3)))
    with pytest.raises(ValueError, match="finite"):
        fitter.fit(np.full((21, 3), np.nan))
    with pytest.raises(ConfigError, match="shape_frames"):
        ManoFitConfig(shape_frames=0).validate()
