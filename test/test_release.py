"""hoi-train release: training checkpoint -> the small runtime file."""

from __future__ import annotations

import pytest
import torch

from hoi_perception.models.checkpoint import load_network_checkpoint
from hoi_perception.models.config import load_model_config
from hoi_perception.models.network import HOINet
from hoi_training.cli import main as train_main
from hoi_training.release import release_checkpoint

TINY = ["input_size=32", "backbone.fpn_channels=16", "roi.output_size=8", "hand_head.hourglass_depth=2",
        "hand_head.encoder_rounds=2", "hand_head.regressor_hidden=32", "object_head.num_blocks=1",
        "detection_head.head_channels=8"]


@pytest.fixture()
def training_checkpoint(tmp_path):
    from hoi_perception.config import to_dict

    torch.manual_seed(0)
    config = load_model_config("models/hfl_r18.yaml", TINY)
    network = HOINet(config)
    state = {"model_config": to_dict(config), "model": network.state_dict(), "step": 7, "epoch": 1,
             "optimizer": {"state": {}, "param_groups": []}, "code_version": "test"}
    path = tmp_path / "last.pt"
    torch.save(state, path)
    return path, network


def test_release_keeps_the_weights_in_fp16_and_loads(tmp_path, training_checkpoint):
    source, network = training_checkpoint
    summary = release_checkpoint(source, tmp_path / "shipped.pt")
    data = torch.load(tmp_path / "shipped.pt", weights_only=True)
    assert "optimizer" not in data and data["step"] == 7 and summary["dtype"] == "float16"
    assert all(t.dtype == torch.float16 for t in data["model"].values() if t.is_floating_point())
    loaded = load_network_checkpoint(tmp_path / "shipped.pt")
    for name, value in network.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(loaded.state_dict()[name], value.half().float(), rtol=0, atol=0)
    assert summary["bytes"] < source.stat().st_size


def test_release_refuses_a_foreign_file(tmp_path, caplog):
    bad = tmp_path / "notes.pt"
    torch.save({"weights": 1}, bad)
    assert train_main(["release", "--checkpoint", str(bad), "--out", str(tmp_path / "x.pt")]) == 2
    assert "expected a dict with 'model_config' and 'model'" in caplog.text
    assert not (tmp_path / "x.pt").exists()
