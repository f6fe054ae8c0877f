"""Per-stage latency of the runtime estimator (ONNX Runtime, CPU) on synthetic frames, per model.

    python benchmarks/stage_breakdown.py [--models cpu_r18 hfl_r18] [--frames 200] [--width 640]
        [--height 480] [--out FILE.md]

Each model (a config under config/models/; the first is the shipped one, the others are
timed in the same run for the ratio) has random weights (timing does not depend on them)
and is exported to ONNX exactly as ``hoi-perception export`` does. Random weights give meaningless boxes,
joints and votes, and the geometry would then fail early and look cheaper than it is,
so both engines are wrapped: the real ONNX graph runs (and is what ``network`` and
``detect`` time), then its outputs are replaced by those of a perfect network for a
synthetic scene (one right hand holding a sugar box, moving slowly), so translation,
PnP, filters, MANO re-meshing and message building work on realistic data. The plausibility
gates are off: the substituted hand does not follow the boxes the tracker carries, and a
refused hand would skip the filter and re-meshing and make the frame look cheaper. The
hand's side comes from the detector: the runtime's default side vote (two more crop-network
passes per detected hand, on detector frames only) has crops the substituted network cannot
answer, so it is not in these numbers.

Reported: mean and median per stage, the ratio "everything after the network /
network" (translation + PnP + filter + hand_model + message building, per frame; the
target is <= 15 %), and end-to-end frames per second of ``Estimator.process`` plus
message building (the debug overlay is timed separately: it is optional).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hoi_perception.bag_io import SerializedMessage, typestore  # noqa: E402
from hoi_perception.config import to_dict  # noqa: E402
from hoi_perception.engines.base import EngineConfig, InferenceEngine  # noqa: E402
from hoi_perception.engines.export import export_main  # noqa: E402
from hoi_perception.geometry.camera import box_from_points, project  # noqa: E402
from hoi_perception.hand_model.mano import HandModel  # noqa: E402
from hoi_perception.models.config import load_model_config  # noqa: E402
from hoi_perception.models.detection_head import OBJECT, RIGHT_HAND, Letterbox  # noqa: E402
from hoi_perception.models.network import HOINet  # noqa: E402
from hoi_perception.pipeline.bag_processing import EstimateBagWriter  # noqa: E402
from hoi_perception.pipeline.config import EstimatorConfig  # noqa: E402
from hoi_perception.pipeline.crops import crop_geometry  # noqa: E402
from hoi_perception.pipeline.estimator import Estimator, build_engines  # noqa: E402
from hoi_perception.pipeline.gates import GateConfig  # noqa: E402
from hoi_perception.pipeline.messages import draw_frame  # noqa: E402

OBJECT_NAME = "sugar_box"


class Scene:
    """One right hand holding the object, 45 cm away, drifting slowly."""

    def __init__(self, width: int, height: int) -> None:
        self.K = np.array([[1.1 * width, 0, (width - 1) / 2], [0, 1.1 * width, (height - 1) / 2], [0, 0, 1]])
        rng = np.random.default_rng(0)
        self.pose = np.concatenate([[np.pi / 2, 0.0, 0.0], rng.normal(0, 0.15, 45)])
        self.betas = rng.normal(0, 0.5, 10)
        with torch.inference_mode():
            out = HandModel("right")(global_orient=torch.tensor(self.pose[None, :3], dtype=torch.float32),
                                     hand_pose=torch.tensor(self.pose[None, 3:], dtype=torch.float32),
                                     betas=torch.tensor(self.betas[None], dtype=torch.float32))
        self.joints_rel = (out.joints - out.joints[:, :1])[0].double().numpy()
        self.vertices_rel = (out.vertices - out.joints[:, :1])[0].double().numpy()
        self.rotation = Rotation.from_rotvec([0.3, -0.5, 0.2]).as_matrix()
        self.control_points = np.zeros((21, 3))
        self.t = 0.0

    def at(self, t: float) -> None:
        self.t = t

    @property
    def shift(self) -> np.ndarray:
        return np.array([0.03 * np.sin(self.t), 0.02 * np.cos(0.7 * self.t), 0.45])

    @property
    def hand_translation(self) -> np.ndarray:
        return np.array([-0.06, 0.02, 0.0]) + self.shift

    @property
    def object_points_2d(self) -> np.ndarray:
        return project(self.control_points @ self.rotation.T + self.shift + [0.0, 0.0, 0.03], self.K)

    @property
    def joints_2d(self) -> np.ndarray:
        return project(self.joints_rel + self.hand_translation, self.K)

    def boxes(self) -> tuple[np.ndarray, np.ndarray]:
        return (box_from_points(project(self.vertices_rel + self.hand_translation, self.K)),
                box_from_points(self.object_points_2d[:8]))


class TimedWrapper(InferenceEngine):
    """Runs the real engine (timed), then answers with a perfect network's outputs for the scene."""

    def __init__(self, engine: InferenceEngine, answer) -> None:
        self.engine, self.answer = engine, answer
        self.name, self.device, self.precision = engine.name, engine.device, engine.precision
        self.inputs, self.outputs, self.metadata = engine.inputs, engine.outputs, engine.metadata
        self.last_ms = 0.0

    def _run(self, inputs):
        start = time.perf_counter()
        outputs = self.engine.run(inputs)
        self.last_ms = (time.perf_counter() - start) * 1000
        return self.answer(inputs, outputs)


@dataclass
class Measurement:
    """One model's per-stage timings (ms) over the measured frames."""

    model: str
    stages: dict[str, list[float]]
    totals: list[float]
    post_over_network: list[float]
    overlay_ms: list[float]
    states: dict[str, int]
    redetect_interval: int

    @property
    def fps(self) -> float:
        return 1000.0 / statistics.fmean(self.totals)


def measure(model: str, args: argparse.Namespace) -> Measurement:
    """Every frame of the scene through the estimator with ``model``'s real ONNX graphs."""
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        model_config = load_model_config(f"models/{model}.yaml")
        checkpoint = Path(tmp) / f"{model}_random.pt"
        torch.save({"model_config": to_dict(model_config), "model": HOINet(model_config).state_dict()}, checkpoint)
        files = export_main(checkpoint, "onnx", Path(tmp) / "onnx")
        config = EstimatorConfig(engine=EngineConfig(kind="onnxruntime", threads=args.threads),
                                 crop_model=files["crop"], detector_model=files["detector"], object_name=OBJECT_NAME,
                                 hand_sides=["right"], gates=GateConfig(enabled=False), hand_side_from="detector")
        crop_engine, detector_engine = build_engines(config)
    scene = Scene(args.width, args.height)
    estimator: Estimator | None = None

    def detector_answer(inputs, outputs):
        letterbox = Letterbox.fit(args.width, args.height, estimator.detector_size, estimator.detector_size)
        hand_box, object_box = scene.boxes()
        boxes = np.zeros_like(outputs["boxes"])
        scores = np.zeros_like(outputs["scores"])
        classes = np.zeros_like(outputs["classes"])
        boxes[0, 0], scores[0, 0], classes[0, 0] = letterbox.boxes_to_input(hand_box), 0.9, RIGHT_HAND
        boxes[0, 1], scores[0, 1], classes[0, 1] = letterbox.boxes_to_input(object_box), 0.9, OBJECT
        return {"boxes": boxes, "scores": scores, "classes": classes}

    def crop_answer(inputs, outputs):
        tracks = estimator.tracker.tracks
        geometry = crop_geometry(tracks["right"].box, tracks["object"].box, args.width, estimator.crop_size, False)
        to_crop = geometry.image_to_crop

        def units(points, box):
            crop_px = points @ to_crop[:2, :2].T + to_crop[:2, 2]
            return (crop_px - box[:2]) / (box[2:] - box[:2])

        out = {name: value.copy() for name, value in outputs.items()}
        out["hand_joints2d"][0] = units(scene.joints_2d, geometry.hand_box)
        out["hand_joints3d"][0] = scene.joints_rel
        out["hand_vertices"][0] = scene.vertices_rel
        out["hand_pose"][0] = scene.pose
        out["hand_betas"][0] = scene.betas
        out["hand_joint_confidence"][0] = 0.8
        rng = np.random.default_rng(int(scene.t * 1000))
        votes = units(scene.object_points_2d, geometry.object_box)[:, :, None, None]
        out["object_votes"][0] = votes + rng.normal(0, 0.01, out["object_votes"][0].shape)
        out["object_confidence"][0] = rng.uniform(0.3, 0.95, out["object_confidence"][0].shape)
        return out

    crop = TimedWrapper(crop_engine, crop_answer)
    detector = TimedWrapper(detector_engine, detector_answer)
    estimator = Estimator(config, crop_engine=crop, detector_engine=detector)
    scene.control_points = estimator.object_model.control_points

    class SerializingBag:
        """Builds and CDR-serialises every message, as a publisher would; writes nothing."""

        typestore = typestore()

        def write(self, topic, msg, log_time_ns):
            if not isinstance(msg, SerializedMessage):  # fast paths arrive serialised
                self.typestore.serialize_cdr(msg, msg.__msgtype__)

    writer = EstimateBagWriter(SerializingBag(), {s: estimator.hand_faces(s) for s in ("right", "left")},
                               {OBJECT_NAME: estimator.object_model.control_points},
                               wanted=lambda output: output != "debug_image")
    image = np.random.default_rng(1).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    stages: dict[str, list[float]] = defaultdict(list)
    per_frame_post, per_frame_network, totals, overlay_ms = [], [], [], []
    states = defaultdict(int)
    warmup = 5
    for i in range(args.frames + warmup):
        scene.at(i / 30)
        start = time.perf_counter()
        result = estimator.process(image, scene.K, 100.0 + i / 30)
        built = time.perf_counter()
        writer.write(result, image, scene.K, int((100.0 + i / 30) * 1e9), "camera_color_optical_frame", 0)
        done = time.perf_counter()
        draw_start = time.perf_counter()
        draw_frame(image, result, scene.K, {OBJECT_NAME: scene.control_points})
        draw_ms = (time.perf_counter() - draw_start) * 1000
        if i < warmup:
            continue
        assert result.skipped is None and result.hands and result.objects[0].result.success, result
        states[result.tracking_state] += 1
        timings = dict(result.timings_ms)
        timings["network"] = crop.last_ms  # the ONNX graph alone (the substituted answer is not counted)
        timings["messages"] = (done - built) * 1000
        for name, value in timings.items():
            stages[name].append(value)
        per_frame_network.append(timings["network"])
        per_frame_post.append(sum(timings.get(s, 0.0) for s in ("translation", "pnp", "filter", "hand_model",
                                                                  "messages")))
        totals.append((built - start) * 1000 - (result.timings_ms["network"] - crop.last_ms) + timings["messages"])
        overlay_ms.append(draw_ms)
    return Measurement(model, dict(stages), totals, [p / n for p, n in zip(per_frame_post, per_frame_network)],
                       overlay_ms, dict(states), config.tracking.redetect_interval)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["cpu_r18", "hfl_r18"],
                        help="names under config/models/; the first is the reference of the ratios")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = its default)")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown table here too")
    args = parser.parse_args()
    load_before = os.getloadavg()
    results = [measure(model, args) for model in args.models]
    load_after = os.getloadavg()

    first = results[0]
    order = ("detect", "crop", "network", "translation", "pnp", "filter", "hand_model", "messages")
    lines = [
        f"# Estimator stage breakdown: {', '.join(args.models)}, ONNX Runtime, CPU, {args.width}x{args.height}",
        "",
        f"Command: `OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')} python "
        f"benchmarks/stage_breakdown.py --models {' '.join(args.models)} --frames {args.frames} --width "
        f"{args.width} --height {args.height} --threads {args.threads}`. The models ran one after the other in this "
        "run. Random weights (timing does not depend on them); network outputs replaced by a "
        "perfect network's for a synthetic hand-and-object scene so the geometry runs on realistic data (see the "
        "script's docstring). One right hand and one object per frame; detector every "
        f"{first.redetect_interval} frames ({first.states.get('detecting', 0)} detecting, "
        f"{first.states.get('tracking', 0)} tracking frames).",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, torch {torch.__version__}, onnxruntime "
        f"{__import__('onnxruntime').__version__}. Load average (1/5/15 min) before: "
        f"{' / '.join(f'{v:.2f}' for v in load_before)}, after: {' / '.join(f'{v:.2f}' for v in load_after)} "
        + ("(the cores were shared with other jobs; absolute numbers are noisy)." if load_before[0] >= 1.0
           else "(no other job was running: a 1-minute load below 1 before the run)."),
        "",
        "| stage | " + " | ".join(f"{r.model} mean ms | {r.model} median ms" for r in results) + " |",
        "| --- |" + " ---: | ---: |" * len(results),
    ]
    for name in order:
        if all(r.stages.get(name) for r in results):
            cells = [f"{statistics.fmean(r.stages[name]):.2f} | {statistics.median(r.stages[name]):.2f}"
                     for r in results]
            lines.append(f"| {name} ({len(first.stages[name])} frames) | " + " | ".join(cells) + " |")
    lines.append("")
    for r in results:
        lines += [
            f"**{r.model}**: after the network / network (translation + pnp + filter + hand_model + messages, per "
            f"frame): mean {100 * statistics.fmean(r.post_over_network):.1f} %, median "
            f"{100 * statistics.median(r.post_over_network):.1f} % (target <= 15 %). End to end (process + message "
            f"building): mean {statistics.fmean(r.totals):.1f} ms, median {statistics.median(r.totals):.1f} ms -> "
            f"{r.fps:.1f} frames/s ({r.fps / first.fps:.2f}x {first.model}). Debug overlay (optional, not in the "
            f"above): mean {statistics.fmean(r.overlay_ms):.2f} ms.",
            ""]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
