"""Training throughput of each shipped model config: samples per second of full training steps.

A step is what ``hoi-train fit`` runs per batch: target building, the crop network on
the augmented crops, the detection head on the letterboxed frames, all losses,
backward and the Adam update (fp32 on CPU). Batches are prepared once beforehand from a
small synthetic set (``hoi-train synth`` at 256 x 256), so the numbers measure the
model, not the data pipeline; data preparation per sample is timed separately. The
models are timed round-robin, in a shuffled order each round, in one process after
warm-up steps, so their ratios hold even on a machine shared with other jobs.

    python benchmarks/train_throughput.py [--batch-size 2] [--steps 4] [--warmup 1] \
        [--out benchmarks/results/train_throughput.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hoi_perception.atomic import atomic_write_text  # noqa: E402
from hoi_perception.config import load_config  # noqa: E402
from hoi_perception.models.config import load_model_config  # noqa: E402
from hoi_training.train_config import TrainConfig  # noqa: E402
from hoi_training.trainer import Trainer, TrainingBatch  # noqa: E402

MODELS = ("hfl_r18", "hfl_r50", "sho_r50")
IMAGE_SIZE = 256


@dataclass
class Timing:
    name: str
    trainer: Trainer
    batches: list[TrainingBatch]
    parameters: int
    input_size: int
    prepare_s_per_sample: float
    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)


def make_dataset(out: Path, frames: int) -> None:
    from hoi_training.synth.config import SynthConfig
    from hoi_training.synth.generator import generate_dataset

    config = load_config(SynthConfig, "synth.yaml", [f"camera.width={IMAGE_SIZE}", f"camera.height={IMAGE_SIZE}"])
    generate_dataset(config, out, sequences=1, frames=frames, seed=0)


def build(name: str, data: Path, batch_size: int, batches: int, threads: int, run_dir: Path) -> Timing:
    model_file = f"models/{name}.yaml"
    config = load_config(TrainConfig, {
        "model": model_file,
        "datasets": {"synthetic": {"kind": "synthetic", "config": {"root": str(data)}}},
        "augmentation": {"output_size": _input_size(model_file), "mirror_left_hands": True},
        "batch_size": batch_size, "workers": 0, "device": "cpu", "cpu_threads": threads,
        "output_dir": str(run_dir / name), "image_interval": 0,
    })
    input_size = config.model_config().input_size
    trainer = Trainer(config)
    start = time.perf_counter()
    prepared: list[TrainingBatch] = []
    while len(prepared) < batches:
        for batch in trainer._loader():
            prepared.append(batch)
            if len(prepared) == batches:
                break
        trainer.epoch += 1
    prepare = (time.perf_counter() - start) / (batches * batch_size)
    parameters = sum(p.numel() for p in trainer.network.parameters() if p.requires_grad)
    return Timing(name, trainer, prepared, parameters, input_size, prepare)


def _input_size(model_file: str) -> int:
    return load_model_config(model_file).input_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per model first")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train_throughput.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "synthetic"
        make_dataset(data, frames=max(4, args.batch_size * 2))
        timings = [build(name, data, args.batch_size, args.warmup + args.steps, args.threads, Path(tmp) / "runs")
                   for name in args.models]
        order = list(timings)
        for round_index in range(args.warmup + args.steps):
            random.Random(round_index).shuffle(order)
            for timing in order:
                batch = timing.batches[round_index]
                wall, cpu = time.perf_counter(), time.process_time()
                timing.trainer.train_step(batch)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                if round_index >= args.warmup:
                    timing.wall_s.append(wall)
                    timing.cpu_s.append(cpu)
                print(f"round {round_index} {timing.name}: {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)

    baseline = statistics.median(timings[0].wall_s)
    rows = []
    for t in timings:
        wall, cpu = statistics.median(t.wall_s), statistics.median(t.cpu_s)
        rows.append(f"| {t.name} | {t.input_size} | {t.parameters / 1e6:.1f} | {wall:.2f} | "
                    f"{args.batch_size / wall:.2f} | {cpu / args.batch_size:.2f} | {wall / baseline:.2f}x | "
                    f"{t.prepare_s_per_sample * 1000:.0f} |")
    load = os.getloadavg()[0]
    text = "\n".join([
        "# Training throughput (hoi_training.trainer)", "",
        f"Command: `python benchmarks/train_throughput.py --batch-size {args.batch_size} --steps {args.steps} "
        f"--warmup {args.warmup} --threads {args.threads}`", "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, torch "
        f"{torch.__version__} ({args.threads} intra-op threads), Python {platform.python_version()}; 1-minute load "
        f"average {load:.1f} at the end of the run (cores shared with other jobs, so wall times are inflated; the "
        "ratios between models hold because they were timed round-robin).", "",
        f"A step = targets + crop network + detection head on the letterboxed frame + all losses + backward + Adam, "
        f"fp32 on CPU, batch {args.batch_size}, {args.steps} timed steps per model after {args.warmup} warm-up "
        f"step(s); medians. Data: synthetic {IMAGE_SIZE}x{IMAGE_SIZE} frames, crops at each model's input size. "
        "CPU s/sample is the process's CPU time (all threads); data prep is augmentation + letterbox + collate per "
        "sample, done before timing.", "",
        "| model | input px | trainable params (M) | wall s/step | samples/s | CPU s/sample | wall vs first | "
        "data prep ms/sample |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows, "",
    ])
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
