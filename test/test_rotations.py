import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from hoi_perception.geometry import rotations as rot


def _random_axis_angle(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(Rotation.random(n, random_state=seed).as_rotvec())


def test_axis_angle_to_matrix_matches_scipy():
    aa = _random_axis_angle(64)
    expected = Rotation.from_rotvec(aa.numpy()).as_matrix()
    np.testing.assert_allclose(rot.axis_angle_to_matrix(aa).numpy(), expected, atol=1e-12)


def test_matrix_axis_angle_round_trip_random():
    aa = _random_axis_angle(256, seed=1)
    back = rot.matrix_to_axis_angle(rot.axis_angle_to_matrix(aa))
    np.testing.assert_allclose(back.numpy(), aa.numpy(), atol=1e-10)


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-6, 1e-3, math.pi - 1e-3, math.pi - 1e-6, math.pi])
def test_matrix_to_axis_angle_near_zero_and_pi(angle):
    axes = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 2, -3]], dtype=torch.float64)
    axes = axes / axes.norm(dim=-1, keepdim=True)
    aa = axes * angle
    matrix = torch.from_numpy(Rotation.from_rotvec(aa.numpy()).as_matrix())
    back = rot.matrix_to_axis_angle(matrix)
    assert torch.isfinite(back).all()
    # Near pi the axis sign is ambiguous (aa and -aa are the same rotation); compare matrices too.
    np.testing.assert_allclose(rot.axis_angle_to_matrix(back).numpy(), matrix.numpy(), atol=1e-9)
    np.testing.assert_allclose(back.norm(dim=-1).numpy(), angle, atol=1e-9)
    if angle < 3.0:
        np.testing.assert_allclose(back.numpy(), aa.numpy(), atol=1e-9)


def test_gradients_finite_at_identity_and_half_turn():
    for angle in (0.0, math.pi):
        aa = torch.tensor([[0.0, 0.0, angle]], dtype=torch.float64, requires_grad=True)
        out = rot.matrix_to_axis_angle(rot.axis_angle_to_matrix(aa))
        out.sum().backward()
        assert torch.isfinite(aa.grad).all(), angle


def test_rot6d_round_trip_and_orthonormal():
    matrix = rot.axis_angle_to_matrix(_random_axis_angle(50, seed=2))
    np.testing.assert_allclose(rot.rot6d_to_matrix(rot.matrix_to_rot6d(matrix)).numpy(), matrix.numpy(), atol=1e-12)
    raw = torch.randn(100, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    r = rot.rot6d_to_matrix(raw)
    eye = torch.eye(3, dtype=torch.float64).expand(100, 3, 3)
    np.testing.assert_allclose((r.transpose(-1, -2) @ r).numpy(), eye.numpy(), atol=1e-12)
    np.testing.assert_allclose(torch.linalg.det(r).numpy(), 1.0, atol=1e-12)
    # First column is the normalised first 3-vector (Zhou et al.'s Gram-Schmidt order).
    np.testing.assert_allclose(r[:, :, 0].numpy(), (raw[:, :3] / raw[:, :3].norm(dim=-1, keepdim=True)).numpy())


def test_rot6d_to_axis_angle_batched_shape():
    raw = torch.randn(2, 16, 6)
    assert rot.rot6d_to_axis_angle(raw).shape == (2, 16, 3)


def test_quaternion_round_trip_and_sign():
    aa = _random_axis_angle(128, seed=4)
    matrix = rot.axis_angle_to_matrix(aa)
    q = rot.matrix_to_quaternion(matrix)
    assert (q[:, 0] >= 0).all()
    expected = Rotation.from_rotvec(aa.numpy()).as_quat()[:, [3, 0, 1, 2]]
    expected *= np.sign(expected[:, :1])
    np.testing.assert_allclose(q.numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(rot.quaternion_to_matrix(-3.0 * q).numpy(), matrix.numpy(), atol=1e-12)
    np.testing.assert_allclose(rot.quaternion_to_axis_angle(-q).numpy(), aa.numpy(), atol=1e-10)


def test_float32_precision_is_usable():
    aa = _random_axis_angle(64, seed=5).float()
    back = rot.matrix_to_axis_angle(rot.axis_angle_to_matrix(aa))
    assert (back - aa).abs().max() < 1e-5


def test_numpy_wrappers_scalar_first():
    aa = Rotation.random(10, random_state=6).as_rotvec()
    m = rot.axis_angle_to_matrix_np(aa)
    np.testing.assert_allclose(rot.matrix_to_axis_angle_np(m), aa, atol=1e-12)
    q = rot.matrix_to_quaternion_np(m)
    assert (q[:, 0] >= 0).all()
    np.testing.assert_allclose(rot.quaternion_to_matrix_np(q), m, atol=1e-12)
    np.testing.assert_allclose(rot.quaternion_to_matrix_np(np.array([1.0, 0, 0, 0])), np.eye(3))
    assert rot.matrix_to_axis_angle_np(m[0]).shape == (3,)


def test_numpy_matrix_to_quaternion_matches_scipy_canonical_form():
    rotations = Rotation.random(500, random_state=7)
    # Every branch: near-identity, half turns about each axis (w = 0: the sign tie-break), and 179.9 degrees.
    special = Rotation.from_rotvec(np.array([[1e-9, 0, 0], [np.pi, 0, 0], [0, np.pi, 0], [0, 0, np.pi],
                                             [0, -np.pi, 0], [np.pi * 0.999, 0.5, -0.2]]))
    for r in (rotations, special):
        expected = r.as_quat(canonical=True)[:, [3, 0, 1, 2]]
        np.testing.assert_allclose(rot.matrix_to_quaternion_np(r.as_matrix()), expected, atol=1e-12)
        singles = np.array([rot.matrix_to_quaternion_np(m) for m in r.as_matrix()])  # the one-matrix path
        np.testing.assert_allclose(singles, expected, atol=1e-12)
    assert rot.matrix_to_quaternion_np(np.eye(3)).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert rot.matrix_to_quaternion_np(np.tile(np.eye(3), (2, 5, 1, 1))).shape == (2, 5, 4)


def test_nearest_rotation_and_angle():
    r = Rotation.from_rotvec([0.0, 0.0, 0.3]).as_matrix()
    noisy = r + 1e-3 * np.random.default_rng(0).standard_normal((3, 3))
    fixed = rot.nearest_rotation_np(noisy)
    np.testing.assert_allclose(fixed @ fixed.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(fixed) == pytest.approx(1.0)
    assert rot.rotation_angle_deg_np(r, np.eye(3)) == pytest.approx(math.degrees(0.3))
    assert rot.rotation_angle_deg_np(-np.diag([1.0, -1.0, 1.0]) @ np.eye(3), np.eye(3)) == pytest.approx(180.0)


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="rot6d"):
        rot.rot6d_to_matrix(torch.zeros(4, 5))
    with pytest.raises(ValueError, match="matrix"):
        rot.matrix_to_axis_angle(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="quaternion"):
        rot.quaternion_to_matrix_np(np.zeros((2, 3)))


def test_onnx_export_rot6d_to_axis_angle(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")

    class Convert(torch.nn.Module):
        def forward(self, x):
            return rot.rot6d_to_axis_angle(x)

    path = tmp_path / "rot.onnx"
    x = torch.randn(3, 16, 6)
    torch.onnx.export(Convert(), (x,), str(path), opset_version=17, input_names=["x"], output_names=["aa"],
                      dynamic_axes={"x": {0: "batch"}}, dynamo=False)
    onnx.checker.check_model(onnx.load(str(path)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x2 = torch.randn(5, 16, 6)
    (out,) = session.run(None, {"x": x2.numpy()})
    np.testing.assert_allclose(out, rot.rot6d_to_axis_angle(x2).numpy(), atol=1e-5)
