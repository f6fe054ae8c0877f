"""``hoi-train fit``: supervised (and pseudo-label) training of :class:`~hoi_perception.models.network.HOINet`.

Batches: one dataset sample feeds both of the network's entry points. The crop
network is trained on the augmented square crop (SHO/HFL's augmentation,
:mod:`hoi_training.data.augment`; with SemiHand's pseudo-label term, its diversity
augmentation, :class:`~hoi_training.semihand.training.DiversityAugmenter`), with
crop-level targets: 2D joints in hand-box units, root-relative 3D joints and vertices,
MANO pose and shape, control points in object-box units and the object mask resampled
onto the object RoI grid. The detection head is trained on the *unaugmented full
frame*, letterboxed to the same input size, with CenterNet targets for the hand box
(right or left, as labelled) and the object box. Left hands are mirrored for the crop
network only, since the detector must tell the two sides apart. A set entry with
``object_loss: false`` zeroes the object-term flags of its samples, and every flag is
scaled by the sample's weight (1 for ground truth, the confidence for pseudo-labels).

Distribution: launched with ``torchrun`` (RANK, WORLD_SIZE, LOCAL_RANK), each process
trains a DistributedDataParallel replica (gloo on CPU, nccl on CUDA) on its share of
every epoch, drawn by :class:`EpochSampler` - a DistributedSampler that also mixes
datasets by weight and can start mid-epoch.

Checkpoints (``<run>/checkpoints/last.pt``, written atomically by rank 0) hold the
model, optimiser, scheduler, GradScaler, the RNG states, the step, epoch and batch
position within the epoch, the resolved configs and the code version; ``--resume``
continues from it bit-for-bit on CPU. A non-finite loss stops training with
:class:`NonFiniteLossError` naming the step, and nothing is written, so the last
checkpoint stays the last good state.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from hoi_perception.atomic import atomic_save_with, atomic_write_text
from hoi_perception.config import ConfigError, from_dict, load_config, to_dict
from hoi_perception.engines.export import code_version, read_training_checkpoint
from hoi_perception.models.config import ModelConfig
from hoi_perception.models.detection_head import (
    LEFT_HAND,
    OBJECT,
    RIGHT_HAND,
    DetectionHeadOutput,
    build_detection_targets,
    letterbox_image,
)
from hoi_perception.models.dma.graph import MeshGraph, hand_graph
from hoi_perception.models.dma.refiner import DMAOutput
from hoi_perception.models.network import P2_STRIDE, HandHeatmaps, HOINet, NetworkOutput
from hoi_perception.models.object_head import box_units_to_points, points_to_box_units
from hoi_perception.models.refinement import MIRROR_X, ObjectGraphCache, refine_crops, solve_crop_geometry
from hoi_perception.objects.models import ObjectLibrary, load_object_library
from hoi_perception.render.overlay import draw_hand_skeleton
from hoi_training.data.augment import Augmenter
from hoi_training.data.dexycb import DexYCBDataset
from hoi_training.data.ho3d import HO3DDataset
from hoi_training.data.sample import HandObjectSample, collate_samples
from hoi_training.data.synthetic import SyntheticDataset
from hoi_training.dma_losses import DMALoss, DMATargets
from hoi_training.losses import (
    DetectionTargetBatch,
    HandObjectTargets,
    LossOutput,
    detection_loss,
    hand_2d_losses,
    hand_object_loss,
)
from hoi_training.pseudolabel.dataset import PseudoLabelDataset
from hoi_training.semihand.training import (
    DiversityAugmenter,
    PseudoLabelRounds,
    SemiHandTraining,
    drop_hand_supervision,
    labelled_mask_samples,
)
from hoi_training.train_config import DatasetEntry, DetectionAugmentConfig, TrainConfig

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "hoi_training_checkpoint/1"
CONFIG_FILE = "config.yaml"
CODE_VERSION_FILE = "code_version.txt"
LAST_CHECKPOINT = Path("checkpoints") / "last.pt"
DATASET_CLASSES: dict[str, type] = {"ho3d": HO3DDataset, "dexycb": DexYCBDataset, "synthetic": SyntheticDataset,
                                   "pseudo": PseudoLabelDataset}
MIN_BOX_SIDE_PX = 1.0  # boxes thinner than this in the crop carry no usable 2D target
IMAGE_GRID_SAMPLES = 4
NON_FINITE_EXIT_CODE = 3
REFINER_PREFIX = "refiner."  # state-dict prefix of HOINet's refinement stage
MASK_HEAD_PREFIX = "hand_decoder.mask_decoder."  # state-dict prefix of the optional hand-mask head
DETECTION_HEAD_PREFIX = "detection_head."


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped without writing a checkpoint."""


class CheckpointMismatchError(ValueError):
    """A checkpoint was made for another model config (or is not a training checkpoint)."""


# ----------------------------------------------------------------------------- distribution


@dataclass(frozen=True)
class DistributedContext:
    """Where this process runs: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistributedContext:
    """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK, pick the device, and join the process group.

    Without those variables this is a single process. CUDA processes use ``cuda:LOCAL_RANK``
    and nccl; CPU processes use gloo.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError("device: 'cuda' was asked for but PyTorch sees no CUDA device")
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices are visible")
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=timedelta(minutes=30),
                                **({"device_id": target} if use_cuda else {}))
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=target)


def _all_finite(value: torch.Tensor, context: DistributedContext) -> bool:
    """Whether ``value`` is finite on every rank (all ranks must stop together)."""
    flag = torch.isfinite(value.detach()).all().to(torch.float32).reshape(1)
    if context.distributed:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() > 0)


# ----------------------------------------------------------------------------- sampling


class EpochSampler(Sampler[int]):
    """Indices of one epoch over concatenated datasets, for one rank, from any batch on.

    Dataset ``d`` contributes ``round(weight_d * size_d)`` draws per epoch: whole shuffled
    passes over it, then a random part of one more. The epoch's draws are shuffled
    together, padded by wrapping to a multiple of ``world_size`` and dealt out
    round-robin, as :class:`torch.utils.data.DistributedSampler` does. Everything is a
    function of (seed, epoch), so ``start_batch`` can resume mid-epoch exactly.
    """

    def __init__(self, sizes: Sequence[int], weights: Sequence[float], batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if len(sizes) != len(weights) or not sizes:
            raise ValueError(f"EpochSampler: expected one weight per dataset, got {len(sizes)} sizes and "
                             f"{len(weights)} weights")
        if any(s < 1 for s in sizes):
            raise ValueError(f"EpochSampler: every dataset needs at least one sample, got sizes {list(sizes)}")
        self.sizes = [int(s) for s in sizes]
        self.weights = [float(w) for w in weights]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0
        if self.batches_per_epoch() < 1:
            raise ValueError(f"an epoch of {self.draws_per_epoch()} samples over {world_size} process(es) gives "
                             f"no full batch of {batch_size}; lower batch_size or add data")

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def draws_per_epoch(self) -> int:
        return sum(max(1, round(w * s)) for s, w in zip(self.sizes, self.weights))

    def per_rank(self) -> int:
        return math.ceil(self.draws_per_epoch() / self.world_size)

    def batches_per_epoch(self) -> int:
        """Full batches per rank per epoch (the last partial batch is dropped)."""
        return self.per_rank() // self.batch_size

    def epoch_indices(self) -> np.ndarray:
        """This rank's indices of the whole epoch, in order."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        draws = []
        for offset, size, weight in zip(self.offsets, self.sizes, self.weights):
            count = max(1, round(weight * size))
            passes = [torch.randperm(size, generator=generator).numpy() for _ in range(math.ceil(count / size))]
            draws.append(np.concatenate(passes)[:count] + offset)
        order = np.concatenate(draws)[torch.randperm(self.draws_per_epoch(), generator=generator).numpy()]
        total = self.per_rank() * self.world_size
        order = np.resize(order, total)  # wraps around to pad
        return order[self.rank::self.world_size][: self.batches_per_epoch() * self.batch_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.start_batch * self.batch_size:].tolist())

    def __len__(self) -> int:
        return max(0, (self.batches_per_epoch() - self.start_batch) * self.batch_size)


# ----------------------------------------------------------------------------- examples and batches


@dataclass
class TrainingExample:
    """One sample prepared for both entry points: the augmented crop (crop-network labels in
    crop pixels) and the letterboxed full frame with its detection boxes and classes."""

    crop: HandObjectSample
    frame: np.ndarray
    detection_boxes: np.ndarray
    detection_classes: np.ndarray
    object_loss: bool


@dataclass
class TrainingBatch:
    """Collated examples: ``crop`` is :func:`collate_samples`' dict; ``frame`` (B, 3, S, S) in [0, 1];
    ``detection`` the CenterNet targets; ``object_loss`` (B,) bool."""

    crop: dict[str, Any]
    frame: torch.Tensor
    detection: DetectionTargetBatch
    object_loss: torch.Tensor

    def __len__(self) -> int:
        return int(self.frame.shape[0])


class ExampleBuilder:
    """Turns a dataset sample into a :class:`TrainingExample` (runs in DataLoader workers)."""

    def __init__(self, augmenter: Augmenter, input_size: int, object_loss: bool,
                 detection: DetectionAugmentConfig | None = None) -> None:
        self.augmenter = augmenter
        self.input_size = input_size
        self.object_loss = object_loss
        self.detection = detection or DetectionAugmentConfig()

    def __call__(self, sample: HandObjectSample) -> TrainingExample:
        frame, letterbox = letterbox_image(sample.image, self.input_size, self.input_size)
        boxes, classes = [], []
        if sample.hand_box is not None:
            boxes.append(sample.hand_box)
            classes.append(RIGHT_HAND if sample.hand_side == "right" else LEFT_HAND)
        if sample.object_box is not None:
            boxes.append(sample.object_box)
            classes.append(OBJECT)
        boxes_in = letterbox.boxes_to_input(np.asarray(boxes).reshape(-1, 4))
        classes_in = np.asarray(classes, dtype=np.int64)
        if self.augmenter.train and (self.detection.flip_probability > 0 or self.detection.scale_jitter > 0):
            rng = self.augmenter.generator_for(sample)
            rng = np.random.default_rng(rng.integers(2**63))  # a stream apart from the crop's
            frame, boxes_in, classes_in = augment_detection_frame(frame, boxes_in, classes_in, self.detection, rng)
        return TrainingExample(crop=self.augmenter(sample), frame=frame, detection_boxes=boxes_in,
                               detection_classes=classes_in, object_loss=self.object_loss)


def augment_detection_frame(frame: np.ndarray, boxes: np.ndarray, classes: np.ndarray,
                            config: DetectionAugmentConfig, rng: np.random.Generator
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A letterboxed frame (S, S, 3) and its boxes (N, 4) flipped and zoomed (:class:`DetectionAugmentConfig`)."""
    size = frame.shape[1]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    classes = np.asarray(classes, dtype=np.int64).copy()
    if rng.random() < config.flip_probability:
        frame = np.ascontiguousarray(frame[:, ::-1])
        boxes[:, [0, 2]] = size - boxes[:, [2, 0]]
        swapped = classes.copy()
        swapped[classes == RIGHT_HAND], swapped[classes == LEFT_HAND] = LEFT_HAND, RIGHT_HAND
        classes = swapped
    if config.scale_jitter > 0:
        zoom = 1.0 + rng.uniform(-config.scale_jitter, config.scale_jitter)
        low, high = sorted((0.0, size * (1.0 - zoom)))
        shift = rng.uniform(low, high, 2)
        matrix = np.array([[zoom, 0.0, shift[0]], [0.0, zoom, shift[1]]])
        frame = cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=(114, 114, 114))
        boxes = np.clip(boxes * zoom + np.tile(shift, 2), 0.0, float(size))
        sides = boxes[:, 2:] - boxes[:, :2]
        keep = (sides >= config.min_box_side).all(1)
        boxes, classes = boxes[keep], classes[keep]
    return frame, boxes, classes


class ExampleDataset(Dataset):
    """A dataset's samples mapped through an :class:`ExampleBuilder`."""

    def __init__(self, base: Dataset, builder: ExampleBuilder) -> None:
        self.base = base
        self.builder = builder

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> TrainingExample:
        return self.builder(self.base[index])


class ConcatExamples(Dataset):
    """Several :class:`ExampleDataset` end to end (indices as :class:`EpochSampler` deals them)."""

    def __init__(self, parts: Sequence[ExampleDataset]) -> None:
        self.parts = list(parts)
        self.ends = np.cumsum([len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.ends[-1])

    def __getitem__(self, index: int) -> TrainingExample:
        part = int(np.searchsorted(self.ends, index, side="right"))
        start = 0 if part == 0 else int(self.ends[part - 1])
        return self.parts[part][index - start]

    def set_epoch(self, epoch: int) -> None:
        for part in self.parts:
            part.builder.augmenter.set_epoch(epoch)


def collate_examples(examples: Sequence[TrainingExample]) -> TrainingBatch:
    """``DataLoader`` collate function for :class:`TrainingExample` lists."""
    size = examples[0].frame.shape[0]
    grid = size // P2_STRIDE
    targets = [build_detection_targets(e.detection_boxes, e.detection_classes, grid, grid, P2_STRIDE)
               for e in examples]
    detection = DetectionTargetBatch(
        heatmap=torch.from_numpy(np.stack([t.heatmap for t in targets])),
        indices=torch.from_numpy(np.stack([t.indices for t in targets])),
        sizes=torch.from_numpy(np.stack([t.sizes for t in targets])),
        offsets=torch.from_numpy(np.stack([t.offsets for t in targets])),
        mask=torch.from_numpy(np.stack([t.mask for t in targets])))
    frame = torch.from_numpy(np.stack([e.frame for e in examples])).permute(0, 3, 1, 2).float().div_(255.0)
    return TrainingBatch(crop=collate_samples([e.crop for e in examples]), frame=frame, detection=detection,
                         object_loss=torch.tensor([e.object_loss for e in examples], dtype=torch.bool))


def build_dataset(name: str, entry: DatasetEntry, augmenter: Augmenter, input_size: int,
                  detection: DetectionAugmentConfig | None = None) -> ExampleDataset:
    """The training dataset of one config entry, mapped to :class:`TrainingExample`."""
    base = DATASET_CLASSES[entry.kind](entry.dataset_config())
    if len(base) == 0:
        raise ValueError(f"dataset '{name}' ({entry.kind}, {entry.config}) holds no samples")
    return ExampleDataset(base, ExampleBuilder(augmenter, input_size, entry.object_loss, detection))


# ----------------------------------------------------------------------------- targets


def _valid_boxes(boxes: torch.Tensor) -> torch.Tensor:
    return ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX_SIDE_PX) & ((boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_SIDE_PX)


def _safe_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes with at least MIN_BOX_SIDE_PX sides, so unit conversions never divide by zero."""
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1 = torch.maximum(boxes[:, 2], x0 + MIN_BOX_SIDE_PX)
    y1 = torch.maximum(boxes[:, 3], y0 + MIN_BOX_SIDE_PX)
    return torch.stack([x0, y0, x1, y1], 1)


def mask_on_roi_grid(masks: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest-pixel samples (B, size, size) of crop masks (B, H, W) at the cell centres of each box's RoI grid."""
    batch, height, width = masks.shape
    centres = (torch.arange(size, dtype=boxes.dtype, device=boxes.device) + 0.5) / size
    xs = boxes[:, 0:1] + centres[None] * (boxes[:, 2:3] - boxes[:, 0:1])  # (B, size)
    ys = boxes[:, 1:2] + centres[None] * (boxes[:, 3:4] - boxes[:, 1:2])
    ix = xs.floor().long().clamp(0, width - 1)
    iy = ys.floor().long().clamp(0, height - 1)
    inside_x = (xs >= 0) & (xs < width)
    inside_y = (ys >= 0) & (ys < height)
    b = torch.arange(batch, device=masks.device)[:, None, None]
    values = masks[b, iy[:, :, None], ix[:, None, :]]
    return values & inside_y[:, :, None] & inside_x[:, None, :]


def build_hand_object_targets(crop: dict[str, Any], object_loss: torch.Tensor, hand_model: nn.Module,
                              roi_size: int) -> tuple[HandObjectTargets, torch.Tensor, torch.Tensor]:
    """Crop-level targets of a collated batch, plus the (safe) hand and object boxes to feed the network.

    Samples with MANO labels but no vertices (HO-3D, DexYCB) get their root-relative vertex
    targets from ``hand_model`` at the labelled pose, so one flag covers vertices, pose and
    shape. Every flag is multiplied by the sample weight.
    """
    weight = crop["weight"]
    hand_box, object_box = _safe_boxes(crop["hand_box"]), _safe_boxes(crop["object_box"])
    has_hand2d = crop["has_hand_2d"] & crop["has_hand_box"] & _valid_boxes(crop["hand_box"])
    has_object = (crop["has_object_2d"] & crop["has_object_box"] & _valid_boxes(crop["object_box"])
                  & object_loss)
    joints3d = crop["joints_3d"]
    root = joints3d[:, :1]
    vertices = crop["vertices_3d"] - root
    missing_vertices = crop["has_mano"] & ~crop["has_vertices"]
    if missing_vertices.any():
        pose, betas = crop["mano_pose"][missing_vertices], crop["mano_shape"][missing_vertices]
        with torch.no_grad():
            mano = hand_model(global_orient=pose[:, :3], hand_pose=pose[:, 3:], betas=betas)
        vertices = vertices.clone()
        vertices[missing_vertices] = (mano.vertices - mano.joints[:, :1]).to(vertices.dtype)
    object_mask = mask_on_roi_grid(crop["object_mask"], object_box, roi_size)
    object_mask = torch.where(crop["has_object_mask"][:, None, None], object_mask, torch.ones_like(object_mask))
    has_hand_mask = crop["has_hand_mask"] & crop["has_hand_box"] & _valid_boxes(crop["hand_box"])
    targets = HandObjectTargets(
        joints2d=points_to_box_units(crop["joints_2d"], hand_box),
        joints3d=joints3d - root,
        vertices=vertices,
        pose=crop["mano_pose"],
        betas=crop["mano_shape"],
        object_points2d=points_to_box_units(crop["object_points_2d"], object_box),
        object_mask=object_mask,
        hand_mask=mask_on_roi_grid(crop["hand_mask"], hand_box, roi_size),
        has_hand2d=has_hand2d.float() * weight,
        has_hand3d=crop["has_hand_3d"].float() * weight,
        has_mano=crop["has_mano"].float() * weight,
        has_hand_mask=has_hand_mask.float() * weight,
        has_object=has_object.float() * weight,
    )
    return targets, hand_box, object_box


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, DetectionTargetBatch):
        return DetectionTargetBatch(**{f.name: _to_device(getattr(value, f.name), device) for f in fields(value)})
    return value


def _float32(output: Any) -> Any:
    """A copy of an output dataclass with every tensor in float32 (losses run outside autocast);
    absent optional outputs (None) stay None."""
    return replace(output, **{f.name: getattr(output, f.name).float() for f in fields(output)
                              if getattr(output, f.name) is not None})


class TrainingModule(nn.Module):
    """Both entry points (and the refinement stage) in one ``forward``, so DistributedDataParallel
    sees every parameter use. ``stage`` (:attr:`TrainConfig.stage`) picks what runs: "heatmaps"
    gives an output with the hand's heatmaps and 2D joints only, "detector" the detection alone."""

    def __init__(self, network: HOINet, stage: str = "full") -> None:
        super().__init__()
        self.network = network
        self.stage = stage

    def forward(self, crop: torch.Tensor, hand_box: torch.Tensor, object_box: torch.Tensor,
                frame: torch.Tensor | None, refine: Callable[[NetworkOutput], DMAOutput | None] | None = None
                ) -> tuple[NetworkOutput | HandHeatmaps | None, DetectionHeadOutput | None, DMAOutput | None]:
        if self.stage == "heatmaps":
            return self.network.hand_heatmaps(crop, hand_box), None, None
        if self.stage == "detector":
            return None, self.network.detect(frame), None
        output = self.network(crop, hand_box, object_box)
        refined = None if refine is None else refine(output)
        return output, (None if frame is None else self.network.detect(frame)), refined


def training_object_library(config: TrainConfig) -> ObjectLibrary:
    """The object models of the training sets (synthetic sets name their library; others use the shipped one)."""
    paths = []
    for entry in config.datasets.values():
        path = getattr(entry.dataset_config(), "objects", None)
        if path not in paths:
            paths.append(path)
    models = {}
    for path in paths:
        library = load_object_library(path)
        models.update({name: library.get(name) for name in library if name not in models})
    return ObjectLibrary(models)


class RefinementTraining:
    """The DMA refinement stage in a training step (``refine: dma`` models).

    Crops with 3D hand labels (joints and a mesh or MANO) and an object pose with control
    points are refined. Their coarse input is what the runtime gives the refiner, computed
    on the crop: the predicted root-relative mesh plus the hand translation fitted to the
    predicted 2D joints, and the object's pose from PnP on its votes (crop camera matrix).
    Where a solver fails the ground truth stands in (DMA trains on the ground-truth root),
    so every refinable crop trains the refiner. Losses: :class:`~hoi_training.dma_losses.DMALoss`
    with the model's ``dma.losses`` weights, logged as ``dma_<term>``; they reach the
    backbone through the sampled features and the hand decoder through the coarse mesh.
    """

    def __init__(self, network: HOINet, library: ObjectLibrary) -> None:
        self.network = network
        self.library = library
        self.graphs = ObjectGraphCache(network.config.dma.object_nodes)
        self.loss_fn = DMALoss(hand_graph(network.hand_decoder.hand_model), network.config.dma.losses)

    def _graph(self, name: str, control_points: np.ndarray, sample_id: str) -> MeshGraph:
        """The object's graph, mirrored when the crop was mirrored (its control points are)."""
        if name not in self.library:
            raise ValueError(f"sample {sample_id}: object '{name}' is not in the training object library "
                             f"{sorted(self.library)}; the refiner needs its mesh")
        model = self.library.get(name)
        graphs = self.graphs.get(model)
        if np.allclose(control_points, model.control_points, atol=1e-4):
            return graphs.graph
        if np.allclose(control_points, model.control_points @ MIRROR_X, atol=1e-4):
            return graphs.mirrored
        raise ValueError(f"sample {sample_id}: its control points of '{name}' are neither the library model's nor "
                         "their mirror image; train with the object library the dataset was made with")

    def step(self, crop: dict[str, Any], targets: HandObjectTargets, hand_box: torch.Tensor,
             object_box: torch.Tensor) -> tuple[Callable[[NetworkOutput], DMAOutput | None], Callable[..., Any]]:
        """(refine, loss): ``refine(output)`` runs in the training module's forward (None when no crop
        is refinable); ``loss(refined)`` gives the weighted :class:`LossOutput`."""
        has_hand = crop["has_hand_3d"] & (crop["has_vertices"] | crop["has_mano"])
        has_object = crop["has_object_pose"] & crop["has_object_points"]
        rows = torch.nonzero(has_hand & has_object).flatten()
        root = crop["joints_3d"][:, 0]

        def refine(output: NetworkOutput) -> DMAOutput | None:
            if rows.numel() == 0:
                return None
            index = rows.tolist()
            sub = NetworkOutput(hand=_select(output.hand, rows), object=_select(output.object, rows))
            camera = crop["K"][rows]
            control_points = crop["object_control_points"][rows]
            # The box fallback fits the box the labelled mesh projects to (what a detector finds).
            mesh = (targets.vertices[rows] + root[rows, None]).double()
            projected = mesh @ camera.double().transpose(1, 2)
            projected = projected[..., :2] / projected[..., 2:].clamp_min(1e-6)
            fit_box = torch.cat([projected.amin(1), projected.amax(1)], dim=1)
            coarse = solve_crop_geometry(sub, hand_box[rows].cpu().numpy(), object_box[rows].cpu().numpy(),
                                         camera.cpu().numpy(), control_points.cpu().numpy(),
                                         hand_fit_box=fit_box.cpu().numpy())
            like = sub.hand.vertices
            translation = torch.as_tensor(coarse.hand_translation, dtype=like.dtype, device=like.device)
            translation = torch.where(torch.as_tensor(coarse.hand_solved, device=like.device)[:, None], translation,
                                      root[rows].to(like.dtype))
            solved = torch.as_tensor(coarse.object_solved, device=like.device)
            rotation = torch.where(solved[:, None, None],
                                   torch.as_tensor(np.nan_to_num(coarse.object_rotation), dtype=like.dtype,
                                                   device=like.device), crop["object_rotation"][rows].to(like.dtype))
            position = torch.where(solved[:, None], torch.as_tensor(np.nan_to_num(coarse.object_translation),
                                                                    dtype=like.dtype, device=like.device),
                                   crop["object_translation"][rows].to(like.dtype))
            graphs = [self._graph(crop["object_name"][i], crop["object_control_points"][i].cpu().numpy(),
                                  crop["sample_id"][i]) for i in index]
            full = output.refinement
            features = None if full is None else replace(full, p2=None if full.p2 is None else full.p2[rows],
                                                         global_feature=full.global_feature[rows])
            sub.refinement = features
            return refine_crops(self.network, crop["image"][rows], sub, camera.to(like.dtype),
                                sub.hand.vertices + translation[:, None], rotation, position, graphs)

        def loss(refined: DMAOutput) -> LossOutput:
            weight = crop["weight"][rows]
            truth = DMATargets(hand_vertices=targets.vertices[rows] + root[rows, None],
                               hand_joints=crop["joints_3d"][rows], object_rotation=crop["object_rotation"][rows],
                               object_translation=crop["object_translation"][rows],
                               has_hand=weight, has_object=weight)
            out = self.loss_fn(_float32_refined(refined), truth)
            return LossOutput(total=out.total, terms={f"dma_{k}": v for k, v in out.terms.items()})

        return refine, loss


def _select(output: Any, rows: torch.Tensor) -> Any:
    """An output dataclass restricted to the batch rows ``rows`` (absent optional outputs stay None)."""
    return replace(output, **{f.name: getattr(output, f.name)[rows] for f in fields(output)
                              if getattr(output, f.name) is not None})


def _float32_refined(refined: DMAOutput) -> DMAOutput:
    return replace(refined, **{name: getattr(refined, name).float() for name in
                               ("hand_vertices", "hand_joints", "object_rotation", "object_translation",
                                "object_vertices")})


# ----------------------------------------------------------------------------- checkpoints


def _rng_state(device: torch.device) -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint's dict (tensors on CPU); clear errors for a missing or foreign file."""
    try:
        return read_training_checkpoint(path)
    except ValueError as exc:
        raise CheckpointMismatchError(str(exc)) from exc


def check_model_config(checkpoint: dict[str, Any], path: str | Path, expected: ModelConfig, source: str) -> None:
    """Refuse a checkpoint whose model config differs from ``expected`` (naming both and the differences)."""
    try:  # through the dataclass, so options added since the checkpoint compare at their defaults
        saved = to_dict(from_dict(ModelConfig, checkpoint["model_config"], f"checkpoint '{path}': model_config"))
    except ConfigError as exc:
        raise CheckpointMismatchError(str(exc)) from None
    wanted = to_dict(expected)
    if saved == wanted:
        return
    differing = sorted(_differences(saved, wanted))
    raise CheckpointMismatchError(
        f"checkpoint '{path}' was trained with model config '{saved.get('name', '?')}', but this run uses "
        f"'{expected.name}' ({source}); they differ in {', '.join(differing[:8])}")


def load_initial_weights(network: HOINet, path: str | Path, source: str, exclude: Sequence[str] = ()) -> None:
    """Start ``network`` from the weights of checkpoint ``path`` (a training or released checkpoint).

    The checkpoint must have been made for the same model config, or for the same model
    without the optional parts this network adds: a refinement stage (the released
    hfl_r18 for an hfl_r18_dma run) or a hand-mask head (SemiHand's cross-modal term on
    a checkpoint trained without it). Every other weight is loaded; an added part keeps
    its initialisation (the refiner's zero output layers make the refined model start as
    the first stage). Weights under an ``exclude`` prefix are not loaded either.
    """
    data = read_checkpoint(path)
    if exclude:
        unknown = [p for p in exclude if not any(k.startswith(p) for k in network.state_dict())]
        if unknown:
            raise ConfigError(f"init_exclude: {unknown} match no weight of model '{network.config.name}'")
        data = {**data, "model": {k: v for k, v in data["model"].items() if not k.startswith(tuple(exclude))}}
    expected = network.config
    try:
        saved = from_dict(ModelConfig, data["model_config"], f"checkpoint '{path}': model_config")
    except ConfigError as exc:
        raise CheckpointMismatchError(str(exc)) from None
    added = _added_parts(saved, expected)
    if not added and not exclude:
        check_model_config(data, path, expected, source)
        network.load_state_dict(data["model"])
        return
    added.update({f"'{prefix}' (init_exclude)": prefix for prefix in exclude})
    # Compare with the added parts' settings taken from this network: only they may differ.
    aligned = replace(saved, name=expected.name, refine=expected.refine, dma=expected.dma,
                      hand_head=replace(saved.hand_head, mask_head=expected.hand_head.mask_head))
    differing = _differences(to_dict(aligned), to_dict(expected))
    if differing:
        raise CheckpointMismatchError(
            f"checkpoint '{path}' (model '{saved.name}') cannot start '{expected.name}' ({source}) with only "
            f"{', '.join(added)} added: they also differ in {', '.join(sorted(differing)[:8])}")
    result = network.load_state_dict(data["model"], strict=False)
    missing = [key for key in result.missing_keys if not key.startswith(tuple(added.values()))]
    if missing or result.unexpected_keys:
        raise CheckpointMismatchError(
            f"checkpoint '{path}': its weights do not fit '{expected.name}' ({source}): "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(result.unexpected_keys)} unexpected "
            f"(e.g. {result.unexpected_keys[:3]})")
    log.info("initialised %s from %s (model '%s'); untrained: %s", expected.name, path, saved.name,
             ", ".join(added))


def _added_parts(saved: ModelConfig, expected: ModelConfig) -> dict[str, str]:
    """Optional parts ``expected`` has and ``saved`` lacks: {description: state-dict key prefix}."""
    added = {}
    if expected.refine != "none" and saved.refine == "none":
        added["the refiner"] = REFINER_PREFIX
    if expected.hand_head.mask_head and not saved.hand_head.mask_head:
        added["the hand-mask head"] = MASK_HEAD_PREFIX
    return added


def freeze_first_stage(network: HOINet) -> None:
    """Stop gradients to every weight but the refiner's (``trainable: refiner``)."""
    if network.refiner is None:
        raise ValueError(f"freeze_first_stage: model '{network.config.name}' has no refiner (refine: none)")
    for name, parameter in network.named_parameters():
        parameter.requires_grad_(name.startswith(REFINER_PREFIX))


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".") or "<root>"]


# ----------------------------------------------------------------------------- trainer


@dataclass
class StepResult:
    """One optimiser step's losses (detached, float) and how many samples it used (all ranks)."""

    total: float
    terms: dict[str, float]
    samples: int


class Trainer:
    """Builds model, data and optimiser from a :class:`TrainConfig` and runs (or resumes) training.

    Args:
        config: the run; ``config.output_dir`` is the run folder.
        context: this process's rank and device (:func:`init_distributed`); default single-process.
        config_source: where the config came from, for messages.
    """

    def __init__(self, config: TrainConfig, context: DistributedContext | None = None,
                 config_source: str = "the training config") -> None:
        self.config = config
        self.context = context or DistributedContext(0, 1, 0, torch.device("cpu"))
        self.config_source = config_source
        self.run_dir = Path(config.output_dir)
        self.checkpoint_path = self.run_dir / LAST_CHECKPOINT
        self.model_config = config.model_config()
        if config.cpu_threads:
            torch.set_num_threads(config.cpu_threads)
        _seed_everything(config.seed)
        device = self.context.device
        self.network = HOINet(self.model_config)
        if config.imagenet_weights is not None:
            self.network.load_imagenet_weights(config.imagenet_weights)
        if config.init_checkpoint is not None:
            load_initial_weights(self.network, config.init_checkpoint, config_source, config.init_exclude)
        self.frozen_first_stage = config.trainable == "refiner"
        self.stage = config.stage
        if self.frozen_first_stage:
            freeze_first_stage(self.network)
        if self.stage == "detector":  # the detection head alone learns; the rest runs as at inference
            for name, parameter in self.network.named_parameters():
                parameter.requires_grad_(name.startswith(DETECTION_HEAD_PREFIX))
        self.network.to(device)
        self.module: nn.Module = TrainingModule(self.network, config.stage)
        self.refinement = (RefinementTraining(self.network, training_object_library(config))
                           if self.network.refiner is not None else None)
        weights = config.loss.weights
        self.train_detection = ((weights.detection_heatmap + weights.detection_size + weights.detection_offset) > 0
                                and not self.frozen_first_stage and self.stage != "heatmaps")
        if self.context.distributed:
            # A batch without a refinable crop leaves the refiner unused.
            self.module = DistributedDataParallel(
                self.module, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=not self.train_detection or self.refinement is not None)
        augmenter = Augmenter(config.augmentation, seed=config.seed, train=True)
        names = list(config.datasets)
        self.dataset = ConcatExamples([build_dataset(n, config.datasets[n], augmenter, self.model_config.input_size,
                                                     config.detection_augmentation) for n in names])
        self.sampler = EpochSampler([len(p) for p in self.dataset.parts],
                                    [config.datasets[n].weight for n in names], config.batch_size, config.seed,
                                    self.context.rank, self.context.world_size)
        optimizer_class = torch.optim.AdamW if config.optimizer.kind == "adamw" else torch.optim.Adam
        self.optimizer = optimizer_class([p for p in self.network.parameters() if p.requires_grad],
                                         lr=config.optimizer.lr, weight_decay=config.optimizer.weight_decay)
        # Per-step schedules (warm-up, cosine) step after every optimiser step; the others per epoch.
        self.per_step_schedule = config.optimizer.schedule == "cosine" or config.optimizer.warmup_steps > 0
        if config.semihand.pseudo_labels.enabled:  # SemiHand's rounds: one drop at the middle round
            rounds = config.semihand.schedule
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda epoch: rounds.learning_rate_at(
                min(epoch // rounds.epochs_per_round + 1, rounds.rounds)) / rounds.learning_rate)
        elif self.per_step_schedule:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda step: config.optimizer.lr_factor(step, self.total_steps))
        else:
            self.scheduler = torch.optim.lr_scheduler.StepLR(
                self.optimizer, step_size=config.optimizer.lr_step_epochs, gamma=config.optimizer.lr_decay)
        cuda = device.type == "cuda"
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp) if cuda else None
        self.scaler = torch.amp.GradScaler(device.type, enabled=cuda and config.amp == "fp16")
        if not cuda and config.amp != "off":
            log.info("amp '%s' applies on CUDA only; training in fp32 on %s", config.amp, device)

        self.semihand, self.semihand_rounds = self._build_semihand(names)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.writer = None

    def _build_semihand(self, names: Sequence[str]) -> tuple[SemiHandTraining | None, PseudoLabelRounds | None]:
        """SemiHand's per-step terms and pseudo-label rounds; (None, None) with every switch off."""
        semihand = self.config.semihand
        if not (semihand.pseudo_labels.enabled or semihand.view_consistency.enabled or semihand.cross_modal.enabled):
            return None, None
        training = SemiHandTraining(semihand, self.network.hand_decoder.hand_model, self.model_config.input_size,
                                    self.config.loss.weights.joints2d, self.model_config.hand_head.mask_head)
        # With the pseudo-label term, SemiHand's diversity augmentation makes every crop of the run.
        crops = semihand.augmentation.diversity if semihand.pseudo_labels.enabled else self.config.augmentation
        if training.needs_circle_radii:
            labelled = [part.base for name, part in zip(names, self.dataset.parts)
                        if self.config.datasets[name].kind != "pseudo"]
            training.fit_circle_radii(labelled_mask_samples(labelled, semihand.cross_modal.fit_frames), crops)
        if not semihand.pseudo_labels.enabled:
            return training, None
        pseudo = [part.base for name, part in zip(names, self.dataset.parts) if self.config.datasets[name].kind ==
                  "pseudo"]
        rounds = PseudoLabelRounds(training, pseudo, crops, self.config.batch_size)
        for name, part in zip(names, self.dataset.parts):  # section 3.4's split, per round for pseudo-labels
            confident = rounds.confident if self.config.datasets[name].kind == "pseudo" else None
            part.builder.augmenter = DiversityAugmenter(semihand.augmentation, self.config.seed, confident)
        return training, rounds

    # -- bookkeeping

    @property
    def total_steps(self) -> int:
        per_epoch = self.sampler.batches_per_epoch()
        steps = per_epoch * self.config.epochs
        return min(steps, self.config.max_steps) if self.config.max_steps else steps

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model_config": to_dict(self.model_config),
            "model": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": _rng_state(self.context.device),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "world_size": self.context.world_size,
            "train_config": to_dict(self.config),
            "code_version": code_version(),
        }

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/last.pt`` atomically (rank 0); refuses a state with non-finite weights."""
        if not self.context.is_main:
            return None
        bad = [n for n, p in self.network.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise NonFiniteLossError(f"step {self.step}: parameters {bad[:3]} are not finite; not overwriting the "
                                     f"last good checkpoint {self.checkpoint_path}")
        state = self.checkpoint_state()
        atomic_save_with(self.checkpoint_path, lambda f: torch.save(state, f))
        log.info("step %d: checkpoint %s", self.step, self.checkpoint_path)
        return self.checkpoint_path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore everything :meth:`checkpoint_state` saved, after checking the model config."""
        data = read_checkpoint(path)
        check_model_config(data, path, self.model_config, self.config_source)
        device = self.context.device
        self.network.load_state_dict(data["model"])
        self.optimizer.load_state_dict(data["optimizer"])
        self.scheduler.load_state_dict(data["scheduler"])
        self.scaler.load_state_dict(data["scaler"])
        _set_rng_state(data["rng"], device)
        self.step, self.epoch, self.batch_in_epoch = int(data["step"]), int(data["epoch"]), int(data["batch_in_epoch"])
        if int(data.get("world_size", 1)) != self.context.world_size:
            log.warning("checkpoint was written by %s process(es), resuming with %s: the data order from here on "
                        "differs from the uninterrupted run", data.get("world_size"), self.context.world_size)
        log.info("resumed from %s at step %d (epoch %d, batch %d)", path, self.step, self.epoch, self.batch_in_epoch)

    def write_run_files(self) -> None:
        """Save the resolved config and code version in the run folder (rank 0)."""
        if not self.context.is_main:
            return
        atomic_write_text(self.run_dir / CONFIG_FILE, yaml.safe_dump(to_dict(self.config), sort_keys=False))
        atomic_write_text(self.run_dir / CODE_VERSION_FILE, code_version() + "\n")

    # -- training

    def train_step(self, batch: TrainingBatch) -> tuple[StepResult, NetworkOutput | HandHeatmaps | None]:
        """Forward, loss, non-finite check, backward and optimiser step for one batch."""
        if self.stage != "full":
            return self._partial_step(batch)
        device = self.context.device
        crop = _to_device(batch.crop, device)
        targets, hand_box, object_box = build_hand_object_targets(
            crop, batch.object_loss.to(device), self.network.hand_decoder.hand_model, self.model_config.roi.output_size)
        frame = batch.frame.to(device, non_blocking=True) if self.train_detection else None
        autocast = (torch.autocast(device.type, dtype=self.autocast_dtype) if self.autocast_dtype is not None
                    else nullcontext())
        refine, refinement_loss = (self.refinement.step(crop, targets, hand_box, object_box)
                                   if self.refinement is not None else (None, None))
        view = (self.semihand.perturbed_view(crop["image"], hand_box, object_box)
                if self.semihand is not None and self.semihand.uses_perturbed_view else None)
        image, hand_in, object_in = ((crop["image"], hand_box, object_box) if view is None else
                                     (torch.cat([crop["image"], view.image]), torch.cat([hand_box, view.hand_box]),
                                      torch.cat([object_box, view.object_box])))
        self.module.train()
        if self.frozen_first_stage:  # the first stage runs as at inference; only the refiner trains
            self.network.eval()
            self.network.refiner.train()
        with autocast:
            output, detection, refined = self.module(image, hand_in, object_in, frame, refine)
        perturbed = None
        if view is not None:  # one forward over both views; split them
            first, rest = slice(0, len(batch)), slice(len(batch), None)
            perturbed = _float32(_select(output.hand, rest))
            output = replace(output, hand=_select(output.hand, first), object=_select(output.object, first))
        output32 = NetworkOutput(hand=_float32(output.hand), object=_float32(output.object))
        semihand = None
        if self.semihand is not None:
            semihand = self.semihand.step_losses(
                crop, output32.hand.joints2d, output32.hand.joints3d, hand_box, view,
                None if perturbed is None else perturbed.joints2d, None if perturbed is None else perturbed.joints3d,
                mask_logits=output32.hand.mask_logits,
                perturbed_mask_logits=None if perturbed is None else perturbed.mask_logits)
            targets = drop_hand_supervision(targets, semihand.pseudo_rows)
        losses = hand_object_loss(output32.hand, output32.object, targets, self.config.loss.at_step(self.step))
        # A frozen first stage's terms are logged (its error on the training crops) but not trained.
        total = torch.zeros((), device=device) if self.frozen_first_stage else losses.total
        terms = dict(losses.terms)
        if semihand is not None:
            total = total + semihand.loss.total
            terms.update(semihand.loss.terms)
        if refined is not None:
            dma = refinement_loss(refined)
            total = total + dma.total
            terms.update(dma.terms)
        elif self.frozen_first_stage:  # no refinable crop: a zero loss on the refiner keeps backward uniform
            total = total + sum(p.sum() for p in self.network.refiner.parameters()) * 0.0
        if detection is not None:
            det = detection_loss(_float32(detection), _to_device(batch.detection, device), self.config.loss)
            total = total + det.total
            terms.update(det.terms)
        return self._optimise(total, terms, len(batch)), output

    def _partial_step(self, batch: TrainingBatch) -> tuple[StepResult, HandHeatmaps | None]:
        """A step of the "heatmaps" or "detector" stage (:attr:`TrainConfig.stage`)."""
        device = self.context.device
        self.module.train()
        if self.stage == "heatmaps":
            crop = _to_device(batch.crop, device)
            hand_box = _safe_boxes(crop["hand_box"])
            has_hand2d = crop["has_hand_2d"] & crop["has_hand_box"] & _valid_boxes(crop["hand_box"])
            targets = HandObjectTargets(joints2d=points_to_box_units(crop["joints_2d"], hand_box),
                                        has_hand2d=has_hand2d.float() * crop["weight"])
            output, _, _ = self.module(crop["image"], hand_box, hand_box, None)
            terms = hand_2d_losses(output.heatmaps.float(), output.joints2d.float(), targets, self.config.loss)
        else:  # the frozen backbone runs as at inference (BatchNorm on its running statistics)
            self.network.eval()
            self.network.detection_head.train()
            _, detection, _ = self.module(None, None, None, batch.frame.to(device, non_blocking=True))
            losses = detection_loss(_float32(detection), _to_device(batch.detection, device), self.config.loss)
            return self._optimise(losses.total, losses.terms, len(batch)), None
        total = torch.stack(list(terms.values())).sum()
        return self._optimise(total, {k: v.detach() for k, v in terms.items()}, len(batch)), output

    def _optimise(self, total: torch.Tensor, terms: dict[str, torch.Tensor], batch_size: int) -> StepResult:
        """Non-finite check, backward, clipping and the optimiser (and per-step schedule) step."""
        if not _all_finite(total, self.context):
            bad = {k: float(v) for k, v in terms.items() if not math.isfinite(float(v))}
            kept = (f"the last good checkpoint {self.checkpoint_path} (step "
                    f"{_checkpoint_step(self.checkpoint_path)}) is kept" if self.checkpoint_path.is_file()
                    else "no checkpoint had been written yet")
            value = float(total.detach())
            raise NonFiniteLossError(f"loss is {value} at step {self.step + 1} (epoch {self.epoch}, batch "
                                     f"{self.batch_in_epoch}; non-finite terms {bad or 'on another rank'}); "
                                     f"training stopped and {kept}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.config.optimizer.grad_clip_norm > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.network.parameters(), self.config.optimizer.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.per_step_schedule:
            self.scheduler.step()
        return StepResult(total=float(total.detach()), terms={k: float(v) for k, v in terms.items()},
                          samples=batch_size * self.context.world_size)

    def _loader(self) -> DataLoader:
        self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
        self.dataset.set_epoch(self.epoch)
        workers = self.config.workers
        return DataLoader(self.dataset, batch_size=self.config.batch_size, sampler=self.sampler, drop_last=True,
                          num_workers=workers, collate_fn=collate_examples,
                          pin_memory=self.context.device.type == "cuda", persistent_workers=False,
                          # Own generator: creating the iterator must not consume the global RNG.
                          generator=torch.Generator().manual_seed(self.config.seed + self.epoch),
                          prefetch_factor=2 if workers else None)

    def fit(self, resume: bool = False) -> int:
        """Train to the configured length; returns the final step. ``resume`` continues from last.pt."""
        if resume:
            self.load_checkpoint(self.checkpoint_path)
        else:
            self.write_run_files()
        if self.finished:
            log.info("run %s already finished at step %d", self.run_dir, self.step)
            return self.step
        main = self.context.is_main
        if main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step)
        progress = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step", disable=not main)
        sums: dict[str, float] = defaultdict(float)
        window_steps, window_samples, window_start = 0, 0, time.perf_counter()
        try:
            while not self.finished:
                self._start_semihand_round()
                for batch in self._loader():
                    result, output = self.train_step(batch)
                    self.step += 1
                    self.batch_in_epoch += 1
                    progress.update(1)
                    for key, value in result.terms.items():
                        sums[key] += value
                    sums["total"] += result.total
                    window_steps += 1
                    window_samples += result.samples
                    if self.step % self.config.log_interval == 0 or self.finished:
                        elapsed = max(time.perf_counter() - window_start, 1e-9)
                        self._log_scalars({k: v / window_steps for k, v in sums.items()}, window_samples / elapsed)
                        progress.set_postfix(loss=f"{sums['total'] / window_steps:.4g}")
                        sums.clear()
                        window_steps, window_samples, window_start = 0, 0, time.perf_counter()
                    if self.config.image_interval and self.step % self.config.image_interval == 0:
                        self._log_images(batch, output)
                    if self.step % self.config.checkpoint_interval == 0 or self.finished:
                        self.save_checkpoint()
                    if self.finished:
                        break
                if self.batch_in_epoch >= self.sampler.batches_per_epoch():
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    if not self.per_step_schedule:
                        self.scheduler.step()
            self._sync_buffers()
        finally:
            progress.close()
            if self.writer is not None:
                self.writer.close()
                self.writer = None
        return self.step

    def _start_semihand_round(self) -> None:
        """Algorithm 1, lines 4 and 6: update and select the pseudo-labels when a round begins (or on resume)."""
        if self.semihand_rounds is None:
            return
        round_number = self.epoch // self.config.semihand.schedule.epochs_per_round + 1
        if round_number != self.semihand_rounds.round_number:
            summary = self.semihand_rounds.start_round(self.network, round_number, self.context.device)
            if self.writer is not None:
                self.writer.add_scalar("semihand/selected_fraction", summary.kept / max(summary.samples, 1), self.step)
                self.writer.add_scalar("semihand/mean_confidence", summary.mean_confidence, self.step)

    def _sync_buffers(self) -> None:
        """Give every replica rank 0's BatchNorm statistics (DDP syncs them only at the next forward), so
        all processes end with the checkpointed state."""
        if self.context.distributed:
            for buffer in self.network.buffers():
                dist.broadcast(buffer, src=0)

    def _log_scalars(self, means: dict[str, float], samples_per_s: float) -> None:
        if not self.context.is_main:
            return
        lr = self.optimizer.param_groups[0]["lr"]
        log.info("step %d epoch %d: loss %.5g, lr %.3g, %.2f samples/s", self.step, self.epoch, means["total"], lr,
                 samples_per_s)
        if self.writer is not None:
            for key, value in means.items():
                self.writer.add_scalar(f"loss/{key}", value, self.step)
            self.writer.add_scalar("train/lr", lr, self.step)
            self.writer.add_scalar("train/samples_per_s", samples_per_s, self.step)
            self.writer.add_scalar("train/epoch", self.epoch, self.step)

    def _log_images(self, batch: TrainingBatch, output: NetworkOutput | HandHeatmaps | None) -> None:
        if self.writer is None or output is None:  # the detector stage has no crop output
            return
        joints2d = output.joints2d if isinstance(output, HandHeatmaps) else output.hand.joints2d
        self.writer.add_image("train/crops_truth_vs_prediction", crop_grid(batch.crop, joints2d), self.step,
                              dataformats="HWC")


def crop_grid(crop: dict[str, Any], joints2d: torch.Tensor, count: int = IMAGE_GRID_SAMPLES) -> np.ndarray:
    """Rows of [ground-truth joints | predicted joints] drawn on the training crops (uint8 HWC)."""
    rows = []
    n = min(count, crop["image"].shape[0])
    hand_box = _safe_boxes(crop["hand_box"][:n].cpu())
    predicted = box_units_to_points(joints2d[:n].detach().float().cpu(), hand_box).numpy()
    for i in range(n):
        image = (crop["image"][i].cpu().permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
        truth = draw_hand_skeleton(image, crop["joints_2d"][i].cpu().numpy()) if crop["has_hand_2d"][i] else image
        rows.append(np.concatenate([truth, draw_hand_skeleton(image, predicted[i])], axis=1))
    return np.concatenate(rows, axis=0)


def _checkpoint_step(path: Path) -> str:
    try:
        return str(torch.load(path, map_location="cpu", weights_only=True)["step"])
    except Exception:  # a message helper: never mask the real error
        return "?"


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- command


def resolve_run_config(config_path: str | Path | None, overrides: Sequence[str], resume: bool,
                       out_dir: str | Path | None) -> tuple[TrainConfig, str]:
    """The run's config: from ``config_path`` + overrides, or on resume from the run folder's config.yaml.

    On resume a config given again must resolve to the saved one (other than the output folder).
    """
    overrides = list(overrides)
    if out_dir is not None:
        overrides.append(f"output_dir={Path(out_dir)}")
    if resume:
        if out_dir is None:
            if config_path is None:
                raise ConfigError("--resume needs the run folder (--out) or the config that names it")
            out_dir = load_config(TrainConfig, config_path, overrides).output_dir
        saved_path = Path(out_dir) / CONFIG_FILE
        if not saved_path.is_file():
            raise FileNotFoundError(f"--resume: '{saved_path}' not found; is '{out_dir}' a training run folder?")
        saved = load_config(TrainConfig, saved_path, [f"output_dir={Path(out_dir)}"])
        if config_path is not None:
            given = load_config(TrainConfig, config_path, overrides)
            differing = _differences(to_dict(saved), to_dict(given))
            if differing:
                raise ConfigError(f"--resume: '{config_path}' differs from the run's saved config '{saved_path}' in "
                                  f"{', '.join(differing[:8])}; resume without --config or start a new --out")
        return saved, str(saved_path)
    if config_path is None:
        raise ConfigError("fit: a training config is needed (--config config/train/....yaml)")
    config = load_config(TrainConfig, config_path, overrides)
    if (Path(config.output_dir) / LAST_CHECKPOINT).exists():
        raise FileExistsError(f"'{config.output_dir}' already holds a training run; pass --resume to continue it "
                              "or choose another --out")
    return config, str(config_path)


def fit_main(config_path: str | Path | None, overrides: Sequence[str] = (), resume: bool = False,
             out_dir: str | Path | None = None) -> int:
    """``hoi-train fit``: train (or resume) under torchrun or as one process.

    Returns 0 when training finished and :data:`NON_FINITE_EXIT_CODE` when a non-finite
    loss stopped it (the message, naming the step and the kept checkpoint, is logged).
    """
    config, source = resolve_run_config(config_path, overrides, resume, out_dir)
    context = init_distributed(config.device)
    try:
        trainer = Trainer(config, context, source)
        try:
            step = trainer.fit(resume=resume)
        except NonFiniteLossError as exc:
            log.error("%s", exc)
            return NON_FINITE_EXIT_CODE
        if context.is_main:
            log.info("training finished at step %d; checkpoint %s", step, trainer.checkpoint_path)
    finally:
        if context.distributed and dist.is_initialized():
            dist.destroy_process_group()
    return 0

