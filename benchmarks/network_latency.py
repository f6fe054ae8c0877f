"""CPU latency, FLOPs and parameter counts of HOINet per model config; PyTorch vs ONNX Runtime.

For each config under config/models/ it builds the network (randomly initialised:
latency does not depend on the weights), then measures at batch 1

* the crop network (``HOINet.forward``: backbone + RoIAlign + interaction + hand
  decoder with MANO + object head) and
* the detector (``HOINet.detect_top_k`` on the letterboxed frame),

in PyTorch eager and in ONNX Runtime (CPU, same thread count), interleaved run by
run so both see the same machine load. Reported: median and 10-90 % spread of
``--runs`` timed runs after ``--warmup`` runs, FLOPs counted by
``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts 2), and
parameter counts. Results go to benchmarks/results/network_latency.md.

    python benchmarks/network_latency.py --runs 20
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: benchmarks.experiment_runs lives in the checkout

from benchmarks.experiment_runs import Timing, cpu_name  # noqa: E402
from hoi_perception.models.backbones import count_parameters  # noqa: E402
from hoi_perception.models.config import ModelConfig, load_model_config  # noqa: E402
from hoi_perception.models.network import CropNetworkExport, DetectionExport, HOINet  # noqa: E402

DEFAULT_CONFIGS = ("hfl_r50", "sho_r50", "hfl_r18", "cpu_r18")
# MediaPipe Hands' models, as extracted from the mediapipe 0.10.21 wheel (see --mediapipe-models).
MEDIAPIPE_MODELS = {"palm detector": "palm_detection_full.tflite", "hand landmark model": "hand_landmark_full.tflite"}


@dataclass
class PathResult:
    gflops: float
    torch_time: Timing
    onnx_time: Timing | None

    @property
    def onnx_speedup(self) -> float | None:
        return None if self.onnx_time is None else self.torch_time.median_ms / self.onnx_time.median_ms


@dataclass
class ConfigResult:
    config: ModelConfig
    parameters_total: int
    parameters_backbone: int
    parameters_interaction: int
    parameters_heads: int
    parameters_detector_trunk: int
    crop: PathResult
    detect: PathResult


def _export(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> bytes:
    names_in, names_out = list(module.input_names), list(module.output_names)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buffer, dynamo=False, opset_version=17, input_names=names_in,
                          output_names=names_out, dynamic_axes={n: {0: "batch"} for n in names_in + names_out})
    return buffer.getvalue()


def _measure(module: torch.nn.Module, args: tuple[torch.Tensor, ...], threads: int, warmup: int, runs: int,
             with_onnx: bool) -> PathResult:
    with torch.no_grad():
        flops = FlopCounterMode(display=False)
        with flops:
            module(*args)
    session = None
    if with_onnx:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle ORT workers would otherwise spin between runs and steal the cores from the
        # interleaved PyTorch runs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(_export(module, args), options, providers=["CPUExecutionProvider"])
        feeds = {name: a.numpy() for name, a in zip(module.input_names, args)}
    torch_samples, onnx_samples = [], []
    with torch.no_grad():
        for i in range(warmup + runs):
            start = time.perf_counter()
            module(*args)
            elapsed = time.perf_counter() - start
            if i >= warmup:
                torch_samples.append(elapsed)
            if session is not None:
                start = time.perf_counter()
                session.run(None, feeds)
                elapsed = time.perf_counter() - start
                if i >= warmup:
                    onnx_samples.append(elapsed)
    return PathResult(flops.get_total_flops() / 1e9, Timing.of(torch_samples),
                      Timing.of(onnx_samples) if session is not None else None)


def measure_mediapipe(folder: Path, threads: int, warmup: int, runs: int) -> dict[str, Timing]:
    """MediaPipe Hands' palm detector and landmark model in LiteRT (``ai-edge-litert``), batch 1, interleaved."""
    from ai_edge_litert.interpreter import Interpreter

    interpreters = {}
    for name, file in MEDIAPIPE_MODELS.items():
        path = folder / file
        if not path.is_file():
            raise FileNotFoundError(f"--mediapipe-models: '{path}' not found (take it out of the mediapipe 0.10.21 "
                                    "wheel: mediapipe/modules/*/)")
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        interpreters[name] = (interpreter, detail["index"], np.random.rand(*detail["shape"]).astype(np.float32))
    samples: dict[str, list[float]] = {name: [] for name in interpreters}
    for i in range(warmup + runs):
        for name, (interpreter, index, image) in interpreters.items():
            start = time.perf_counter()
            interpreter.set_tensor(index, image)
            interpreter.invoke()
            if i >= warmup:
                samples[name].append(time.perf_counter() - start)
    return {name: Timing.of(values) for name, values in samples.items()}


def benchmark_config(name: str, threads: int, warmup: int, runs: int, with_onnx: bool) -> ConfigResult:
    config = load_model_config(f"models/{name}.yaml")
    torch.manual_seed(0)
    network = HOINet(config).eval()
    size = config.input_size
    crop = torch.rand(1, 3, size, size)
    # A typical grasp: hand and object boxes overlapping, each about 40-50 % of the crop.
    hand_box = torch.tensor([[0.15, 0.20, 0.60, 0.70]]) * size
    object_box = torch.tensor([[0.40, 0.35, 0.85, 0.85]]) * size
    crop_result = _measure(CropNetworkExport(network).eval(), (crop, hand_box, object_box), threads, warmup, runs,
                           with_onnx)
    detector_size = config.detector_input_size
    detect_result = _measure(DetectionExport(network).eval(), (torch.rand(1, 3, detector_size, detector_size),),
                             threads, warmup, runs, with_onnx)
    heads = (count_parameters(network.hand_decoder) + count_parameters(network.object_head)
             + count_parameters(network.detection_head))
    trunk = 0 if network.detector_trunk is None else count_parameters(network.detector_trunk)
    return ConfigResult(config, count_parameters(network), count_parameters(network.backbone),
                        count_parameters(network.interaction), heads, trunk, crop_result, detect_result)


def _fmt_time(t: Timing | None) -> str:
    return "-" if t is None else f"{t.median_ms:.1f} ({t.p10_ms:.0f}-{t.p90_ms:.0f})"


def write_report(results: list[ConfigResult], path: Path, threads: int, warmup: int, runs: int,
                 load_before: tuple[float, float, float], load_after: tuple[float, float, float],
                 mediapipe: dict[str, Timing] | None = None) -> str:
    wait_policy = os.environ.get("OMP_WAIT_POLICY", "")
    lines = [
        "# HOINet latency, FLOPs and parameters (CPU, batch 1)",
        "",
        "Produced by `" + (f"OMP_WAIT_POLICY={wait_policy} " if wait_policy else "")
        + f"python benchmarks/network_latency.py --runs {runs} --warmup {warmup} --threads {threads}`.",
        "",
        f"- CPU: {cpu_name()}, {os.cpu_count()} logical cores; {threads} threads for PyTorch "
        "(`torch.set_num_threads`) and ONNX Runtime (`intra_op_num_threads`).",
        f"- torch {torch.__version__}, onnxruntime {ort.__version__}, ONNX opset 17 (TorchScript exporter), "
        "randomly initialised weights.",
        f"- Load average (1/5/15 min) before: {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
        f"after: {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}.",
        f"- Times: median over {runs} runs after {warmup} warm-up runs, (10th-90th percentile) in brackets, ms.",
        "- FLOPs: `FlopCounterMode` (matmul/conv/attention; a multiply-add counts 2; elementwise ops, "
        "grid_sample and MANO skinning gathers are not counted).",
    ]
    if max(load_before[0], load_after[0]) > threads + 0.5:
        lines.append(
            "- **The machine was shared during this run** (load above the thread count): absolute times are "
            "inflated. By default PyTorch's OpenMP threads spin-wait for each other at every operator; when one "
            "is descheduled the others burn their time slice, which on a shared machine slows PyTorch (hundreds "
            "of small operators per crop) far more than ONNX Runtime. `OMP_WAIT_POLICY=PASSIVE` avoids it"
            + (" and was set for this run." if wait_policy.upper() == "PASSIVE" else
               "; without it, as here, the PyTorch/ORT ratios overstate ONNX Runtime's advantage."))
    graphs = (("crop", "Crop network (`HOINet.forward`: backbone, RoIAlign, interaction, hand decoder incl. MANO, "
                        "object head)"),
              ("detect", "Detector (`HOINet.detect_top_k` on the letterboxed frame, same backbone)"))
    for attribute, title in graphs:
        lines += ["", f"## {title}", "",
                  "| config | input | GFLOPs | PyTorch ms | ONNX Runtime ms | PyTorch / ORT |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in results:
            graph = getattr(r, attribute)
            speed = "-" if graph.onnx_speedup is None else f"{graph.onnx_speedup:.2f}x"
            lines.append(f"| {r.config.name} | {r.config.input_size} | {graph.gflops:.1f} | "
                         f"{_fmt_time(graph.torch_time)} | {_fmt_time(graph.onnx_time)} | {speed} |")
    if mediapipe:
        lines += ["", "## MediaPipe Hands in the same run (LiteRT, XNNPACK, same thread count)", "",
                  "| model | input | ms |", "| --- | --- | --- |",
                  f"| palm detector (`palm_detection_full.tflite`) | 192 | {_fmt_time(mediapipe['palm detector'])} |",
                  f"| hand landmark model (`hand_landmark_full.tflite`) | 224 | "
                  f"{_fmt_time(mediapipe['hand landmark model'])} |", "",
                  "Per hand MediaPipe runs the landmark model (and the palm detector when it has no track); "
                  "ours runs the detector once per frame and the crop network per hand."]
    lines += ["", "## Parameters (trainable; the MANO layer is fixed and not counted)", "",
              "| config | total | backbone (ResNet + FPN) | interaction | heads (hand, object, detection) "
              "| detector's own trunk |",
              "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r.config.name} | {r.parameters_total / 1e6:.2f} M | {r.parameters_backbone / 1e6:.2f} M | "
                     f"{r.parameters_interaction / 1e6:.2f} M | {r.parameters_heads / 1e6:.2f} M | "
                     f"{r.parameters_detector_trunk / 1e6:.2f} M |")
    lines += ["", "HFL-Net reports 34.97 M for its backbone and 25.08 M for the single-stream one (ResNet-50 + FPN, "
              "no classifier); the backbone column counts exactly that: the ResNet trunk(s) without `fc`, the "
              "1x1 laterals and one 3x3 smoothing conv per FPN (only P2 is computed).", ""]
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS), help="names under config/models/")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-onnx", action="store_true", help="PyTorch only")
    parser.add_argument("--mediapipe-models", type=Path, default=None,
                        help="folder with MediaPipe's palm_detection_full.tflite and hand_landmark_full.tflite "
                             "(from the mediapipe 0.10.21 wheel); timed with ai-edge-litert in the same run")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "network_latency.md")
    args = parser.parse_args()
    if args.runs < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--runs and --threads must be >= 1 and --warmup >= 0")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    results = []
    for name in args.configs:
        result = benchmark_config(name, args.threads, args.warmup, args.runs, not args.no_onnx)
        print(f"{name}: crop {result.crop.torch_time.median_ms:.1f} ms torch"
              + (f", {result.crop.onnx_time.median_ms:.1f} ms onnxruntime" if result.crop.onnx_time else "")
              + f"; detect {result.detect.torch_time.median_ms:.1f} ms torch", flush=True)
        results.append(result)
    mediapipe = (measure_mediapipe(args.mediapipe_models, args.threads, args.warmup, args.runs)
                 if args.mediapipe_models is not None else None)
    print(write_report(results, args.output, args.threads, args.warmup, args.runs, load_before, os.getloadavg(),
                       mediapipe))


if __name__ == "__main__":
    main()
