import numpy as np
import pytest
import torch

from hoi_perception.models.object_head import (
    ObjectHead,
    box_units_to_points,
    cell_centres,
    points_to_box_units,
    votes_to_pixels,
)


def test_cell_centres():
    c = cell_centres(4, 8)
    assert c.shape == (2, 4, 8)
    assert c[0, 0, 0] == pytest.approx(1 / 16) and c[1, 0, 0] == pytest.approx(1 / 8)
    assert c[0, 3, 7] == pytest.approx(15 / 16) and c[1, 3, 7] == pytest.approx(7 / 8)


def test_shapes_and_initial_state():
    torch.manual_seed(0)
    head = ObjectHead(in_channels=32, roi_size=8).eval()
    out = head(torch.randn(3, 32, 8, 8))
    assert out.votes.shape == (3, 21, 2, 8, 8)
    assert out.confidence.shape == (3, 21, 8, 8)
    # Fresh head: every vote sits (almost) at its own cell centre with confidence ~0.5.
    centres = cell_centres(8, 8).expand(3, 21, 2, 8, 8)
    assert (out.votes - centres).abs().max() < 0.01
    assert (out.confidence - 0.5).abs().max() < 0.01


def test_offsets_are_scaled_and_added_to_cell_centres():
    head = ObjectHead(in_channels=16, roi_size=4, offset_scale=0.1).eval()
    with torch.no_grad():
        head.out.weight.zero_()
        head.out.bias.zero_()
        head.out.bias[0 * 3 + 0] = 2.0  # point 0, dx raw = 2 -> +0.2 box widths
        head.out.bias[5 * 3 + 1] = -1.0  # point 5, dy raw = -1 -> -0.1 box heights
        head.out.bias[7 * 3 + 2] = 3.0  # point 7, confidence logit 3
    out = head(torch.randn(2, 16, 4, 4))
    c = cell_centres(4, 4)
    torch.testing.assert_close(out.votes[:, 0, 0], (c[0] + 0.2).expand(2, 4, 4))
    torch.testing.assert_close(out.votes[:, 5, 1], (c[1] - 0.1).expand(2, 4, 4))
    torch.testing.assert_close(out.votes[:, 5, 0], c[0].expand(2, 4, 4))
    torch.testing.assert_close(out.confidence[:, 7], torch.full((2, 4, 4), float(torch.sigmoid(torch.tensor(3.0)))))


def test_box_unit_conversions_are_inverse_numpy_and_torch():
    boxes = np.array([[100.0, 50.0, 300.0, 150.0], [0.0, 0.0, 10.0, 20.0]])
    points = np.array([[[100.0, 50.0], [300.0, 150.0], [200.0, 100.0]], [[5.0, 5.0], [10.0, 0.0], [0.0, 20.0]]])
    units = points_to_box_units(points, boxes)
    np.testing.assert_allclose(units[0], [[0, 0], [1, 1], [0.5, 0.5]])
    np.testing.assert_allclose(units[1], [[0.5, 0.25], [1, 0], [0, 1]])
    np.testing.assert_allclose(box_units_to_points(units, boxes), points)
    votes = np.broadcast_to(units.transpose(0, 2, 1)[:, None, :, :, None], (2, 1, 2, 3, 1))
    pixels = votes_to_pixels(votes, boxes)
    np.testing.assert_allclose(pixels[:, 0, :, :, 0].transpose(0, 2, 1), points)
    t_pixels = votes_to_pixels(torch.from_numpy(np.ascontiguousarray(votes)), torch.from_numpy(boxes))
    np.testing.assert_allclose(t_pixels.numpy(), pixels)
    with pytest.raises(ValueError, match="boxes"):
        votes_to_pixels(votes, boxes[:1])
    with pytest.raises(ValueError, match="points"):
        points_to_box_units(points[0], boxes)


def test_bad_input_and_arguments():
    head = ObjectHead(in_channels=16, roi_size=4)
    with pytest.raises(ValueError, match="ObjectHead input"):
        head(torch.randn(1, 16, 8, 8))
    with pytest.raises(ValueError, match="in_channels"):
        ObjectHead(in_channels=15)


def test_onnx_export_matches_eager(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(1)
    head = ObjectHead(in_channels=32, roi_size=8).eval()
    path = tmp_path / "object_head.onnx"

    class Flat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = head

        def forward(self, x):
            out = self.head(x)
            return out.votes, out.confidence

    torch.onnx.export(Flat().eval(), (torch.randn(2, 32, 8, 8),), str(path), opset_version=17, input_names=["roi"],
                      output_names=["votes", "confidence"], dynamic_axes={"roi": {0: "batch"}}, dynamo=False)
    onnx.checker.check_model(onnx.load(str(path)))
    x = torch.randn(3, 32, 8, 8)
    votes, conf = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"roi": x.numpy()})
    with torch.no_grad():
        ref = head(x)
    np.testing.assert_allclose(votes, ref.votes.numpy(), atol=1e-5)
    np.testing.assert_allclose(conf, ref.confidence.numpy(), atol=1e-5)
