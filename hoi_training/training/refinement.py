"""Training the DMA refinement stage inside a training step (``refine: dma`` models)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

import numpy as np
import torch

from hoi_perception.geometry.mirror import MIRROR_X
from hoi_perception.models.dma.graph import MeshGraph, hand_graph
from hoi_perception.models.dma.refiner import DMAOutput
from hoi_perception.models.network import HOINet, NetworkOutput
from hoi_perception.models.refinement import ObjectGraphCache, refine_crops, solve_crop_geometry
from hoi_perception.objects.models import ObjectLibrary, load_object_library
from hoi_training.dma_losses import DMALoss, DMATargets
from hoi_training.losses import HandObjectTargets, LossOutput
from hoi_training.train_config import TrainConfig

log = logging.getLogger(__name__)

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
            sub = NetworkOutput(hand=select_rows(output.hand, rows), object=select_rows(output.object, rows))
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
            out = self.loss_fn(float32_refined(refined), truth)
            return LossOutput(total=out.total, terms={f"dma_{k}": v for k, v in out.terms.items()})

        return refine, loss


def select_rows(output: Any, rows: torch.Tensor) -> Any:
    """An output dataclass restricted to the batch rows ``rows`` (absent optional outputs stay None)."""
    return replace(output, **{f.name: getattr(output, f.name)[rows] for f in fields(output)
                              if getattr(output, f.name) is not None})


def float32_refined(refined: DMAOutput) -> DMAOutput:
    return replace(refined, **{name: getattr(refined, name).float() for name in
                               ("hand_vertices", "hand_joints", "object_rotation", "object_translation",
                                "object_vertices")})
