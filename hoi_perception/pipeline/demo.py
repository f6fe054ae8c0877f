"""``hoi-perception demo``: the shipped checkpoint end to end on a labelled sequence, no ROS or GPU needed.

Steps, all into one output folder (default ``hoi_perception_demo/``)::

    OUT/sequence/          a labelled hand-object sequence from the project's own generator
                           (``hoi-train synth``: lab domain, fixed seed), reused when already there
    OUT/models/            the checkpoint exported to ONNX (reused while checkpoint and code are unchanged)
    OUT/demo_bag/          rosbag2 (MCAP): camera images and CameraInfo plus everything ``process-bag``
                           writes (/tf, /hoi/estimate, /hoi/hand_mesh, /hoi/markers, /hoi/debug_image)
    OUT/overlay.mp4        the estimates drawn over each frame, the ground-truth skeleton in white
    OUT/frames/NNNNNN.png  every ``png_interval``-th overlay frame
    OUT/demo_report.json   per-stage latency and accuracy against the sequence's ground truth
    OUT/demo_report.md     the same as tables (also printed)

The checkpoint is a training checkpoint (``model_config`` + ``model`` state dict, fp16 or
fp32 weights; :func:`~hoi_perception.engines.export.load_network_checkpoint`). Without
``--checkpoint`` the shipped ``hoi_perception/checkpoints/cpu_r18_synthetic.pt`` is used;
when an installation lacks it the demo stops at once and says how to pass one: it never
runs random weights.

Engine: the perception config's ``engine.kind`` (``onnxruntime`` in the shipped
``perception.yaml``), after a one-time ONNX export into ``OUT/models``. Per frame that is
the faster CPU engine and it starts faster (``benchmarks/results/network_latency.md``); the
export costs more than ONNX Runtime saves over one short run, but it is reused by every
later run, and the latency the demo reports is then that of the runtime's default CPU
engine. ``--set engine.kind=torch`` runs the checkpoint in PyTorch instead, without the
export.

The accuracy is measured on the estimator's tracked, filtered output, as a robot gets
it (detector boxes, tracking, temporal filter), not with ground-truth boxes as
``hoi-train eval`` does: hand MPJPE in the camera frame, root-relative and after
Procrustes alignment; the object's ADD (ADD-S for symmetric objects), the fraction of
frames under 10 % of its diameter, rotation and translation errors; and how often the
hand and the object were found at all.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hoi_perception.atomic import atomic_write_json, atomic_write_text
from hoi_perception.output_paths import UnsafeOutputError
from hoi_perception.pipeline.gates import gate_of
from hoi_perception.pipeline.results import STAGES, FrameResult
from hoi_perception.pipeline.shipped_model import export_models, resolve_checkpoint

log = logging.getLogger(__name__)

DEFAULT_OUT = Path("hoi_perception_demo")
SEQUENCE_DIR = "sequence"
MODELS_DIR = "models"
BAG_NAME = "demo_bag"
VIDEO_NAME = "overlay.mp4"
FRAMES_DIR = "frames"
REPORT_JSON = "demo_report.json"
REPORT_MD = "demo_report.md"
ADD_DIAMETER_FRACTION = 0.1
TF_TOLERANCE_M = 0.05  # a published object pose further than this from the truth misleads a robot
# What the demo writes into --out; a folder holding anything else is not a demo folder.
DEMO_ENTRIES = frozenset({SEQUENCE_DIR, MODELS_DIR, BAG_NAME, VIDEO_NAME, FRAMES_DIR, REPORT_JSON, REPORT_MD})
# Estimator settings the demo sets itself from --checkpoint and the sequence.
DEMO_OWNED_SETTINGS = ("checkpoint", "crop_model", "detector_model")



@dataclass(frozen=True)
class DemoSequence:
    """The sequence the demo renders: ``hoi-train synth`` settings (2.5 s for 60 frames at
    320x240 on 2 cores). A camera-like 4:3 image; two seconds at 30 fps."""

    frames: int = 60
    width: int = 320
    height: int = 240
    # Unseen in training: the shipped checkpoint learnt from seeds 0-4 and was scored on
    # seed 1000 (config/train/synthetic_hfl_r18_cpu.yaml, its model card).
    seed: int = 2000
    domain: str = "lab"
    # Every this many frames the overlay is also written as a PNG.
    png_interval: int = 10

    def validate(self) -> None:
        if self.frames < 1 or self.width < 32 or self.height < 32:
            raise ValueError(f"demo sequence: expected >= 1 frame of at least 32x32 px, got {self.frames} frames of "
                             f"{self.width}x{self.height}")
        if self.png_interval < 1:
            raise ValueError(f"demo png_interval must be >= 1, got {self.png_interval}")


# ----------------------------------------------------------------------------- report types


@dataclass
class StageLatency:
    """One pipeline stage over the frames in which it ran."""

    stage: str
    frames: int
    median_ms: float
    p90_ms: float


@dataclass
class LatencySummary:
    """Per-stage medians from ``FrameResult.timings_ms`` and the end-to-end rate.

    ``frame_median_ms`` and ``fps`` are wall-clock times of ``Estimator.process`` (stages
    plus the little between them); ``fps`` = processed frames / total processing time.
    """

    stages: list[StageLatency]
    frames: int
    frame_median_ms: float
    frame_p90_ms: float
    fps: float


@dataclass
class HandAccuracy:
    """The ground-truth hand against the estimator's hand of the same side (metres in, mm out).

    Errors are means over the frames where that hand was estimated (None when never);
    ``detection_rate`` is that number of frames over all frames. ``other_side_frames``
    counts frames that also reported a hand of the other side, which is not in the scene.
    """

    side: str
    frames: int
    detected_frames: int
    detection_rate: float
    mpjpe_mm: float | None
    root_relative_mpjpe_mm: float | None
    pa_mpjpe_mm: float | None
    other_side_frames: int
    # Frames where the hand was estimated but a plausibility gate refused it, by gate.
    refused_frames: dict[str, int] = field(default_factory=dict)


@dataclass
class ObjectAccuracy:
    """The object's pose against ground truth.

    ``metric`` is ADD, or ADD-S for a symmetric object. ``add_accuracy`` is the
    fraction of *all* frames with an error under 10 % of the diameter (a frame without a
    pose is a failure); the mean errors are over the frames with a pose. A robot acts on
    every published pose, so the worst translation error and the number of published poses
    within :data:`TF_TOLERANCE_M` of the truth are reported too.
    """

    name: str
    metric: str
    diameter_mm: float
    frames: int
    estimated_frames: int
    detection_rate: float
    add_accuracy: float
    add_mean_mm: float | None
    rotation_error_deg: float | None
    translation_error_mm: float | None
    translation_error_max_mm: float | None = None
    within_tolerance_frames: int = 0


@dataclass
class FramePrediction:
    """What the estimator reported for one frame, reduced to what is scored.

    ``joints_cam`` (21, 3): the hand of the ground truth's side, or None;
    ``rotation``/``translation``: the object's pose when PnP and the filter gave one.
    """

    joints_cam: np.ndarray | None = None
    rotation: np.ndarray | None = None
    translation: np.ndarray | None = None
    other_side_hand: bool = False
    hand_refusal: str | None = None  # the gate's reason when the hand of that side was refused


@dataclass
class SequenceTruth:
    """The labels scored against: per frame joints (F, 21, 3) and object pose, camera frame, metres."""

    hand_side: str
    joints_cam: np.ndarray
    object_rotation: np.ndarray
    object_translation: np.ndarray

    def __post_init__(self) -> None:
        frames = self.joints_cam.shape[0]
        if self.joints_cam.shape != (frames, 21, 3):
            raise ValueError(f"SequenceTruth.joints_cam: expected (F, 21, 3), got {self.joints_cam.shape}")
        if self.object_rotation.shape != (frames, 3, 3) or self.object_translation.shape != (frames, 3):
            raise ValueError(f"SequenceTruth: object poses must be (F, 3, 3) and (F, 3) with F = {frames}, got "
                             f"{self.object_rotation.shape} and {self.object_translation.shape}")

    @property
    def frames(self) -> int:
        return int(self.joints_cam.shape[0])


@dataclass
class DemoReport:
    """Everything ``demo_report.json`` holds."""

    checkpoint: str
    checkpoint_sha256: str
    model_name: str
    engine: str
    sequence: dict[str, Any]
    latency: LatencySummary
    hand: HandAccuracy
    object: ObjectAccuracy | None
    setup_s: dict[str, float]
    outputs: dict[str, str]
    machine: dict[str, Any] = field(default_factory=dict)
    skipped_frames: int = 0


# ----------------------------------------------------------------------------- scoring


def prediction_from_result(result: FrameResult, hand_side: str) -> FramePrediction:
    """The hand of ``hand_side`` and the successfully posed object of one frame's result."""
    hand = next((t.result for t in result.hands if t.result.side == hand_side), None)
    obj = next((t.result for t in result.objects if t.result.success), None)
    return FramePrediction(
        joints_cam=None if hand is None else np.asarray(hand.joints_cam, dtype=np.float64),
        rotation=None if obj is None else np.asarray(obj.rotation, dtype=np.float64),
        translation=None if obj is None else np.asarray(obj.translation, dtype=np.float64),
        other_side_hand=any(t.result.side != hand_side for t in result.hands),
        hand_refusal=result.hand_failures.get(hand_side))


def score_hand(predictions: Sequence[FramePrediction], truth: SequenceTruth) -> HandAccuracy:
    """Hand errors (mm) over the frames with an estimate of the ground truth's side."""
    from hoi_perception.geometry.metrics import mean_point_error, procrustes_align, root_relative

    _check_lengths(predictions, truth)
    found = [i for i, p in enumerate(predictions) if p.joints_cam is not None]
    errors: dict[str, float | None] = {"mpjpe": None, "root": None, "pa": None}
    if found:
        pred = np.stack([p.joints_cam for p in predictions if p.joints_cam is not None])
        gt = truth.joints_cam[found]
        errors = {"mpjpe": 1000.0 * mean_point_error(pred, gt),
                  "root": 1000.0 * mean_point_error(root_relative(pred), root_relative(gt)),
                  "pa": 1000.0 * mean_point_error(procrustes_align(pred, gt), gt)}
    return HandAccuracy(side=truth.hand_side, frames=truth.frames, detected_frames=len(found),
                        detection_rate=len(found) / truth.frames, mpjpe_mm=errors["mpjpe"],
                        root_relative_mpjpe_mm=errors["root"], pa_mpjpe_mm=errors["pa"],
                        other_side_frames=sum(p.other_side_hand for p in predictions),
                        refused_frames=dict(Counter(gate_of(p.hand_refusal) for p in predictions
                                                    if p.hand_refusal is not None)))


def score_object(predictions: Sequence[FramePrediction], truth: SequenceTruth, name: str, points: np.ndarray,
                 symmetric: bool) -> ObjectAccuracy:
    """ADD(-S), ADD-0.1D, rotation and translation errors; ``points`` (N, 3) are the model's surface points."""
    from hoi_perception.geometry.metrics import (
        add_errors,
        adds_errors,
        model_diameter,
        pose_accuracy,
        rotation_errors_deg,
        translation_errors,
    )

    _check_lengths(predictions, truth)
    diameter = model_diameter(points)
    found = [i for i, p in enumerate(predictions) if p.rotation is not None and p.translation is not None]
    per_frame = np.full(truth.frames, np.inf)
    add_mean = rotation = translation = worst = None
    within = 0
    if found:
        rot = np.stack([p.rotation for p in predictions if p.rotation is not None and p.translation is not None])
        trans = np.stack([p.translation for p in predictions if p.rotation is not None and p.translation is not None])
        rot_gt, trans_gt = truth.object_rotation[found], truth.object_translation[found]
        add = (adds_errors if symmetric else add_errors)(points, rot, trans, rot_gt, trans_gt)
        per_frame[found] = add
        add_mean = 1000.0 * float(add.mean())
        rotation = float(rotation_errors_deg(rot, rot_gt).mean())
        shifts = translation_errors(trans, trans_gt)
        translation, worst = 1000.0 * float(shifts.mean()), 1000.0 * float(shifts.max())
        within = int((shifts <= TF_TOLERANCE_M).sum())
    return ObjectAccuracy(name=name, metric="ADD-S" if symmetric else "ADD", diameter_mm=1000.0 * diameter,
                          frames=truth.frames, estimated_frames=len(found), detection_rate=len(found) / truth.frames,
                          add_accuracy=pose_accuracy(per_frame, diameter, ADD_DIAMETER_FRACTION),
                          add_mean_mm=add_mean, rotation_error_deg=rotation, translation_error_mm=translation,
                          translation_error_max_mm=worst, within_tolerance_frames=within)


def _check_lengths(predictions: Sequence[FramePrediction], truth: SequenceTruth) -> None:
    if len(predictions) != truth.frames:
        raise ValueError(f"{len(predictions)} predictions for a sequence of {truth.frames} frames")


def summarize_latency(results: Sequence[FrameResult], frame_ms: Sequence[float]) -> LatencySummary:
    """Median and 90th percentile per stage (over the frames it ran in) and the end-to-end rate."""
    if len(results) != len(frame_ms) or not results:
        raise ValueError(f"summarize_latency: expected one wall time per result (at least one), got "
                         f"{len(results)} results and {len(frame_ms)} times")
    known = [s for s in STAGES if any(s in r.timings_ms for r in results)]
    other = sorted({s for r in results for s in r.timings_ms} - set(STAGES))
    stages = []
    for stage in known + other:
        values = np.array([r.timings_ms[stage] for r in results if stage in r.timings_ms])
        stages.append(StageLatency(stage, int(values.size), float(np.median(values)),
                                   float(np.percentile(values, 90))))
    wall = np.asarray(frame_ms, dtype=np.float64)
    total_s = float(wall.sum()) / 1000.0
    return LatencySummary(stages=stages, frames=len(results), frame_median_ms=float(np.median(wall)),
                          frame_p90_ms=float(np.percentile(wall, 90)),
                          fps=len(results) / total_s if total_s > 0 else math.inf)


# ----------------------------------------------------------------------------- report text


def _mm(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def report_markdown(report: DemoReport) -> str:
    """The report as Markdown tables (what the demo prints)."""
    seq = report.sequence
    lines = [
        "# hoi-perception demo",
        "",
        f"Checkpoint `{report.checkpoint}` (model `{report.model_name}`, sha256 {report.checkpoint_sha256[:12]}), "
        f"engine {report.engine}; sequence: {seq['frames']} frames at {seq['width']}x{seq['height']}, "
        f"{seq['hand_side']} hand with `{seq['object_name']}` (synthetic, {seq['domain']} domain, seed "
        f"{seq['seed']}).",
        "",
        "## Latency",
        "",
        "| stage | frames | median ms | p90 ms |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {s.stage} | {s.frames} | {s.median_ms:.1f} | {s.p90_ms:.1f} |" for s in report.latency.stages]
    lat = report.latency
    lines += [f"| **frame (wall clock)** | {lat.frames} | {lat.frame_median_ms:.1f} | {lat.frame_p90_ms:.1f} |",
              "", f"{lat.fps:.1f} frames per second over {lat.frames} frames"
              + (f" ({report.skipped_frames} skipped as bad input)." if report.skipped_frames else "."), ""]
    hand = report.hand
    lines += ["## Accuracy against ground truth", "",
              "| hand | value |", "| --- | ---: |",
              f"| {hand.side} hand found | {hand.detected_frames}/{hand.frames} ({100 * hand.detection_rate:.0f} %) |",
              f"| MPJPE, camera frame (mm) | {_mm(hand.mpjpe_mm)} |",
              f"| MPJPE, root-relative (mm) | {_mm(hand.root_relative_mpjpe_mm)} |",
              f"| PA-MPJPE (mm) | {_mm(hand.pa_mpjpe_mm)} |",
              f"| frames with a spurious other-side hand | {hand.other_side_frames} |",
              f"| frames refused by a plausibility gate | {sum(hand.refused_frames.values())}"
              + ("".join(f", {gate} {n}" for gate, n in sorted(hand.refused_frames.items()))) + " |", ""]
    obj = report.object
    if obj is not None:
        lines += [f"| object `{obj.name}` (diameter {obj.diameter_mm:.0f} mm) | value |", "| --- | ---: |",
                  f"| pose found | {obj.estimated_frames}/{obj.frames} ({100 * obj.detection_rate:.0f} %) |",
                  f"| {obj.metric}-0.1D, all frames | {100 * obj.add_accuracy:.1f} % |",
                  f"| {obj.metric} mean (mm) | {_mm(obj.add_mean_mm)} |",
                  f"| rotation error mean (deg) | {_mm(obj.rotation_error_deg)} |",
                  f"| translation error mean / max (mm) | {_mm(obj.translation_error_mm)} / "
                  f"{_mm(obj.translation_error_max_mm)} |",
                  f"| poses within {100 * TF_TOLERANCE_M:.0f} cm of the truth | {obj.within_tolerance_frames}/"
                  f"{obj.estimated_frames} |", ""]
    lines += ["## Outputs", ""] + [f"- {name}: `{path}`" for name, path in report.outputs.items()]
    setup = ", ".join(f"{k} {v:.1f} s" for k, v in report.setup_s.items())
    lines += ["", f"Setup: {setup}.", ""]
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no inf/nan
    return value


def report_dict(report: DemoReport) -> dict[str, Any]:
    """The report as plain JSON-ready values."""
    return _plain(report)


# ----------------------------------------------------------------------------- steps


def prepare_sequence(out_dir: Path, sequence: DemoSequence, mano_dir: Path | None,
                     objects: Path | None) -> Path:
    """Render the demo sequence into ``out_dir/sequence`` (a finished one with the same settings is reused)."""
    from hoi_perception.config import ConfigError, from_dict, load_config, to_dict
    from hoi_perception.synth.config import SynthConfig
    from hoi_perception.synth.generator import generate_dataset

    config = load_config(SynthConfig, "synth.yaml", [f"camera.width={sequence.width}",
                                                     f"camera.height={sequence.height}"])
    root = out_dir / SEQUENCE_DIR
    manifest_path = root / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        wanted = {"seed": sequence.seed, "domain": sequence.domain, "frames_per_sequence": sequence.frames,
                  "config": to_dict(config)}
        try:  # with today's defaults filled in: a setting added since, at its default, renders the same
            manifest["config"] = to_dict(from_dict(SynthConfig, manifest.get("config"), str(manifest_path)))
        except ConfigError:
            manifest["config"] = None
        if all(manifest.get(k) == v for k, v in wanted.items()) and len(manifest.get("sequences", [])) == 1:
            log.info("reusing the demo sequence in %s", root)
            return root / manifest["sequences"][0]["name"]
        raise FileExistsError(f"'{root}' holds a sequence rendered with other settings; delete it or choose "
                              "another --out")
    manifest = generate_dataset(config, root, sequences=1, frames=sequence.frames, seed=sequence.seed,
                                domain=sequence.domain, mano_dir=mano_dir, objects_path=objects)
    return root / manifest["sequences"][0]["name"]


def _demo_estimator_config(config: str | Path | None, overrides: Sequence[str]) -> Any:
    from hoi_perception.pipeline.config import DEFAULT_PERCEPTION_CONFIG, load_estimator_config

    estimator_config = load_estimator_config(config or DEFAULT_PERCEPTION_CONFIG, overrides)
    given = [name for name in DEMO_OWNED_SETTINGS if getattr(estimator_config, name) is not None]
    if given:
        raise ValueError(f"the demo runs --checkpoint and sets {list(DEMO_OWNED_SETTINGS)} itself; the perception "
                         f"config sets {given}: remove them (or run 'hoi-perception run'/'process-bag' for those)")
    return estimator_config


class _VideoWriter:
    """MP4 through OpenCV, written under a hidden name and renamed into place when complete."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        self.path = path
        self.partial = path.with_name(f".{path.stem}.partial.mp4")
        self.writer = cv2.VideoWriter(str(self.partial), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
        if not self.writer.isOpened():
            raise ValueError(f"cannot write '{path}' (no MP4 encoder in this OpenCV build?)")

    def write(self, rgb: np.ndarray) -> None:
        self.writer.write(np.ascontiguousarray(rgb[..., ::-1]))

    def close(self, keep: bool) -> None:
        self.writer.release()
        if keep:
            os.replace(self.partial, self.path)
        else:
            self.partial.unlink(missing_ok=True)


def _machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


# ----------------------------------------------------------------------------- the command


def run_demo(out: str | Path = DEFAULT_OUT, checkpoint: str | Path | None = None, config: str | Path | None = None,
             overrides: Sequence[str] = (), sequence: DemoSequence | None = None) -> DemoReport:
    """Run the whole demo into ``out`` (see the module docstring) and return its report."""
    from hoi_perception.bag_io import camera_info_msg, image_msg, open_bag_writer
    from hoi_perception.engines.base import file_sha256
    from hoi_perception.models.checkpoint import load_network_checkpoint
    from hoi_perception.pipeline.bag_processing import EstimateBagWriter, object_control_points
    from hoi_perception.pipeline.estimator import Estimator
    from hoi_perception.pipeline.messages import draw_frame
    from hoi_perception.render.overlay import save_png
    from hoi_perception.synth.generator import BAG_EPOCH_NS, CAMERA_FRAME_ID, CAMERA_INFO_TOPIC, IMAGE_TOPIC
    from hoi_perception.synth.sequence_files import read_rgb, read_sequence_labels

    sequence = sequence or DemoSequence()
    sequence.validate()
    checkpoint_path = resolve_checkpoint(checkpoint)
    estimator_config = _demo_estimator_config(config, overrides)
    out_dir = Path(out).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"--out '{out_dir}' exists and is not a folder")
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in DEMO_ENTRIES
                     and not p.name.startswith(".")) if out_dir.is_dir() else []
    if foreign:  # a rerun reuses and replaces the demo's own files, never anything else
        raise UnsafeOutputError(f"--out '{out_dir}' is not a demo folder (it holds {', '.join(foreign[:5])}); "
                                "choose a new or empty folder")
    if checkpoint is not None and Path(checkpoint).expanduser().resolve().is_relative_to(out_dir.resolve()):
        raise UnsafeOutputError(f"--out '{out_dir}' holds the --checkpoint '{checkpoint}'; choose another folder")
    setup: dict[str, float] = {}

    start = time.perf_counter()
    network = load_network_checkpoint(checkpoint_path)  # fails early, naming the file, when it is unusable
    checkpoint_sha = file_sha256(checkpoint_path)
    model_name = network.config.name
    setup["checkpoint_load"] = time.perf_counter() - start

    start = time.perf_counter()
    seq_dir = prepare_sequence(out_dir, sequence, estimator_config.mano_dir, estimator_config.objects)
    meta = json.loads((seq_dir / "meta.json").read_text())
    labels = read_sequence_labels(seq_dir / "labels.npz", int(meta["frames"]))
    setup["sequence"] = time.perf_counter() - start
    object_name = meta["object_name"]
    if estimator_config.object_name not in (None, object_name):
        raise ValueError(f"object_name '{estimator_config.object_name}' is set, but the demo sequence shows "
                         f"'{object_name}'; leave object_name unset for the demo")

    start = time.perf_counter()
    if estimator_config.engine.kind == "torch":
        estimator_config = dataclasses.replace(estimator_config, checkpoint=checkpoint_path, object_name=object_name)
    else:
        files = export_models(checkpoint_path, checkpoint_sha, network, out_dir / MODELS_DIR, object_name,
                              estimator_config.objects)
        estimator_config = dataclasses.replace(estimator_config, crop_model=files["crop"],
                                               detector_model=files["detector"], object_name=object_name)
    setup["export"] = time.perf_counter() - start
    del network
    start = time.perf_counter()
    estimator = Estimator(estimator_config)
    setup["estimator_start"] = time.perf_counter() - start

    K = np.asarray(labels["K"], dtype=np.float64)
    width, height = int(meta["width"]), int(meta["height"])
    object_model = estimator.object_model
    frames_dir = out_dir / FRAMES_DIR
    frames_dir.mkdir(parents=True, exist_ok=True)
    for stale in frames_dir.glob("[0-9]*.png"):  # overlays of an earlier run
        stale.unlink()
    video = _VideoWriter(out_dir / VIDEO_NAME, float(meta["fps"]), (width, height))
    results: list[FrameResult] = []
    wall_ms: list[float] = []
    predictions: list[FramePrediction] = []
    skipped = 0
    completed = False
    start = time.perf_counter()
    try:
        with open_bag_writer(out_dir / BAG_NAME, storage="mcap", overwrite=True) as bag:
            writer = EstimateBagWriter(bag, {side: estimator.hand_faces(side) for side in ("right", "left")},
                                       object_control_points(estimator))
            for index in range(int(meta["frames"])):
                image = read_rgb(seq_dir / "rgb" / f"{index:06d}.png")
                stamp_s = float(labels["timestamps"][index])
                stamp_ns = BAG_EPOCH_NS + int(round(stamp_s * 1e9))
                bag.write(IMAGE_TOPIC, image_msg(bag.typestore, image, stamp_ns, CAMERA_FRAME_ID), stamp_ns)
                bag.write(CAMERA_INFO_TOPIC, camera_info_msg(bag.typestore, K, width, height, stamp_ns,
                                                             CAMERA_FRAME_ID), stamp_ns)
                began = time.perf_counter()
                result = estimator.process(image, K, stamp_s)
                elapsed = (time.perf_counter() - began) * 1000.0
                if result.skipped is not None:
                    skipped += 1
                    predictions.append(FramePrediction())
                    drawn = image
                else:
                    results.append(result)
                    wall_ms.append(elapsed)
                    predictions.append(prediction_from_result(result, meta["hand_side"]))
                    writer.write(result, image, K, stamp_ns, CAMERA_FRAME_ID, stamp_ns)
                    drawn = draw_frame(image, result, K, object_control_points(estimator),
                                       ground_truth_joints=[labels["joints2d"][index]])
                video.write(drawn)
                if index % sequence.png_interval == 0:
                    save_png(frames_dir / f"{index:06d}.png", drawn)
        completed = True
    finally:
        video.close(keep=completed)
    setup["processing_and_writing"] = time.perf_counter() - start
    if not results:
        raise ValueError(f"the estimator skipped every frame of {seq_dir} (see the warnings above)")

    truth = SequenceTruth(hand_side=meta["hand_side"], joints_cam=np.asarray(labels["joints3d"], dtype=np.float64),
                          object_rotation=np.asarray(labels["object_rotation"], dtype=np.float64),
                          object_translation=np.asarray(labels["object_translation"], dtype=np.float64))
    object_accuracy = score_object(predictions, truth, object_name, object_model.points,
                                   object_model.is_symmetric) if object_model is not None else None
    report = DemoReport(
        checkpoint=str(checkpoint_path), checkpoint_sha256=checkpoint_sha, model_name=model_name,
        engine=f"{estimator_config.engine.kind} ({estimator_config.engine.device})",
        sequence={"path": str(seq_dir), "frames": int(meta["frames"]), "width": width, "height": height,
                  "fps": float(meta["fps"]), "hand_side": meta["hand_side"], "object_name": object_name,
                  "domain": meta["domain"], "seed": sequence.seed},
        latency=summarize_latency(results, wall_ms), hand=score_hand(predictions, truth), object=object_accuracy,
        setup_s={k: round(v, 2) for k, v in setup.items()},
        outputs={"bag": str(out_dir / BAG_NAME), "video": str(out_dir / VIDEO_NAME), "frames": str(frames_dir),
                 "report": str(out_dir / REPORT_JSON)},
        machine=_machine(), skipped_frames=skipped)
    atomic_write_json(out_dir / REPORT_JSON, report_dict(report))
    atomic_write_text(out_dir / REPORT_MD, report_markdown(report))
    return report


def demo_main(out: str | Path = DEFAULT_OUT, checkpoint: str | Path | None = None, config: str | Path | None = None,
              overrides: Sequence[str] = ()) -> DemoReport:
    """``hoi-perception demo``: :func:`run_demo`, then print the report and where the outputs are."""
    report = run_demo(out, checkpoint, config, overrides)
    print(report_markdown(report))
    return report
