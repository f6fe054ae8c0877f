"""Plumbing of the resumable experiment drivers (benchmarks/semi_supervised.py, benchmarks/dma_refinement.py).

A driver runs named stages in a fixed order inside one output folder. The folder belongs
to one set of settings (``experiment.json``: a rerun with other settings is refused, so
results never mix), and every step records in ``stages.json`` that it finished, its wall
time and the ``hoi-train`` command it is equivalent to, so the same command line resumes an
interrupted experiment by skipping what is done. The steps that call ``hoi-train`` in
process (synth, fit, eval) are here too, with their resolved configs written beside them.

Latency measurements (the DMA experiment's latency stage, benchmarks/network_latency.py)
share :class:`Timing` and :func:`cpu_name`, so their reports summarise runs the same way.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import yaml

from hoi_perception.atomic import atomic_save_with, atomic_write_json, atomic_write_text
from hoi_perception.config import ConfigError, load_config, to_dict

EXPERIMENT_FILE = "experiment.json"
STAGE_LOG_FILE = "stages.json"
RESULTS_STEM = "results"
# Log lines name their driver (the logger passed to StageLog and run_driver).
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"

T = TypeVar("T")


class StageError(RuntimeError):
    """A stage cannot run (its input is missing) or its tool reported a failure."""


# Bad input a driver reports as one error line and exit code 2 (ConfigError is a ValueError).
DRIVER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, StageError)


# ----------------------------------------------------------------------------- configuration pieces


@dataclass
class SplitSize:
    """How many synthetic sequences of how many frames a split holds."""

    sequences: int
    frames: int

    def validate(self) -> None:
        if self.sequences < 1 or self.frames < 1:
            raise ConfigError(f"sequences and frames must be >= 1, got {self.sequences} and {self.frames}")


@dataclass
class TrainingLength:
    """A run's length: whole epochs, ended earlier by ``max_steps`` optimiser steps when > 0."""

    epochs: int
    max_steps: int = 0

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.max_steps < 0:
            raise ConfigError(f"max_steps must be >= 0 (0: whole epochs), got {self.max_steps}")


def select_scale(scales: Mapping[str, T], name: str, config_source: str) -> T:
    """The scale ``name`` (``--scale``) of an experiment config read from ``config_source``."""
    if name not in scales:
        raise ConfigError(f"--scale '{name}' is not defined in {config_source}; defined: {sorted(scales)}")
    return scales[name]


# ----------------------------------------------------------------------------- output folder and stage log


def claim_output_folder(root: Path, out: Path, settings: dict[str, Any]) -> None:
    """Make ``root`` (``--out`` as typed: ``out``) the folder of the run with ``settings``.

    A new or empty folder records them in ``experiment.json``; a folder that recorded the same
    settings is resumed; one that recorded others, or holds other files, is refused.
    """
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"--out '{out}' exists and is not a folder")
    recorded = root / EXPERIMENT_FILE
    if recorded.is_file():
        saved = json.loads(recorded.read_text())
        if saved != settings:
            differing = sorted(k for k in settings if saved.get(k) != settings[k])
            raise ConfigError(f"--out '{out}' holds an experiment run with other settings (differing: "
                              f"{', '.join(differing)}); use another --out to run these settings")
    elif root.is_dir() and any(root.iterdir()):
        raise FileExistsError(f"--out '{out}' holds other files and no {EXPERIMENT_FILE}; use an empty or new folder")
    else:
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(recorded, settings)


class StageLog:
    """``stages.json``: per step, whether it is done, its wall time and the equivalent command.

    A step skipped on a rerun keeps the wall time of the invocation that finished it. Progress
    lines go to ``log``, the driver's logger.
    """

    def __init__(self, path: Path, log: logging.Logger) -> None:
        self.path = path
        self.log = log
        self.entries: dict[str, dict[str, Any]] = (json.loads(path.read_text())["steps"] if path.is_file() else {})
        self.this_run: dict[str, str] = {}  # step -> "ran" | "skipped" | "not trained", for this invocation

    def done(self, step: str) -> bool:
        return self.entries.get(step, {}).get("status") == "done"

    def run(self, step: str, command: str | None, finished: Callable[[], bool], work: Callable[[], Any]) -> None:
        """Run ``work`` unless ``finished()`` says the output is already there; record the outcome."""
        if finished():
            self.log.info("%s: output exists, skipped", step)
            self.entries.setdefault(step, {"status": "done", "wall_s": None, "command": command})
            self.this_run[step] = "skipped"
            self._save()
            return
        self.log.info("%s: running", step)
        start = time.perf_counter()
        work()
        self.entries[step] = {"status": "done", "wall_s": time.perf_counter() - start, "command": command}
        self.this_run[step] = "ran"
        self._save()

    def note(self, step: str, status: str, reason: str) -> None:
        """Record a step that was deliberately not run (e.g. no pseudo-label kept)."""
        self.entries[step] = {"status": status, "wall_s": None, "command": None, "reason": reason}
        self.this_run[step] = status
        self._save()

    def _save(self) -> None:
        atomic_write_json(self.path, {"steps": self.entries})


def run_stages(requested: Sequence[str], actions: Mapping[str, Callable[[], Any]]) -> None:
    """Run the ``requested`` stages in the order of ``actions`` (the pipeline's), whatever order they are given in."""
    unknown = [s for s in requested if s not in actions]
    if unknown:
        raise ValueError(f"--stages: unknown stage(s) {unknown}; expected some of {list(actions)}")
    for stage, action in actions.items():
        if stage in requested:
            action()


def require(path: Path, stage: str, producer: str) -> None:
    """Stop ``stage`` with what to run first when its input ``path`` (written by stage ``producer``) is missing."""
    if not path.exists():
        raise StageError(f"stage '{stage}' needs {path}, which the '{producer}' stage writes; run it first "
                         f"(--stages {producer})")


def written_after(output: Path, source: Path) -> bool:
    """``output`` exists and was written after ``source`` (a retrained model invalidates what came from it)."""
    return output.is_file() and source.is_file() and output.stat().st_mtime >= source.stat().st_mtime


def commands_section(script: str, results: Mapping[str, Any], out: Path, step_order: Sequence[str], steps_intro: str,
                     command_cell: Callable[[Mapping[str, Any]], str]) -> list[str]:
    """The report's "Commands" section: how to rerun ``script`` with the run's config and scale, then every step
    of ``results["steps"]`` (``stages.json``) in pipeline order with its wall time and ``command_cell(entry)``."""
    lines = ["## Commands", "", "Rerun (resumes; finished steps are skipped):", "", "```",
             command_line("PYTHONPATH=.", "python", script, "--config", results["config"], "--out", out, "--scale",
                          results["scale"]), "```", "", steps_intro, "", "| step | wall s | command |",
             "| --- | --- | --- |"]
    for step, entry in sorted(results["steps"].items(), key=lambda item: step_order.index(item[0])):
        wall = entry.get("wall_s")
        lines.append(f"| {step} | {'n/a' if wall is None else f'{wall:.2f}'} | {command_cell(entry)} |")
    return lines


# ----------------------------------------------------------------------------- commands


def command_line(*parts: Any) -> str:
    """A shell command; paths under the working directory are shown relative to it, as typed from there."""
    return " ".join(shlex.quote(str(shown(p) if isinstance(p, Path) else p)) for p in parts)


def shown(path: Path) -> Path:
    """``path`` relative to the working directory when it lies under it, else as it is."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def repeated_flag(flag: str, values: Iterable[str]) -> list[str]:
    """``flag`` before each value (``--set a=1 --set b=2``)."""
    return [item for value in values for item in (flag, value)]


# ----------------------------------------------------------------------------- hoi-train steps


def write_resolved_config(path: Path, config: Any, header: str | None = None) -> Path:
    """Write a validated config dataclass as YAML (after a ``# header`` comment line) and return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(to_dict(config), sort_keys=False)
    atomic_write_text(path, text if header is None else f"# {header}\n{text}")
    return path


def synthetic_data_step(log: StageLog, step: str, out: Path, size: SplitSize, seed: int, domain: str,
                        synth_overrides: Sequence[str], bags: bool = False) -> None:
    """``hoi-train synth`` of one split into ``out`` (with ROS 2 bags when ``bags``); done when its manifest is."""
    from hoi_perception.synth.config import SynthConfig
    from hoi_perception.synth.generator import generate_dataset

    command = command_line("hoi-train", "synth", "--out", out, "--sequences", size.sequences, "--frames",
                           size.frames, "--seed", seed, "--domain", domain, *(["--bag"] if bags else []),
                           *repeated_flag("--set", synth_overrides))

    def work() -> None:
        config = load_config(SynthConfig, "synth.yaml", synth_overrides)
        generate_dataset(config, out, sequences=size.sequences, frames=size.frames, seed=seed, domain=domain,
                         write_bags=bags)

    log.run(step, command, lambda: (out / "manifest.json").is_file(), work)


def training_step(log: StageLog, step: str, config_path: Path, run: Path, checkpoint: Path) -> None:
    """``hoi-train fit`` of ``config_path`` into ``run``; an interrupted run resumes from ``checkpoint``."""
    from hoi_training.trainer import NON_FINITE_EXIT_CODE, fit_main

    command = command_line("hoi-train", "fit", "--config", config_path, "--out", run)

    def work() -> None:
        code = fit_main(config_path, (), resume=checkpoint.is_file(), out_dir=run)
        if code == NON_FINITE_EXIT_CODE:
            raise StageError(f"{step}: training stopped on a non-finite loss (see the log); {checkpoint} holds "
                             "the last good state")
        if code != 0:
            raise StageError(f"{step}: hoi-train fit returned {code}")

    log.run(step, command, lambda: log.done(step) and checkpoint.is_file(), work)


def synthetic_evaluation_config(path: Path, dataset: Path, overrides: Sequence[str]) -> Path:
    """Write the resolved evaluation config of a synthetic split (ground-truth boxes) and return its path."""
    from hoi_training.evaluate import EvaluationRunConfig

    data = {"dataset": {"kind": "synthetic", "config": {"root": str(dataset)}}, "boxes": "ground_truth"}
    return write_resolved_config(path, load_config(EvaluationRunConfig, data, overrides))


def evaluation_step(log: StageLog, step: str, checkpoint: Path, config_path: Path, out: Path,
                    metrics: Path) -> None:
    """``hoi-train eval`` of ``checkpoint`` into ``out``; done when ``metrics`` is newer than the checkpoint."""
    from hoi_training.evaluate import eval_main

    command = command_line("hoi-train", "eval", "--checkpoint", checkpoint, "--data", config_path, "--out", out)

    def work() -> None:
        code = eval_main(checkpoint, config_path, out)
        if code != 0:
            raise StageError(f"eval of {checkpoint} returned {code}")

    log.run(step, command, lambda: written_after(metrics, checkpoint), work)


# ----------------------------------------------------------------------------- command line


def experiment_parser(description: str, default_config: str, scale_help: str,
                      stages: Sequence[str]) -> argparse.ArgumentParser:
    """The options every driver takes: --config, --out, --scale, --stages, --publish."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=default_config,
                        help=f"experiment config (default config/{default_config})")
    parser.add_argument("--out", required=True, help="output folder; rerun the same command to resume")
    parser.add_argument("--scale", default="smoke", help=scale_help)
    parser.add_argument("--stages", nargs="+", default=list(stages), metavar="STAGE",
                        help=f"stages to run, any of {' '.join(stages)} (default: all)")
    parser.add_argument("--publish", type=Path, default=None, metavar="STEM",
                        help="also write the report to STEM.json, STEM.md (and STEM.png where the driver plots), "
                             "e.g. benchmarks/results/<experiment>")
    return parser


def write_report_files(stems: Sequence[Path], results: Mapping[str, Any], markdown: Callable[[str | None], str],
                       plot: Callable[[Mapping[str, Any]], Any] | None = None) -> None:
    """Write ``results`` as STEM.json and STEM.md (and the figure ``plot`` draws as STEM.png) for every stem.

    ``markdown(image)`` renders the report; ``image`` is the PNG's file name beside it, or None
    without a plot. Every file is written atomically.
    """
    figure = None if plot is None else plot(results)
    try:
        for stem in stems:
            image = None
            if figure is not None:
                image = stem.name + ".png"
                atomic_save_with(stem.with_name(image), lambda handle: figure.savefig(handle, format="png", dpi=110))
            atomic_write_json(stem.with_name(stem.name + ".json"), results)
            atomic_write_text(stem.with_name(stem.name + ".md"), markdown(image))
    finally:
        if figure is not None:
            import matplotlib.pyplot as plt

            plt.close(figure)


def run_driver(log: logging.Logger, run: Callable[[], Mapping[str, str]]) -> int:
    """Exit code of a driver's ``main``: 0 after ``run`` (which returns step -> outcome), 2 on bad input or a
    failed stage, whose message is logged as one line."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        outcome = run()
    except DRIVER_ERRORS as exc:
        log.error("%s", exc)
        return 2
    log.info("steps: %s", ", ".join(f"{k} {v}" for k, v in outcome.items()) or "none")
    return 0


# ----------------------------------------------------------------------------- latency records


@dataclass
class Timing:
    """Milliseconds per call: median and 10-90 % spread of the timed runs."""

    median_ms: float
    p10_ms: float
    p90_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Timing:
        ms = np.asarray(seconds) * 1e3
        return cls(float(np.median(ms)), float(np.percentile(ms, 10)), float(np.percentile(ms, 90)))


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what the platform module knows (e.g. ``aarch64``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
