"""The shipped checkpoint fills in for an estimator config that names no model (the node's default)."""

import dataclasses

import pytest

from hoi_perception.pipeline import shipped_model as sm
from hoi_perception.pipeline.config import load_estimator_config
from hoi_perception.pipeline.shipped_model import SHIPPED_CHECKPOINT


def test_torch_engine_runs_the_shipped_checkpoint_directly():
    config = load_estimator_config("perception.yaml", ["engine.kind=torch"])
    assert not sm.names_a_model(config)
    filled = sm.with_shipped_model(config)
    assert filled.checkpoint == SHIPPED_CHECKPOINT and filled.crop_model is None
    filled.check_model_files()


def test_a_named_model_is_left_alone(tmp_path):
    config = load_estimator_config("perception.yaml", [f"crop_model={tmp_path}/a.onnx",
                                                       f"detector_model={tmp_path}/b.onnx"])
    assert sm.with_shipped_model(config) is config


def test_onnx_engines_get_the_cached_export(tmp_path, monkeypatch):
    calls = []

    def fake_export(checkpoint, sha, network, models_dir, object_name, objects):
        calls.append((checkpoint, models_dir, object_name))
        return {"crop": models_dir / "cpu_r18_crop.onnx", "detector": models_dir / "cpu_r18_detector.onnx"}

    monkeypatch.setattr(sm, "export_models", fake_export)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    config = load_estimator_config("perception.yaml", ["object_name=mustard_bottle"])
    filled = sm.with_shipped_model(config)
    ((checkpoint, models_dir, object_name),) = calls
    assert checkpoint == SHIPPED_CHECKPOINT and object_name == "mustard_bottle"
    assert models_dir.parent == tmp_path / "hoi_perception" / "models" and len(models_dir.name) == 16
    assert filled.crop_model == models_dir / "cpu_r18_crop.onnx"
    assert dataclasses.replace(filled, crop_model=None, detector_model=None) == config


def test_a_missing_shipped_checkpoint_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr(sm, "SHIPPED_CHECKPOINT", tmp_path / "absent.pt")
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        sm.with_shipped_model(load_estimator_config("perception.yaml"))
