from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from hoi_perception.geometry.rotations import axis_angle_to_matrix, rot6d_to_matrix
from hoi_perception.hand_model.mano import HandModel
from hoi_perception.models.hand_head import HandDecoder, Hourglass, PreActBottleneck

CHANNELS = 16  # small for speed; the architecture is the same at 256


class LinearHand(nn.Module):
    """Deterministic linear stand-in with HandModel's call signature (the wiring is under test here)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("template", torch.randn(778, 3, generator=g) * 0.05 + torch.tensor([0.1, 0.0, 0.0]))
        self.register_buffer("pose_dirs", torch.randn(48, 778 * 3, generator=g) * 0.01)
        self.register_buffer("shape_dirs", torch.randn(10, 778 * 3, generator=g) * 0.01)
        regressor = torch.rand(21, 778, generator=g)
        self.register_buffer("regressor", regressor / regressor.sum(1, keepdim=True))
        self.scale = nn.Parameter(torch.ones(1))  # a parameter, to check that the decoder freezes it

    def forward(self, global_orient, hand_pose, betas):
        pose = torch.cat([global_orient, hand_pose], dim=1)
        vertices = self.scale * (self.template + (pose @ self.pose_dirs + betas @ self.shape_dirs).view(-1, 778, 3))
        return SimpleNamespace(vertices=vertices, joints=torch.einsum("jv,bvc->bjc", self.regressor, vertices))


class FixedLogits(nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.value = logits

    def forward(self, features):
        return self.value.expand(features.shape[0], -1, -1, -1)


@pytest.fixture(scope="module")
def decoder():
    torch.manual_seed(0)
    return HandDecoder(LinearHand(), channels=CHANNELS).eval()


def test_output_shapes_and_invariants(decoder):
    with torch.no_grad():
        out = decoder(torch.randn(2, CHANNELS, 32, 32))
    assert out.heatmaps.shape == (2, 21, 32, 32)
    assert out.joints2d.shape == (2, 21, 2)
    assert out.joint_confidence.shape == (2, 21)
    assert out.pose.shape == (2, 48) and out.rot6d.shape == (2, 16, 6) and out.betas.shape == (2, 10)
    assert out.vertices.shape == (2, 778, 3) and out.joints3d.shape == (2, 21, 3)
    torch.testing.assert_close(out.heatmaps.sum((-1, -2)), torch.ones(2, 21))
    assert ((out.joints2d > 0) & (out.joints2d < 1)).all()
    assert ((out.joint_confidence >= 0) & (out.joint_confidence <= 1)).all()
    # Root-relative: wrist at the origin, vertices shifted by the same root.
    assert out.joints3d[:, 0].abs().max() == 0
    raw = decoder.hand_model(out.pose[:, :3], out.pose[:, 3:], out.betas)
    torch.testing.assert_close(out.vertices, raw.vertices - raw.joints[:, :1])
    # The 48-D pose is exactly the 6D rotations, as axis-angle.
    torch.testing.assert_close(axis_angle_to_matrix(out.pose.view(2, 16, 3)), rot6d_to_matrix(out.rot6d),
                               atol=1e-5, rtol=0)


def test_fresh_regressor_starts_at_the_flat_mean_hand(decoder):
    with torch.no_grad():
        out = decoder(torch.randn(3, CHANNELS, 32, 32))
    assert out.pose.abs().max() < 0.2
    assert out.betas.abs().max() < 0.2


def test_soft_argmax_and_confidence_hand_computed():
    decoder = HandDecoder(LinearHand(), channels=CHANNELS).eval()
    logits = torch.zeros(1, 21, 32, 32)
    logits[0, 0, 5, 9] = 60.0  # joint 0: a sharp peak at row 5, column 9
    logits[0, 2, 7, 3] = 60.0  # joint 2: two equal peaks -> midpoint, low confidence
    logits[0, 2, 7, 23] = 60.0
    decoder.heatmap_net.logits = FixedLogits(logits)  # joint 1 and the rest: uniform
    with torch.no_grad():
        out = decoder(torch.randn(1, CHANNELS, 32, 32))
    torch.testing.assert_close(out.joints2d[0, 0], torch.tensor([9.5 / 32, 5.5 / 32]))
    assert out.joint_confidence[0, 0] == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(out.joints2d[0, 1], torch.tensor([0.5, 0.5]))
    # Uniform over 1024 cells: 12 cell centres lie within 2 cells of the grid centre.
    assert out.joint_confidence[0, 1] == pytest.approx(12 / 1024, abs=1e-6)
    torch.testing.assert_close(out.joints2d[0, 2], torch.tensor([13.5 / 32, 7.5 / 32]))
    assert out.joint_confidence[0, 2] == pytest.approx(0.0, abs=1e-6)


def test_temperature_sharpens_heatmaps():
    decoder = HandDecoder(LinearHand(), channels=CHANNELS).eval()
    logits = torch.zeros(1, 21, 32, 32)
    logits[0, :, 10, 10] = 2.0
    decoder.heatmap_net.logits = FixedLogits(logits)
    x = torch.randn(1, CHANNELS, 32, 32)
    with torch.no_grad():
        before = decoder(x).heatmaps[0, 0, 10, 10].item()
        decoder.heatmap_net.inverse_temperature[:, 0] = 5.0
        after = decoder(x)
    assert before == pytest.approx(np.e**2 / (np.e**2 + 1023), rel=1e-5)
    assert after.heatmaps[0, 0, 10, 10].item() == pytest.approx(np.e**10 / (np.e**10 + 1023), rel=1e-5)
    assert after.heatmaps[0, 1, 10, 10].item() == pytest.approx(before, rel=1e-5)


def test_gradients_reach_input_and_hand_model_is_frozen():
    decoder = HandDecoder(LinearHand(), channels=CHANNELS).train()
    x = torch.randn(2, CHANNELS, 32, 32, requires_grad=True)
    out = decoder(x)
    (out.joints3d.square().sum() + out.joints2d.sum() + out.vertices.sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert decoder.hand_model.scale.grad is None
    assert decoder.regressor.rotations.weight.grad.abs().sum() > 0
    assert decoder.heatmap_net.inverse_temperature.grad.abs().sum() > 0


def test_building_blocks():
    block = PreActBottleneck(8, 16)
    assert block(torch.randn(2, 8, 4, 4)).shape == (2, 16, 4, 4)
    hourglass = Hourglass(8, depth=4)
    assert hourglass(torch.randn(1, 8, 32, 32)).shape == (1, 8, 32, 32)


def test_bad_arguments_and_input():
    with pytest.raises(ValueError, match="roi_size"):
        HandDecoder(LinearHand(), channels=CHANNELS, roi_size=24)
    with pytest.raises(ValueError, match="channels"):
        HandDecoder(LinearHand(), channels=7)
    with pytest.raises(ValueError, match="HandDecoder input"):
        HandDecoder(LinearHand(), channels=CHANNELS)(torch.randn(1, CHANNELS, 16, 16))


@pytest.fixture(scope="module")
def mano_decoder():
    torch.manual_seed(0)
    return HandDecoder(HandModel("right"), channels=CHANNELS).eval()


def test_with_the_mano_layer_starts_near_the_flat_hand(mano_decoder):
    with torch.no_grad():
        out = mano_decoder(torch.randn(2, CHANNELS, 32, 32))
        flat = mano_decoder.hand_model(torch.zeros(1, 3), torch.zeros(1, 45), torch.zeros(1, 10))
    assert out.vertices.shape == (2, 778, 3) and out.joints3d.shape == (2, 21, 3)
    assert out.joints3d[:, 0].abs().max() == 0
    flat_rel = flat.vertices - flat.joints[:, :1]
    # Small initial rotations (< 0.2 rad) move a ~20 cm hand by at most a few centimetres.
    assert (out.vertices - flat_rel).norm(dim=-1).max() < 0.04


def test_onnx_export_matches_eager(mano_decoder, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    decoder = mano_decoder

    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.decoder = decoder

        def forward(self, roi):
            out = self.decoder(roi)
            return out.joints2d, out.joint_confidence, out.pose, out.betas, out.vertices, out.joints3d

    names = ["joints2d", "joint_confidence", "pose", "betas", "vertices", "joints3d"]
    path = tmp_path / "hand.onnx"
    torch.onnx.export(Flat().eval(), (torch.randn(2, CHANNELS, 32, 32),), str(path), opset_version=17,
                      input_names=["roi"], output_names=names, dynamic_axes={"roi": {0: "batch"}}, dynamo=False)
    onnx.checker.check_model(onnx.load(str(path)))
    x = torch.randn(3, CHANNELS, 32, 32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"roi": x.numpy()})
    with torch.no_grad():
        ref = Flat().eval()(x)
    for name, a, b in zip(names, got, ref):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-4, err_msg=name)
