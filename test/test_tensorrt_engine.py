"""TensorRT plan cache keys (pure, run everywhere) and the engine itself (NVIDIA GPU + tensorrt only)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hoi_perception.engines.tensorrt_engine import EngineCacheKey, default_cache_dir

KEY = EngineCacheKey(onnx_sha256="0f" * 32, tensorrt_version="10.13.3.9", gpu_name="NVIDIA H100 80GB HBM3",
                     compute_capability=(9, 0), precision="fp16", max_batch=4)


def test_cache_key_digest_is_stable_and_names_the_plan():
    assert KEY.digest == dataclasses.replace(KEY).digest
    assert len(KEY.digest) == 16 and int(KEY.digest, 16) >= 0
    path = KEY.plan_path("/cache", "hfl_r50_crop")
    assert path == Path(f"/cache/hfl_r50_crop.fp16.{KEY.digest}.plan")


@pytest.mark.parametrize("field, value", [
    ("onnx_sha256", "1f" * 32),
    ("tensorrt_version", "10.13.3.10"),
    ("gpu_name", "NVIDIA H200"),
    ("compute_capability", (8, 9)),
    ("precision", "fp32"),
    ("max_batch", 8),
])
def test_cache_key_changes_with_every_component(field, value):
    changed = dataclasses.replace(KEY, **{field: value})
    assert changed.digest != KEY.digest
    assert changed.plan_path("/cache", "m") != KEY.plan_path("/cache", "m")


@pytest.mark.parametrize("field, value, message", [
    ("onnx_sha256", "abc", "64 lowercase hex"),
    ("onnx_sha256", "0F" * 32, "64 lowercase hex"),
    ("gpu_name", "", "must be non-empty"),
    ("compute_capability", (9,), r"\(major, minor\)"),
    ("precision", "int8", "fp32 or fp16"),
    ("max_batch", 0, ">= 1"),
])
def test_cache_key_rejects_malformed_components(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(KEY, **{field: value})


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "hoi_perception" / "tensorrt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "hoi_perception" / "tensorrt"


# ----------------------------------------------------------------------------- on a GPU


@dataclass
class HeadOutput:
    features: torch.Tensor
    scores: torch.Tensor


class ConvHead(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8 + 4, 6)

    def forward(self, image: torch.Tensor, box: torch.Tensor) -> HeadOutput:
        features = self.conv2(torch.relu(self.conv1(image)))
        pooled = features.mean(dim=(2, 3))
        return HeadOutput(features=features, scores=torch.softmax(self.fc(torch.cat((pooled, box), 1)), dim=1))


EXAMPLE = {"image": torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)),
           "box": torch.tensor([[1.0, 2.0, 20.0, 24.0], [4.0, 4.0, 30.0, 28.0]]) / 32}


@pytest.fixture
def gpu_onnx(tmp_path):
    pytest.importorskip("tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA GPU")
    from hoi_perception.engines.export import export_onnx

    return export_onnx(ConvHead(), EXAMPLE, tmp_path / "head.onnx")


def _inputs(batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(batch)
    return {"image": rng.random((batch, 3, 32, 32), dtype=np.float32),
            "box": rng.random((batch, 4), dtype=np.float32)}


@pytest.mark.cuda
@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-4), ("fp16", 2e-2)])
def test_tensorrt_matches_torch_and_reuses_its_cache(gpu_onnx, tmp_path, precision, tolerance):
    from hoi_perception.engines.export import compare_engines
    from hoi_perception.engines.tensorrt_engine import TensorRTEngine
    from hoi_perception.engines.torch_engine import TorchEngine

    cache = tmp_path / "plans"
    engine = TensorRTEngine(gpu_onnx, precision=precision, cache_dir=cache, max_batch=4)
    assert not engine.loaded_from_cache and engine.plan_path.is_file()
    assert engine.plan_path.with_suffix(".json").is_file()
    assert engine.input_names == ("image", "box") and engine.output_names == ("features", "scores")
    reference = TorchEngine(ConvHead(), EXAMPLE, device="cuda")
    for batch in (1, 3):
        errors = compare_engines(reference.run(_inputs(batch)), engine.run(_inputs(batch)))
        assert max(errors.values()) < tolerance, errors
    again = TensorRTEngine(gpu_onnx, precision=precision, cache_dir=cache, max_batch=4)
    assert again.loaded_from_cache and again.plan_path == engine.plan_path
    with pytest.raises(ValueError, match="batch 5 exceeds the engine's max_batch 4"):
        again.run(_inputs(5))


@pytest.mark.cuda
def test_tensorrt_rebuilds_when_the_onnx_file_changes_or_the_plan_is_corrupt(gpu_onnx, tmp_path):
    from hoi_perception.engines.export import export_onnx
    from hoi_perception.engines.tensorrt_engine import TensorRTEngine

    cache = tmp_path / "plans"
    first = TensorRTEngine(gpu_onnx, cache_dir=cache, max_batch=2)
    first.plan_path.write_bytes(b"truncated plan")
    repaired = TensorRTEngine(gpu_onnx, cache_dir=cache, max_batch=2)
    assert not repaired.loaded_from_cache and repaired.plan_path == first.plan_path
    export_onnx(ConvHead(seed=1), EXAMPLE, gpu_onnx)  # new weights, same file name
    retrained = TensorRTEngine(gpu_onnx, cache_dir=cache, max_batch=2)
    assert not retrained.loaded_from_cache and retrained.plan_path != first.plan_path
    assert retrained.cache_key.onnx_sha256 != first.cache_key.onnx_sha256
