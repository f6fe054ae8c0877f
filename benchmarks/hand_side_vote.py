"""How often the crop network's side vote is right, for several checkpoints side by side, by view.

The runtime decides whether a detected hand is a right or a left one by running the crop
network on its crop as it is and mirrored (``pipeline/hand_side.py``). This script scores
that vote alone, on ground-truth hand and object boxes (the detector's errors left out),
split by which side of the hand faces the camera: a uniformly coloured hand seen from its
back and the other side's hand seen from its palm project to nearly the same image, and
the palm and nail colours (``domains.lab.palm_lightening``, ``nail_whitening``) exist to
tell them apart. The palm faces the camera when the normal out of the palm,
(index MCP - wrist) x (pinky MCP - wrist) for a right hand and its negative for a left
one, points towards the camera.

    python benchmarks/hand_side_vote.py --data data/synthetic/v2_val \
        --checkpoint hoi_perception/checkpoints/cpu_r18_synthetic.pt --checkpoint runs/x.pt \
        [--frames 0 4] [--out benchmarks/results/hand_side_vote.md]

Use a validation split (never the test split) to compare models; the first checkpoint is
the reference for the ratios.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hoi_perception.atomic import atomic_write_text
from hoi_perception.geometry.crop import checkpoint_box_expansion, resolve_box_expansion
from hoi_perception.hand_model.joint_orders import HO3D_JOINT_NAMES
from hoi_perception.models.checkpoint import load_network_checkpoint, read_training_checkpoint
from hoi_perception.pipeline.hand_side import CropRunner, network_crop_runner, vote_hand_sides
from hoi_perception.synth.sequence_files import read_rgb, read_sequence_labels

WRIST, INDEX_MCP, PINKY_MCP = (HO3D_JOINT_NAMES.index(name) for name in ("wrist", "index1", "pinky1"))


def palm_faces_camera(joints_cam: np.ndarray, side: str) -> bool:
    """Whether the palm of a hand with camera-frame joints (21, 3) faces the camera (module docstring)."""
    wrist = joints_cam[WRIST]
    normal = np.cross(joints_cam[INDEX_MCP] - wrist, joints_cam[PINKY_MCP] - wrist)
    if side == "left":
        normal = -normal
    return bool(normal @ -wrist > 0.0)


@dataclass
class Frame:
    """One scored hand: its image, labelled boxes (pixels), true side and which side of it faces the camera."""

    image: Path
    hand_box: np.ndarray
    object_box: np.ndarray
    side: str
    palm_towards_camera: bool


def frames_of(data: Path, indices: list[int], max_sequences: int | None) -> list[Frame]:
    """The hands of frames ``indices`` of the first ``max_sequences`` sequences of a labelled split."""
    sequences = sorted(p.parent for p in data.glob("seq_*/meta.json"))[:max_sequences]
    if not sequences:
        raise SystemExit(f"--data {data}: no seq_*/meta.json; render a split with `hoi-train synth`")
    frames = []
    for seq in sequences:
        meta = json.loads((seq / "meta.json").read_text())
        labels = read_sequence_labels(seq / "labels.npz", int(meta["frames"]))
        for index in indices:
            if index < int(meta["frames"]):
                frames.append(Frame(seq / "rgb" / f"{index:06d}.png", np.asarray(labels["hand_box"][index]),
                                    np.asarray(labels["object_box"][index]), meta["hand_side"],
                                    palm_faces_camera(np.asarray(labels["joints3d"][index]), meta["hand_side"])))
    return frames


def crop_runner(checkpoint: Path) -> tuple[CropRunner, int, float]:
    """The checkpoint's crop network as a runner, with the crop size and box expansion it was trained with."""
    network = load_network_checkpoint(checkpoint).eval()
    box_expansion = resolve_box_expansion(None, checkpoint_box_expansion(read_training_checkpoint(checkpoint)),
                                          str(checkpoint))
    return network_crop_runner(network), network.config.input_size, box_expansion


def score(checkpoints: list[Path], frames: list[Frame]) -> dict[str, dict[str, list[bool]]]:
    """Per checkpoint, right (True) or wrong per frame under "all", "palm" and "back"; each image read once."""
    runners = {str(c): crop_runner(c) for c in checkpoints}
    right: dict[str, dict[str, list[bool]]] = {name: {"all": [], "palm": [], "back": []} for name in runners}
    for frame in frames:
        image = read_rgb(frame.image)
        for name, (run, crop_size, box_expansion) in runners.items():
            ok = vote_hand_sides(image, [frame.hand_box], frame.object_box, run, crop_size,
                                 box_expansion)[0].side == frame.side
            right[name]["all"].append(ok)
            right[name]["palm" if frame.palm_towards_camera else "back"].append(ok)
    return right


def _percent(values: list[bool]) -> str:
    return f"{100.0 * np.mean(values):.1f} % ({sum(values)}/{len(values)})" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a labelled validation split (hoi-train synth)")
    parser.add_argument("--checkpoint", type=Path, action="append", required=True,
                        help="checkpoint to score (repeatable; the first is the reference)")
    parser.add_argument("--frames", type=int, nargs="+", default=[0, 4], help="frame indices per sequence")
    parser.add_argument("--max-sequences", type=int, default=None, help="first sequences only (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="markdown results file (default: print only)")
    args = parser.parse_args()
    if args.out is not None and any(args.out.resolve() == c.resolve() for c in args.checkpoint):
        parser.error(f"--out {args.out} is one of the checkpoints; choose a results file")
    torch.set_num_threads(args.threads)
    frames = frames_of(args.data, args.frames, args.max_sequences)
    started = time.time()
    results = score(args.checkpoint, frames)
    reference = np.mean(results[str(args.checkpoint[0])]["all"])
    palms = sum(f.palm_towards_camera for f in frames)
    lines = ["# Hand side vote (crop network, ground-truth boxes)", "",
             f"Split `{args.data}`, frames {args.frames} of each sequence: {len(frames)} hands, {palms} with the "
             f"palm towards the camera; {args.threads} threads, {time.time() - started:.0f} s. Command: see "
             "`benchmarks/hand_side_vote.py`.", "",
             "| checkpoint | right side | palm towards the camera | back towards the camera | vs the first |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for checkpoint, right in results.items():
        ratio = np.mean(right["all"]) / reference if reference > 0 else float("nan")
        lines.append(f"| `{checkpoint}` | {_percent(right['all'])} | {_percent(right['palm'])} | "
                     f"{_percent(right['back'])} | {ratio:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
