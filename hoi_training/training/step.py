"""What one training step passes around: the module both entry points run in, its inputs and outputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from hoi_perception.models.detection_head import DetectionHeadOutput
from hoi_perception.models.dma.refiner import DMAOutput
from hoi_perception.models.network import HandHeatmaps, HOINet, NetworkOutput
from hoi_perception.models.object_head import box_units_to_points
from hoi_perception.render.overlay import draw_hand_skeleton
from hoi_training.losses import HandObjectTargets, LossOutput
from hoi_training.training.batches import safe_boxes

IMAGE_GRID_SAMPLES = 4


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


@dataclass
class SideNegatives:
    """Crops of the batch mirrored against their side (``TrainConfig.side_negatives``): the crop
    images (N, 3, S, S) and their hand and object boxes (N, 4), crop pixels."""

    image: torch.Tensor
    hand_box: torch.Tensor
    object_box: torch.Tensor

    @classmethod
    def mirror(cls, image: torch.Tensor, hand_box: torch.Tensor, object_box: torch.Tensor) -> SideNegatives:
        """The crops flipped left-right, boxes x -> S - 1 - x as ``geometry.mirror.mirror_boxes``."""
        last = image.shape[-1] - 1

        def flipped(box: torch.Tensor) -> torch.Tensor:
            return torch.stack([last - box[:, 2], box[:, 1], last - box[:, 0], box[:, 3]], dim=1)

        return cls(image.flip(-1), flipped(hand_box), flipped(object_box))


@dataclass
class StepInputs:
    """One batch on the device: crops, targets and boxes, the frames (when detection trains), SemiHand's
    perturbed view and the refinement closure and loss (when those objectives are on)."""

    crop: dict[str, Any]
    targets: HandObjectTargets
    hand_box: torch.Tensor
    object_box: torch.Tensor
    frame: torch.Tensor | None
    view: Any
    refine: Callable[[NetworkOutput], DMAOutput | None] | None
    refinement_loss: Callable[[DMAOutput], LossOutput] | None
    rows: int
    side_negatives: SideNegatives | None = None


@dataclass
class StepOutputs:
    """The forward's outputs: the crop network's (as computed, and in float32), the perturbed view's hand,
    the detection head's and the refiner's (None where not run)."""

    network: NetworkOutput | None = None
    network32: NetworkOutput | None = None
    perturbed: Any = None
    detection: DetectionHeadOutput | None = None
    refined: DMAOutput | None = None
    negative_side_logit: torch.Tensor | None = None  # the side negatives' rows (float32)


def sum_losses(parts: Sequence[LossOutput], device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The total of several losses and all their logged terms."""
    total = torch.zeros((), device=device)
    terms: dict[str, torch.Tensor] = {}
    for part in parts:
        total = total + part.total
        terms.update(part.terms)
    return total, terms


@dataclass
class StepResult:
    """One optimiser step's losses (detached, float) and how many samples it used (all ranks)."""

    total: float
    terms: dict[str, float]
    samples: int


def crop_grid(crop: dict[str, Any], joints2d: torch.Tensor, count: int = IMAGE_GRID_SAMPLES) -> np.ndarray:
    """Rows of [ground-truth joints | predicted joints] drawn on the training crops (uint8 HWC)."""
    rows = []
    n = min(count, crop["image"].shape[0])
    hand_box = safe_boxes(crop["hand_box"][:n].cpu())
    predicted = box_units_to_points(joints2d[:n].detach().float().cpu(), hand_box).numpy()
    for i in range(n):
        image = (crop["image"][i].cpu().permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
        truth = draw_hand_skeleton(image, crop["joints_2d"][i].cpu().numpy()) if crop["has_hand_2d"][i] else image
        rows.append(np.concatenate([truth, draw_hand_skeleton(image, predicted[i])], axis=1))
    return np.concatenate(rows, axis=0)
