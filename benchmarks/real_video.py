"""The hand front-ends on real camera footage: MediaPipe's and the network's, side by side.

    PYTHONPATH=. python3 benchmarks/real_video.py [--video test/data/real_hand/open_hand_640x360.mp4]
        [--threads 2] [--out benchmarks/results/real_video.md]

The video (``test/data/real_hand/README.md`` says where it comes from) has no labels, so the
estimate is judged against the image itself, for each front-end in turn, frame by frame
with tracking on, hands only, the shipped perception.yaml otherwise:

* published: frames where a hand was published (after the gates and the temporal filter);
* on skin: the fraction of the published hand's 21 joints, projected with the camera model,
  that fall on skin-coloured pixels (YCrCb skin thresholds, grown by a few pixels), and the
  same for the joints moved sideways by one hand-box width (a control: joints beside the
  hand must score low, or the check could not fail);
* per-frame milliseconds of ``Estimator.process`` (wall clock, no drawing or writing),
  frames per second from their mean, and the median of each stage.

Where ``hoi-perception convert-mediapipe-models`` has made ONNX copies of MediaPipe's models,
the MediaPipe front-end also runs with them in ONNX Runtime (``mediapipe.engine:
onnxruntime``), to choose the CPU runtime from a measurement.

It also writes ``<out stem>.png``: four frames with the MediaPipe path's overlay.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hoi_perception.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text  # noqa: E402
from hoi_perception.frontends.mediapipe_models import ONNX_MANIFEST, resolve_model_dir  # noqa: E402
from hoi_perception.geometry.camera import project  # noqa: E402
from hoi_perception.pipeline.config import DEFAULT_PERCEPTION_CONFIG, load_estimator_config  # noqa: E402
from hoi_perception.pipeline.estimator import Estimator  # noqa: E402
from hoi_perception.pipeline.messages import draw_frame  # noqa: E402
from hoi_perception.pipeline.shipped_model import with_shipped_model  # noqa: E402
from hoi_perception.pipeline.video import intrinsics_from_fov  # noqa: E402

VIDEO = ROOT / "test" / "data" / "real_hand" / "open_hand_640x360.mp4"
RESULTS = ROOT / "benchmarks" / "results" / "real_video.md"
# Skin in YCrCb (Chai and Ngan's ranges), grown by this many pixels: joints sit inside the
# hand's outline, but a fingertip joint may sit on its edge.
SKIN_CR = (135, 180)
SKIN_CB = (85, 135)
SKIN_GROW_PX = 4
OVERLAY_FRAMES = 4


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    """Every frame of ``path`` as RGB, and its frame rate."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise FileNotFoundError(f"video '{path}' cannot be opened")
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(bgr[..., ::-1]))
    capture.release()
    if not frames:
        raise ValueError(f"video '{path}': no frame could be decoded")
    return frames, float(fps)


def skin_mask(rgb: np.ndarray) -> np.ndarray:
    """Boolean (H, W): skin-coloured pixels, grown by :data:`SKIN_GROW_PX`."""
    ycrcb = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    cr, cb = ycrcb[..., 1], ycrcb[..., 2]
    mask = ((cr >= SKIN_CR[0]) & (cr <= SKIN_CR[1]) & (cb >= SKIN_CB[0]) & (cb <= SKIN_CB[1])).astype(np.uint8)
    size = 2 * SKIN_GROW_PX + 1
    return cv2.dilate(mask, np.ones((size, size), np.uint8)).astype(bool)


def fraction_on_mask(points: np.ndarray, mask: np.ndarray) -> float:
    """Share of (N, 2) pixel positions that land on ``mask`` (outside the image counts as off)."""
    pixels = np.floor(points).astype(int)
    height, width = mask.shape
    inside = (pixels[:, 0] >= 0) & (pixels[:, 0] < width) & (pixels[:, 1] >= 0) & (pixels[:, 1] < height)
    on = np.zeros(len(points), bool)
    on[inside] = mask[pixels[inside, 1], pixels[inside, 0]]
    return float(on.mean())


def run_front_end(estimator: Estimator, frames: list[np.ndarray], fps: float, K: np.ndarray) -> dict:
    """Per frame: published or not, joints on skin (and the control), milliseconds."""
    records = []
    overlays = []
    keep = set(np.linspace(len(frames) // 8, len(frames) - 1, OVERLAY_FRAMES).astype(int).tolist())
    for index, rgb in enumerate(frames):
        start = time.perf_counter()
        result = estimator.process(rgb, K, index / fps)
        record: dict = {"ms": (time.perf_counter() - start) * 1e3, "stages": dict(result.timings_ms),
                        "published": bool(result.hands)}
        if result.hands:
            hand = max((t.result for t in result.hands), key=lambda h: h.confidence)
            joints = project(hand.joints_cam, K)
            mask = skin_mask(rgb)
            record["on_skin"] = fraction_on_mask(joints, mask)
            record["beside_on_skin"] = fraction_on_mask(joints + [hand.box[2] - hand.box[0], 0.0], mask)
        records.append(record)
        if index in keep:
            overlays.append(draw_frame(rgb, result, K, {}))
    return {"records": records, "overlays": overlays}


def summarize(records: list[dict]) -> dict:
    published = [r for r in records if r["published"]]
    ms = np.array([r["ms"] for r in records])
    stages = sorted({s for r in records for s in r["stages"]})
    out = {"frames": len(records), "published": len(published), "mean_ms": float(ms.mean()),
           "median_ms": float(np.median(ms)), "fps": float(1e3 / ms.mean()),
           "stages_median_ms": {s: float(np.median([r["stages"][s] for r in records if s in r["stages"]]))
                                for s in stages}}
    if published:
        on_skin = np.array([r["on_skin"] for r in published])
        out.update(on_skin_mean=float(on_skin.mean()), on_skin_p5=float(np.percentile(on_skin, 5)),
                   beside_on_skin_mean=float(np.mean([r["beside_on_skin"] for r in published])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=VIDEO)
    parser.add_argument("--threads", type=int, default=2, help="LiteRT, ONNX Runtime and PyTorch CPU threads")
    parser.add_argument("--hfov", type=float, default=60.0, help="assumed horizontal field of view (deg)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frames, fps = read_video(args.video)
    height, width = frames[0].shape[:2]
    K = intrinsics_from_fov(width, height, args.hfov)
    shipped = load_estimator_config(DEFAULT_PERCEPTION_CONFIG)
    mediapipe_config = replace(shipped, hand_frontend="mediapipe", object_name=None)
    mediapipe_config.mediapipe.threads = args.threads
    network_config = with_shipped_model(replace(shipped, object_name=None,
                                                engine=replace(shipped.engine, threads=args.threads)))
    front_ends = [("mediapipe", mediapipe_config)]
    onnx_copies = resolve_model_dir(mediapipe_config.mediapipe.model_dir) / ONNX_MANIFEST
    if onnx_copies.is_file():  # the same models converted to ONNX, in ONNX Runtime
        onnx_config = replace(mediapipe_config, mediapipe=replace(mediapipe_config.mediapipe, engine="onnxruntime"))
        front_ends.append(("mediapipe (onnxruntime)", onnx_config))
    front_ends.append(("network", network_config))
    runs = {}
    for name, config in front_ends:
        estimator = Estimator(config)
        estimator.process(frames[0], K, -1.0)  # warm-up (first-call allocations), then a fresh stream
        estimator.reset()
        runs[name] = run_front_end(estimator, frames, fps, K)
    summaries = {name: summarize(run["records"]) for name, run in runs.items()}
    mp, net = summaries["mediapipe"], summaries["network"]
    try:
        video_name = args.video.resolve().relative_to(ROOT)
    except ValueError:
        video_name = args.video
    lines = [
        "# Hand front-ends on a real video",
        "",
        f"Produced by `PYTHONPATH=. python3 benchmarks/real_video.py --threads {args.threads}`"
        + ("" if args.video == VIDEO else f" --video {args.video}")
        + f" on `{video_name}` ({len(frames)} frames, {width}x{height}, {fps:.0f} fps; a real right hand, no "
        f"labels; camera model from a {args.hfov:.0f} deg horizontal field of view). Hands only, each front-end "
        "with the shipped perception.yaml's settings; the network is the shipped checkpoint "
        f"({network_config.engine.kind}).",
        "",
        f"- CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, {args.threads} "
        "thread(s) per runtime; load average (1/5/15 min) at the end "
        f"{' / '.join(f'{v:.2f}' for v in os.getloadavg())} (above 1 the cores were shared, and times are upper "
        "bounds).",
        "- 'on skin': share of the published hand's projected joints on skin-coloured pixels (YCrCb, grown by "
        f"{SKIN_GROW_PX} px), mean and 5th percentile over published frames; 'beside': the same joints moved "
        "one hand-box width sideways (a control).",
        "",
        "| front-end | published | joints on skin (mean / p5) | beside the hand | ms per frame (mean / median) "
        "| frames/s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in summaries.items():
        skin = (f"{s['on_skin_mean']:.0%} / {s['on_skin_p5']:.0%} | {s['beside_on_skin_mean']:.0%}"
                if s["published"] else "- | -")
        lines.append(f"| {name} | {s['published']} of {s['frames']} ({s['published'] / s['frames']:.0%}) | {skin} "
                     f"| {s['mean_ms']:.1f} / {s['median_ms']:.1f} | {s['fps']:.1f} |")
    lines += [
        "",
        f"MediaPipe front-end / network, time per frame measured in this run: {mp['mean_ms'] / net['mean_ms']:.2f}x "
        f"({mp['fps']:.1f} vs {net['fps']:.1f} frames/s)."
        + ("" if "mediapipe (onnxruntime)" not in summaries else
           f" MediaPipe's models in ONNX Runtime / in LiteRT: "
           f"{summaries['mediapipe (onnxruntime)']['mean_ms'] / mp['mean_ms']:.2f}x."),
        "",
        "Median milliseconds per stage:",
        "",
        "| stage | " + " | ".join(summaries) + " |",
        "| --- | " + " | ".join("---" for _ in summaries) + " |",
    ]
    stages = sorted({s for v in summaries.values() for s in v["stages_median_ms"]})
    for stage in stages:
        lines.append(f"| {stage} | " + " | ".join(f"{v['stages_median_ms'].get(stage, float('nan')):.1f}"
                                                   for v in summaries.values()) + " |")
    overlays = runs["mediapipe"]["overlays"]
    montage = np.vstack([np.hstack(overlays[i:i + 2]) for i in range(0, len(overlays) - 1, 2)])
    png = args.out.with_suffix(".png")
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(montage[..., ::-1]))
    assert ok  # PNG encoding of a uint8 image does not fail
    atomic_write_bytes(png, encoded.tobytes())
    lines += ["", f"Overlay of the MediaPipe path on {len(overlays)} frames: `{png.name}`.", ""]
    atomic_write_text(args.out, "\n".join(lines))
    atomic_write_json(args.out.with_suffix(".json"), summaries)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
