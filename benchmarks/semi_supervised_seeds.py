"""The semi-supervised table over several training seeds: each row's mean and spread.

One ``benchmarks/semi_supervised.py`` run trains every row once; runs that differ only in
``--training-seed`` (same data, same pseudo-labels) tell a difference between rows from the
noise of one training run. This reads their ``results.json`` and writes, per row, the
hand PA-MPJPE of each seed, its mean and standard deviation, and the paper's comparison
(all constraints against supervised only and against no filtering) per seed and on the
means, decided only where the gap exceeds the spread of both rows.

    python benchmarks/semi_supervised_seeds.py --runs runs/ss_seed0 runs/ss_seed1 runs/ss_seed2 \\
        --out benchmarks/results/semi_supervised_cpu_r18_seeds
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hoi_perception.atomic import atomic_write_json, atomic_write_text  # noqa: E402

METRIC = "pa_mpjpe_mm"
ALL_CONSTRAINTS, SUPERVISED, NO_FILTER = "semi_all_constraints", "supervised", "semi_no_filter"


def read_run(folder: Path) -> dict[str, Any]:
    path = folder / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"--runs: '{path}' not found; is '{folder}' a finished semi_supervised.py run folder?")
    return json.loads(path.read_text())


def summarise(runs: list[dict[str, Any]], folders: list[Path]) -> dict[str, Any]:
    """Per row: seeds, PA-MPJPE per seed, mean, std (ddof 1); the runs must share everything but the seed."""
    first = runs[0]
    for run, folder in zip(runs[1:], folders[1:]):
        if run["base_checkpoint"] != first["base_checkpoint"] or run["scale"] != first["scale"]:
            raise ValueError(f"--runs: '{folder}' is another experiment (scale or base checkpoint differs from "
                             f"'{folders[0]}')")
    seeds = [run["seeds"]["training"] for run in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--runs: training seeds repeat ({seeds}); each run must use its own --training-seed")
    rows: dict[str, dict[str, Any]] = {}
    for run in runs:
        for row in run["rows"]:
            entry = rows.setdefault(row["name"], {"label": row["label"], "values": [], "pseudo_labels": []})
            entry["values"].append(row["metrics"][METRIC] if row["trained"] else float("nan"))
            entry["pseudo_labels"].append(row["pseudo_labels"])
    for entry in rows.values():
        values = np.asarray(entry["values"], dtype=np.float64)
        entry["mean"] = float(values.mean())
        entry["std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    comparisons = {}
    for other in (SUPERVISED, NO_FILTER):
        gaps = np.asarray(rows[ALL_CONSTRAINTS]["values"]) - np.asarray(rows[other]["values"])
        spread = max(rows[ALL_CONSTRAINTS]["std"], rows[other]["std"])
        mean_gap = float(gaps.mean())
        if not np.isfinite(spread):
            verdict = "undecided (one seed has no spread)"
        else:
            verdict = "lower" if mean_gap < -spread else "higher" if mean_gap > spread else "within the spread"
        comparisons[other] = {"gap_per_seed_mm": gaps.tolist(), "mean_gap_mm": mean_gap, "spread_mm": spread,
                              "all_constraints_is": verdict}
    return {"base_checkpoint": first["base_checkpoint"], "scale": first["scale"], "seeds": seeds,
            "runs": [str(f) for f in folders], "metric": METRIC, "rows": rows, "comparisons": comparisons}


def markdown(summary: dict[str, Any]) -> str:
    seeds = summary["seeds"]
    base = summary["base_checkpoint"]
    lines = [f"# Semi-supervised experiment over training seeds ({summary['scale']} scale)", "",
             f"Base checkpoint `{base['path']}` (sha256 {base['sha256'][:12]}); training seeds {seeds}, one "
             "`benchmarks/semi_supervised.py --training-seed N` run each (same data and pseudo-labels). "
             "Hand PA-MPJPE (mm) on the held-out wild test split, ground-truth boxes.", "",
             "| row | pseudo-labels | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | std |",
             "| --- | ---: | " + " | ".join("---:" for _ in seeds) + " | ---: | ---: |"]
    for entry in summary["rows"].values():
        kept = "/".join(str(k) for k in sorted(set(entry["pseudo_labels"])))
        lines.append(f"| {entry['label']} | {kept} | " + " | ".join(f"{v:.2f}" for v in entry["values"])
                     + f" | {entry['mean']:.2f} | {entry['std']:.2f} |")
    lines += ["", "All constraints against (negative: all constraints is better; decided only where the mean gap "
              "exceeds the larger of the two rows' standard deviations):", ""]
    for other, comparison in summary["comparisons"].items():
        per_seed = ", ".join(f"{g:+.2f}" for g in comparison["gap_per_seed_mm"])
        lines.append(f"- {other}: per seed {per_seed} mm; mean {comparison['mean_gap_mm']:+.2f} mm, spread "
                     f"{comparison['spread_mm']:.2f} mm: all constraints is **{comparison['all_constraints_is']}**.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="finished run folders, one per seed")
    parser.add_argument("--out", type=Path, required=True, help="output stem: writes STEM.json and STEM.md")
    args = parser.parse_args(argv)
    summary = summarise([read_run(f) for f in args.runs], list(args.runs))
    atomic_write_json(args.out.with_suffix(".json"), summary)
    text = markdown(summary)
    atomic_write_text(args.out.with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
