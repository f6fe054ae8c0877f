"""Glue between HOINet and the Dense Mutual Attention refiner (``refine: dma`` model configs).

Where the split goes. The first stage's camera-frame geometry (the hand translation
fitted to the 2D joints, the object pose from PnP on the control-point votes) runs in
NumPy/OpenCV, outside any graph, and the refiner needs its result. So a ``refine: dma``
model runs as two graphs with the solvers between them:

1. **crop graph** (:class:`~hoi_perception.models.network.HOINet` ``forward``): the
   usual outputs plus :class:`RefinementFeatures` - the P2 maps of both streams side by
   side (``refinement_p2``, when stride 4 is sampled) and their spatial mean, the global
   feature (``refinement_global_feature``);
2. geometry outside the graphs: hand translation, PnP;
3. **refine graph** (:class:`RefinementGraph`): the crop (stride-1 level, DMA's
   per-vertex colour) and/or P2, the crop camera matrix, the coarse camera-frame hand
   mesh (root-relative vertices + solved translation), the coarse object pose from PnP
   and the global feature in; the refined hand mesh, its 21 joints and the refined
   object pose out (:data:`REFINED_OUTPUT_NAMES`). The graph poses its object graph's
   template by the coarse pose itself (the refiner's coarse object mesh), so a runtime
   needs no copy of the object graph, and cannot hold one that differs from the graph's.

Frames. Everything the refiner sees is in the *network's* camera frame: for a crop of
the mirrored image (left hands; the network models right hands) that is the mirrored
camera, where the object is the mirror image of its model. Its graph is therefore the
mirrored graph (:func:`mirror_graph`: template x negated, faces re-wound), and a
refine graph is exported per object and per frame parity (``refine`` and
``refine_mirrored``). The crop camera matrix of a crop is ``image_to_crop K`` for the
camera image and ``image_to_crop K X`` (X = diag(-1, 1, 1)) for a mirrored crop
(:func:`crop_camera_matrix`).

The object graph is data of an object, not of the network: HOINet builds its refiner
with :func:`placeholder_object_graph` (checkpoints hold no graph) and callers switch to
the object's graph (:class:`ObjectGraphCache`, ``DMARefiner.set_object_graph``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.spatial import ConvexHull
from torch import nn

from hoi_perception.geometry.hand_translation import HandTranslationConfig, locate_hand
from hoi_perception.geometry.mirror import MIRROR_X
from hoi_perception.geometry.pnp import PnPConfig, solve_control_point_pnp
from hoi_perception.models.config import ModelConfig
from hoi_perception.models.dma.features import pool_global_feature
from hoi_perception.models.dma.graph import MeshGraph, hand_graph, mesh_edges, object_graph
from hoi_perception.models.dma.refiner import DMAOutput, DMARefiner
from hoi_perception.models.object_head import box_units_to_points, votes_to_pixels

if TYPE_CHECKING:
    from hoi_perception.hand_model.mano import HandModel
    from hoi_perception.models.network import HOINet, NetworkOutput
    from hoi_perception.objects.models import ObjectModel

# Graph input name of each level HOINet offers the refiner (``ModelConfig.dma.feature_strides``).
LEVEL_INPUTS: dict[int, str] = {1: "crop", 4: "p2"}
REFINE_GEOMETRY_INPUTS: tuple[str, ...] = ("camera_matrix", "coarse_hand_vertices", "coarse_object_rotation",
                                           "coarse_object_translation", "global_feature")
REFINED_OUTPUT_NAMES: tuple[str, ...] = ("refined_hand_vertices", "refined_hand_joints", "refined_object_rotation",
                                         "refined_object_translation", "refined_object_vertices")
# Crop-graph outputs that carry RefinementFeatures (flatten_outputs names of NetworkOutput.refinement).
REFINEMENT_P2_OUTPUT = "refinement_p2"
REFINEMENT_GLOBAL_OUTPUT = "refinement_global_feature"
# Radius of the placeholder object graph (metres): a mid-sized handheld object.
_PLACEHOLDER_RADIUS = 0.05


@dataclass
class RefinementFeatures:
    """What the crop graph passes on to the refinement stage.

    p2: (B, C, S/4, S/4) both streams' P2 concatenated (one map for the single-stream
    backbone), or None when the refiner does not sample stride 4; global_feature: (B, C),
    the spatial mean of those maps.
    """

    p2: torch.Tensor | None
    global_feature: torch.Tensor


def p2_channels(config: ModelConfig) -> int:
    """Channels of the refiner's P2 level: one P2 per backbone stream."""
    return config.backbone.fpn_channels * (2 if config.backbone.streams == "harmonious" else 1)


def level_channels(config: ModelConfig) -> list[int]:
    """Channels of each level in ``config.dma.feature_strides`` order (stride 1: the RGB crop)."""
    return [3 if stride == 1 else p2_channels(config) for stride in config.dma.feature_strides]


def placeholder_object_graph(num_nodes: int) -> MeshGraph:
    """A sphere of ``num_nodes`` nodes (Fibonacci lattice, convex-hull faces): the graph a refiner
    holds until it is given an object's; it only has to have the configured node count."""
    if num_nodes < 4:
        raise ValueError(f"num_nodes: expected at least 4 object graph nodes, got {num_nodes}")
    i = np.arange(num_nodes) + 0.5
    polar = np.arccos(1.0 - 2.0 * i / num_nodes)
    azimuth = math.pi * (1.0 + math.sqrt(5.0)) * i
    points = _PLACEHOLDER_RADIUS * np.stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar),
                                             np.cos(polar)], axis=1)
    faces = ConvexHull(points).simplices
    return MeshGraph(template=points, faces=faces, edges=mesh_edges(faces))


def build_refiner(config: ModelConfig, hand_model: HandModel) -> DMARefiner:
    """The DMA refiner of a ``refine: dma`` model, on ``hand_model``'s mesh graph and the placeholder object graph."""
    if config.refine != "dma":
        raise ValueError(f"build_refiner: model '{config.name}' has refine: {config.refine}, expected dma")
    return DMARefiner(config.dma, hand_graph(hand_model), placeholder_object_graph(config.dma.object_nodes),
                      feature_channels=level_channels(config), global_feature_dim=p2_channels(config))


def refinement_features(config: ModelConfig, hand_p2: torch.Tensor, object_p2: torch.Tensor) -> RefinementFeatures:
    """:class:`RefinementFeatures` from the backbone's two P2 maps (the same tensor for one stream)."""
    p2 = hand_p2 if hand_p2 is object_p2 else torch.cat((hand_p2, object_p2), 1)
    return RefinementFeatures(p2=p2 if 4 in config.dma.feature_strides else None,
                              global_feature=pool_global_feature([p2]))


def run_refiner(refiner: DMARefiner, crop: torch.Tensor | None, p2: torch.Tensor | None, camera_matrix: torch.Tensor,
                hand_vertices: torch.Tensor, object_vertices: torch.Tensor, global_feature: torch.Tensor
                ) -> DMAOutput:
    """The refiner on HOINet's levels: ``crop`` (B, 3, S, S) is stride 1, ``p2`` stride 4."""
    maps, strides = [], []
    for stride in refiner.config.feature_strides:
        level = crop if stride == 1 else p2
        if level is None:
            raise ValueError(f"run_refiner: the refiner samples stride {stride} but no {LEVEL_INPUTS[stride]} "
                             "was given")
        maps.append(level)
        strides.append(stride)
    return refiner(maps, strides, camera_matrix, hand_vertices, object_vertices, global_feature)


# ----------------------------------------------------------------------------- object graphs


def mirror_graph(graph: MeshGraph) -> MeshGraph:
    """The graph of the mirror-image object (x negated; faces re-wound so normals still point out)."""
    return MeshGraph(template=graph.template @ MIRROR_X, faces=graph.faces[:, ::-1], edges=graph.edges)


@dataclass(frozen=True)
class ObjectGraphs:
    """An object's refiner graph for crops of the camera image and for mirrored crops."""

    name: str
    graph: MeshGraph
    mirrored: MeshGraph

    def select(self, mirrored: bool) -> MeshGraph:
        return self.mirrored if mirrored else self.graph


class ObjectGraphCache:
    """Object graphs by object name, built once (resampling a model takes about half a second)."""

    def __init__(self, num_nodes: int) -> None:
        self.num_nodes = num_nodes
        self._graphs: dict[str, ObjectGraphs] = {}

    def get(self, model: ObjectModel) -> ObjectGraphs:
        if model.name not in self._graphs:
            graph = object_graph(model.vertices, model.faces, self.num_nodes)
            self._graphs[model.name] = ObjectGraphs(model.name, graph, mirror_graph(graph))
        return self._graphs[model.name]


def refiner_for_graph(refiner: DMARefiner, graph: MeshGraph) -> DMARefiner:
    """A copy of ``refiner`` (same weights, own buffers) working on ``graph``, e.g. for one exported graph."""
    copied = copy.deepcopy(refiner)
    copied.set_object_graph(graph)
    return copied


# ----------------------------------------------------------------------------- geometry


def crop_camera_matrix(image_to_crop: np.ndarray, K: np.ndarray, mirrored: bool) -> np.ndarray:  # noqa: N803
    """Camera matrix of a crop in the network's camera frame (see the module docstring)."""
    matrix = np.asarray(image_to_crop, dtype=np.float64) @ np.asarray(K, dtype=np.float64)
    return matrix @ MIRROR_X if mirrored else matrix


def posed_nodes(template: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Graph nodes (N, 3) of the model-frame ``template`` under x_cam = R x + t."""
    return np.asarray(template) @ np.asarray(rotation).T + np.asarray(translation)


def posed_template(refiner: DMARefiner, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """The refiner's object graph nodes (B, N, 3) under poses (B, 3, 3), (B, 3): its coarse object mesh."""
    template = refiner.object_template.to(rotation.dtype)
    return torch.matmul(template, rotation.transpose(1, 2)) + translation.unsqueeze(1)


def mirror_pose(rotation: np.ndarray, translation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A pose in the mirrored camera frame (X R X, X t), for a mirrored model; its own inverse."""
    return MIRROR_X @ rotation @ MIRROR_X, MIRROR_X @ translation


@dataclass
class CoarseCropGeometry:
    """The first stage's camera-frame result per crop, in each crop's (network) camera frame.

    hand_translation (B, 3) and object_rotation (B, 3, 3) / object_translation (B, 3) are
    NaN where their solver failed (``hand_solved`` / ``object_solved`` False, reasons in
    ``hand_failures`` / ``object_failures``, '' where solved).
    """

    hand_translation: np.ndarray
    hand_solved: np.ndarray
    hand_failures: list[str]
    object_rotation: np.ndarray
    object_translation: np.ndarray
    object_solved: np.ndarray
    object_failures: list[str]


def solve_crop_geometry(output: NetworkOutput, hand_box: np.ndarray, object_box: np.ndarray,
                        camera_matrix: np.ndarray, control_points: np.ndarray,
                        translation_config: HandTranslationConfig | None = None,
                        pnp_config: PnPConfig | None = None, hand_fit_box: np.ndarray | None = None
                        ) -> CoarseCropGeometry:
    """Hand translation and object PnP of a batch of crops, in crop pixels with the crop cameras.

    hand_box, object_box (B, 4) crop pixels; camera_matrix (B, 3, 3) crop camera matrices
    (:func:`crop_camera_matrix`); control_points (B, 21, 3) the objects' control points in
    the network frame (mirrored for mirrored crops). This is the geometry the runtime
    does on full frames, done on crops so that training and evaluation see the same
    coarse input the refiner gets at run time. ``hand_fit_box`` (B, 4) is the box the hand's
    mesh projects to, for the translation's box fallback (default ``hand_box``; a rotated
    training crop's hand box is the bounding box of a rotated box, looser than the hand).
    """
    hand, obj = output.hand, output.object
    batch = hand.joints2d.shape[0]
    arrays = {name: np.asarray(value, dtype=np.float64) for name, value in
              (("hand_box", hand_box), ("object_box", object_box), ("camera_matrix", camera_matrix),
               ("control_points", control_points))}
    arrays["hand_fit_box"] = arrays["hand_box"] if hand_fit_box is None else np.asarray(hand_fit_box, np.float64)
    for name, shape in (("hand_box", (batch, 4)), ("object_box", (batch, 4)), ("camera_matrix", (batch, 3, 3)),
                        ("control_points", (batch, 21, 3)), ("hand_fit_box", (batch, 4))):
        if arrays[name].shape != shape:
            raise ValueError(f"solve_crop_geometry: {name} expected shape {shape}, got {arrays[name].shape}")
    joints2d = box_units_to_points(hand.joints2d.detach().double().cpu().numpy(), arrays["hand_box"])
    joints_rel = hand.joints3d.detach().double().cpu().numpy()
    vertices_rel = hand.vertices.detach().double().cpu().numpy()
    confidence = hand.joint_confidence.detach().double().cpu().numpy()
    votes = votes_to_pixels(obj.votes.detach().double().cpu().numpy(), arrays["object_box"])
    vote_confidence = obj.confidence.detach().double().cpu().numpy()
    translation = np.full((batch, 3), np.nan)
    rotation, position = np.full((batch, 3, 3), np.nan), np.full((batch, 3), np.nan)
    hand_failures, object_failures = [""] * batch, [""] * batch
    for i in range(batch):
        K = arrays["camera_matrix"][i]  # noqa: N806
        fit = locate_hand(joints2d[i], joints_rel[i], vertices_rel[i], arrays["hand_fit_box"][i], K, confidence[i],
                          config=translation_config)
        if fit.success:
            translation[i] = fit.translation
        else:
            hand_failures[i] = fit.reason
        pnp = solve_control_point_pnp(votes[i], vote_confidence[i], arrays["control_points"][i], K, pnp_config)
        if pnp.success:
            rotation[i], position[i] = pnp.rotation, pnp.translation
        else:
            object_failures[i] = pnp.reason
    return CoarseCropGeometry(translation, np.isfinite(translation).all(1), hand_failures, rotation, position,
                              np.isfinite(position).all(1), object_failures)


def refine_crops(network: HOINet, crop: torch.Tensor, output: NetworkOutput, camera_matrix: torch.Tensor,
                 hand_vertices: torch.Tensor, object_rotation: torch.Tensor, object_translation: torch.Tensor,
                 graphs: Sequence[MeshGraph]) -> DMAOutput:
    """Run ``network``'s refiner on a batch whose crops may show different objects.

    hand_vertices (B, 778, 3) coarse camera-frame hand mesh; object_rotation (B, 3, 3),
    object_translation (B, 3) the coarse object pose; graphs: each crop's object graph
    (:meth:`ObjectGraphs.select`). Crops sharing a graph run together; the outputs come
    back in batch order. The refiner is left on the last graph used.
    """
    refiner = network.refiner
    if refiner is None:
        raise ValueError(f"refine_crops: model '{network.config.name}' has no refiner (refine: none)")
    features = output.refinement
    if features is None:
        raise ValueError("refine_crops: the network output carries no refinement features")
    batch = crop.shape[0]
    if len(graphs) != batch:
        raise ValueError(f"refine_crops: expected one object graph per crop ({batch}), got {len(graphs)}")
    groups: dict[int, list[int]] = {}
    by_id: dict[int, MeshGraph] = {}
    for i, graph in enumerate(graphs):
        groups.setdefault(id(graph), []).append(i)
        by_id[id(graph)] = graph
    parts: list[tuple[list[int], DMAOutput]] = []
    for key, members in groups.items():
        index = torch.as_tensor(members, device=crop.device)
        refiner.set_object_graph(by_id[key])
        nodes = posed_template(refiner, object_rotation[index], object_translation[index])
        p2 = None if features.p2 is None else features.p2[index]
        parts.append((members, run_refiner(refiner, crop[index], p2, camera_matrix[index], hand_vertices[index],
                                           nodes, features.global_feature[index])))
    if len(parts) == 1:
        return parts[0][1]
    order = torch.as_tensor([i for members, _ in parts for i in members], device=crop.device)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(batch, device=crop.device)

    def gather(name: str) -> torch.Tensor:
        return torch.cat([getattr(out, name) for _, out in parts])[inverse]

    return DMAOutput(hand_vertices=gather("hand_vertices"), hand_joints=gather("hand_joints"),
                     object_rotation=gather("object_rotation"), object_translation=gather("object_translation"),
                     object_vertices=gather("object_vertices"), attention=())


# ----------------------------------------------------------------------------- export


class RefinementGraph(nn.Module):
    """The refine graph for export and engines: keyword inputs :meth:`input_names`, outputs
    :data:`REFINED_OUTPUT_NAMES`. Holds one object graph (build it with :func:`refiner_for_graph`)."""

    def __init__(self, refiner: DMARefiner) -> None:
        super().__init__()
        self.refiner = refiner
        self.input_names = tuple(LEVEL_INPUTS[s] for s in refiner.config.feature_strides) + REFINE_GEOMETRY_INPUTS

    def forward(self, camera_matrix: torch.Tensor, coarse_hand_vertices: torch.Tensor,
                coarse_object_rotation: torch.Tensor, coarse_object_translation: torch.Tensor,
                global_feature: torch.Tensor, crop: torch.Tensor | None = None, p2: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        nodes = posed_template(self.refiner, coarse_object_rotation, coarse_object_translation)
        out = run_refiner(self.refiner, crop, p2, camera_matrix, coarse_hand_vertices, nodes, global_feature)
        return {f"refined_{name}": value for name, value in out.flat().items()}


def refinement_example_inputs(network: HOINet, refiner: DMARefiner, batch: int = 2) -> dict[str, torch.Tensor]:
    """Plausible inputs for tracing the refine graph: a hand and the object 40 cm in front of a
    crop camera, random feature maps. ``batch`` > 1 keeps the tracer from fixing the batch at 1."""
    config = network.config
    size = config.input_size
    generator = torch.Generator().manual_seed(0)
    focal = float(size) * 2.0
    camera = torch.tensor([[focal, 0.0, size / 2], [0.0, focal, size / 2], [0.0, 0.0, 1.0]]).expand(batch, 3, 3)
    centre = torch.tensor([0.0, 0.0, 0.4])
    hand = refiner.hand_template.unsqueeze(0).expand(batch, -1, -1) + centre
    angle = torch.tensor(0.3)
    turn = torch.tensor([[torch.cos(angle), 0.0, torch.sin(angle)], [0.0, 1.0, 0.0],
                         [-torch.sin(angle), 0.0, torch.cos(angle)]])
    inputs: dict[str, torch.Tensor] = {}
    for stride in refiner.config.feature_strides:
        channels = 3 if stride == 1 else p2_channels(config)
        inputs[LEVEL_INPUTS[stride]] = torch.rand(batch, channels, size // stride, size // stride,
                                                  generator=generator)
    inputs.update(camera_matrix=camera.contiguous(), coarse_hand_vertices=hand.contiguous(),
                  coarse_object_rotation=turn.expand(batch, 3, 3).contiguous(),
                  coarse_object_translation=(centre + torch.tensor([0.03, 0.0, 0.02])).expand(batch, 3).contiguous(),
                  global_feature=torch.rand(batch, p2_channels(config), generator=generator))
    return inputs
