"""``hoi-train eval``: a trained checkpoint on a dataset split, scored in the camera frame.

Per frame: the hand and object boxes come from ground truth (as SHO/HFL/DMA evaluate)
or from the network's own detection head (``boxes: detected``, what a robot gets);
the square crop around them is the deterministic evaluation crop; the crop network
predicts root-relative hand joints and mesh and the object's control-point votes.
Camera-frame outputs then come from geometry, not from labels: the hand translation
is fitted from the predicted 2D joints, the root-relative 3D joints and K, or, where
that fit fails and ``hand_translation.box_fallback`` is on, from the hand box the crop
was cut around (:func:`hoi_perception.geometry.hand_translation.locate_hand`; the run
summary counts each method), the object pose from the votes by
RANSAC EPnP (:mod:`hoi_perception.geometry.pnp`) with the object's control points from
the object library, its depth then taken from the object's box as the runtime takes it
from its detected box (:mod:`hoi_perception.geometry.object_depth`; ``object_depth``).
Left hands are mirrored into right hands before the network and
the outputs mirrored back. A frame without a hand or object box has no prediction,
and one where PnP fails no object pose: the report counts them as missing
predictions. Where the hand translation fit fails the hand is kept root-relative, so
that root-relative and aligned hand metrics still score it while the camera-frame
ones count it as missing (``missing_translations``). A ``refine: dma``
model then refines the hand and the object together from that coarse estimate, in
the crop's camera frame (:mod:`hoi_perception.models.refinement`), and the refined
hand and object are scored, penetration and contact included.

The data config is a small YAML (see :class:`EvaluationRunConfig`)::

    dataset: {kind: ho3d, config: {root: /data/HO3D_v2, version: v2, split: evaluation}}
    objects: /data/ycb_objects.yaml    # models to score against (default: config/objects.yaml)
    boxes: ground_truth                # or detected

Besides the 3D metrics the report scores the 2D joints (``joints2d``: error in crop and
image pixels, PCK at ``pck_thresholds_px`` crop pixels), which say whether the heatmaps
see the hand before any 3D lifting, and with ``boxes: detected`` the detector
(``detector``: recall of the hand and the object at IoU >= ``recall_iou``, and how often
the detected hand's side is right). With detected boxes the runtime's path is scored:
the hand is the detector's best hand of either side, and its side decides the mirroring.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from hoi_perception.config import ConfigError, load_config, to_dict
from hoi_perception.geometry.camera import box_iou
from hoi_perception.geometry.hand_translation import HandTranslationConfig, locate_hand
from hoi_perception.geometry.mirror import MIRROR_X, model_points_in_crop, reflection
from hoi_perception.geometry.object_depth import ObjectDepthConfig, box_depth_scale
from hoi_perception.geometry.pnp import PnPConfig, solve_control_point_pnp
from hoi_perception.models.checkpoint import load_network_checkpoint
from hoi_perception.models.detection_head import DetectionSelectionConfig, letterbox_image, select_detections
from hoi_perception.models.network import HOINet, NetworkOutput
from hoi_perception.models.object_head import box_units_to_points, votes_to_pixels
from hoi_perception.models.refinement import ObjectGraphCache, refine_crops
from hoi_perception.objects.models import ObjectLibrary, UnknownObjectError, load_object_library
from hoi_perception.objects.models import ObjectModel as LibraryObject
from hoi_perception.pipeline.config import (
    DEFAULT_PERCEPTION_CONFIG,
    EstimatorConfig,
    HandSideSource,
    load_estimator_config,
)
from hoi_perception.pipeline.hand_side import network_crop_runner, with_voted_sides
from hoi_training.data.augment import AugmentConfig, CropTransform, evaluation_crop, mirror_sample
from hoi_training.data.registry import DatasetKind, dataset_config, open_dataset
from hoi_training.data.sample import HandObjectSample
from hoi_training.evaluation.report import (
    EvaluationAccumulator,
    EvaluationConfig,
    EvaluationFrame,
    FrameAnnotation,
    Hand3D,
    ObjectModel,
    ObjectPose,
    write_report,
)

log = logging.getLogger(__name__)


@dataclass
class EvaluationDataset:
    """Which dataset split to read: a loader kind and that loader's config fields."""

    kind: DatasetKind
    config: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        self.dataset_config()

    def dataset_config(self) -> Any:
        return dataset_config(self.kind, self.config)


@dataclass
class EvaluationRunConfig:
    """What ``hoi-train eval`` reads, how it finds the boxes, and the post-processing settings."""

    dataset: EvaluationDataset
    # Object library with the models of the dataset's objects (control points for PnP, points for ADD).
    objects: Path | None = None
    boxes: Literal["ground_truth", "detected"] = "ground_truth"
    batch_size: int = 8
    max_frames: int = 0  # 0: every frame of the split
    device: Literal["auto", "cpu", "cuda"] = "auto"
    metrics: EvaluationConfig = field(default_factory=EvaluationConfig)
    # Vote selection and solver; null takes the runtime's (``estimator.pnp`` of config/perception.yaml,
    # chosen on the validation split).
    pnp: PnPConfig | None = None
    # The object's depth from its box (the labelled or detected one); null takes the runtime's
    # (``estimator.object_depth``).
    object_depth: ObjectDepthConfig | None = None
    hand_translation: HandTranslationConfig = field(default_factory=HandTranslationConfig)
    # How ``boxes: detected`` picks the hands and object: null takes the runtime's choice (the
    # ``estimator.detection`` section of config/perception.yaml, thresholds chosen on the
    # validation split), so the score is the runtime path's.
    detection: DetectionSelectionConfig | None = None
    # Who says a detected hand's side (``estimator.hand_side_from``); null: the runtime's choice.
    hand_side_from: HandSideSource | None = None
    # 2D joint PCK thresholds, crop pixels; a detection counts as found at this IoU with the labelled box.
    pck_thresholds_px: list[float] = field(default_factory=lambda: [2.0, 5.0, 10.0])
    recall_iou: float = 0.5

    def validate(self) -> None:
        if not self.pck_thresholds_px or min(self.pck_thresholds_px) <= 0:
            raise ConfigError(f"pck_thresholds_px must be positive pixel thresholds, got {self.pck_thresholds_px}")
        if not 0 < self.recall_iou <= 1:
            raise ConfigError(f"recall_iou must be in (0, 1], got {self.recall_iou}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_frames < 0:
            raise ConfigError(f"max_frames must be >= 0 (0: all frames), got {self.max_frames}")


def runtime_settings() -> EstimatorConfig:
    """The runtime's settings (the shipped perception.yaml), which ``boxes: detected`` follows by default."""
    return load_estimator_config(DEFAULT_PERCEPTION_CONFIG)


@dataclass
class PreparedFrame:
    """One sample ready for the crop network: the (possibly mirrored) working sample, its crop,
    the crop transform, and the boxes used, in original-image pixels."""

    sample: HandObjectSample
    working: HandObjectSample
    crop: HandObjectSample
    transform: CropTransform
    hand_box: np.ndarray
    object_box: np.ndarray
    hand_side: str  # the side the frame was processed as: the label's, or the detector's with detected boxes


@dataclass
class FramePrediction:
    """Camera-frame estimate of one frame (None where the system produced none) and why not; the hand is
    root-relative where its translation could not be fitted."""

    hand: Hand3D | None
    object_pose: ObjectPose | None
    notes: list[str]
    hand_translation_method: str = ""  # "joints" or "box" (HandTranslationResult.method) when fitted


def _unmirrored_hand(joints: np.ndarray, vertices: np.ndarray, mirrored: bool, root_relative: bool = False) -> Hand3D:
    """A hand the network saw in the (possibly) mirrored camera, back in the original camera."""
    if mirrored:
        joints, vertices = joints @ MIRROR_X, vertices @ MIRROR_X
    return Hand3D(joints, vertices, root_relative=root_relative)


class Evaluator:
    """Runs the network and the geometry on samples and feeds an :class:`EvaluationAccumulator`."""

    def __init__(self, network: HOINet, config: EvaluationRunConfig, library: ObjectLibrary,
                 device: torch.device) -> None:
        self.network = network.to(device).eval()
        self.config = config
        self.library = library
        self.device = device
        self.size = network.config.input_size
        runtime = runtime_settings()
        self.detection = config.detection or runtime.detection
        self.hand_side_from = config.hand_side_from or runtime.hand_side_from
        self.pnp = config.pnp or runtime.pnp
        self.object_depth = config.object_depth or runtime.object_depth
        self.crop_runner = network_crop_runner(self.network, device)
        self.crop_config = AugmentConfig(output_size=self.size)
        self.accumulator = EvaluationAccumulator(config.metrics)
        self._models: dict[str, ObjectModel] = {}
        self.failures: dict[str, int] = {}
        self.translation_methods: dict[str, int] = {}
        self.graphs = ObjectGraphCache(network.config.dma.object_nodes) if network.refiner is not None else None
        self.joint_errors_crop: list[np.ndarray] = []  # per frame, (21,) crop pixels
        self.joint_errors_image: list[np.ndarray] = []  # per frame, (21,) image pixels
        self.detector = DetectorScores()

    def object_model(self, name: str) -> ObjectModel:
        if name not in self._models:
            try:
                model = self.library.get(name)
            except UnknownObjectError as exc:
                raise ValueError(f"object '{name}' is not in the object library "
                                 f"{self.config.objects or 'config/objects.yaml'} ({exc}); pass the library with "
                                 "the dataset's models as 'objects'") from None
            self._models[name] = ObjectModel(name, model.points, symmetric=model.is_symmetric, faces=model.faces)
        return self._models[name]

    # -- boxes

    def _detected_boxes(self, samples: Sequence[HandObjectSample]
                        ) -> list[tuple[np.ndarray | None, np.ndarray | None, str]]:
        """(hand box, object box, hand side) per frame from the detection head, as the runtime picks them:
        the better-scoring hand of either side. The detector's scores are added to :attr:`detector`."""
        frames, letterboxes = [], []
        detector_size = self.network.config.detector_input_size
        for sample in samples:
            frame, letterbox = letterbox_image(sample.image, detector_size, detector_size)
            frames.append(frame)
            letterboxes.append(letterbox)
        batch = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div_(255.0).to(self.device)
        with torch.no_grad():
            detections = self.network.detect_top_k(batch)
        out = []
        for i, sample in enumerate(samples):
            chosen = select_detections(detections.boxes[i].cpu().numpy(), detections.scores[i].cpu().numpy(),
                                       detections.classes[i].cpu().numpy(), letterboxes[i], self.detection)
            if self.hand_side_from == "crop_network":
                chosen = with_voted_sides(chosen, sample.image, self.crop_runner, self.size,
                                          self.crop_config.box_expansion)
            hands = [(d.score, side, d.box) for side, d in (("right", chosen.right_hand), ("left", chosen.left_hand))
                     if d is not None]
            _, side, hand_box = max(hands, key=lambda h: h[0]) if hands else (0.0, sample.hand_side, None)
            object_box = None if chosen.object is None else chosen.object.box
            self.detector.add(sample, hand_box, side, object_box, self.config.recall_iou)
            out.append((hand_box, object_box, side))
        return out

    def prepare(self, samples: Sequence[HandObjectSample]) -> list[PreparedFrame | None]:
        """Boxes and evaluation crops; None for a frame without a hand or object box."""
        if self.config.boxes == "detected":
            boxes = self._detected_boxes(samples)
        else:
            boxes = [(s.hand_box, s.object_box, s.hand_side) for s in samples]
        prepared: list[PreparedFrame | None] = []
        for sample, (hand_box, object_box, side) in zip(samples, boxes):
            if hand_box is None or object_box is None:
                self._fail("no hand box" if hand_box is None else "no object box")
                prepared.append(None)
                continue
            working = replace(sample, hand_box=np.asarray(hand_box, float), object_box=np.asarray(object_box, float))
            if side == "left":
                working = mirror_sample(working)
            crop, transform = evaluation_crop(working, self.crop_config)
            prepared.append(PreparedFrame(sample, working, crop, transform, np.asarray(hand_box, float),
                                          np.asarray(object_box, float), side))
        return prepared

    def _fail(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1

    # -- network and geometry

    def run_network(self, frames: Sequence[PreparedFrame]) -> NetworkOutput:
        images = torch.from_numpy(np.stack([f.crop.image for f in frames])).permute(0, 3, 1, 2).float().div_(255.0)
        hand_boxes = torch.from_numpy(np.stack([f.crop.hand_box for f in frames])).float()
        object_boxes = torch.from_numpy(np.stack([f.crop.object_box for f in frames])).float()
        with torch.no_grad():
            return self.network(images.to(self.device), hand_boxes.to(self.device), object_boxes.to(self.device))

    def camera_frame(self, frame: PreparedFrame, output: NetworkOutput, i: int) -> FramePrediction:
        """Hand translation and object PnP for batch element ``i``, un-mirrored to the original camera.

        When the translation fit fails the hand is still returned, root-relative
        (:attr:`Hand3D.root_relative`), so that the position-free hand metrics score it.
        """
        notes: list[str] = []
        mirrored = frame.hand_side == "left"
        crop = frame.crop
        hand = output.hand
        joints2d_crop = box_units_to_points(hand.joints2d[i:i + 1].cpu().double().numpy(), crop.hand_box[None])[0]
        joints2d_image = frame.transform.crop_to_image(joints2d_crop)
        if crop.joints_2d is not None and frame.working.joints_2d is not None:
            self.joint_errors_crop.append(np.linalg.norm(joints2d_crop - crop.joints_2d, axis=1))
            self.joint_errors_image.append(np.linalg.norm(joints2d_image - frame.working.joints_2d, axis=1))
        joints_rel = hand.joints3d[i].cpu().double().numpy()
        vertices_rel = hand.vertices[i].cpu().double().numpy()
        height, width = frame.working.image.shape[:2]
        translation = locate_hand(joints2d_image, joints_rel, vertices_rel, frame.working.hand_box, frame.working.K,
                                  hand.joint_confidence[i].cpu().double().numpy(), image_size=(width, height),
                                  config=self.config.hand_translation)
        if translation.success:
            hand_pred = _unmirrored_hand(joints_rel + translation.translation,
                                         vertices_rel + translation.translation, mirrored)
        else:
            notes.append(f"hand translation: {translation.reason}")
            wrist = joints_rel[0]
            hand_pred = _unmirrored_hand(joints_rel - wrist, vertices_rel - wrist, mirrored, root_relative=True)

        object_pred = None
        model = self.library.get(frame.sample.object_name) if frame.sample.object_name in self.library else None
        if model is not None:
            control_points = model_points_in_crop(model.control_points, model.mirror_axis, mirrored)
            # Votes in (working) image pixels with the image's K, as the runtime solves them, so that
            # the pixel thresholds of the runtime's PnP settings mean the same here.
            votes = votes_to_pixels(output.object.votes[i:i + 1].cpu().double().numpy(), crop.object_box[None])[0]
            votes = np.moveaxis(frame.transform.crop_to_image(np.moveaxis(votes, 1, -1)), -1, 1)
            pnp = solve_control_point_pnp(votes, output.object.confidence[i].cpu().double().numpy(), control_points,
                                          frame.working.K, self.pnp)
            if pnp.success and self.object_depth.from_box:
                vertices = model_points_in_crop(model.vertices, model.mirror_axis, mirrored)
                found = box_depth_scale(vertices, pnp.rotation, pnp.translation, frame.working.object_box,
                                        frame.working.K, (width, height), self.object_depth)
                if found.success:
                    pnp = replace(pnp, translation=pnp.translation * found.scale)
                else:
                    notes.append(f"object depth from its box: {found.reason}")
            if pnp.success:
                rotation, position = pnp.rotation, pnp.translation
                if mirrored and model.mirror_axis is not None:  # the pose of the mirrored model, X R X
                    rotation = rotation @ reflection(model.mirror_axis) @ MIRROR_X
                if self.graphs is not None and translation.success:
                    joints, vertices, rotation, position = self.refine(frame, output, i, model, vertices_rel +
                                                                       translation.translation, rotation, position)
                    hand_pred = _unmirrored_hand(joints, vertices, mirrored)
                if mirrored:
                    rotation, position = MIRROR_X @ rotation @ MIRROR_X, MIRROR_X @ position
                object_pred = ObjectPose(rotation, position)
            else:
                notes.append(f"PnP: {pnp.reason}")
        return FramePrediction(hand_pred, object_pred, notes,
                               translation.method if translation.success else "")

    def refine(self, frame: PreparedFrame, output: NetworkOutput, i: int, model: LibraryObject,
               hand_vertices: np.ndarray, rotation: np.ndarray, position: np.ndarray) -> tuple[np.ndarray, ...]:
        """The refiner on crop ``i``'s coarse hand mesh and object pose (crop camera frame, mirrored for
        left hands); returns the refined joints, vertices, object rotation and translation in that frame."""
        graphs = self.graphs.get(model)
        device = self.device

        def tensor(value: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.asarray(value, dtype=np.float32)[None], device=device)

        features = output.refinement
        row = slice(i, i + 1)
        single = replace(output, refinement=replace(features, global_feature=features.global_feature[row],
                                                    p2=None if features.p2 is None else features.p2[row]))
        image = torch.from_numpy(frame.crop.image).permute(2, 0, 1).float().div_(255.0)[None].to(device)
        with torch.no_grad():
            refined = refine_crops(self.network, image, single, tensor(frame.crop.K), tensor(hand_vertices),
                                   tensor(rotation), tensor(position),
                                   [graphs.select(frame.hand_side == "left")])
        return tuple(getattr(refined, name)[0].cpu().double().numpy() for name in
                     ("hand_joints", "hand_vertices", "object_rotation", "object_translation"))

    def add(self, sample: HandObjectSample, prediction: FramePrediction | None,
            boxes: tuple[np.ndarray, np.ndarray] | None) -> None:
        """Score one frame against its labels."""
        gt_hand = Hand3D(sample.joints_3d, sample.vertices_3d) if sample.has_hand_3d else None
        gt_object = (ObjectPose(sample.object_rotation, sample.object_translation) if sample.has_object_pose
                     else None)
        use_boxes = self.config.boxes == "detected"
        truth = FrameAnnotation(hand=gt_hand, object_pose=gt_object,
                                hand_box=sample.hand_box if use_boxes else None,
                                object_box=sample.object_box if use_boxes else None)
        predicted = FrameAnnotation(
            hand=None if prediction is None else prediction.hand,
            object_pose=None if prediction is None else prediction.object_pose,
            hand_box=boxes[0] if use_boxes and boxes is not None else None,
            object_box=boxes[1] if use_boxes and boxes is not None else None)
        if prediction is not None:
            for note in prediction.notes:
                self._fail(note.split(":")[0])
            method = prediction.hand_translation_method
            if method:
                self.translation_methods[method] = self.translation_methods.get(method, 0) + 1
        sequence_id, frame_index = None, None
        if sample.frame.isdigit():
            sequence_id, frame_index = f"{sample.dataset}/{sample.sequence}", int(sample.frame)
        model = self.object_model(sample.object_name) if gt_object is not None else None
        self.accumulator.add(EvaluationFrame(sample.sample_id, predicted, truth, model, sequence_id, frame_index))

    def evaluate_batch(self, samples: Sequence[HandObjectSample]) -> None:
        prepared = self.prepare(samples)
        ready = [p for p in prepared if p is not None]
        output = self.run_network(ready) if ready else None
        position = 0
        for sample, frame in zip(samples, prepared):
            if frame is None:
                self.add(sample, None, None)
                continue
            prediction = self.camera_frame(frame, output, position)
            position += 1
            self.add(sample, prediction, (frame.hand_box, frame.object_box))

    def joints2d_summary(self) -> dict[str, Any]:
        """2D joint error of the crop network (after the crop's own boxes), crop and image pixels."""
        if not self.joint_errors_crop:
            return {"frames_scored": 0}
        crop, image = np.stack(self.joint_errors_crop), np.stack(self.joint_errors_image)
        out: dict[str, Any] = {"frames_scored": len(crop), "crop_size_px": self.size,
                               "mean_error_crop_px": float(crop.mean()), "median_error_crop_px": float(np.median(crop)),
                               "mean_error_image_px": float(image.mean())}
        for threshold in self.config.pck_thresholds_px:
            out[f"pck_{threshold:g}px_crop_pct"] = float((crop <= threshold).mean() * 100.0)
        return out

    def summary(self) -> dict[str, Any]:
        summary = self.accumulator.summary()
        summary["joints2d"] = self.joints2d_summary()
        if self.config.boxes == "detected":
            summary["detector"] = self.detector.summary(self.config.recall_iou)
            summary["detector"]["selection"] = to_dict(self.detection)
            summary["detector"]["hand_side_from"] = self.hand_side_from
        summary["run"] = {"boxes": self.config.boxes, "failures": dict(sorted(self.failures.items())),
                          "hand_translation_methods": dict(sorted(self.translation_methods.items()))}
        return summary


@dataclass
class DetectorScores:
    """How the detection head did on labelled frames: found (IoU >= recall_iou), IoU, hand side."""

    frames: int = 0
    hands_labelled: int = 0
    hands_found: int = 0
    hand_sides_right: int = 0
    objects_labelled: int = 0
    objects_found: int = 0
    hand_ious: list[float] = field(default_factory=list)
    object_ious: list[float] = field(default_factory=list)

    def add(self, sample: HandObjectSample, hand_box: np.ndarray | None, side: str, object_box: np.ndarray | None,
            recall_iou: float) -> None:
        self.frames += 1
        if sample.hand_box is not None:
            self.hands_labelled += 1
            iou = 0.0 if hand_box is None else box_iou(np.asarray(hand_box, float), sample.hand_box)
            self.hand_ious.append(iou)
            if iou >= recall_iou:
                self.hands_found += 1
                self.hand_sides_right += int(side == sample.hand_side)
        if sample.object_box is not None:
            self.objects_labelled += 1
            iou = 0.0 if object_box is None else box_iou(np.asarray(object_box, float), sample.object_box)
            self.object_ious.append(iou)
            self.objects_found += int(iou >= recall_iou)

    def summary(self, recall_iou: float) -> dict[str, Any]:
        def pct(count: int, total: int) -> float | None:
            return None if total == 0 else 100.0 * count / total

        found_hand = [iou for iou in self.hand_ious if iou >= recall_iou]
        found_object = [iou for iou in self.object_ious if iou >= recall_iou]
        return {
            "frames": self.frames, "recall_iou": recall_iou,
            "hand_recall_pct": pct(self.hands_found, self.hands_labelled),
            "hand_box_iou_of_found_mean": float(np.mean(found_hand)) if found_hand else None,
            "hand_side_correct_of_found_pct": pct(self.hand_sides_right, self.hands_found),
            "object_recall_pct": pct(self.objects_found, self.objects_labelled),
            "object_box_iou_of_found_mean": float(np.mean(found_object)) if found_object else None,
        }


def evaluate_dataset(network: HOINet, dataset: Any, config: EvaluationRunConfig,
                     library: ObjectLibrary | None = None, device: torch.device | None = None) -> dict[str, Any]:
    """Score ``network`` on every frame (or the first ``max_frames``) of ``dataset``; returns the summary."""
    evaluator = Evaluator(network, config, library or load_object_library(config.objects),
                          device or torch.device("cpu"))
    count = len(dataset) if not config.max_frames else min(config.max_frames, len(dataset))
    for start in tqdm(range(0, count, config.batch_size), desc="eval", unit="batch"):
        evaluator.evaluate_batch([dataset[i] for i in range(start, min(start + config.batch_size, count))])
    return evaluator.summary()


def _device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device: 'cuda' was asked for but PyTorch sees no CUDA device")
        return torch.device("cuda")
    return torch.device("cpu")


def eval_main(checkpoint: str | Path, data_config: str | Path, out_dir: str | Path,
              overrides: Sequence[str] = ()) -> int:
    """``hoi-train eval``: write ``metrics.json`` and ``metrics.md`` (and the resolved config) into ``out_dir``."""
    config = load_config(EvaluationRunConfig, data_config, overrides)
    network = load_network_checkpoint(checkpoint)
    dataset = open_dataset(config.dataset.kind, config.dataset.dataset_config())
    summary = evaluate_dataset(network, dataset, config, device=_device(config.device))
    summary["run"].update({"checkpoint": str(checkpoint), "model": network.config.name,
                           "config": to_dict(config)})
    json_path, md_path = write_report(summary, out_dir, title=f"Evaluation of {network.config.name} "
                                      f"({config.dataset.kind}, {config.boxes.replace('_', ' ')} boxes)")
    log.info("wrote %s and %s", json_path, md_path)
    return 0
