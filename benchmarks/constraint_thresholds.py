"""Choose the pseudo-label constraints' thresholds for this model on a labelled split of the target domain.

Semi-Hand-Object's thresholds (``config/pseudolabel.yaml``) were set for its network on
HO-3D. Whether they fit another model can only be told where the truth is known: here a
labelled synthetic split of the target domain (``wild``) is pseudo-labelled as if it
were unlabelled (``hoi-train pseudolabel --source synthetic`` reads only its images and
camera matrices), and every frame the job labelled, kept or not, is compared with its
label. The job stores each constraint's score per frame, so nothing is run again here.

1. **quality** of each pseudo-label against the truth: PA-MPJPE (mm) of its 3D joints and
   the mean distance of its 2D joints in hand-box sides (the box the pseudo-label was made
   from). A pseudo-label is *good* when both are within ``--good-pa-mm`` and
   ``--good-2d`` (defaults 15 mm, issue 14's bound for the hand with labelled boxes, and
   0.2 box sides: the joints on the hand, not beside it).
2. **what each score says**: its AUC for telling good from bad pseudo-labels (0.5: no
   information), and for the shape-free spatial scores (bone length, joint angle) the
   same score on the *true* hands, which says whether the paper's limit admits the hands
   the data holds.
3. **sweep**, per constraint alone: kept frames, precision (good among kept), recall
   (kept among good) for every threshold of a grid; chosen: the best F1 (ties: the
   loosest). The paper's threshold is reported beside it.
4. **together**: the whole filter (``filter_sequence``, temporal pairs and the shape pass
   included) with the paper's thresholds, with the chosen ones, and with none.

Split and job (a seed used nowhere else: training 100/101, validation 200, test 9100,
the semi-supervised experiment's 1001/2002/3003)::

    hoi-train synth --out /tmp/wild_val --sequences 24 --frames 15 --seed 4200 --domain wild
    hoi-train pseudolabel --checkpoint hoi_perception/checkpoints/cpu_r18_synthetic.pt \
        --source synthetic --input /tmp/wild_val --out /tmp/wild_val_pseudo
    PYTHONPATH=. python benchmarks/constraint_thresholds.py --pseudo /tmp/wild_val_pseudo --data /tmp/wild_val

Writes ``benchmarks/results/constraint_thresholds.{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from hoi_perception.atomic import atomic_write_json, atomic_write_text
from hoi_perception.geometry.metrics import point_errors, procrustes_align
from hoi_perception.hand_model.kinematics import finger_joint_angles, normalized_bone_lengths
from hoi_perception.synth.sequence_files import read_sequence_labels
from hoi_training.pseudolabel.constraints import ConstraintConfig
from hoi_training.pseudolabel.dataset import job_constraints, read_manifest, refilter

RESULTS = Path(__file__).resolve().parent / "results"
OFF = 1e6  # a maximum that passes every finite score (the configs accept only finite thresholds)


@dataclasses.dataclass(frozen=True)
class Sweep:
    """One constraint: its stored score, the config field of its threshold, which side passes, the grid."""

    name: str
    score: str
    field: str
    passes: str  # "at_least" or "at_most"
    grid: tuple[float, ...]


SWEEPS = (
    Sweep("box_iou", "score.box_iou", "min_box_iou", "at_least",
          (0.0, 0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)),
    Sweep("reprojection", "score.reprojection_distance", "max_reprojection_distance", "at_most",
          (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0, 1.5, 2.0, OFF)),
    Sweep("bone_length", "score.min_normalized_bone_length", "min_normalized_bone_length", "at_least",
          (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4)),
    Sweep("joint_angle", "score.max_joint_angle_deg", "max_joint_angle_deg", "at_most",
          (45.0, 60.0, 75.0, 90.0, 100.0, 110.0, 120.0, 135.0, 150.0, 165.0, 180.0)),
    Sweep("joint2d_change", "score.joint2d_change", "max_joint2d_change", "at_most",
          (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, OFF)),
    Sweep("pose_change", "score.pose_change", "max_pose_change", "at_most",
          (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, OFF)),
)


def load_rows(pseudo: Path, manifest: dict[str, Any]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Every labelled row of a finished job (all shards concatenated) and each row's unit key."""
    parts: list[dict[str, np.ndarray]] = []
    units: list[str] = []
    for shard in (s for s in manifest["shards"] if s["status"] == "done"):
        with np.load(pseudo / shard["file"], allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files if k != "crop_png"}
        parts.append(arrays)
        units += [shard["units"][i] for i in arrays["unit_index"]]
    if not parts:
        raise ValueError(f"--pseudo '{pseudo}': no finished shard (run hoi-train pseudolabel there first)")
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, units


def sequence_name(unit: str) -> str:
    """A unit key is the sequence name, or ``name[start:stop]`` for a frame range of one (``WorkUnit.key``)."""
    return unit.split("[")[0]


def truth_for_rows(data: Path, units: list[str], frame_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The labelled 3D joints (N, 21, 3) and 2D joints (N, 21, 2) of each row."""
    labels: dict[str, dict[str, np.ndarray]] = {}
    joints3d, joints2d = [], []
    for unit, frame in zip(units, frame_ids):
        name = sequence_name(unit)
        if name not in labels:
            meta = json.loads((data / name / "meta.json").read_text())
            labels[name] = read_sequence_labels(data / name / "labels.npz", int(meta["frames"]))
        joints3d.append(labels[name]["joints3d"][int(frame)])
        joints2d.append(labels[name]["joints2d"][int(frame)])
    return np.stack(joints3d), np.stack(joints2d)


def auc(scores: np.ndarray, good: np.ndarray, higher_is_better: bool) -> float:
    """Probability that a good row scores better than a bad one (ties half); NaN scores count as worst."""
    s = np.where(np.isfinite(scores), scores, -np.inf if higher_is_better else np.inf)
    s = s if higher_is_better else -s
    pos, neg = s[good], s[~good]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def passing(scores: np.ndarray, threshold: float, passes: str) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return scores >= threshold if passes == "at_least" else scores <= threshold


def selection_stats(kept: np.ndarray, good: np.ndarray, pa_mm: np.ndarray) -> dict[str, float]:
    """Kept count, precision, recall, F1 and the kept rows' mean PA-MPJPE."""
    n_kept, n_good = int(kept.sum()), int(good.sum())
    true_kept = int((kept & good).sum())
    precision = true_kept / n_kept if n_kept else float("nan")
    recall = true_kept / n_good if n_good else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if n_kept and n_good and precision + recall > 0 else 0.0
    return {"kept": n_kept, "precision": precision, "recall": recall, "f1": f1,
            "kept_pa_mpjpe_mm": float(pa_mm[kept].mean()) if n_kept else float("nan")}


def sweep(rows: dict[str, np.ndarray], spec: Sweep, good: np.ndarray, pa_mm: np.ndarray, paper: float
          ) -> dict[str, Any]:
    scores = rows[spec.score].astype(np.float64)
    points = [{"threshold": t, **selection_stats(passing(scores, t, spec.passes), good, pa_mm)} for t in spec.grid]
    # Best F1; among equal F1 the loosest threshold (the lowest minimum, the highest maximum).
    best_f1 = max(p["f1"] for p in points)
    tied = [p for p in points if p["f1"] == best_f1]
    chosen = min(tied, key=lambda p: p["threshold"]) if spec.passes == "at_least" else \
        max(tied, key=lambda p: p["threshold"])
    return {"constraint": spec.name, "field": spec.field, "passes": spec.passes,
            "auc": auc(scores, good, spec.passes == "at_least"),
            "paper": {"threshold": paper, **selection_stats(passing(scores, paper, spec.passes), good, pa_mm)},
            "chosen": chosen, "grid": points}


def whole_filter(pseudo: Path, config: ConstraintConfig, units: list[str], frame_ids: np.ndarray,
                 good: np.ndarray, pa_mm: np.ndarray) -> dict[str, float]:
    """The job's filter re-run with ``config`` on the stored predictions, scored against the truth."""
    results = refilter(pseudo, config)
    kept = np.zeros(len(units), dtype=bool)
    position = {(u, int(f)): i for i, (u, f) in enumerate(zip(units, frame_ids))}
    for unit, result in results.items():
        for frame, keep in zip(result.frame_ids, result.kept):
            kept[position[(unit, int(frame))]] = keep
    return selection_stats(kept, good, pa_mm)


def run(pseudo: Path, data: Path, good_pa_mm: float, good_2d: float) -> dict[str, Any]:
    manifest = read_manifest(pseudo)
    rows, units = load_rows(pseudo, manifest)
    frame_ids = rows["frame_ids"]
    truth3d, truth2d = truth_for_rows(data, units, frame_ids)
    pred3d = rows["joints_3d"].astype(np.float64)
    pa_mm = 1000.0 * point_errors(procrustes_align(pred3d, truth3d), truth3d).mean(axis=1)
    boxes = rows["hand_boxes"].astype(np.float64)
    box_side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    error_2d = np.linalg.norm(rows["joints_2d"] - truth2d, axis=-1).mean(axis=1) / box_side
    good = (pa_mm <= good_pa_mm) & (error_2d <= good_2d)

    job = job_constraints(manifest)
    sweeps = [sweep(rows, spec, good, pa_mm, float(getattr(job, spec.field))) for spec in SWEEPS]
    chosen = dataclasses.replace(job, **{s["field"]: s["chosen"]["threshold"] for s in sweeps})
    true_lengths = normalized_bone_lengths(truth3d).min(axis=-1)
    true_angles = finger_joint_angles(truth3d).reshape(len(truth3d), -1).max(axis=-1)
    return {
        "pseudo": str(pseudo), "data": str(data), "checkpoint_sha256": manifest.get("checkpoint_hash"),
        "rows": len(units), "good_definition": {"pa_mpjpe_mm": good_pa_mm, "joints_2d_box_sides": good_2d},
        "good": int(good.sum()),
        "quality": {"pa_mpjpe_mm_median": float(np.median(pa_mm)), "pa_mpjpe_mm_mean": float(pa_mm.mean()),
                    "joints_2d_box_sides_median": float(np.median(error_2d))},
        "true_hands": {
            "min_normalized_bone_length_p1": float(np.percentile(true_lengths, 1)),
            "max_joint_angle_deg_median": float(np.median(true_angles)),
            "max_joint_angle_deg_p99": float(np.percentile(true_angles, 99)),
            "pass_paper_joint_angle": float(np.mean(true_angles <= job.max_joint_angle_deg)),
            "pass_paper_bone_length": float(np.mean(true_lengths >= job.min_normalized_bone_length)),
        },
        "sweeps": sweeps,
        "filters": {
            "none": selection_stats(np.ones(len(units), dtype=bool), good, pa_mm),
            "paper": {**whole_filter(pseudo, job, units, frame_ids, good, pa_mm),
                      "thresholds": {s["field"]: s["paper"]["threshold"] for s in sweeps}},
            "chosen": {**whole_filter(pseudo, chosen, units, frame_ids, good, pa_mm),
                       "thresholds": {s["field"]: s["chosen"]["threshold"] for s in sweeps}},
        },
    }


def _pct(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{100 * value:.1f}"


def _threshold(value: float) -> str:
    return "off" if value >= OFF else f"{value:g}"


def _mm(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{value:.1f}"


def markdown(report: dict[str, Any], command: str) -> str:
    g = report["good_definition"]
    q, t = report["quality"], report["true_hands"]
    lines = [
        "# Pseudo-label constraint thresholds on the target domain",
        "",
        f"Job `{report['pseudo']}` on the labelled split `{report['data']}` (read as unlabelled), checkpoint "
        f"sha256 `{report['checkpoint_sha256']}`. {report['rows']} labelled frames; a pseudo-label is good "
        f"when its PA-MPJPE <= {g['pa_mpjpe_mm']:g} mm and its 2D joints lie within {g['joints_2d_box_sides']:g} "
        f"hand-box sides of the truth on average: {report['good']} of {report['rows']} "
        f"({_pct(report['good'] / max(report['rows'], 1))} %). Median PA-MPJPE {q['pa_mpjpe_mm_median']:.1f} mm "
        f"(mean {q['pa_mpjpe_mm_mean']:.1f}), median 2D error {q['joints_2d_box_sides_median']:.3f} box sides.",
        "",
        f"True hands of the split: {_pct(t['pass_paper_joint_angle'])} % pass the paper's joint-angle limit "
        f"(largest finger angle: median {t['max_joint_angle_deg_median']:.0f} deg, 99th percentile "
        f"{t['max_joint_angle_deg_p99']:.0f} deg); {_pct(t['pass_paper_bone_length'])} % pass its bone-length "
        f"limit (1st percentile of the shortest normalised bone: {t['min_normalized_bone_length_p1']:.3f}).",
        "",
        "## Per constraint, alone",
        "",
        "AUC: how well the score tells good from bad pseudo-labels (0.5: not at all). Chosen: best F1 of keeping "
        "the good ones (ties: the loosest).",
        "",
        "| constraint | AUC | paper threshold | kept | precision % | recall % | chosen threshold | kept | "
        "precision % | recall % |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in report["sweeps"]:
        p, c = s["paper"], s["chosen"]
        lines.append(f"| {s['constraint']} (`{s['field']}`) | {s['auc']:.2f} | {_threshold(p['threshold'])} | "
                     f"{p['kept']} | "
                     f"{_pct(p['precision'])} | {_pct(p['recall'])} | {_threshold(c['threshold'])} | {c['kept']} | "
                     f"{_pct(c['precision'])} | {_pct(c['recall'])} |")
    lines += ["", "## The whole filter (temporal pairs and the shape pass included)", "",
              "| thresholds | kept | precision % | recall % | F1 | kept PA-MPJPE mm |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, label in (("none", "no filtering"), ("paper", "paper (config/pseudolabel.yaml)"),
                        ("chosen", "chosen here")):
        f = report["filters"][name]
        lines.append(f"| {label} | {f['kept']} | {_pct(f['precision'])} | {_pct(f['recall'])} | {f['f1']:.2f} | "
                     f"{_mm(f['kept_pa_mpjpe_mm'])} |")
    chosen = report["filters"]["chosen"]["thresholds"]
    lines += ["", "Chosen thresholds: " + ", ".join(f"`{k}: {_threshold(v)}`" for k, v in chosen.items()) + ".", "",
              "## Sweeps", ""]
    for s in report["sweeps"]:
        lines += [f"`{s['field']}` ({'pass at or above' if s['passes'] == 'at_least' else 'pass at or below'}):",
                  "", "| threshold | kept | precision % | recall % | F1 | kept PA-MPJPE mm |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {_threshold(p['threshold'])} | {p['kept']} | {_pct(p['precision'])} | {_pct(p['recall'])} | "
                  f"{p['f1']:.2f} | {_mm(p['kept_pa_mpjpe_mm'])} |" for p in s["grid"]]
        lines.append("")
    lines += ["## Command", "", "```", command, "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pseudo", type=Path, required=True, help="finished hoi-train pseudolabel output folder")
    parser.add_argument("--data", type=Path, required=True, help="the labelled synthetic split it was run on")
    parser.add_argument("--good-pa-mm", type=float, default=15.0, help="good pseudo-label: PA-MPJPE at most this")
    parser.add_argument("--good-2d", type=float, default=0.2,
                        help="good pseudo-label: mean 2D joint error at most this many hand-box sides")
    parser.add_argument("--out", type=Path, default=RESULTS / "constraint_thresholds",
                        help="results path without extension (.json and .md are written)")
    args = parser.parse_args()
    report = run(args.pseudo, args.data, args.good_pa_mm, args.good_2d)
    command = (f"PYTHONPATH=. python benchmarks/constraint_thresholds.py --pseudo {args.pseudo} --data {args.data} "
               f"--good-pa-mm {args.good_pa_mm:g} --good-2d {args.good_2d:g}")
    text = markdown(report, command)
    print(text)
    atomic_write_json(args.out.with_suffix(".json"), report)
    atomic_write_text(args.out.with_suffix(".md"), text)


if __name__ == "__main__":
    main()
