"""Choose the runtime's detector score thresholds and hand-tracking confidence gate on a validation split.

The runtime keeps a detection when its score passes ``detection.hand_score_threshold`` /
``object_score_threshold`` and keeps tracking a hand while the mean joint confidence of its
heatmaps passes ``tracking.min_hand_confidence`` (config/perception.yaml). Thresholds set by
hand or on the test split flatter the model; this script sets them on a labelled
*validation* split whose seeds are disjoint from training and test, and records how:

* detector: for each class (a hand of either side; the object) the frame's best detection
  is found when its IoU with the labelled box is >= 0.5. Sweeping the score threshold, the
  chosen one maximises F1 over frames (a frame below threshold is a miss; a detection
  above it that misses the box is a false positive and a miss);
* hand gate: on ground-truth crops, a hand is *well estimated* when its mean 2D joint error
  is under ``--good-fraction`` of its box diagonal. The gate is the confidence threshold
  that best separates well and badly estimated hands (Youden's J = TPR - FPR);
* object PnP (``pnp.confidence_threshold``, ``votes_per_point``, ``ransac_reprojection_px``):
  on the same ground-truth crops, the object head's votes mapped to full-image pixels as
  the runtime maps them, solved for every grid point (the depth then from the labelled box
  when the runtime takes it from the box, ``estimator.object_depth``); chosen: the best
  ADD(-S)-0.1D (ADD-S for symmetric objects), ties kept at the configured values.

    python benchmarks/runtime_thresholds.py --checkpoint CKPT --data data/synthetic/cpu_val \
        [--frames 600] [--out benchmarks/results/runtime_thresholds_<model>.md]

It prints the YAML to put under ``estimator:`` in config/perception.yaml (``hoi-train eval``
follows its ``pnp`` section).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hoi_perception.atomic import atomic_write_text  # noqa: E402
from hoi_perception.engines.base import file_sha256  # noqa: E402
from hoi_perception.geometry.camera import box_iou  # noqa: E402
from hoi_perception.geometry.metrics import add_errors, adds_errors, pose_accuracy  # noqa: E402
from hoi_perception.geometry.mirror import model_points_in_crop  # noqa: E402
from hoi_perception.geometry.object_depth import ObjectDepthConfig, box_depth_scale  # noqa: E402
from hoi_perception.geometry.pnp import PnPConfig, solve_control_point_pnp  # noqa: E402
from hoi_perception.models.checkpoint import load_network_checkpoint  # noqa: E402
from hoi_perception.models.detection_head import (  # noqa: E402
    LEFT_HAND,
    RIGHT_HAND,
    DetectionSelectionConfig,
    letterbox_image,
    select_detections,
)
from hoi_perception.models.object_head import box_units_to_points, votes_to_pixels  # noqa: E402
from hoi_perception.objects.models import ObjectLibrary, load_object_library  # noqa: E402
from hoi_perception.pipeline.config import DEFAULT_PERCEPTION_CONFIG, load_estimator_config  # noqa: E402
from hoi_training.data.augment import AugmentConfig, evaluation_crop, mirror_sample  # noqa: E402
from hoi_training.data.synthetic import SyntheticConfig, SyntheticDataset  # noqa: E402

THRESHOLDS = np.round(np.arange(0.02, 0.96, 0.01), 2)
RECALL_IOU = 0.5
CLASS_IDS = {"right": RIGHT_HAND, "left": LEFT_HAND}


@dataclass
class FrameScores:
    """The best hand (either side) and object detection of one frame, scored against its labels."""

    hand_score: float
    hand_iou: float
    hand_side_right: bool
    object_score: float
    object_iou: float


# PnP vote selection grid (pnp.confidence_threshold, votes_per_point, ransac_reprojection_px).
PNP_CONFIDENCES = (0.3, 0.5, 0.7)
PNP_VOTES = (10, 30)
PNP_RANSAC_PX = (4.0, 8.0, 16.0)


@dataclass
class ObjectVotes:
    """One frame's object votes in full-image pixels, for the PnP sweep, with the labelled pose."""

    votes: np.ndarray  # (21, 2, H, W)
    confidence: np.ndarray  # (21, H, W)
    control_points: np.ndarray  # (21, 3), in the order of the votes
    K: np.ndarray  # noqa: N815
    rotation: np.ndarray
    translation: np.ndarray
    object_name: str
    box: np.ndarray  # the object's labelled box, for its depth (estimator.object_depth)
    vertices: np.ndarray  # the object's mesh as the control points have it (mirrored with them)
    image_size: tuple[int, int]


def pnp_accuracy(frames: list[ObjectVotes], config: PnPConfig, library: ObjectLibrary,
                 depth: ObjectDepthConfig) -> float:
    """ADD(-S)-0.1D of the poses PnP gives with ``config``, the depth from the box as ``depth`` says
    (a failed PnP is a miss)."""
    errors, diameters = [], []
    for f in frames:
        model = library.get(f.object_name)
        pnp = solve_control_point_pnp(f.votes, f.confidence, f.control_points, f.K, config)
        diameters.append(model.diameter)
        if not pnp.success:
            errors.append(np.inf)
            continue
        translation = pnp.translation
        if depth.from_box:
            translation = translation * box_depth_scale(f.vertices, pnp.rotation, translation, f.box, f.K,
                                                        f.image_size, depth).scale
        metric = adds_errors if model.is_symmetric else add_errors
        errors.append(float(metric(model.points, pnp.rotation[None], translation[None], f.rotation[None],
                                   f.translation[None])[0]))
    return pose_accuracy(np.array(errors), np.array(diameters))


def best_pnp(frames: list[ObjectVotes], current: PnPConfig, library: ObjectLibrary, depth: ObjectDepthConfig
             ) -> tuple[PnPConfig, float, float]:
    """The grid's best PnP settings (ties: the configured ones), their accuracy and the configured ones'."""
    baseline = pnp_accuracy(frames, current, library, depth)
    best, best_accuracy = current, baseline
    for confidence in PNP_CONFIDENCES:
        for votes in PNP_VOTES:
            for ransac in PNP_RANSAC_PX:
                config = replace(current, confidence_threshold=confidence, votes_per_point=votes,
                                 ransac_reprojection_px=ransac)
                accuracy = pnp_accuracy(frames, config, library, depth)
                if accuracy > best_accuracy:
                    best, best_accuracy = config, accuracy
    return best, best_accuracy, baseline


def best_threshold(scores: np.ndarray, ious: np.ndarray) -> tuple[float, dict[str, float]]:
    """The score threshold with the best F1 (a found box needs IoU >= RECALL_IOU), and its rates."""
    best = (-1.0, 0.0, {})
    for threshold in THRESHOLDS:
        kept = scores >= threshold
        true_positive = (kept & (ious >= RECALL_IOU)).sum()
        false_positive = (kept & (ious < RECALL_IOU)).sum()
        recall = true_positive / len(scores)
        precision = true_positive / max(1, true_positive + false_positive)
        f1 = 0.0 if true_positive == 0 else 2 * precision * recall / (precision + recall)
        if f1 > best[0]:
            best = (f1, float(threshold), {"f1": f1, "recall": recall, "precision": precision})
    return best[1], best[2]


def youden_threshold(confidence: np.ndarray, good: np.ndarray) -> tuple[float, dict[str, float]]:
    """The confidence gate that best separates ``good`` from the rest (Youden's J)."""
    best = (-2.0, 0.0, {})
    for threshold in THRESHOLDS:
        passed = confidence >= threshold
        tpr = passed[good].mean() if good.any() else 0.0
        fpr = passed[~good].mean() if (~good).any() else 0.0
        if tpr - fpr > best[0]:
            best = (tpr - fpr, float(threshold), {"kept_good_pct": 100 * tpr, "kept_bad_pct": 100 * fpr})
    return best[1], best[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="a labelled validation split (hoi-train synth)")
    parser.add_argument("--frames", type=int, default=600, help="frames used, spread over the split (default 600)")
    parser.add_argument("--good-fraction", type=float, default=0.1,
                        help="a hand is well estimated under this 2D error / box diagonal (default 0.1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    network = load_network_checkpoint(args.checkpoint)
    size = network.config.input_size
    dataset = SyntheticDataset(SyntheticConfig(args.data))
    indices = np.unique(np.linspace(0, len(dataset) - 1, min(args.frames, len(dataset))).round().astype(int))
    everything = DetectionSelectionConfig(hand_score_threshold=0.0, object_score_threshold=0.0)
    frames: list[FrameScores] = []
    confidences, good = [], []
    object_votes: list[ObjectVotes] = []
    library = load_object_library()
    library_names = set(library.names)
    runtime = load_estimator_config(DEFAULT_PERCEPTION_CONFIG)
    configured_pnp = runtime.pnp
    crop_config = AugmentConfig(output_size=size)
    for index in indices:
        sample = dataset[int(index)]
        detector_size = network.config.detector_input_size
        frame, letterbox = letterbox_image(sample.image, detector_size, detector_size)
        batch = torch.from_numpy(frame[None]).permute(0, 3, 1, 2).float().div_(255.0)
        with torch.no_grad():
            detections = network.detect_top_k(batch)
            chosen = select_detections(detections.boxes[0].numpy(), detections.scores[0].numpy(),
                                       detections.classes[0].numpy(), letterbox, everything)
            hands = [(d.score, side, d.box) for side, d in (("right", chosen.right_hand), ("left", chosen.left_hand))
                     if d is not None]
            score, side, box = max(hands, key=lambda h: h[0]) if hands else (0.0, "", None)
            frames.append(FrameScores(
                hand_score=score, hand_iou=0.0 if box is None else box_iou(box, sample.hand_box),
                hand_side_right=side == sample.hand_side,
                object_score=0.0 if chosen.object is None else chosen.object.score,
                object_iou=0.0 if chosen.object is None else box_iou(chosen.object.box, sample.object_box)))
            working = mirror_sample(sample) if sample.hand_side == "left" else sample
            crop, transform = evaluation_crop(working, crop_config)
            image = torch.from_numpy(crop.image[None]).permute(0, 3, 1, 2).float().div_(255.0)
            boxes = [torch.from_numpy(np.asarray(b, np.float32)[None]) for b in (crop.hand_box, crop.object_box)]
            output = network(image, *boxes)
        if crop.has_object_pose and crop.object_name in library_names:
            votes_crop = votes_to_pixels(output.object.votes[:1].double().numpy(), crop.object_box[None])[0]
            votes_image = transform.crop_to_image(np.moveaxis(votes_crop, 1, -1))  # the runtime's frame
            model = library.get(working.object_name)
            vertices = model_points_in_crop(model.vertices, model.mirror_axis, sample.hand_side == "left")
            object_votes.append(ObjectVotes(np.moveaxis(votes_image, -1, 1),
                                            output.object.confidence[0].double().numpy(),
                                            working.object_control_points, working.K, working.object_rotation,
                                            working.object_translation, working.object_name, working.object_box,
                                            vertices,
                                            (working.image.shape[1], working.image.shape[0])))
        joints = box_units_to_points(output.hand.joints2d[:1].double().numpy(), crop.hand_box[None])[0]
        diagonal = float(np.hypot(*(crop.hand_box[2:] - crop.hand_box[:2])))
        confidences.append(float(output.hand.joint_confidence[0].mean()))
        good.append(float(np.linalg.norm(joints - crop.joints_2d, axis=1).mean()) < args.good_fraction * diagonal)
    hand_scores = np.array([f.hand_score for f in frames])
    hand_ious = np.array([f.hand_iou for f in frames])
    hand_threshold, hand_rates = best_threshold(hand_scores, hand_ious)
    object_threshold, object_rates = best_threshold(np.array([f.object_score for f in frames]),
                                                    np.array([f.object_iou for f in frames]))
    found = (hand_scores >= hand_threshold) & (hand_ious >= RECALL_IOU)
    side_pct = 100.0 * np.mean([f.hand_side_right for f, hit in zip(frames, found) if hit]) if found.any() else 0.0
    gate, gate_rates = youden_threshold(np.array(confidences), np.array(good))
    pnp, pnp_accuracy_chosen, pnp_accuracy_configured = best_pnp(object_votes, configured_pnp, library,
                                                                 runtime.object_depth)
    yaml = (f"estimator:\n  detection:\n    hand_score_threshold: {hand_threshold:.2f}\n"
            f"    object_score_threshold: {object_threshold:.2f}\n  tracking:\n    min_hand_confidence: {gate:.2f}\n"
            f"  pnp:\n    confidence_threshold: {pnp.confidence_threshold:g}\n"
            f"    votes_per_point: {pnp.votes_per_point}\n    ransac_reprojection_px: {pnp.ransac_reprojection_px:g}\n")
    depth_note = ", depth from the labelled box" if runtime.object_depth.from_box else ""
    lines = [
        f"# Runtime thresholds of `{args.checkpoint.name}` on a validation split", "",
        f"Command: `python benchmarks/runtime_thresholds.py --checkpoint {args.checkpoint} --data {args.data} "
        f"--frames {args.frames}`", "",
        f"Checkpoint sha256 `{file_sha256(args.checkpoint)[:16]}...`, model `{network.config.name}`; {len(frames)} "
        f"frames of `{args.data}` (a validation split: its seed is neither a training nor a test seed).", "",
        "| threshold | chosen | how | at the chosen value |", "| --- | ---: | --- | --- |",
        f"| detection.hand_score_threshold | {hand_threshold:.2f} | best F1, hand found at IoU >= {RECALL_IOU} | "
        f"recall {100 * hand_rates.get('recall', 0):.1f} %, precision {100 * hand_rates.get('precision', 0):.1f} %, "
        f"right side {side_pct:.1f} % of found |",
        f"| detection.object_score_threshold | {object_threshold:.2f} | best F1, object found at IoU >= {RECALL_IOU} | "
        f"recall {100 * object_rates.get('recall', 0):.1f} %, precision "
        f"{100 * object_rates.get('precision', 0):.1f} % |",
        f"| tracking.min_hand_confidence | {gate:.2f} | Youden's J, well estimated = 2D error < "
        f"{args.good_fraction:g} x box diagonal ({100 * np.mean(good):.1f} % of hands) | keeps "
        f"{gate_rates.get('kept_good_pct', 0):.1f} % of well and {gate_rates.get('kept_bad_pct', 0):.1f} % of badly "
        "estimated hands |",
        f"| pnp.confidence_threshold, votes_per_point, ransac_reprojection_px | {pnp.confidence_threshold:g}, "
        f"{pnp.votes_per_point}, {pnp.ransac_reprojection_px:g} | best ADD(-S)-0.1D over a "
        f"{len(PNP_CONFIDENCES)}x{len(PNP_VOTES)}x{len(PNP_RANSAC_PX)} grid, ground-truth crops, votes in "
        f"full-image pixels{depth_note} | {100 * pnp_accuracy_chosen:.1f} % of {len(object_votes)} objects (configured "
        f"{configured_pnp.confidence_threshold:g}, {configured_pnp.votes_per_point}, "
        f"{configured_pnp.ransac_reprojection_px:g}: {100 * pnp_accuracy_configured:.1f} %) |",
        "", "```yaml", yaml.rstrip(), "```", ""]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        atomic_write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
