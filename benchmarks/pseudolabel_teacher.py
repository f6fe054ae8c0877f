"""The MediaPipe teacher constraint (``hoi-train pseudolabel --teacher mediapipe``) on a synthetic split.

    PYTHONPATH=. python3 benchmarks/pseudolabel_teacher.py [--data data/synthetic/cpu_val] [--sequences 5]
        [--checkpoint hoi_perception/checkpoints/cpu_r18_synthetic.pt] [--out benchmarks/results/pseudolabel_teacher.md]

The first ``--sequences`` sequences of ``--data`` (a ``hoi-train synth`` split) are
pseudo-labelled through ``pseudolabel_main`` exactly as the command does it (shipped
pseudolabel.yaml and perception.yaml, the detector's boxes, 8-copy TTA) with
``--teacher mediapipe``, into a temporary folder. The labels of the split are read only
afterwards, to say how far each pseudo-label and each teacher hand is from the truth.

Reported: how many labelled frames the teacher found a matching hand in, how many
``teacher_2d`` rejected (no hand, or too far), how many pseudo-labels the job keeps with
and without the teacher (the same stored predictions re-filtered with
``constraints.teacher: false``), the teacher distance, the pseudo-labels' true 2D error and
the IoU of the labelling box with the true hand box for the frames the teacher accepted and
rejected, and what other distance thresholds would have rejected (re-filtered offline).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hoi_perception.atomic import atomic_write_text  # noqa: E402
from hoi_perception.geometry.camera import box_iou  # noqa: E402
from hoi_training.data.synthetic import SyntheticConfig, SyntheticDataset  # noqa: E402
from hoi_training.pseudolabel import load_shard  # noqa: E402
from hoi_training.pseudolabel.constraints import scale_references  # noqa: E402
from hoi_training.pseudolabel.dataset import job_constraints, read_manifest, refilter  # noqa: E402
from hoi_training.pseudolabel.pipeline import pseudolabel_main  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "pseudolabel_teacher.md"
SWEEP = (0.1, 0.15, 0.2, 0.25, 0.35, 0.5)


def subset(data: Path, sequences: int, where: Path) -> Path:
    """A dataset folder with the first ``sequences`` sequences of ``data`` (links, and a trimmed manifest)."""
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["sequences"] = manifest["sequences"][:sequences]
    manifest["total_frames"] = sum(int(s.get("frames", manifest.get("frames_per_sequence", 0)))
                                   for s in manifest["sequences"])
    where.mkdir(parents=True)
    (where / "manifest.json").write_text(json.dumps(manifest))
    for entry in manifest["sequences"]:
        (where / entry["name"]).symlink_to((data / entry["name"]).resolve(), target_is_directory=True)
    return where


def median(values: np.ndarray) -> str:
    values = values[np.isfinite(values)]
    return f"{np.median(values):.3f}" if len(values) else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT / "data" / "synthetic" / "cpu_val"))
    parser.add_argument("--sequences", type=int, default=5)
    parser.add_argument("--checkpoint", default=str(ROOT / "hoi_perception" / "checkpoints" / "cpu_r18_synthetic.pt"))
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--keep", default=None, help="write the pseudo-labels here instead of a temporary folder")
    args = parser.parse_args()
    data = Path(args.data)

    with tempfile.TemporaryDirectory(prefix="teacher_bench_") as tmp:
        split = subset(data, args.sequences, Path(tmp) / "split")
        out = Path(args.keep) if args.keep else Path(tmp) / "labels"
        code = pseudolabel_main(args.checkpoint, "synthetic", split, out, teacher="mediapipe")
        manifest = read_manifest(out)
        shards = [load_shard(out / s["file"]) for s in manifest["shards"] if s["status"] == "done"]
        rows = {k: np.concatenate([s[k] for s in shards]) for k in shards[0]}
        without = refilter(out, replace(job_constraints(manifest), teacher=False))
        kept_without = int(sum(r.kept.sum() for r in without.values()))
        sweep = {}
        for limit in SWEEP:
            swept = refilter(out, replace(job_constraints(manifest), max_teacher_2d_distance=limit))
            sweep[limit] = (int(sum(r.rejected("teacher_2d").sum() for r in swept.values())),
                            int(sum(r.kept.sum() for r in swept.values())))
        truth = SyntheticDataset(SyntheticConfig(root=split, load_masks=False))
        index = {(truth.sequences[s].name, f): i for i, (s, f) in enumerate(truth.index)}
        rows_unit = np.concatenate([np.asarray(s["units"])[load_shard(out / s["file"])["unit_index"]]
                                    for s in manifest["shards"] if s["status"] == "done"])
        samples = [truth[index[(str(u), int(f))]] for u, f in zip(rows_unit, rows["frame_ids"])]
        true_2d = np.stack([s.joints_2d for s in samples])
        box_truth = np.array([box_iou(b.astype(np.float64), s.hand_box) for b, s in zip(rows["hand_boxes"], samples)])

    counts = manifest["counts"]
    reference = scale_references(rows["joints_2d"].astype(np.float64), rows["hand_boxes"].astype(np.float64),
                                 "hand_box")
    label_error = np.linalg.norm(rows["joints_2d"] - true_2d, axis=-1).mean(-1)
    teacher_error = np.linalg.norm(rows["teacher_joints_2d"] - true_2d, axis=-1).mean(-1)
    distance = rows["score.teacher_2d"]
    matched = np.isfinite(distance)
    teacher_rejected = rows["rejected_by.teacher_2d"]
    found = np.isfinite(rows["teacher_box_iou"])
    accepted = matched & ~teacher_rejected
    far = matched & teacher_rejected
    threshold = job_constraints(manifest).max_teacher_2d_distance
    groups = [("teacher accepted", accepted), ("teacher rejected: too far", far),
              ("teacher rejected: MediaPipe found a hand, none matching the box", found & ~matched),
              ("teacher rejected: MediaPipe found no hand", ~found), ("kept by the job", rows["kept"]),
              ("dropped by the job", ~rows["kept"])]

    command = (f"PYTHONPATH=. python3 benchmarks/pseudolabel_teacher.py --data {args.data} "
               f"--sequences {args.sequences} --checkpoint {args.checkpoint}")
    lines = [
        "# Pseudo-label teacher (MediaPipe Hands) on a synthetic split",
        "",
        f"Produced by `{command}` (exit code of the job: {code}): the first {args.sequences} sequences of "
        f"`{data.name}` ({counts['source_frames']} frames), pseudo-labelled by `{Path(args.checkpoint).name}` "
        "with the shipped pseudolabel.yaml and perception.yaml (detector boxes, 8-copy TTA) and "
        f"`--teacher mediapipe` (max_teacher_2d_distance {threshold}, teacher.min_box_iou "
        f"{manifest['config']['pseudolabel']['teacher']['min_box_iou']}). The split's labels are read only "
        "afterwards, for the true errors. The hand is the project's stand-in hand, not a real one.",
        "",
        f"- labelled frames (the detector found a hand): {counts['frames']} of {counts['source_frames']}",
        f"- MediaPipe found a hand: {int(found.sum())}; one matching the hand box: {int(matched.sum())}",
        f"- rejected by teacher_2d: {counts['rejected_by.teacher_2d']} ({int((~matched).sum())} without a matching "
        f"hand, {int(far.sum())} further than {threshold})",
        f"- kept by the job: {counts['kept']} with the teacher, {kept_without} without it (the same predictions "
        "re-filtered with constraints.teacher false)",
        f"- the teacher's own 2D error to the truth, where it matched: median {median(teacher_error[matched])} px, "
        f"{median(teacher_error[matched] / reference[matched])} hand-box sides",
        "",
        "Medians per group: teacher distance (mean per-joint distance to the teacher's landmarks, in hand-box "
        "sides, the score.teacher_2d column), the best teacher hand's box IoU (teacher_box_iou), the pseudo-label's "
        "true 2D error (px and hand-box sides) and the IoU of the labelling (detector) box with the true hand box.",
        "",
        "| frames | count | teacher distance | teacher box IoU | true 2D error (px) | true 2D error (box sides) "
        "| box vs true box IoU |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, mask in groups:
        lines.append(f"| {name} | {int(mask.sum())} | {median(distance[mask])} | "
                     f"{median(rows['teacher_box_iou'][mask].astype(np.float64))} | {median(label_error[mask])} | "
                     f"{median(label_error[mask] / reference[mask])} | {median(box_truth[mask])} |")
    lines += ["", "Other distance thresholds, re-filtered offline from the stored teacher joints "
              "(constraints.max_teacher_2d_distance):", "",
              "| max_teacher_2d_distance | rejected by teacher_2d | kept |", "| --- | --- | --- |"]
    lines += [f"| {limit} | {rejected} | {kept} |" for limit, (rejected, kept) in sweep.items()]
    lines += ["", "Rejections per constraint (manifest counts): "
              + ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in counts.items() if k.startswith("rejected_by.")),
              "", f"Machine: {os.cpu_count()} logical cores; the job ran at nice 19 beside other work.", ""]
    atomic_write_text(Path(args.out), "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
