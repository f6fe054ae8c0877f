"""Training curves of staged runs, read back from real TensorBoard event files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorboard")
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from hoi_training.cli import main as train_main  # noqa: E402
from hoi_training.curves import moving_average, parse_stage, plot_curves, read_stage  # noqa: E402


def _write_run(run_dir, losses: dict[str, list[float]], lr: list[float]) -> None:
    writer = SummaryWriter(str(run_dir / "tensorboard"))
    for i, value in enumerate(lr):
        step = 10 * (i + 1)
        for tag, values in losses.items():
            writer.add_scalar(f"loss/{tag}", values[i], step)
        writer.add_scalar("train/lr", value, step)
    writer.close()


def test_moving_average_is_centred_and_keeps_length() -> None:
    values = np.array([0.0, 3.0, 6.0, 9.0, 12.0])
    np.testing.assert_allclose(moving_average(values, 3), [1.5, 3.0, 6.0, 9.0, 10.5])
    np.testing.assert_allclose(moving_average(values, 1), values)
    assert moving_average(values, 50).shape == (5,)  # a window longer than the series shrinks to it
    np.testing.assert_allclose(moving_average(values, 50), [3.0, 4.5, 6.0, 7.5, 9.0])


def test_parse_stage_names_the_expected_form() -> None:
    assert parse_stage("stage1=runs/a") == ("stage1", Path("runs/a"))
    with pytest.raises(ValueError, match="NAME=RUN_DIR"):
        parse_stage("runs/a")


def test_read_stage_returns_each_scalar_in_step_order(tmp_path) -> None:
    _write_run(tmp_path / "a", {"heatmaps": [5.0, 4.0, 3.0], "total": [9.0, 8.0, 7.0]}, [1e-3, 2e-3, 1e-3])
    stage = read_stage("a", tmp_path / "a")
    steps, values = stage.scalars["loss/heatmaps"]
    np.testing.assert_array_equal(steps, [10, 20, 30])
    np.testing.assert_allclose(values, [5.0, 4.0, 3.0])
    assert stage.last_step == 30
    assert set(stage.scalars) == {"loss/heatmaps", "loss/total", "train/lr"}


def test_read_stage_refuses_a_folder_without_event_files(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no TensorBoard event files"):
        read_stage("x", tmp_path)


def test_curves_command_writes_a_png_of_the_stages(tmp_path, capsys) -> None:
    _write_run(tmp_path / "s1", {"heatmaps": [5.0, 4.0, 3.0]}, [1e-3, 2e-3, 1e-3])
    _write_run(tmp_path / "s2", {"heatmaps": [3.0, 2.5], "object_votes": [90.0, 80.0]}, [1e-3, 5e-4])
    out = tmp_path / "curves.png"
    assert train_main(["curves", "--run", f"one={tmp_path / 's1'}", "--run", f"two={tmp_path / 's2'}",
                       "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "one (30 steps), two (20 steps)" in capsys.readouterr().out


def test_plot_curves_needs_a_loss(tmp_path) -> None:
    _write_run(tmp_path / "s", {}, [1e-3, 2e-3])
    with pytest.raises(ValueError, match="none of the runs logged a loss"):
        plot_curves([read_stage("s", tmp_path / "s")], tmp_path / "x.png")
