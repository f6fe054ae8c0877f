"""Dense Mutual Attention refinement experiment (issue #9) on the synthetic lab domain, as one resumable script.

A DMA refiner (``refine: dma``, :mod:`hoi_perception.models.refinement`) is trained on top
of a first-stage checkpoint (the shipped cpu_r18 for the ``cpu_r18`` scale, the earlier
hfl_r18 for ``cpu``) with the first stage frozen (``trainable: refiner``), then the same
held-out frames are scored with refinement off (the first stage alone) and on: hand MPJPE /
PA-MPJPE, object ADD(-S)-0.1D, penetration depth and contact percentage, with ground-truth boxes. The
ground-truth meshes' own penetration and contact are reported beside them, since the
synthetic grasps are not perfectly penetration-free either. Latency: the refine graph
against the first stage's crop network, batch 1, PyTorch and ONNX Runtime interleaved
run by run in the same process, reported as milliseconds and as ratios.

Stages (:data:`STAGES`), in order; each step is skipped when its output exists, so the
same command resumes an interrupted experiment::

    data       hoi-train synth: train (refiner training) and test (held-out) lab sequences
    base       hoi-train fit of the first stage, only for a scale without base_checkpoint (smoke)
    refine     hoi-train fit of the scale's DMA model from the base (init_checkpoint, trainable)
    evaluate   first_stage.pt (the refined model without its refiner) and hoi-train eval of
               both models on the test split; ground-truth interaction reference
    latency    ONNX export and timing of the crop networks and the refine graph
    report     results.json, results.md and results.png (and --publish STEM.json/.md/.png)

Output folder::

    OUT/experiment.json, OUT/stages.json     settings (a rerun must match them), per-step log
    OUT/data/{train,test}/                   synthetic datasets
    OUT/configs/*.yaml                       resolved training and evaluation configs
    OUT/runs/{base,refiner}/                 training runs (checkpoints/last.pt)
    OUT/models/first_stage.pt                the refined model's first stage (refinement off)
    OUT/eval/{refinement_off,refinement_on}/metrics.json, OUT/eval/ground_truth.json
    OUT/latency/latency.json (+ the ONNX graphs timed)
    OUT/results.json, OUT/results.md

Cost of training the refiner alone: a step of hfl_r18_dma at 128 px, batch 8, with the
first stage frozen took 0.4-0.6x the time of an end-to-end step (1-thread measurements on
the shared 2-core development machine: 1.9 s against 4.7 s, and 10 s against 16 s for a
plain hfl_r18 step under heavier load): the backbone's backward pass is gone, the
refiner's forward and backward and the per-crop PnP and hand-translation solves remain.
The ``cpu`` scale's time estimate is in its config.

    PYTHONPATH=. python benchmarks/dma_refinement.py --config experiments/dma_refinement.yaml \\
        --out runs/dma_refinement_cpu --scale cpu --publish benchmarks/results/dma_refinement
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from benchmarks.experiment_runs import (
    RESULTS_STEM,
    STAGE_LOG_FILE,
    SplitSize,
    StageError,
    StageLog,
    Timing,
    TrainingLength,
    claim_output_folder,
    commands_section,
    cpu_name,
    evaluation_step,
    experiment_parser,
    require,
    run_driver,
    run_stages,
    select_scale,
    shown,
    synthetic_data_step,
    synthetic_evaluation_config,
    training_step,
    write_report_files,
    write_resolved_config,
    written_after,
)
from hoi_perception.atomic import atomic_save_with, atomic_write_json
from hoi_perception.config import ConfigError, load_config, read_yaml, resolve_config_path, to_dict
from hoi_perception.engines.base import file_sha256
from hoi_perception.models.dma.refiner import DMAConfig

log = logging.getLogger("dma_refinement")

STAGES = ("data", "base", "refine", "evaluate", "latency", "report")
REFINER_PREFIX = "refiner."
FIRST_STAGE_FORMAT = "hoi_perception_first_stage/1"


# ----------------------------------------------------------------------------- configuration


@dataclass
class Seeds:
    """The two synthetic splits and the training runs."""

    train: int
    test: int
    training: int

    def validate(self) -> None:
        if min(self.train, self.test, self.training) < 0:
            raise ConfigError("seeds must be >= 0")
        if self.train == self.test:
            raise ConfigError(f"seeds.train and seeds.test are both {self.train}: the refiner would be scored on its "
                              "training sequences; give the test split another seed")


@dataclass
class LatencyConfig:
    """Timing of the graphs: intra-op threads of both runtimes, untimed warm-up runs, timed runs."""

    threads: int = 1
    warmup: int = 5
    runs: int = 30

    def validate(self) -> None:
        if self.threads < 1 or self.warmup < 0 or self.runs < 1:
            raise ConfigError(f"latency: need threads >= 1, warmup >= 0, runs >= 1, got {self.threads}, "
                              f"{self.warmup}, {self.runs}")


@dataclass
class ScaleConfig:
    """One scale (smoke, cpu). ``base_checkpoint``: the first stage (a training or released hfl_r18
    checkpoint; relative paths from the working folder); null trains one here for ``base_training``
    steps with ``train_config`` as it is. The refinement run uses ``train_config`` with the model
    switched to ``model`` plus ``model_overrides``. Overrides are ``key=value`` strings applied to
    config/synth.yaml, the training config and the evaluation config."""

    train: SplitSize
    test: SplitSize
    train_config: str
    model: str
    refiner_training: TrainingLength
    base_checkpoint: str | None = None
    base_training: TrainingLength | None = None
    synth_overrides: list[str] = field(default_factory=list)
    model_overrides: list[str] = field(default_factory=list)
    train_overrides: list[str] = field(default_factory=list)
    evaluation_overrides: list[str] = field(default_factory=list)
    latency: LatencyConfig = field(default_factory=LatencyConfig)

    def validate(self) -> None:
        if (self.base_checkpoint is None) == (self.base_training is None):
            raise ConfigError("give exactly one of base_checkpoint (a trained first stage) and base_training (train "
                              f"one here); got base_checkpoint {self.base_checkpoint!r}, base_training "
                              f"{self.base_training!r}")


@dataclass
class ExperimentConfig:
    """config/experiments/dma_refinement.yaml."""

    seeds: Seeds
    scales: dict[str, ScaleConfig]
    trainable: Literal["refiner", "all"] = "refiner"

    def validate(self) -> None:
        if not self.scales:
            raise ConfigError("scales: expected at least one scale (e.g. smoke, cpu)")


@dataclass(frozen=True)
class Row:
    """One row of the table: refinement off (the first stage) or on."""

    name: str
    label: str


OFF = Row("refinement_off", "refinement off (first stage)")
ON = Row("refinement_on", "refinement on (DMA)")
ROWS = (OFF, ON)
STEP_ORDER = ("data/train", "data/test", "train/base", "train/refiner", "first_stage",
              *(f"eval/{r.name}" for r in ROWS), "eval/ground_truth", "latency")


# ----------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class ExperimentLayout:
    """Where every stage reads and writes inside the output folder."""

    root: Path

    def data(self, split: str) -> Path:
        return self.root / "data" / split

    def config_file(self, name: str) -> Path:
        return self.root / "configs" / f"{name}.yaml"

    def run(self, name: str) -> Path:
        return self.root / "runs" / name

    def checkpoint(self, name: str) -> Path:
        return self.run(name) / "checkpoints" / "last.pt"

    @property
    def first_stage(self) -> Path:
        return self.root / "models" / "first_stage.pt"

    def evaluation(self, row: Row) -> Path:
        return self.root / "eval" / row.name

    def metrics(self, row: Row) -> Path:
        return self.evaluation(row) / "metrics.json"

    @property
    def ground_truth(self) -> Path:
        return self.root / "eval" / "ground_truth.json"

    @property
    def latency(self) -> Path:
        return self.root / "latency" / "latency.json"


# ----------------------------------------------------------------------------- the experiment


class Experiment:
    """The stages of one scale of the experiment in one output folder."""

    def __init__(self, config: ExperimentConfig, scale: str, out: str | Path, config_source: str,
                 publish: Path | None = None) -> None:
        self.scale = select_scale(config.scales, scale, config_source)
        self.config = config
        self.scale_name = scale
        self.config_source = config_source
        self.publish = publish  # the report is also written to publish.json / .md / .png
        self.out = Path(out)
        self.layout = ExperimentLayout(self.out.resolve())
        self.settings = {"scale": scale, "seeds": to_dict(config.seeds), "trainable": config.trainable,
                         "scale_config": to_dict(self.scale)}
        claim_output_folder(self.layout.root, self.out, self.settings)
        self.log = StageLog(self.layout.root / STAGE_LOG_FILE, log)

    def run(self, stages: Sequence[str] = STAGES) -> dict[str, str]:
        """Run ``stages`` (in pipeline order, whatever order they are given in); returns step -> outcome."""
        run_stages(stages, {"data": self.generate_data, "base": self.train_base, "refine": self.train_refiner,
                            "evaluate": self.evaluate, "latency": self.measure_latency, "report": self.write_report})
        return dict(self.log.this_run)

    # -- data

    def generate_data(self) -> None:
        for split, size, seed in (("train", self.scale.train, self.config.seeds.train),
                                  ("test", self.scale.test, self.config.seeds.test)):
            synthetic_data_step(self.log, f"data/{split}", self.layout.data(split), size, seed, "lab",
                                self.scale.synth_overrides)

    # -- training

    def base_checkpoint(self) -> Path:
        """The first stage the refiner starts from: the configured checkpoint, or the one the base stage trains."""
        if self.scale.base_checkpoint is not None:
            return Path(self.scale.base_checkpoint).expanduser().resolve()
        return self.layout.checkpoint("base")

    def training_config(self, name: str) -> Path:
        """Write the resolved config of run ``name`` (base or refiner), validated, and return its path."""
        from hoi_training.train_config import TrainConfig

        scale = self.scale
        data = read_yaml(scale.train_config)
        data["datasets"] = {"train": {"kind": "synthetic", "config": {"root": str(self.layout.data("train"))},
                                      "weight": 1.0, "object_loss": True}}
        overrides = [f"seed={self.config.seeds.training}", f"output_dir={self.layout.run(name)}"]
        if name == "base":
            length = scale.base_training
        else:
            data["model"] = scale.model
            data["model_overrides"] = [*data.get("model_overrides", []), *scale.model_overrides]
            overrides += [f"init_checkpoint={self.base_checkpoint()}", f"trainable={self.config.trainable}"]
            length = scale.refiner_training
        overrides += [f"epochs={length.epochs}", f"max_steps={length.max_steps}", *scale.train_overrides]
        config = load_config(TrainConfig, data, overrides)
        return write_resolved_config(self.layout.config_file(f"train_{name}"), config,
                                     f"{name}: written by benchmarks/dma_refinement.py (scale {self.scale_name})")

    def _train(self, name: str) -> None:
        training_step(self.log, f"train/{name}", self.training_config(name), self.layout.run(name),
                      self.layout.checkpoint(name))

    def train_base(self) -> None:
        if self.scale.base_training is None:
            return  # the scale names a trained first stage
        require(self.layout.data("train") / "manifest.json", "base", "data")
        self._train("base")

    def train_refiner(self) -> None:
        require(self.layout.data("train") / "manifest.json", "refine", "data")
        base = self.base_checkpoint()
        if not base.is_file():
            if self.scale.base_checkpoint is not None:
                raise StageError(f"refine: the base checkpoint {base} does not exist; release the trained first "
                                 "stage there first (hoi-train release, see README) or point base_checkpoint at it")
            require(base, "refine", "base")
        self._train("refiner")

    # -- evaluation

    def write_first_stage(self) -> None:
        """``models/first_stage.pt``: the refined model's weights without the refiner, under the first-stage model
        config (the base checkpoint's name): what runs when refinement is off."""
        from hoi_training.training.state import read_checkpoint

        refined = self.layout.checkpoint("refiner")
        require(refined, "evaluate", "refine")
        out = self.layout.first_stage

        def work() -> None:
            data = read_checkpoint(refined)
            base_name = read_checkpoint(self.base_checkpoint())["model_config"]["name"]
            config = {**data["model_config"], "name": base_name, "refine": "none", "dma": to_dict(DMAConfig())}
            weights = {k: v for k, v in data["model"].items() if not k.startswith(REFINER_PREFIX)}
            state = {"format": FIRST_STAGE_FORMAT, "model_config": config, "model": weights,
                     "source": str(refined), "step": data.get("step")}
            atomic_save_with(out, lambda handle: torch.save(state, handle))

        self.log.run("first_stage", None, lambda: written_after(out, refined), work)

    def evaluation_config(self) -> Path:
        """Write the resolved evaluation config (test split, ground-truth boxes) and return its path."""
        return synthetic_evaluation_config(self.layout.config_file("eval_test"), self.layout.data("test"),
                                           self.scale.evaluation_overrides)

    def evaluate(self) -> None:
        require(self.layout.data("test") / "manifest.json", "evaluate", "data")
        self.write_first_stage()
        config_path = self.evaluation_config()
        for row, checkpoint in ((OFF, self.layout.first_stage), (ON, self.layout.checkpoint("refiner"))):
            evaluation_step(self.log, f"eval/{row.name}", checkpoint, config_path, self.layout.evaluation(row),
                            self.layout.metrics(row))
        self.log.run("eval/ground_truth", None, lambda: self.layout.ground_truth.is_file(),
                     lambda: atomic_write_json(self.layout.ground_truth, self.ground_truth_interaction(config_path)))

    def ground_truth_interaction(self, config_path: Path) -> dict[str, Any]:
        """Penetration and contact of the labelled hand and object meshes of the test split: what a perfect
        estimate would score (synthetic grasps allow ``hand.penetration_tolerance`` of penetration)."""
        from hoi_perception.objects.models import load_object_library
        from hoi_training.data.registry import open_dataset
        from hoi_training.evaluate import EvaluationRunConfig
        from hoi_training.evaluation import interaction as ia
        from hoi_training.evaluation.report import ObjectModel

        config = load_config(EvaluationRunConfig, config_path)
        dataset = open_dataset(config.dataset.kind, config.dataset.dataset_config())
        library = load_object_library(config.objects)
        meshes: dict[str, Any] = {}
        results = []
        for index in range(len(dataset)):
            sample = dataset[index]
            if not (sample.has_hand_3d and sample.has_vertices and sample.has_object_pose):
                continue
            if sample.object_name not in meshes:
                model = library.get(sample.object_name)
                meshes[sample.object_name] = ObjectModel(model.name, model.points, faces=model.faces).mesh
            hand_in_object = (sample.vertices_3d - sample.object_translation) @ sample.object_rotation
            results.append(ia.evaluate_interaction(hand_in_object, meshes[sample.object_name],
                                                   config.metrics.contact_threshold_m))
        if not results:
            return {"frames_evaluated": 0}
        summary = ia.summarize_interaction(results)
        return {"frames_evaluated": summary.num_frames,
                "contact_threshold_mm": config.metrics.contact_threshold_m * 1e3,
                "max_penetration_depth_mm": summary.max_penetration_depth * 1e3,
                "mean_penetration_depth_mm": summary.mean_penetration_depth * 1e3,
                "contact_pct": summary.contact_fraction * 100.0,
                "penetrating_frames_pct": summary.penetrating_frame_fraction * 100.0}

    # -- latency

    def measure_latency(self) -> None:
        refined, first_stage = self.layout.checkpoint("refiner"), self.layout.first_stage
        require(refined, "latency", "refine")
        require(first_stage, "latency", "evaluate")
        require(self.layout.data("test") / "manifest.json", "latency", "data")
        out = self.layout.latency

        def work() -> None:
            atomic_write_json(out, measure_refinement_latency(first_stage, refined, self.latency_object(),
                                                              self.scale.latency, out.parent))

        self.log.run("latency", None, lambda: written_after(out, refined), work)

    def latency_object(self) -> str:
        """The object of the test split's first frame: the refine graph is exported per object."""
        from hoi_training.data.synthetic import SyntheticConfig, SyntheticDataset

        return SyntheticDataset(SyntheticConfig(root=self.layout.data("test")))[0].object_name

    # -- report

    def write_report(self) -> dict[str, Any]:
        """Gather the numbers into ``results.json`` and ``results.md`` (and the publish stem's); returns the JSON."""
        from hoi_training.training.state import read_checkpoint

        layout = self.layout
        for row in ROWS:
            require(layout.metrics(row), "report", "evaluate")
        require(layout.latency, "report", "latency")
        rows = [{"name": row.name, "label": row.label,
                 "metrics": table_metrics(json.loads(layout.metrics(row).read_text()))} for row in ROWS]
        base_path = self.base_checkpoint()
        base = read_checkpoint(base_path)
        first = read_checkpoint(layout.first_stage)
        refined = read_checkpoint(layout.checkpoint("refiner"))
        results = {
            "scale": self.scale_name,
            "config": self.config_source,
            "seeds": to_dict(self.config.seeds),
            "trainable": self.config.trainable,
            "scale_config": to_dict(self.scale),
            "base_checkpoint": {"path": str(shown(base_path)), "model": base["model_config"].get("name"),
                                "step": base.get("step"), "sha256": file_sha256(base_path)},
            "refined_model": {"model": refined["model_config"].get("name"), "refiner_steps": refined.get("step"),
                              "refiner_parameters": sum(t.numel() for k, t in refined["model"].items()
                                                        if k.startswith(REFINER_PREFIX) and t.is_floating_point())},
            "first_stage_matches_base": same_weights(base["model"], first["model"]),
            "rows": rows,
            "ground_truth_interaction": json.loads(layout.ground_truth.read_text()),
            "differences": compare_rows(rows),
            "latency": json.loads(layout.latency.read_text()),
            "steps": self.log.entries,
        }
        written = [layout.root / RESULTS_STEM] + ([] if self.publish is None else [self.publish])
        write_report_files(written, results, lambda image: format_results(results, self.out, image), plot_results)
        log.info("wrote %s", ", ".join(f"{stem}.json, .md and .png" for stem in written))
        self.log.this_run["report"] = "ran"
        return results


def same_weights(base: dict[str, torch.Tensor], first_stage: dict[str, torch.Tensor]) -> bool:
    """Whether the first stage holds exactly the base checkpoint's tensors (compared in float32: a released
    base stores fp16, which float32 holds exactly)."""
    if set(base) != set(first_stage):
        return False
    return all(torch.equal(base[k].float(), first_stage[k].float()) if base[k].is_floating_point()
               else torch.equal(base[k], first_stage[k]) for k in base)


# ----------------------------------------------------------------------------- latency


def measure_refinement_latency(first_stage: Path, refined: Path, object_name: str, config: LatencyConfig,
                               folder: Path) -> dict[str, Any]:
    """Batch-1 latency of three graphs: the first stage's crop network (refinement off), the refined model's crop
    network (it also returns the refiner's features) and its refine graph for ``object_name``; PyTorch eager
    and ONNX Runtime (CPU, ``config.threads`` intra-op threads), every graph and runtime once per round so all
    see the same machine load. The solvers between the graphs (hand translation, PnP) run either way and are
    not timed."""
    import onnxruntime as ort

    from hoi_perception.engines.export import export_onnx, network_graphs, refinement_graphs
    from hoi_perception.models.checkpoint import load_network_checkpoint
    from hoi_perception.objects.models import load_object_library

    torch.set_num_threads(config.threads)
    plain, network = load_network_checkpoint(first_stage), load_network_checkpoint(refined)
    graphs = {"crop_off": network_graphs(plain)["crop"], "crop_on": network_graphs(network)["crop"],
              "refine": refinement_graphs(network, load_object_library(None).get(object_name))["refine"]}
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.threads
    options.inter_op_num_threads = 1
    # Idle ORT workers would otherwise spin between runs and take the cores from the interleaved PyTorch runs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    calls = {}
    for name, graph in graphs.items():
        module = graph.module.eval()
        path = export_onnx(module, graph.example_inputs, folder / f"{name}.onnx")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        inputs = {key: value[:1].contiguous() for key, value in graph.example_inputs.items()}
        feeds = {key: value.numpy() for key, value in inputs.items()}
        calls[f"{name}/torch"] = lambda module=module, inputs=inputs: module(**inputs)
        calls[f"{name}/onnxruntime"] = lambda session=session, feeds=feeds: session.run(None, feeds)
    samples: dict[str, list[float]] = {key: [] for key in calls}
    with torch.inference_mode():
        for round_index in range(config.warmup + config.runs):
            for key, call in calls.items():
                start = time.perf_counter()
                call()
                elapsed = time.perf_counter() - start
                if round_index >= config.warmup:
                    samples[key].append(elapsed)
    timings = {key: to_dict(Timing.of(values)) for key, values in samples.items()}
    ratios = {}
    for runtime in ("torch", "onnxruntime"):
        off, on, refine = (timings[f"{g}/{runtime}"]["median_ms"] for g in ("crop_off", "crop_on", "refine"))
        ratios[runtime] = {"refine_over_first_stage": refine / off,
                           "refined_total_over_first_stage": (on + refine) / off}
    return {"object": object_name, "batch": 1, "threads": config.threads, "warmup": config.warmup,
            "runs": config.runs, "torch_version": torch.__version__, "onnxruntime_version": ort.__version__,
            "cpu": cpu_name(), "timings": timings, "ratios": ratios}


# ----------------------------------------------------------------------------- results


# Table columns: (key in table_metrics, header).
COLUMNS = (
    ("mpjpe_mm", "MPJPE mm"),
    ("pa_mpjpe_mm", "PA-MPJPE mm"),
    ("mpvpe_mm", "MPVPE mm"),
    ("add_adds_0.1d_pct", "ADD(-S)-0.1D %"),
    ("mean_penetration_depth_mm", "mean pen. mm"),
    ("max_penetration_depth_mm", "max pen. mm"),
    ("contact_pct", "contact %"),
)


def table_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one ``hoi-train eval`` summary that the table shows."""
    hand, obj, interaction = summary["hand"], summary["object"], summary["interaction"]
    return {
        "mpjpe_mm": hand.get("mpjpe_mm"),
        "root_relative_mpjpe_mm": hand.get("root_relative_mpjpe_mm"),
        "pa_mpjpe_mm": hand.get("pa_mpjpe_mm"),
        "mpvpe_mm": hand.get("mpvpe_mm"),
        "pa_mpvpe_mm": hand.get("pa_mpvpe_mm"),
        "add_adds_0.1d_pct": obj.get("add_adds_0.1d_pct"),
        "rotation_error_deg": obj.get("rotation_error_deg"),
        "translation_error_mm": obj.get("translation_error_mm"),
        "mean_penetration_depth_mm": interaction.get("mean_penetration_depth_mm"),
        "max_penetration_depth_mm": interaction.get("max_penetration_depth_mm"),
        "contact_pct": interaction.get("contact_pct"),
        "penetrating_frames_pct": interaction.get("penetrating_frames_pct"),
        "interaction_frames": interaction.get("frames_evaluated", 0),
        "hand_frames_labelled": hand.get("frames_labelled"),
        "hand_frames_evaluated": hand.get("frames_evaluated"),
        "hand_root_relative_frames_evaluated": hand.get("root_relative_frames_evaluated"),
        "object_frames_labelled": obj.get("frames_labelled"),
        "object_missing_predictions": obj.get("missing_predictions"),
        "failures": summary.get("run", {}).get("failures", {}),
        "hand_translation_methods": summary.get("run", {}).get("hand_translation_methods", {}),
    }


def _methods(metrics: dict[str, Any]) -> str:
    counts = metrics.get("hand_translation_methods") or {}
    return ", ".join(f"{n} from the {m}" for m, n in sorted(counts.items())) or "none"


def compare_rows(rows: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Refinement on minus off for every number of :func:`table_metrics` (None where either is missing)."""
    off, on = (next(r for r in rows if r["name"] == row.name)["metrics"] for row in (OFF, ON))
    out: dict[str, float | None] = {}
    for key, value in off.items():
        if isinstance(value, dict) or key.endswith(("_frames", "_labelled", "_evaluated", "_predictions")):
            continue
        out[key] = None if value is None or on[key] is None else on[key] - value
    return out


def _number(value: Any, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _signed(value: Any) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def plot_results(results: dict[str, Any]) -> Any:
    """Figure of the table: each column's value with refinement off and on, side by side (one panel per
    column, since their units differ), the ground-truth meshes' interaction numbers as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {row["name"]: row["metrics"] for row in results["rows"]}
    truth = results["ground_truth_interaction"]
    figure, axes = plt.subplots(1, len(COLUMNS), figsize=(2.1 * len(COLUMNS), 3.2))
    for axis, (key, header) in zip(axes, COLUMNS):
        values = [rows[row.name].get(key) for row in ROWS]
        axis.bar([0, 1], [float("nan") if v is None else v for v in values], color=["tab:gray", "tab:blue"])
        axis.set_xticks([0, 1], ["off", "on"])
        axis.set_title(header, fontsize=9)
        if truth.get(key) is not None:
            axis.axhline(truth[key], color="tab:green", linestyle="--", linewidth=1, label="ground truth")
            axis.legend(fontsize=7, loc="lower right")
        axis.grid(axis="y", alpha=0.3)
    sha = results["base_checkpoint"].get("sha256", "")[:12]
    figure.suptitle(f"DMA refinement off / on, {results['scale']} scale, base {results['base_checkpoint']['model']} "
                    f"(sha256 {sha})", fontsize=10)
    figure.tight_layout()
    return figure


def format_results(results: dict[str, Any], out: Path, image: str | None = None) -> str:
    """Markdown: the accuracy table (and ``image``, its plot, when given), the differences, the latency
    table, settings and commands."""
    scale = results["scale"]
    lines = [f"# Dense Mutual Attention refinement ({scale} scale)", ""]
    if scale == "smoke":
        lines += ["**Smoke run**: tiny images and networks, a few training steps. It proves that the stages run and "
                  "connect; the numbers say nothing about the method.", ""]
    base, refined = results["base_checkpoint"], results["refined_model"]
    frozen = results["trainable"] == "refiner"
    sha = f", sha256 `{base['sha256']}`" if base.get("sha256") else ""
    lines += [f"First stage: `{base['path']}` (model `{base['model']}`{sha}). Refiner: `{refined['model']}`, "
              f"{refined['refiner_parameters']:,} parameters, trained {refined['refiner_steps']} steps "
              + ("with the first stage frozen" if frozen else "end to end (both stages)")
              + " on lab sequences of seed " + f"{results['seeds']['train']}. Test: held-out lab sequences (seed "
              f"{results['seeds']['test']}), ground-truth boxes, the same frames for both rows. The first stage of "
              "the refined model " + ("is" if results["first_stage_matches_base"] else "is **not**")
              + " bit-identical to the base checkpoint.", ""]
    header = ["model"] + [c[1] for c in COLUMNS] + ["hand frames scored"]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in results["rows"]:
        metrics = row["metrics"]
        cells = [_number(metrics[key]) for key, _ in COLUMNS]
        lines.append(f"| {row['label']} | " + " | ".join(cells)
                     + f" | {metrics['hand_root_relative_frames_evaluated']} / {metrics['hand_frames_evaluated']} / "
                     f"{metrics['hand_frames_labelled']} |")
    truth = results["ground_truth_interaction"]
    lines.append("| ground-truth meshes | - | - | - | - | " + " | ".join(
        _number(truth.get(key)) for key in ("mean_penetration_depth_mm", "max_penetration_depth_mm", "contact_pct"))
        + f" | {truth.get('frames_evaluated', 0)} frames |")
    diff = results["differences"]
    if image is not None:
        lines += ["", f"![Refinement off and on]({image})"]
    lines += ["", "Refinement on minus off: " + ", ".join(f"{header} {_signed(diff.get(key))}"
                                                          for key, header in COLUMNS) + ".", "",
              "MPJPE / MPVPE: camera frame, the hand translation fitted from the predicted 2D joints, or from the "
              "hand box where that fit fails (`hand_translation.box_fallback`), never from labels (first stage: "
              f"{_methods(results['rows'][0]['metrics'])}); "
              "PA: after Procrustes alignment, also on frames whose translation fit failed (hand frames scored: "
              "PA / camera / labelled). ADD(-S)-0.1D: object model points within 10 % of the diameter (ADD-S "
              "for symmetric objects). Penetration: per frame the mean depth of the hand vertices inside the object "
              "(DMA's code's measure) and the maximum depth; frames without penetration count 0. Contact: frames with "
              f"a hand vertex inside the object or within {_number(truth.get('contact_threshold_mm'), 1)} mm of its "
              "surface. Interaction numbers are over the frames with both a hand and an object estimate "
              f"({results['rows'][0]['metrics']['interaction_frames']} off, "
              f"{results['rows'][1]['metrics']['interaction_frames']} on). The refiner runs where both the hand "
              "translation and PnP succeeded; elsewhere the first stage's estimate stands.", ""]
    latency = results["latency"]
    timings = latency["timings"]
    lines += ["## Latency", "",
              f"Batch 1, {latency['threads']} thread(s), median (10-90 %) of {latency['runs']} runs after "
              f"{latency['warmup']} warm-up runs, every graph and runtime once per round; {latency['cpu']}; torch "
              f"{latency['torch_version']}, ONNX Runtime {latency['onnxruntime_version']}. Refine graph for "
              f"`{latency['object']}`.", "",
              "| graph | PyTorch ms | ONNX Runtime ms |", "| --- | --- | --- |"]
    for graph, label in (("crop_off", "first stage crop network (refinement off)"),
                         ("crop_on", "crop network of the refined model (+ refiner features)"),
                         ("refine", "refine graph")):
        cells = []
        for runtime in ("torch", "onnxruntime"):
            t = timings[f"{graph}/{runtime}"]
            cells.append(f"{t['median_ms']:.1f} ({t['p10_ms']:.1f}-{t['p90_ms']:.1f})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    ratios = latency["ratios"]
    lines += ["", "Cost of refinement: " + "; ".join(
        f"{name} refine / first stage {ratios[key]['refine_over_first_stage']:.2f}, (crop + refine) / first stage "
        f"{ratios[key]['refined_total_over_first_stage']:.2f}" for key, name in (("torch", "PyTorch"),
                                                                                  ("onnxruntime", "ONNX Runtime")))
              + ". Hand translation and PnP run between the graphs with or without refinement and are not timed.", ""]
    cfg = results["scale_config"]
    seeds = results["seeds"]
    lines += ["## Settings", "",
              f"- Config: `{results['config']}`, scale `{scale}`, trainable `{results['trainable']}`.",
              f"- Seeds: train {seeds['train']}, test {seeds['test']}, training {seeds['training']}.",
              "- Data (sequences x frames): " + ", ".join(f"{split} {cfg[split]['sequences']} x {cfg[split]['frames']}"
                                                          for split in ("train", "test"))
              + (f"; synth overrides {' '.join(cfg['synth_overrides'])}" if cfg["synth_overrides"] else "") + ".",
              f"- Refiner training: `{cfg['train_config']}` with model `{cfg['model']}` "
              f"{' '.join(cfg['model_overrides'])}; {' '.join(cfg['train_overrides'])}; "
              f"{cfg['refiner_training']['max_steps'] or str(cfg['refiner_training']['epochs']) + ' epochs'} steps.",
              "- Evaluation overrides: " + (" ".join(cfg["evaluation_overrides"]) or "none") + ".", ""]
    lines += commands_section("benchmarks/dma_refinement.py", results, out, STEP_ORDER,
                              "Each step, its equivalent command where there is one (paths relative to the folder the "
                              "script ran from) and its wall time (n/a: finished by an earlier invocation that did not "
                              "record it):",
                              lambda entry: f"`{entry['command']}`" if entry.get("command") else "in the script")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- command line


def load_experiment_config(path: str | Path) -> ExperimentConfig:
    config = load_config(ExperimentConfig, path)
    for name, scale in config.scales.items():
        for label, file in (("train_config", scale.train_config), ("model", scale.model)):
            try:
                resolve_config_path(file)
            except ConfigError as exc:
                raise ConfigError(f"{path}: scales.{name}.{label}: {exc}") from None
    return config


def build_parser() -> argparse.ArgumentParser:
    return experiment_parser(__doc__.split("\n\n")[0], "experiments/dma_refinement.yaml",
                             "a scale of the config: smoke (seconds), cpu (hfl_r18) or cpu_r18 (the shipped CPU model)",
                             STAGES)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> dict[str, str]:
        config = load_experiment_config(args.config)
        return Experiment(config, args.scale, args.out, str(args.config), args.publish).run(args.stages)

    return run_driver(log, run)


if __name__ == "__main__":
    sys.exit(main())
