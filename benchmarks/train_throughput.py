"""Training throughput of each training recipe: samples per second of its training steps.

A step is what ``hoi-train fit`` runs per batch with the recipe's own config (model,
stage, batch size, optimiser): for a full step, target building, the crop network on
the augmented crops, the detection head on the letterboxed frames when the recipe
trains it, all losses, backward and the update (fp32 on CPU); for the CPU recipe's
stages, what that stage computes (``stage: heatmaps`` / ``detector``). Batches are
prepared once beforehand from a small synthetic set (``hoi-train synth`` at 256 x 256),
so the numbers measure the model, not the data pipeline; data preparation per sample
is timed separately. The recipes are timed round-robin, in a shuffled order each round,
in one process after warm-up steps, so their ratios hold even on a machine shared with
other jobs.

    python benchmarks/train_throughput.py [--steps 4] [--warmup 1] [--recipes NAME ...] \
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
from hoi_perception.config import load_config, to_dict  # noqa: E402
from hoi_perception.models.config import load_model_config  # noqa: E402
from hoi_perception.models.network import HOINet  # noqa: E402
from hoi_training.train_config import TrainConfig  # noqa: E402
from hoi_training.trainer import Trainer, TrainingBatch  # noqa: E402

# name -> (training config, overrides). The first is the baseline of the ratio column.
RECIPES: dict[str, tuple[str, list[str]]] = {
    "hfl_r18, previous CPU recipe (batch 8, joint detection)": ("train/synthetic_hfl_r18_cpu.yaml", []),
    "cpu_r18 stage 1: heatmaps (batch 32)": ("train/cpu_r18_2d.yaml", []),
    "cpu_r18 stage 2: all crop heads (batch 16)": ("train/cpu_r18_full.yaml", ["init_checkpoint=null"]),
    "cpu_r18 stage 3: detector (batch 32)": ("train/cpu_r18_detector.yaml", ["init_checkpoint=INIT"]),
    "hfl_r50, GPU recipe (batch 2)": ("train/synthetic_hfl_r18.yaml", ["model=models/hfl_r50.yaml", "batch_size=2"]),
}
DEFAULT_RECIPES = list(RECIPES)[:4]
IMAGE_SIZE = 256


@dataclass
class Timing:
    name: str
    trainer: Trainer
    batches: list[TrainingBatch]
    input_size: int
    prepare_s_per_sample: float
    batch_size: int
    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)


def make_dataset(out: Path, frames: int) -> None:
    from hoi_perception.synth.config import SynthConfig
    from hoi_perception.synth.generator import generate_dataset

    config = load_config(SynthConfig, "synth.yaml", [f"camera.width={IMAGE_SIZE}", f"camera.height={IMAGE_SIZE}"])
    generate_dataset(config, out, sequences=1, frames=frames, seed=0)


def build(name: str, data: Path, batches: int, threads: int, run_dir: Path, init: Path) -> Timing:
    config_file, overrides = RECIPES[name]
    datasets = {"synthetic": {"kind": "synthetic", "config": {"root": str(data)}}}
    config = load_config(TrainConfig, config_file, [o.replace("INIT", str(init)) for o in overrides] + [
        f"datasets={datasets}", "workers=0", "device=cpu", f"cpu_threads={threads}", "image_interval=0",
        f"output_dir={run_dir / str(abs(hash(name)))}"])
    batch_size = config.batch_size
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
    return Timing(name, trainer, prepared, input_size, prepare, batch_size)


def trained_parameters(trainer: Trainer) -> int:
    """Parameter values the last step gave a gradient (a stage may leave modules it holds untouched,
    e.g. the detector's own trunk in the crop stages)."""
    return sum(p.numel() for p in trainer.network.parameters() if p.grad is not None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per model first")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--recipes", nargs="+", default=DEFAULT_RECIPES, choices=list(RECIPES))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train_throughput.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "synthetic"
        make_dataset(data, frames=64)
        init = Path(tmp) / "cpu_r18_init.pt"  # the detector stage starts from trained weights; any will do here
        network = HOINet(load_model_config("models/cpu_r18.yaml"))
        torch.save({"model_config": to_dict(network.config), "model": network.state_dict()}, init)
        timings = [build(name, data, args.warmup + args.steps, args.threads, Path(tmp) / "runs", init)
                   for name in args.recipes]
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

    baseline = timings[0].batch_size / statistics.median(timings[0].wall_s)  # samples/s
    rows = []
    for t in timings:
        wall, cpu = statistics.median(t.wall_s), statistics.median(t.cpu_s)
        rows.append(f"| {t.name} | {t.input_size} | {trained_parameters(t.trainer) / 1e6:.1f} | {wall:.2f} | "
                    f"{t.batch_size / wall:.2f} | {cpu / t.batch_size:.3f} | {(t.batch_size / wall) / baseline:.2f}x | "
                    f"{t.prepare_s_per_sample * 1000:.0f} |")
    load = os.getloadavg()[0]
    text = "\n".join([
        "# Training throughput (hoi_training.trainer)", "",
        f"Command: `python benchmarks/train_throughput.py --steps {args.steps} --warmup {args.warmup} "
        f"--threads {args.threads}`", "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, torch "
        f"{torch.__version__} ({args.threads} intra-op threads), Python {platform.python_version()}; 1-minute load "
        f"average {load:.1f} at the end of the run (cores shared with other jobs, so wall times are inflated; the "
        "ratios between recipes hold because they were timed round-robin).", "",
        f"A step = what `hoi-train fit` runs per batch with each recipe's own config (stage, batch size, optimiser; "
        f"fp32 on CPU), {args.steps} timed steps per recipe after {args.warmup} warm-up step(s); medians. Data: "
        f"synthetic {IMAGE_SIZE}x{IMAGE_SIZE} frames, crops at each model's input size. CPU s/sample is the "
        "process's CPU time (all threads); data prep is augmentation + letterbox + collate per sample, done before "
        "timing.", "",
        "| recipe | input px | trained params (M) | wall s/step | samples/s | CPU s/sample | samples/s vs first | "
        "data prep ms/sample |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows, "",
    ])
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
