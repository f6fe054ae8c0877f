"""ONNX opset 17 export with a dynamic batch, run in ONNX Runtime, compared with PyTorch."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from hoi_perception.models.config import load_model_config
from hoi_perception.models.network import CropNetworkExport, DetectionExport, HOINet

OPSET = 17
# Small but structurally complete variants of the shipped configs, for speed.
TINY = ["input_size=64", "backbone.depth=18", "backbone.fpn_channels=32", "detection_head.head_channels=8",
        "detection_head.max_detections=6"]


def randomize(network: HOINet, seed: int = 0) -> HOINet:
    """O(1)-gain weights so the outputs compared are far from constant (HFL's init is nearly zero)."""
    generator = torch.Generator().manual_seed(seed)
    for m in network.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.requires_grad:
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) / math.sqrt(m.weight[0].numel()))
    return network


def export(module: nn.Module, args: tuple[torch.Tensor, ...], input_names, output_names) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(module, args, buffer, dynamo=False, opset_version=OPSET, input_names=list(input_names),
                          output_names=list(output_names),
                          dynamic_axes={name: {0: "batch"} for name in (*input_names, *output_names)})
    model = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == OPSET
    return buffer.getvalue()


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-6))


def _boxes(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    hand = torch.tensor([[4.0, 5.0, 40.0, 50.0], [10.0, 10.0, 30.0, 60.0], [2.0, 30.0, 20.0, 60.0]])[:batch]
    # The third pair does not overlap: the intersection mask must work in the graph too.
    obj = torch.tensor([[20.0, 15.0, 60.0, 62.0], [0.0, 0.0, 24.0, 20.0], [30.0, 2.0, 62.0, 28.0]])[:batch]
    return hand, obj


@pytest.fixture(scope="module")
def hfl_tiny() -> HOINet:
    torch.manual_seed(0)
    return randomize(HOINet(load_model_config("models/hfl_r18.yaml", TINY))).eval()


def test_hoinet_crop_network_matches_pytorch(hfl_tiny):
    wrapper = CropNetworkExport(hfl_tiny).eval()
    hand, obj = _boxes(2)
    onnx_bytes = export(wrapper, (torch.rand(2, 3, 64, 64), hand, obj), wrapper.input_names, wrapper.output_names)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    # Run with another batch size than the one traced.
    crop = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    hand, obj = _boxes(3)
    actual = session.run(None, {"crop": crop.numpy(), "hand_box": hand.numpy(), "object_box": obj.numpy()})
    with torch.no_grad():
        expected = wrapper(crop, hand, obj)
    assert len(actual) == len(wrapper.output_names) == 10
    for name, a, e in zip(wrapper.output_names, actual, expected):
        assert a.shape == tuple(e.shape), name
        assert relative_error(a, e.numpy()) < 1e-4, name
    # Outputs really vary across the batch (the comparison is not between constants).
    assert np.abs(actual[1][0] - actual[1][1]).max() > 1e-3


class RoIFeatures(nn.Module):
    """Backbone + RoIAlign + interaction only."""

    def __init__(self, network: HOINet) -> None:
        super().__init__()
        self.network = network

    def forward(self, crop, hand_box, object_box):
        rois = self.network.roi_features(crop, hand_box, object_box)
        return rois.hand, rois.object


def test_single_stream_contextual_reasoning_features_match_pytorch():
    torch.manual_seed(1)
    net = randomize(HOINet(load_model_config("models/sho_r50.yaml", TINY + ["interaction.query=both"]))).eval()
    module = RoIFeatures(net).eval()
    hand, obj = _boxes(1)
    names_in, names_out = ("crop", "hand_box", "object_box"), ("hand_roi", "object_roi")
    onnx_bytes = export(module, (torch.rand(1, 3, 64, 64), hand, obj), names_in, names_out)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    crop = torch.rand(3, 3, 64, 64)
    hand, obj = _boxes(3)
    actual = session.run(None, {"crop": crop.numpy(), "hand_box": hand.numpy(), "object_box": obj.numpy()})
    with torch.no_grad():
        expected = module(crop, hand, obj)
    for a, e in zip(actual, expected):
        assert a.shape == (3, 32, 32, 32)
        assert relative_error(a, e.numpy()) < 1e-4


def test_detection_matches_pytorch(hfl_tiny):
    wrapper = DetectionExport(hfl_tiny).eval()
    onnx_bytes = export(wrapper, (torch.rand(1, 3, 64, 64),), wrapper.input_names, wrapper.output_names)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    frame = torch.rand(2, 3, 64, 64)
    boxes, scores, classes = session.run(None, {"frame": frame.numpy()})
    with torch.no_grad():
        expected = wrapper(frame)
    assert boxes.shape == (2, 6, 4) and classes.dtype == np.int64
    assert relative_error(scores, expected[1].numpy()) < 1e-4
    assert np.array_equal(classes, expected[2].numpy())
    assert relative_error(boxes, expected[0].numpy()) < 1e-4
