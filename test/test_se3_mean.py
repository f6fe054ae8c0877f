"""SE(3) averaging and rigid fitting (hoi_perception.geometry.se3_mean)."""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import pytest
import torch
from scipy.spatial.transform import Rotation

from hoi_perception.geometry.se3_mean import dominant_eigenvector, fit_rigid_transform, rotation_mean, se3_mean


def _rotations(count: int, seed: int, spread: float | None = None) -> np.ndarray:
    if spread is None:
        return Rotation.random(count, random_state=seed).as_matrix()
    rng = np.random.default_rng(seed)
    centre = Rotation.random(random_state=seed)
    return (centre * Rotation.from_rotvec(rng.normal(size=(count, 3)) * spread)).as_matrix()


def _kabsch(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference least-squares rigid fit by SVD (float64)."""
    a, b = source - source.mean(0), target - target.mean(0)
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rotation = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return rotation, target.mean(0) - rotation @ source.mean(0)


def test_mean_of_identical_poses_is_that_pose():
    rotation = torch.tensor(_rotations(1, 3), dtype=torch.float32)[0]
    translation = torch.tensor([0.1, -0.2, 0.6])
    mean_r, mean_t = se3_mean(rotation.expand(7, 3, 3), translation.expand(7, 3))
    assert torch.allclose(mean_r, rotation, atol=1e-6)
    assert torch.allclose(mean_t, translation, atol=1e-7)


@pytest.mark.parametrize("angle_deg", [5.0, 40.0, 80.0])
def test_mean_of_symmetric_perturbations_is_the_centre(angle_deg):
    centre = Rotation.random(random_state=11)
    axes = np.eye(3)
    # +-angle about three orthogonal axes, with unequal magnitudes per axis: symmetric pairs.
    deltas = np.concatenate([axes * np.radians(angle_deg) * [1.0, 0.5, 0.25], -axes * np.radians(angle_deg)
                             * [1.0, 0.5, 0.25]])
    rotations = torch.tensor((centre * Rotation.from_rotvec(deltas)).as_matrix(), dtype=torch.float64)
    centre_t = np.array([0.05, 0.0, 0.5])
    offsets = np.array([[0.01, 0.02, -0.03], [0.0, -0.01, 0.02], [0.03, 0.0, 0.01]])
    translations = torch.tensor(np.concatenate([centre_t + offsets, centre_t - offsets]))
    mean_r, mean_t = se3_mean(rotations, translations)
    assert np.abs(mean_r.numpy() - centre.as_matrix()).max() < 1e-9
    assert np.abs(mean_t.numpy() - centre_t).max() < 1e-12


@pytest.mark.parametrize("spread", [0.1, 0.8, None])
def test_rotation_mean_matches_scipy_chordal_mean(spread):
    rotations = _rotations(40, 5, spread)
    weights = np.random.default_rng(2).random(40)
    expected = Rotation.from_matrix(rotations).mean(weights=weights).as_matrix()
    got = rotation_mean(torch.tensor(rotations), torch.tensor(weights)).numpy()
    assert np.abs(got - expected).max() < 1e-9
    assert abs(np.linalg.det(got) - 1.0) < 1e-12


def test_rotation_mean_is_batched_and_weights_select_poses():
    rotations = torch.tensor(_rotations(2 * 5, 9).reshape(2, 5, 3, 3))
    weights = torch.zeros(2, 5, dtype=torch.float64)
    weights[0, 3] = 2.0
    weights[1, 1] = 0.5
    mean = rotation_mean(rotations, weights)
    assert mean.shape == (2, 3, 3)
    assert torch.allclose(mean[0], rotations[0, 3], atol=1e-9)
    assert torch.allclose(mean[1], rotations[1, 1], atol=1e-9)


def test_rotation_mean_float32_accuracy():
    rotations = _rotations(1000, 1, 0.3)
    expected = Rotation.from_matrix(rotations).mean().as_matrix()
    got = rotation_mean(torch.tensor(rotations, dtype=torch.float32)).numpy()
    assert np.abs(got - expected).max() < 2e-6


def test_rotation_mean_gradient_matches_finite_differences():
    rotations = torch.tensor(_rotations(6, 4, 0.4))
    weights = torch.rand(6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 0.5
    weights.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda w: rotation_mean(rotations, w), (weights,), eps=1e-6, atol=1e-6)


def test_dominant_eigenvector_against_eigh():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(8, 4, 4))
    sym = a @ a.transpose(0, 2, 1)
    vectors = dominant_eigenvector(torch.tensor(sym)).numpy()
    _, eigvecs = np.linalg.eigh(sym)
    top = eigvecs[..., -1]
    assert np.abs(np.abs((vectors * top).sum(-1)) - 1.0).max() < 1e-10


def test_fit_rigid_transform_recovers_the_pose_and_matches_svd():
    rng = np.random.default_rng(7)
    source = rng.normal(size=(3, 60, 3)) * [0.05, 0.03, 0.01]
    rotations = Rotation.random(3, random_state=7).as_matrix()
    translations = rng.normal(size=(3, 3))
    target = np.einsum("bij,bnj->bni", rotations, source) + translations[:, None]
    r, t = fit_rigid_transform(torch.tensor(source, dtype=torch.float32), torch.tensor(target, dtype=torch.float32))
    assert np.abs(r.numpy() - rotations).max() < 2e-6
    assert np.abs(t.numpy() - translations).max() < 2e-6
    noisy = target + rng.normal(size=target.shape) * 0.01
    r, t = fit_rigid_transform(torch.tensor(source), torch.tensor(noisy))
    for b in range(3):
        ref_r, ref_t = _kabsch(source[b], noisy[b])
        assert np.abs(r[b].numpy() - ref_r).max() < 1e-10
        assert np.abs(t[b].numpy() - ref_t).max() < 1e-10


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="rotations"):
        rotation_mean(torch.eye(3))
    with pytest.raises(ValueError, match="weights of shape"):
        rotation_mean(torch.eye(3).expand(4, 3, 3), torch.ones(3))
    with pytest.raises(ValueError, match=">= 0"):
        rotation_mean(torch.eye(3).expand(2, 3, 3), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="same number of poses"):
        se3_mean(torch.eye(3).expand(4, 3, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="same shape"):
        fit_rigid_transform(torch.zeros(5, 3), torch.zeros(6, 3))


def test_onnx_export_matches_pytorch():
    class MeanAndFit(torch.nn.Module):
        def forward(self, rotations, translations, points):
            r, t = se3_mean(rotations, translations)
            fit_r, fit_t = fit_rigid_transform(points, points @ r.transpose(1, 2) + t.unsqueeze(1))
            return r, t, fit_r, fit_t

    rotations = torch.tensor(_rotations(2 * 30, 3, 0.3).reshape(2, 30, 3, 3), dtype=torch.float32)
    translations = torch.randn(2, 30, 3, generator=torch.Generator().manual_seed(0))
    points = torch.randn(2, 50, 3, generator=torch.Generator().manual_seed(1)) * 0.05
    buffer = io.BytesIO()
    torch.onnx.export(MeanAndFit(), (rotations, translations, points), buffer, dynamo=False, opset_version=17,
                      input_names=["rotations", "translations", "points"], dynamic_axes={"rotations": {0: "b"},
                      "translations": {0: "b"}, "points": {0: "b"}})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"rotations": rotations.numpy(), "translations": translations.numpy(),
                             "points": points.numpy()})
    expected = MeanAndFit()(rotations, translations, points)
    for g, e in zip(got, expected):
        assert np.abs(g - e.numpy()).max() < 1e-5
    assert np.abs(got[2] - got[0]).max() < 1e-5  # the fit recovers the mean pose it was given
