"""MediaPipe hand front-end against the network path on synthetic hold-out sequences.

    PYTHONPATH=. python3 benchmarks/mediapipe_frontend.py [--sequences 20] [--frames 8] [--threads 1]
        [--checkpoint FILE] [--out benchmarks/results/mediapipe_frontend.md]

A labelled split is rendered with a seed used nowhere else (3300) at 256x256 and run
through the estimator twice, frame by frame in sequence order (tracking on): once with
``hand_frontend: mediapipe`` (hands only; the models from ``HOI_MEDIAPIPE_DIR`` or the
user data folder) and once with the network (the shipped checkpoint unless
``--checkpoint``, PyTorch engine, with the sequence's object as it was trained: its crops
are the union of hand and object boxes). Per path, for the labelled hand:

* found: frames where a hand of the labelled side was published (after gates and filter);
* 2D error: mean distance of the published 2D joints to the labels (px);
* PA-MPJPE and root-relative MPJPE of the published 3D joints (mm);
* for MediaPipe also the landmarks before the MANO fit (image landmarks' 2D error, world
  landmarks' PA-MPJPE) and how often its side was right;
* the errors again on the frames both paths published, and of the estimates before the
  temporal filter (which may hold a frame), on all frames and on those both estimated;
* median milliseconds per stage and per frame.

The stand-in hand of the renders is not a real hand: MediaPipe sees it through a domain
gap, the network was trained on exactly these renders.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hoi_perception.atomic import atomic_write_text  # noqa: E402
from hoi_perception.config import load_config  # noqa: E402
from hoi_perception.engines.base import EngineConfig  # noqa: E402
from hoi_perception.geometry.metrics import procrustes_align  # noqa: E402
from hoi_perception.hand_model.joint_orders import simple_to_ho3d  # noqa: E402
from hoi_perception.pipeline.config import DEFAULT_PERCEPTION_CONFIG, load_estimator_config  # noqa: E402
from hoi_perception.pipeline.estimator import Estimator  # noqa: E402
from hoi_perception.pipeline.gates import GateConfig  # noqa: E402
from hoi_perception.pipeline.shipped_model import resolve_checkpoint  # noqa: E402
from hoi_perception.synth.config import SynthConfig  # noqa: E402
from hoi_perception.synth.generator import generate_dataset  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "mediapipe_frontend.md"
SEED = 3300


def render(out: Path, sequences: int, frames: int) -> list[Path]:
    config = load_config(SynthConfig, "synth.yaml", ["camera.width=256", "camera.height=256"])
    manifest = generate_dataset(config, out, sequences=sequences, frames=frames, seed=SEED)
    return [out / s["name"] for s in manifest["sequences"]]


def pa_mpjpe_mm(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(np.linalg.norm(procrustes_align(pred, gt)[0] - gt, axis=1).mean() * 1000)


def mpjpe_rel_mm(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(np.linalg.norm((pred - pred[0]) - (gt - gt[0]), axis=1).mean() * 1000)


def run_path(name: str, make_estimator: Callable[[str], Estimator], sequences: list[Path]) -> dict:
    """Per-frame records of one path over the sequences; ``make_estimator(object_name)``."""
    captured: list = []
    estimates: list = []
    estimators: dict[str, Estimator] = {}

    def estimator_for(object_name: str) -> Estimator:
        if object_name in estimators:
            return estimators[object_name]
        estimator = estimators[object_name] = make_estimator(object_name)
        if estimator.hand_stage is not None:  # keep the front-end's raw landmarks of each frame
            stage_process = estimator.hand_stage.process

            def capture(*args, **kwargs):
                estimates, ended = stage_process(*args, **kwargs)
                captured[:] = estimates
                return estimates, ended

            estimator.hand_stage.process = capture  # type: ignore[method-assign]
        filter_hand = estimator._filter_hand

        def keep_estimate(hand, stamp):  # each hand estimate that reaches the filter (after the gates)
            estimates.append(hand)
            return filter_hand(hand, stamp)

        estimator._filter_hand = keep_estimate  # type: ignore[method-assign]
        return estimator

    records = []
    timings: dict[str, list[float]] = defaultdict(list)
    for s, seq in enumerate(sequences):
        meta = json.loads((seq / "meta.json").read_text())
        labels = np.load(seq / "labels.npz")
        K = np.asarray(meta["K"], dtype=np.float64)
        side = meta["hand_side"]
        estimator = estimator_for(meta["object_name"])
        estimator.reset()
        for i in range(meta["frames"]):
            rgb = cv2.cvtColor(cv2.imread(str(seq / "rgb" / f"{i:06d}.png")), cv2.COLOR_BGR2RGB)
            captured.clear()
            estimates.clear()
            result = estimator.process(rgb, K, 1000.0 * s + i / meta["fps"])
            for stage, ms in result.timings_ms.items():
                timings[stage].append(ms)
            timings["total"].append(result.total_ms)
            gt2d, gt3d = labels["joints2d"][i], labels["joints3d"][i]
            record: dict = {"key": (s, i), "found": False}
            hand = next((h.result for h in result.hands if h.result.side == side), None)
            if hand is not None:
                record.update(found=True, err2d=float(np.linalg.norm(hand.joints2d - gt2d, axis=1).mean()),
                              pa=pa_mpjpe_mm(hand.joints_cam, gt3d), rel=mpjpe_rel_mm(hand.joints_cam, gt3d))
            estimate = next((h for h in estimates if h.track.key == side and h.translation is not None), None)
            if estimate is not None:
                joints_cam = estimate.joints_rel + estimate.translation
                record.update(estimated=True, est_err2d=float(np.linalg.norm(estimate.joints2d - gt2d, axis=1).mean()),
                              est_pa=pa_mpjpe_mm(joints_cam, gt3d), est_rel=mpjpe_rel_mm(joints_cam, gt3d))
            if captured:
                raw = max(captured, key=lambda e: e.landmarks.side_score)
                record["raw_side_ok"] = raw.landmarks.side == side
                record["raw_err2d"] = float(np.linalg.norm(raw.hand.joints2d - gt2d, axis=1).mean())
                record["raw_world_pa"] = pa_mpjpe_mm(simple_to_ho3d(raw.landmarks.world_landmarks), gt3d)
                record["fit_rms_mm"] = raw.fit_rms_m * 1000
            records.append(record)
    return {"name": name, "records": records, "timings": {k: float(np.median(v)) for k, v in timings.items()}}


def summary(records: list[dict], keys: set | None = None, prefix: str = "", flag: str = "found") -> dict:
    """Medians of the published hands' errors (``prefix`` "est_": of the estimates before the filter)."""
    chosen = [r for r in records if keys is None or r["key"] in keys]
    found = [r for r in chosen if r.get(flag)]

    def median(field: str) -> float:
        values = [r[prefix + field] for r in found if prefix + field in r]
        return float(np.median(values)) if values else float("nan")

    return {"frames": len(chosen), "found": len(found), "err2d": median("err2d"), "pa": median("pa"),
            "rel": median("rel")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=20)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="LiteRT and PyTorch CPU threads")
    parser.add_argument("--checkpoint", default=None, help="network checkpoint (default: the shipped one)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    checkpoint = resolve_checkpoint(args.checkpoint)
    with tempfile.TemporaryDirectory(prefix="mediapipe_bench_") as tmp:
        sequences = render(Path(tmp) / "holdout", args.sequences, args.frames)
        paths = []
        # Both paths run the shipped perception.yaml's settings (the detector and tracking thresholds chosen
        # for the shipped model on its validation split), with only what is compared changed.
        shipped = load_estimator_config(DEFAULT_PERCEPTION_CONFIG)
        for gates in (True, False):
            mediapipe_config = replace(shipped, hand_frontend="mediapipe", object_name=None,
                                       gates=GateConfig(enabled=gates))
            mediapipe_config.mediapipe.threads = args.threads
            frontend = Estimator(mediapipe_config)
            paths.append(run_path(f"mediapipe{'' if gates else ', gates off'}", lambda _, e=frontend: e, sequences))
            paths.append(run_path(f"network{'' if gates else ', gates off'}", lambda object_name, g=gates: Estimator(
                replace(shipped, engine=EngineConfig(kind="torch", threads=args.threads), checkpoint=checkpoint,
                        object_name=object_name, gates=GateConfig(enabled=g))), sequences))
    mediapipe, network, mediapipe_open, network_open = paths
    both = ({r["key"] for r in mediapipe_open["records"] if r["found"]}
            & {r["key"] for r in network_open["records"] if r["found"]})
    raw = [r for r in mediapipe["records"] if "raw_err2d" in r]
    lines = [
        "# MediaPipe hand front-end vs the network path (synthetic hold-out)",
        "",
        f"Produced by `PYTHONPATH=. python3 benchmarks/mediapipe_frontend.py --sequences {args.sequences} --frames "
        f"{args.frames} --threads {args.threads}" + (f" --checkpoint {args.checkpoint}" if args.checkpoint else "")
        + f"`: {args.sequences} sequences x {args.frames} frames, 256x256, seed {SEED}, one labelled hand each; "
        f"network: {checkpoint.name} (PyTorch engine, with each sequence's object); MediaPipe: hands only.",
        "",
        f"- CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, {args.threads} "
        "thread(s) per runtime; load average (1/5/15 min) at the end "
        f"{' / '.join(f'{v:.2f}' for v in os.getloadavg())} "
        "(above 1 the cores were shared, and times are upper bounds). Both paths run the shipped perception.yaml's "
        "settings (thresholds chosen for the shipped model on its validation split).",
        "- Errors are medians over the frames where the path published the labelled hand (after gates and filter); "
        "'gates off' publishes every solved pose (estimator.gates.enabled false); 'estimates before the filter': "
        "every hand estimate with a translation that reached the temporal filter (gates off), published or not.",
        "",
        "| path | frames | found | 2D error (px) | PA-MPJPE (mm) | root-rel. MPJPE (mm) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for path in paths:
        s = summary(path["records"])
        lines.append(f"| {path['name']} | {s['frames']} | {s['found']} ({s['found'] / s['frames']:.0%}) | "
                     f"{s['err2d']:.1f} | {s['pa']:.1f} | {s['rel']:.1f} |")
    for path in (mediapipe_open, network_open):
        s = summary(path["records"], both)
        lines.append(f"| {path['name']}, frames both found | {len(both)} | {s['found']} | {s['err2d']:.1f} | "
                     f"{s['pa']:.1f} | {s['rel']:.1f} |")
    for path in (mediapipe_open, network_open):
        s = summary(path["records"], prefix="est_", flag="estimated")
        lines.append(f"| {path['name']}, estimates before the filter | {s['frames']} | {s['found']} "
                     f"({s['found'] / s['frames']:.0%}) | {s['err2d']:.1f} | {s['pa']:.1f} | {s['rel']:.1f} |")
    estimated_both = ({r["key"] for r in mediapipe_open["records"] if r.get("estimated")}
                      & {r["key"] for r in network_open["records"] if r.get("estimated")})
    for path in (mediapipe_open, network_open):
        s = summary(path["records"], estimated_both, prefix="est_", flag="estimated")
        lines.append(f"| {path['name']}, estimates before the filter, frames both estimated | "
                     f"{len(estimated_both)} | {s['found']} | {s['err2d']:.1f} | {s['pa']:.1f} | {s['rel']:.1f} |")
    lines += [
        "",
        "MediaPipe before the MANO fit (every frame its landmark model kept a hand, before gates):",
        "",
        f"- frames with landmarks: {len(raw)} of {len(mediapipe['records'])}; side right in "
        f"{np.mean([r['raw_side_ok'] for r in raw]):.0%}" if raw else "- no landmarks",
    ]
    if raw:
        lines += [
            f"- image landmarks' 2D error: median {np.median([r['raw_err2d'] for r in raw]):.1f} px",
            f"- world landmarks' PA-MPJPE: median {np.median([r['raw_world_pa'] for r in raw]):.1f} mm; the MANO "
            f"fit's RMS residual to them: median {np.median([r['fit_rms_mm'] for r in raw]):.1f} mm",
        ]
    lines += ["", "Median milliseconds per frame and stage:", "",
              "| path | " + " | ".join(sorted(set(mediapipe["timings"]) | set(network["timings"]))) + " |",
              "| --- |" + " --- |" * len(set(mediapipe["timings"]) | set(network["timings"]))]
    for path in (mediapipe, network):
        stages = sorted(set(mediapipe["timings"]) | set(network["timings"]))
        lines.append(f"| {path['name']} | " + " | ".join(
            f"{path['timings'][k]:.1f}" if k in path["timings"] else "-" for k in stages) + " |")
    text = "\n".join(lines) + "\n"
    atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
