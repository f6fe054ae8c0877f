"""Hold-out check of ``process-bag`` as a new user runs it: unseen bags, odd variants, mistaken output paths.

A labelled split is rendered with a seed used nowhere else (3200: not training 0-4,
test 1000, gate validation 3100), and one of its bags is rewritten into variants:
colour encodings (bgr8, mono8), CompressedImage only, zstd-compressed bag files,
sqlite3 storage, a corrupt image message, an all-zero camera matrix, stamps that
jump back, and images half the CameraInfo's size. Each runs through the command line
exactly as documented, with no model arguments (the shipped checkpoint; only the
object in view is named), and is checked for:

* no Python traceback, and exit status 0 when frames were processed, non-zero when none;
* the input bag byte-for-byte unchanged, also after mistaken output paths
  (the input itself, the dataset folder holding it, a notes folder) with ``--overwrite``;
* of the object TFs published, the fraction within 5 cm of the truth.

    PYTHONPATH=. python3 benchmarks/holdout_check.py          # writes benchmarks/results/holdout_check.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import CompressionFormat, CompressionMode, Writer

from hoi_perception.atomic import atomic_write_text
from hoi_perception.bag_io import BAG_FORMAT_VERSION, camera_info_msg, header, image_msg, open_bag_writer, typestore

RESULTS = Path(__file__).resolve().parent / "results" / "holdout_check.md"
SEED = 3200
IMAGE = "/camera/color/image_raw"
INFO = "/camera/color/camera_info"
DEPTH = "/camera/aligned_depth_to_color/image_raw"


def digest(path: Path) -> str:
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(file.relative_to(path)).encode())
        h.update(file.read_bytes())
    return h.hexdigest()


def read_frames(bag: Path) -> list[dict]:
    """The plain bag's frames: image (RGB), K, size, stamp, depth, in order."""
    frames: dict[int, dict] = {}
    with AnyReader([bag]) as reader:
        for connection, _, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            entry = frames.setdefault(stamp, {"stamp": stamp})
            if connection.topic == IMAGE:
                entry["rgb"] = msg.data.reshape(msg.height, msg.width, 3).copy()
            elif connection.topic == INFO:
                entry["K"], entry["size"] = msg.k.reshape(3, 3).copy(), (msg.width, msg.height)
            elif connection.topic == DEPTH:
                entry["depth"] = msg.data.view(np.uint16).reshape(msg.height, msg.width).copy()
    return [frames[s] for s in sorted(frames)]


def write_variant(path: Path, frames: list[dict], variant: str) -> None:
    """One odd variant of the plain bag (module docstring)."""
    if variant == "zstd_file_compression":
        ts = typestore()
        writer = Writer(path, version=BAG_FORMAT_VERSION)
        writer.set_compression(CompressionMode.FILE, CompressionFormat.ZSTD)
        with writer:
            connections = {t: writer.add_connection(t, m, typestore=ts) for t, m in
                           ((IMAGE, "sensor_msgs/msg/Image"), (INFO, "sensor_msgs/msg/CameraInfo"))}
            for f in frames:
                for topic, msg in ((IMAGE, image_msg(ts, f["rgb"], f["stamp"], "cam")),
                                   (INFO, camera_info_msg(ts, f["K"], *f["size"], f["stamp"], "cam"))):
                    writer.write(connections[topic], f["stamp"], ts.serialize_cdr(msg, msg.__msgtype__))
        return
    storage = "sqlite3" if variant == "sqlite3" else "mcap"
    with open_bag_writer(path, storage=storage) as bag:
        ts = bag.typestore
        n = len(frames)
        for i, f in enumerate(frames):
            stamp = f["stamp"]
            if variant == "stamps_go_back" and i >= n // 2:
                stamp -= (n // 2 + 3) * 33_333_333  # the second half starts before the first ended
            rgb, K, (width, height) = f["rgb"], f["K"], f["size"]
            if variant == "zero_K":
                K = np.zeros((3, 3))
            if variant == "image_half_camera_info_size":
                rgb = cv2.resize(rgb, (width // 2, height // 2))
            if variant == "compressed_only":
                jpeg = np.frombuffer(cv2.imencode(".jpg", rgb[..., ::-1])[1].tobytes(), np.uint8)
                Compressed = ts.types["sensor_msgs/msg/CompressedImage"]
                bag.write(IMAGE + "/compressed", Compressed(header=header(ts, stamp, "cam"), format="jpeg",
                                                           data=jpeg), stamp)
            else:
                msg = image_msg(ts, rgb if variant != "mono8" else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), stamp,
                                "cam")
                if variant == "bgr8":
                    msg = image_msg(ts, rgb[..., ::-1], stamp, "cam")
                    msg.encoding = "bgr8"
                if variant == "corrupt_message" and i == 3:
                    msg.data = msg.data[: len(msg.data) // 3]
                bag.write(IMAGE, msg, stamp)
            bag.write(INFO, camera_info_msg(ts, K, width, height, stamp, "cam"), stamp)
            if variant == "with_depth":
                bag.write(DEPTH, image_msg(ts, f["depth"], stamp, "cam"), stamp)


VARIANTS = ("with_depth", "bgr8", "mono8", "compressed_only", "zstd_file_compression", "sqlite3", "corrupt_message",
            "stamps_go_back", "zero_K", "image_half_camera_info_size")
EXPECT_NOTHING = {"zero_K", "image_half_camera_info_size"}


def run_cli(args: list[str]) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "hoi_perception.cli", *args], capture_output=True, text=True,
                          timeout=900)
    return done.returncode, done.stdout + done.stderr


def object_tf_errors(out_bag: Path, truth: dict[int, np.ndarray], child: str) -> list[float]:
    errors = []
    with AnyReader([out_bag]) as reader:
        for connection, _, raw in reader.messages():
            if connection.topic != "/tf":
                continue
            for t in reader.deserialize(raw, connection.msgtype).transforms:
                stamp = t.header.stamp.sec * 10**9 + t.header.stamp.nanosec
                if t.child_frame_id == child and stamp in truth:
                    p = t.transform.translation
                    errors.append(float(np.linalg.norm(np.array([p.x, p.y, p.z]) - truth[stamp])))
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--sequences", type=int, default=3)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="holdout_"))
    data = work / "holdout"
    if not (data / "manifest.json").exists():
        subprocess.run([sys.executable, "-m", "hoi_training.cli", "synth", "--out", str(data), "--sequences",
                        str(args.sequences), "--frames", str(args.frames), "--seed", str(SEED), "--bag"], check=True)
    manifest = json.loads((data / "manifest.json").read_text())
    rows, all_errors, failures = [], [], []
    for seq_index, bag_rel in enumerate(manifest["bags"]):
        bag = data / bag_rel
        seq = data / manifest["sequences"][seq_index]["name"]
        meta = json.loads((seq / "meta.json").read_text())
        labels = np.load(seq / "labels.npz")
        frames = read_frames(bag)
        truth = {f["stamp"]: labels["object_translation"][i] for i, f in enumerate(frames)}
        object_args = ["--set", f"object_name={meta['object_name']}"]
        variants = VARIANTS if seq_index == 0 else ("with_depth",)
        for variant in variants:
            in_bag = work / "variants" / f"{seq_index}_{variant}"
            if not in_bag.exists():
                try:
                    write_variant(in_bag, frames, variant)
                except ImportError as exc:  # zstd needs the optional zstandard package
                    rows.append((f"{seq_index} {variant}", "-", f"not written here: {exc}", 0, 0, True))
                    continue
            before = digest(in_bag)
            out_bag = work / "out" / f"{seq_index}_{variant}"
            code, text = run_cli(["process-bag", str(in_bag), str(out_bag), "--overwrite", *object_args])
            processed = next((line for line in text.splitlines() if ", processed:" in line), "")
            errors = object_tf_errors(out_bag, truth, meta["object_name"]) if code == 0 else []
            if variant not in ("stamps_go_back",):
                all_errors += errors
            ok = ("Traceback" not in text and digest(in_bag) == before
                  and (code != 0) == (variant in EXPECT_NOTHING))
            if not ok:
                failures.append(f"{variant}: exit {code}\n{text[-2000:]}")
            last = text.strip().splitlines()[-1] if text.strip() else ""
            rows.append((f"{seq_index} {variant}", code, processed or last[:110], len(errors),
                         sum(e <= 0.05 for e in errors), ok))
    # Mistaken output paths: the input, the dataset folder holding it, a notes folder.
    bag = data / manifest["bags"][0]
    notes = work / "notes"
    notes.mkdir(exist_ok=True)
    (notes / "notes.txt").write_text("keep me")
    before = {p: digest(p) for p in (data, notes)}
    for out in (bag, data, notes):
        code, text = run_cli(["process-bag", str(bag), str(out), "--overwrite", "--set", "object_name=x"])
        ok = code != 0 and "Traceback" not in text and all(digest(p) == d for p, d in before.items())
        rows.append((f"mistaken output {out.name}", code, text.strip().splitlines()[-1][:110], 0, 0, ok))
        if not ok:
            failures.append(f"mistaken output {out}: exit {code}\n{text[-2000:]}")
    within = sum(e <= 0.05 for e in all_errors)
    lines = ["# Hold-out check of process-bag", "",
             f"Unseen synthetic split (seed {SEED}, {len(manifest['bags'])} bags x {args.frames} frames), "
             "`hoi-perception process-bag IN OUT --overwrite --set object_name=NAME`, no model arguments (the "
             "shipped checkpoint). Command: `PYTHONPATH=. python3 benchmarks/holdout_check.py`.", "",
             "| bag variant | exit | summary | object TFs | within 5 cm | checks pass |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {code} | {summary.replace('|', '/')} | {n} | {w} | {ok} |"
              for name, code, summary, n, w, ok in rows]
    fraction = f"{within}/{len(all_errors)} = {100.0 * within / len(all_errors):.1f} %" if all_errors \
        else "0/0 (no object TF published)"
    lines += ["", f"Object TFs within 5 cm of the truth (all variants with consistent stamps): {fraction}.",
              f"Every check passed: {not failures}."]
    text = "\n".join(lines) + "\n"
    print(text)
    for failure in failures:
        print("FAILED", failure, file=sys.stderr)
    if not args.no_write:
        atomic_write_text(RESULTS, text)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
