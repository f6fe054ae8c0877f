"""Training curves of a staged recipe as one PNG, read from the runs' TensorBoard logs.

A released model's card shows how it was trained: each stage is its own run folder (its own
optimiser and step counter), so the stages are laid end to end on one step axis, with a
line where each begins. Each loss term gets its own panel (log scale, a moving average over
the logged points drawn over the raw ones), and the learning rate its own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hoi_perception.atomic import atomic_write_bytes

LOSS_PREFIX = "loss/"
LR_TAG = "train/lr"


@dataclass(frozen=True)
class StageCurves:
    """One run's logged scalars: tag -> (steps, values), both 1-D arrays of equal length."""

    name: str
    scalars: dict[str, tuple[np.ndarray, np.ndarray]]

    @property
    def last_step(self) -> int:
        return max((int(steps[-1]) for steps, _ in self.scalars.values() if len(steps)), default=0)


def parse_stage(text: str) -> tuple[str, Path]:
    """``NAME=RUN_DIR`` -> (name, run folder)."""
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise ValueError(f"--run '{text}': expected NAME=RUN_DIR, e.g. stage1=runs/cpu_r18_2d")
    return name, Path(folder)


def read_stage(name: str, run_dir: str | Path) -> StageCurves:
    """Every scalar of the run's ``tensorboard/`` folder (all event files, later points win)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # it logs each file it finished reading
    folder = Path(run_dir) / "tensorboard"
    if not folder.is_dir() or not any(folder.glob("events.out.tfevents.*")):
        raise FileNotFoundError(f"--run {name}: '{folder}' has no TensorBoard event files (a hoi-train fit run "
                                "folder was expected)")
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    scalars = {}
    for tag in accumulator.Tags()["scalars"]:
        by_step = {event.step: event.value for event in accumulator.Scalars(tag)}  # a resumed run relogs steps
        steps = np.array(sorted(by_step), dtype=np.int64)
        scalars[tag] = (steps, np.array([by_step[s] for s in steps], dtype=np.float64))
    return StageCurves(name, scalars)


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` points, shrinking at the ends (same length as ``values``)."""
    window = min(window, len(values))
    if window <= 1:
        return values.astype(np.float64)
    kernel = np.ones(window)
    padded_sum = np.convolve(values, kernel, mode="same")
    counts = np.convolve(np.ones(len(values)), kernel, mode="same")
    return padded_sum / counts


def plot_curves(stages: Sequence[StageCurves], out: str | Path, smooth: int = 9, title: str = "") -> Path:
    """Write the PNG; returns its path. Stage k's steps are offset by the last step of stages < k."""
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    if not stages:
        raise ValueError("no stages to plot")
    losses = sorted({tag for stage in stages for tag in stage.scalars if tag.startswith(LOSS_PREFIX)})
    if not losses:
        raise ValueError("none of the runs logged a loss (TensorBoard tags loss/...)")
    panels = losses + [LR_TAG]
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.9 * rows), squeeze=False,
                             sharex=True)
    offsets = np.cumsum([0] + [stage.last_step for stage in stages[:-1]])
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, tag in zip(axes.flat, panels, strict=False):
        for k, (stage, offset) in enumerate(zip(stages, offsets, strict=True)):
            if tag not in stage.scalars:
                continue
            steps, values = stage.scalars[tag]
            colour = colours[k % len(colours)]
            axis.plot(steps + offset, values, color=colour, alpha=0.25, linewidth=0.8)
            axis.plot(steps + offset, moving_average(values, smooth), color=colour, linewidth=1.5,
                      label=stage.name)
        for offset in offsets[1:]:
            axis.axvline(offset, color="grey", linestyle=":", linewidth=0.8)
        if tag != LR_TAG and np.all([np.all(s.scalars[tag][1] > 0) for s in stages if tag in s.scalars]):
            axis.set_yscale("log")
        axis.set_title(tag.removeprefix(LOSS_PREFIX) if tag != LR_TAG else "learning rate", fontsize=10)
        axis.set_xlabel("step (stages end to end)", fontsize=8)
        axis.xaxis.set_tick_params(labelbottom=True)
        axis.tick_params(labelsize=8)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    labelled = {}
    for axis in axes.flat:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            labelled.setdefault(label, handle)
    figure.legend(list(labelled.values()), list(labelled), loc="upper right", fontsize=9)
    if title:
        figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    path = Path(out)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def curves_main(runs: Sequence[str], out: str | Path, smooth: int, title: str) -> int:
    stages = [read_stage(*parse_stage(text)) for text in runs]
    path = plot_curves(stages, out, smooth=smooth, title=title)
    print(f"wrote {path}: {', '.join(f'{s.name} ({s.last_step} steps)' for s in stages)}")
    return 0
