"""ONNX export: atomic writes, clear refusals, metadata, and the export command's checkpoint handling."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from hoi_perception.engines import EngineUnavailableError
from hoi_perception.engines.export import (
    METADATA_PREFIX,
    MethodModule,
    ModelMetadata,
    export_main,
    export_onnx,
    read_onnx_metadata,
    verify_onnx,
)
from hoi_perception.engines.onnx_engine import OnnxRuntimeEngine
from hoi_perception.models.checkpoint import code_version


@dataclass
class PairOutput:
    scaled: torch.Tensor
    total: torch.Tensor


class ScaleNet(nn.Module):
    def __init__(self, scale: float = 2.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale))

    def forward(self, points: torch.Tensor) -> PairOutput:
        return PairOutput(scaled=points * self.scale, total=points.sum(dim=(1, 2)))

    def halve(self, points: torch.Tensor) -> torch.Tensor:
        return points / 2


class FailsWhenTraced(ScaleNet):
    """Runs eagerly (so the dry run passes) but breaks inside torch.onnx.export."""

    def forward(self, points: torch.Tensor) -> PairOutput:
        if torch.jit.is_tracing():
            raise RuntimeError("cannot be traced")
        return super().forward(points)


EXAMPLE = {"points": torch.arange(12, dtype=torch.float32).reshape(2, 3, 2)}


def test_export_writes_a_checked_model_with_names_dynamic_batch_and_metadata(tmp_path):
    path = export_onnx(ScaleNet(), EXAMPLE, tmp_path / "sub" / "scale.onnx", metadata={"purpose": "test"})
    assert path == tmp_path / "sub" / "scale.onnx"
    assert sorted(p.name for p in path.parent.iterdir()) == ["scale.onnx"]  # no temporary files left
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["points"]
    assert [o.name for o in model.graph.output] == ["scaled", "total"]
    assert all(v.type.tensor_type.shape.dim[0].dim_param == "batch" for v in (*model.graph.input, *model.graph.output))
    assert model.opset_import[0].version == 17
    assert read_onnx_metadata(path) == {"purpose": "test"}
    out = OnnxRuntimeEngine(path).run({"points": np.ones((5, 3, 2), np.float32)})
    np.testing.assert_allclose(out["scaled"], 2.0)
    np.testing.assert_allclose(out["total"], 6.0)


def test_export_leaves_the_module_in_eval_mode(tmp_path):
    class Normalised(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.BatchNorm1d(3)

        def forward(self, points: torch.Tensor) -> torch.Tensor:
            return self.norm(points)

    net = Normalised().train()
    export_onnx(net, EXAMPLE, tmp_path / "bn.onnx")
    # A later PyTorch check must not fall back to batch statistics.
    assert not any(m.training for m in net.modules())


def test_export_without_dynamic_batch_fixes_the_batch(tmp_path):
    path = export_onnx(ScaleNet(), EXAMPLE, tmp_path / "fixed.onnx", dynamic_batch=False)
    assert OnnxRuntimeEngine(path).inputs[0].shape == (2, 3, 2)


def test_method_module_exports_another_entry_point(tmp_path):
    path = export_onnx(MethodModule(ScaleNet(), "halve"), EXAMPLE, tmp_path / "halve.onnx")
    engine = OnnxRuntimeEngine(path)
    assert engine.output_names == ("output",)
    np.testing.assert_allclose(engine.run({"points": np.full((1, 3, 2), 4.0, np.float32)})["output"], 2.0)
    with pytest.raises(ValueError, match="has no method 'shrink'"):
        MethodModule(ScaleNet(), "shrink")


def test_failed_export_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="cannot be traced"):
        export_onnx(FailsWhenTraced(), EXAMPLE, path)
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_export_refuses_bad_paths_and_inputs_clearly(tmp_path):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "folder.onnx").mkdir()
    with pytest.raises(ValueError, match="expected a file name ending in .onnx"):
        export_onnx(ScaleNet(), EXAMPLE, tmp_path / "model.pt")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        export_onnx(ScaleNet(), EXAMPLE, tmp_path / "folder.onnx")
    with pytest.raises(NotADirectoryError, match="a_file' is a file"):
        export_onnx(ScaleNet(), EXAMPLE, tmp_path / "a_file" / "model.onnx")
    with pytest.raises(ValueError, match="at least one input"):
        export_onnx(ScaleNet(), {}, tmp_path / "model.onnx")
    with pytest.raises(TypeError, match="example input 'points' must be a torch.Tensor"):
        export_onnx(ScaleNet(), {"points": np.zeros((2, 3, 2))}, tmp_path / "model.onnx")
    with pytest.raises(TypeError, match="keys and values must be strings"):
        export_onnx(ScaleNet(), EXAMPLE, tmp_path / "model.onnx", metadata={"input_size": 256})
    assert not (tmp_path / "model.onnx").exists()


def test_verify_onnx_catches_a_file_from_other_weights(tmp_path):
    path = export_onnx(ScaleNet(2.0), EXAMPLE, tmp_path / "scale.onnx")
    errors = verify_onnx(ScaleNet(2.0), EXAMPLE, path)
    assert max(errors.values()) < 1e-6
    with pytest.raises(ValueError, match=r"differs from PyTorch beyond relative error 0.0001: \{'scaled': 0.33"):
        verify_onnx(ScaleNet(3.0), EXAMPLE, path)


def test_model_metadata_round_trip_and_refusal():
    metadata = ModelMetadata(graph="crop", model_name="hfl_r50", input_size=256, checkpoint_sha256="ab" * 32,
                             code_version="0.1.0")
    props = metadata.to_props()
    assert props[METADATA_PREFIX + "input_size"] == "256"
    assert ModelMetadata.from_props(props, "m.onnx") == metadata
    with pytest.raises(ValueError, match=r"m.onnx: not exported by hoi-perception export .*'hoi_perception.graph'"):
        ModelMetadata.from_props({k: v for k, v in props.items() if not k.endswith("graph")}, "m.onnx")
    with pytest.raises(ValueError, match="model_name is 'hfl_r50', expected 'sho_r50'"):
        metadata.check("m.onnx", model_name="sho_r50", graph="crop")


def test_code_version_names_the_package_or_commit():
    version = code_version()
    assert re.fullmatch(r"(\d+\.\d+\.\d+\S*|git-[0-9a-f]{4,}\S*|unknown)", version)
    root = Path(__file__).resolve().parents[1]
    if (root / ".git").exists():  # a checkout with edits to tracked files is marked as such
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, check=True).stdout
        assert version.endswith(".dirty") == bool(status.strip())


def test_export_main_refuses_bad_checkpoints_and_arguments(tmp_path):
    with pytest.raises(ValueError, match="format must be 'onnx' or 'tensorrt'"):
        export_main(tmp_path / "x.pt", "openvino", tmp_path / "out")
    with pytest.raises(ValueError, match="expected a directory"):
        export_main(tmp_path / "x.pt", "onnx", tmp_path / "model.onnx")
    with pytest.raises(FileNotFoundError, match="x.pt' does not exist"):
        export_main(tmp_path / "x.pt", "onnx", tmp_path / "out")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read as a PyTorch checkpoint"):
        export_main(garbage, "onnx", tmp_path / "out")
    weights_only = tmp_path / "weights_only.pt"
    torch.save({"state_dict": {}}, weights_only)
    with pytest.raises(ValueError, match=r"expected a dict with 'model_config' and 'model', got \['state_dict'\]"):
        export_main(weights_only, "onnx", tmp_path / "out")
    bad_config = tmp_path / "bad_config.pt"
    torch.save({"model_config": {"name": "x", "input_size": 100}, "model": {}}, bad_config)
    with pytest.raises(ValueError, match="bad_config.pt: model_config: input_size must be a positive multiple of 32"):
        export_main(bad_config, "onnx", tmp_path / "out")
    from hoi_perception.config import to_dict
    from hoi_perception.models.config import load_model_config

    config = load_model_config(None, ["backbone.depth=18", "backbone.fpn_channels=16", "interaction.num_heads=2"])
    wrong_weights = tmp_path / "wrong_weights.pt"
    torch.save({"model_config": to_dict(config), "model": {"conv.weight": torch.zeros(1)}}, wrong_weights)
    with pytest.raises(ValueError, match=r"weights do not fit model 'hfl_r50': \d+ missing tensors \(e.g. "
                                         r"\['backbone.*1 unexpected \(e.g. \['conv.weight'\]\)"):
        export_main(wrong_weights, "onnx", tmp_path / "out")
    from hoi_perception.models.network import HOINet

    state = HOINet(config).state_dict()
    state["object_head.out.bias"] = torch.zeros(3)
    resized = tmp_path / "resized.pt"
    torch.save({"model_config": to_dict(config), "model": state}, resized)
    with pytest.raises(ValueError, match=r"weights do not fit model 'hfl_r50': size mismatch for object_head.out.bias"):
        export_main(resized, "onnx", tmp_path / "out")
    assert not Path(tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without a GPU")
def test_export_main_tensorrt_fails_before_exporting_without_a_gpu(tmp_path):
    with pytest.raises(EngineUnavailableError, match="tensorrt engine needs"):
        export_main(tmp_path / "never_read.pt", "tensorrt", tmp_path / "out")
    assert not (tmp_path / "out").exists()
