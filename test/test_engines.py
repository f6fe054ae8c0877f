"""Engines behind one interface: naming, input checks, config, and ONNX Runtime vs PyTorch agreement."""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hoi_perception.config import ConfigError, load_config
from hoi_perception.engines import (
    EngineConfig,
    EngineInputError,
    EngineUnavailableError,
    available_engines,
    create_engine,
    flatten_outputs,
)
from hoi_perception.engines.base import TensorSpec, check_inputs
from hoi_perception.engines.export import (
    ModelMetadata,
    RankedOutputs,
    compare_engines,
    compare_ranked,
    export_main,
    export_onnx,
    network_graphs,
    relative_error,
)
from hoi_perception.engines.onnx_engine import OnnxRuntimeEngine
from hoi_perception.engines.torch_engine import TorchEngine


@dataclass
class JointsOutput:
    joints: torch.Tensor
    confidence: torch.Tensor


@dataclass
class SmallOutput:
    hand: JointsOutput
    logits: torch.Tensor
    extra: torch.Tensor | None = None


class SmallNet(nn.Module):
    """Conv + pooling + linear heads with a nested dataclass output, like HOINet's."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.joints = nn.Linear(8 + 4, 5 * 2)
        self.logits = nn.Linear(8, 3)

    def forward(self, image: torch.Tensor, box: torch.Tensor) -> SmallOutput:
        features = torch.relu(self.conv(image)).mean(dim=(2, 3))
        joints = self.joints(torch.cat((features, box), 1)).view(-1, 5, 2)
        return SmallOutput(hand=JointsOutput(joints=joints, confidence=torch.sigmoid(joints.norm(dim=2))),
                           logits=self.logits(features))


SMALL_OUTPUTS = ("hand_joints", "hand_confidence", "logits")


def small_inputs(batch: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image": rng.random((batch, 3, 16, 16), dtype=np.float32),
            "box": rng.random((batch, 4), dtype=np.float32) * 16}


def small_examples() -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(a) for name, a in small_inputs(2, seed=0).items()}


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory) -> Path:
    return export_onnx(SmallNet(), small_examples(), tmp_path_factory.mktemp("small") / "small.onnx")


# ----------------------------------------------------------------------------- flatten_outputs


def test_flatten_outputs_names_nested_dataclasses_dicts_and_sequences():
    t = torch.zeros
    out = SmallOutput(hand=JointsOutput(t(1), t(2)), logits=t(3))
    flat = flatten_outputs(out)
    assert tuple(flat) == SMALL_OUTPUTS  # None field left out, order = field order
    assert flat["hand_confidence"].shape == (2,)
    assert tuple(flatten_outputs({"a": t(1), "b": (t(1), [t(1)])})) == ("a", "b_0", "b_1_0")
    assert tuple(flatten_outputs((t(1), t(2)))) == ("output_0", "output_1")
    assert tuple(flatten_outputs(t(1))) == ("output",)


def test_flatten_outputs_rejects_collisions_and_non_tensors():
    with pytest.raises(ValueError, match="'a_b'"):
        flatten_outputs({"a": {"b": torch.zeros(1)}, "a_b": torch.zeros(1)})
    with pytest.raises(TypeError, match="'scale' is a float"):
        flatten_outputs({"scale": 1.5})
    with pytest.raises(TypeError, match="dict keys must be strings"):
        flatten_outputs({1: torch.zeros(1)})


# ----------------------------------------------------------------------------- input checks


SPECS = (TensorSpec("crop", ("batch", 3, 4, 4), "float32"), TensorSpec("box", ("batch", 4), "float32"))


def good_inputs(batch: int = 2) -> dict[str, np.ndarray]:
    return {"crop": np.zeros((batch, 3, 4, 4), np.float32), "box": np.zeros((batch, 4), np.float32)}


def test_check_inputs_accepts_any_consistent_batch_and_keeps_spec_order():
    checked = check_inputs(SPECS, {"box": good_inputs(3)["box"], "crop": good_inputs(3)["crop"]}, "test")
    assert tuple(checked) == ("crop", "box")


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("box"), r"missing input 'box', expected \(batch, 4\) float32"),
    (lambda d: d.update(extra=np.zeros(1)), r"unexpected input\(s\) \['extra'\]"),
    (lambda d: d.update(box=np.zeros((2, 5), np.float32)), r"'box' has shape \(2, 5\), expected \(batch, 4\)"),
    (lambda d: d.update(crop=np.zeros((2, 3, 4), np.float32)), r"'crop' has shape \(2, 3, 4\)"),
    (lambda d: d.update(box=np.zeros((2, 4), np.float64)), r"'box' has dtype float64, expected \(batch, 4\) float32"),
    (lambda d: d.update(box=[[0.0] * 4] * 2), r"'box' must be a numpy array"),
    (lambda d: d.update(box=np.zeros((3, 4), np.float32)), r"'batch' is 2 in input 'crop' but 3 in input 'box'"),
    (lambda d: d.update(crop=np.zeros((0, 3, 4, 4), np.float32), box=np.zeros((0, 4), np.float32)), "empty"),
])
def test_check_inputs_names_the_bad_input_and_what_was_expected(change, message):
    inputs = good_inputs()
    change(inputs)
    with pytest.raises(EngineInputError, match=message):
        check_inputs(SPECS, inputs, "test")


# ----------------------------------------------------------------------------- config and factory


def test_engine_config_loads_from_dict_and_validates():
    config = load_config(EngineConfig, {"kind": "tensorrt", "device": "cuda:1", "precision": "fp16",
                                        "model_path": "m.onnx", "cache_dir": "/tmp/plans", "max_batch": 2})
    assert config.model_path == Path("m.onnx") and config.cache_dir == Path("/tmp/plans")
    assert load_config(EngineConfig, None).kind == "onnxruntime"
    for bad, message in [({"kind": "tensorrt"}, "needs an NVIDIA GPU|runs on an NVIDIA GPU"),
                         ({"precision": "fp16"}, "not available with kind onnxruntime"),
                         ({"kind": "torch", "precision": "fp16"}, "fp16 needs a GPU"),
                         ({"device": "gpu0"}, "expected 'cpu', 'cuda' or 'cuda:N'"),
                         ({"threads": -1}, "threads"), ({"max_batch": 0}, "max_batch"),
                         ({"kind": "openvino"}, "not one of")]:
        with pytest.raises(ConfigError, match=message):
            load_config(EngineConfig, bad)


def test_create_engine_builds_each_cpu_kind_and_explains_misuse(small_onnx, tmp_path):
    onnx_engine = create_engine(EngineConfig(kind="onnxruntime", model_path=small_onnx, threads=1))
    assert isinstance(onnx_engine, OnnxRuntimeEngine) and onnx_engine.describe() == "onnxruntime (cpu, fp32)"
    torch_engine = create_engine(EngineConfig(kind="torch"), module=SmallNet(), example_inputs=small_examples())
    assert isinstance(torch_engine, TorchEngine) and torch_engine.output_names == SMALL_OUTPUTS
    with pytest.raises(ConfigError, match="pass module and example_inputs"):
        create_engine(EngineConfig(kind="torch"))
    with pytest.raises(ConfigError, match="needs model_path"):
        create_engine(EngineConfig(kind="onnxruntime"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_engine(EngineConfig(model_path=tmp_path / "missing.onnx"))
    with pytest.raises(ConfigError, match="module and example_inputs are for kind torch"):
        create_engine(EngineConfig(model_path=small_onnx), module=SmallNet())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without a GPU")
def test_gpu_engines_fail_at_start_without_a_gpu_and_say_what_is_available(small_onnx):
    assert available_engines()[:2] == ["torch (cpu)", "onnxruntime (cpu)"]
    with pytest.raises(EngineUnavailableError, match=r"CUDA GPU.*available here: torch \(cpu\), onnxruntime \(cpu\)"):
        create_engine(EngineConfig(kind="tensorrt", device="cuda", model_path=small_onnx))
    with pytest.raises(EngineUnavailableError, match="PyTorch sees no CUDA GPU"):
        create_engine(EngineConfig(kind="torch", device="cuda"), module=SmallNet(), example_inputs=small_examples())
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(EngineUnavailableError, match="'tensorrt' Python package"):
            create_engine(EngineConfig(kind="tensorrt", device="cuda", model_path=small_onnx))


# ----------------------------------------------------------------------------- agreement


def test_relative_error_definition():
    assert relative_error(np.array([1.0, 2.0]), np.array([1.0, 4.0])) == pytest.approx(0.5)
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error(np.ones(2), np.zeros(2)) == float("inf")


def test_compare_ranked_skips_tied_ranks_only():
    reference = {"scores": np.array([[0.9, 0.5, 0.5, 0.2, 0.1]]), "boxes": np.arange(5.0).reshape(1, 5, 1)}
    swapped = {"scores": reference["scores"].copy(), "boxes": reference["boxes"][:, [0, 2, 1, 3, 4]]}
    spec = RankedOutputs(score="scores", ranked=("boxes",))
    assert compare_ranked(reference, swapped, spec) == {"scores": 0.0, "boxes": 0.0}
    wrong = {"scores": reference["scores"], "boxes": reference["boxes"][:, [3, 1, 2, 0, 4]]}
    assert compare_ranked(reference, wrong, spec)["boxes"] == pytest.approx(1.0)  # ranks 0 and 3 are clear
    assert compare_engines(reference, swapped)["boxes"] > 0.2


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_matches_torch_on_small_dataclass_network(small_onnx, batch):
    torch_engine = TorchEngine(SmallNet(), small_examples())
    onnx_engine = OnnxRuntimeEngine(small_onnx)
    assert onnx_engine.input_names == torch_engine.input_names == ("image", "box")
    assert onnx_engine.output_names == torch_engine.output_names == SMALL_OUTPUTS
    assert onnx_engine.inputs[0] == TensorSpec("image", ("batch", 3, 16, 16), "float32")
    inputs = small_inputs(batch)
    reference = torch_engine.run(inputs)
    assert reference["hand_joints"].shape == (batch, 5, 2)
    errors = compare_engines(reference, onnx_engine.run(inputs))
    assert max(errors.values()) < 1e-4, errors
    # The two engines really computed something that depends on the input.
    other = torch_engine.run(small_inputs(batch, seed=7))
    assert relative_error(other["logits"], reference["logits"]) > 1e-3


def test_onnxruntime_threads_do_not_spin_between_runs(small_onnx):
    # The estimator alternates sessions; a spinning pool would take the cores from the next one.
    engine = OnnxRuntimeEngine(small_onnx, threads=2)
    options = engine._session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 2


def test_torch_engine_output_names_match_the_export(small_onnx):
    engine = TorchEngine(SmallNet(), small_examples())
    assert engine.outputs == OnnxRuntimeEngine(small_onnx).outputs


# ----------------------------------------------------------------------------- HOINet


TINY_MODEL = ["name=tiny_test", "input_size=64", "backbone.depth=18", "backbone.fpn_channels=16",
              "roi.output_size=16", "interaction.num_heads=2", "hand_head.hourglass_depth=2",
              "hand_head.encoder_rounds=2", "hand_head.regressor_hidden=32", "detection_head.head_channels=8",
              "detection_head.max_detections=5"]


@pytest.fixture(scope="module")
def tiny_network_export(tmp_path_factory):
    """A tiny HOINet saved as a training checkpoint and exported with export_main."""
    network_module = pytest.importorskip("hoi_perception.models.network")
    from hoi_perception.config import to_dict
    from hoi_perception.models.config import load_model_config

    config = load_model_config(None, TINY_MODEL)
    torch.manual_seed(0)
    network = network_module.HOINet(config).eval()
    # An untrained head predicts the prior everywhere (near-ties in the top-k); give it distinct peaks.
    nn.init.normal_(network.detection_head.heatmap[-1].weight, std=2.0)
    folder = tmp_path_factory.mktemp("hoinet")
    checkpoint = folder / "tiny.pt"
    torch.save({"model_config": to_dict(config), "model": network.state_dict()}, checkpoint)
    written = export_main(checkpoint, "onnx", folder / "export")
    return network, written


def test_hoinet_export_writes_both_graphs_with_metadata(tiny_network_export):
    network, written = tiny_network_export
    assert set(written) == {"crop", "detector"}
    assert written["crop"].name == "tiny_test_crop.onnx"
    from hoi_perception.models.network import DETECTION_OUTPUT_NAMES, OUTPUT_NAMES

    crop_engine = OnnxRuntimeEngine(written["crop"])
    assert crop_engine.input_names == ("crop", "hand_box", "object_box")
    assert crop_engine.output_names == OUTPUT_NAMES
    detector_engine = OnnxRuntimeEngine(written["detector"])
    assert detector_engine.input_names == ("frame",) and detector_engine.output_names == DETECTION_OUTPUT_NAMES
    metadata = ModelMetadata.from_props(crop_engine.metadata, str(written["crop"]))
    assert (metadata.graph, metadata.model_name, metadata.input_size) == ("crop", "tiny_test", 64)
    assert len(metadata.checkpoint_sha256) == 64
    metadata.check("crop file", graph="crop", model_name="tiny_test", input_size=64)
    with pytest.raises(ValueError, match=r"graph is 'crop', expected 'detector'; input_size is 64, expected 256"):
        metadata.check("crop file", graph="detector", input_size=256)


def test_onnxruntime_matches_torch_on_hoinet(tiny_network_export):
    network, written = tiny_network_export
    graphs = network_graphs(network)
    rng = np.random.default_rng(3)
    crop_inputs = {"crop": rng.random((1, 3, 64, 64), dtype=np.float32),
                   "hand_box": np.array([[5.0, 8.0, 40.0, 44.0]], np.float32),
                   "object_box": np.array([[20.0, 18.0, 60.0, 58.0]], np.float32)}
    crop_torch = TorchEngine(graphs["crop"].module, graphs["crop"].example_inputs).run(crop_inputs)
    crop_errors = compare_engines(crop_torch, OnnxRuntimeEngine(written["crop"]).run(crop_inputs))
    assert max(crop_errors.values()) < 1e-4, crop_errors
    assert crop_torch["hand_vertices"].shape == (1, 778, 3)
    detector = graphs["detector"]
    frame = {"frame": rng.random((1, 3, 64, 64), dtype=np.float32)}
    detection_torch = TorchEngine(detector.module, detector.example_inputs).run(frame)
    detection_errors = compare_engines(detection_torch, OnnxRuntimeEngine(written["detector"]).run(frame))
    assert max(detection_errors.values()) < 1e-4, detection_errors
    assert detection_torch["boxes"].shape == (1, 5, 4) and detection_torch["classes"].dtype == np.int64


def test_hoinet_onnx_refuses_wrong_crop_size(tiny_network_export):
    _, written = tiny_network_export
    with pytest.raises(EngineInputError, match=r"'crop' has shape \(1, 3, 128, 128\), expected \(batch, 3, 64, 64\)"):
        OnnxRuntimeEngine(written["crop"]).run({"crop": np.zeros((1, 3, 128, 128), np.float32),
                                                "hand_box": np.zeros((1, 4), np.float32),
                                                "object_box": np.zeros((1, 4), np.float32)})


def test_engine_config_replace_gives_one_config_per_graph(tiny_network_export):
    _, written = tiny_network_export
    runtime = EngineConfig(kind="onnxruntime", threads=1)
    engines = {name: create_engine(dataclasses.replace(runtime, model_path=path)) for name, path in written.items()}
    assert engines["detector"].input_names == ("frame",)
