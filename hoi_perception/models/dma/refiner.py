"""The DMA refinement stage: coarse hand mesh + coarse object mesh -> refined hand mesh and object pose.

Dense Mutual Attention (Wang et al., ICCV 2023, section 3.3), given the coarse meshes
from any first stage (here: the MANO decoder's mesh and the object template posed by
PnP; in the paper: lixel regressors):

1. **Node features.** Each node gets the backbone features sampled at its projection
   (``features.py``, every level listed in ``feature_strides``), its coarse position,
   its rest-pose template position, and a global image feature. Positions are in the
   camera frame relative to the coarse hand wrist (regressed from the coarse mesh), for
   hand and object nodes alike so their relative placement is kept, and divided by
   ``position_scale`` (0.1 m) to be of order one. The template position is an addition
   to the paper's features: with weights shared across nodes it is what tells a node
   which part of the hand or object it is, which a per-node object pose requires.
   Local and global parts are concatenated and projected to ``hidden_dim`` (computed
   as a sum of the two projections, which is the same linear map).
2. **Blocks.** ``num_blocks`` times: ``gcn_layers`` residual graph convolutions per graph
   (``graph.GraphConv``), then one mutual attention layer (``attention.py``).
3. **Hand output.** Per-vertex offsets; refined mesh = coarse + offsets; joints = the
   MANO joint regressor with HO-3D's fingertip vertices (21, HO-3D order).
4. **Object output.** Every object node i votes for a pose: a rotation correction
   ``dR_i`` (6D, applied in the camera frame to the coarse rotation ``R_c``, which is
   fitted to the coarse mesh with Horn's method) and a displaced position ``y_i`` of its
   own vertex, giving ``R_i = dR_i R_c`` and ``t_i = y_i - R_i p_i`` (``p_i``: template
   position). The refined pose is the SE(3) mean of the votes
   (``geometry.se3_mean``: chordal L2 rotation mean, mean translation).

Both output layers start at zero, so an untrained refiner returns the coarse input.
Everything is static-shape (except batch) and branch-free on data, so the module exports
to ONNX opset 17 (:class:`DMARefinerExport`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import torch
from torch import nn

from hoi_perception.config import ConfigError
from hoi_perception.geometry.rotations import rot6d_to_matrix
from hoi_perception.geometry.se3_mean import fit_rigid_transform, se3_mean
from hoi_perception.models.dma.attention import AttentionMaps, MutualAttention
from hoi_perception.models.dma.features import sample_vertex_features
from hoi_perception.models.dma.graph import DEFAULT_OBJECT_NODES, GraphConv, HandGraph, MeshGraph, NeighbourLists

_IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclass
class DMALossWeights:
    """Weights of the refinement losses (``hoi_training.dma_losses``); 0 disables a term.

    Defaults are the paper's (eq. 25): mesh, edge, normal, joints 1, object pose 10.
    """

    mesh: float = 1.0
    edge: float = 1.0
    normal: float = 1.0
    object_pose: float = 10.0
    joints: float = 1.0

    def validate(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"losses.{f.name}: expected a finite weight >= 0, got {value}")


@dataclass
class DMAConfig:
    """The refinement network and the losses that train it (``refine: dma`` model configs)."""

    hidden_dim: int = 64  # node feature width (the authors' code uses 64)
    attention_dim: int = 64  # query/key/value width of the single attention head
    num_blocks: int = 2  # (graph convolutions + mutual attention) blocks
    gcn_layers: int = 2  # graph convolutions per graph in each block
    feature_strides: list[int] = field(default_factory=lambda: [4])  # backbone levels sampled, by stride
    position_scale: float = 0.1  # metres per unit of position inputs and of predicted offsets
    object_nodes: int = DEFAULT_OBJECT_NODES  # object graph size (objects are resampled to it)
    losses: DMALossWeights = field(default_factory=DMALossWeights)

    def validate(self) -> None:
        for name in ("hidden_dim", "attention_dim", "num_blocks", "gcn_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: expected an integer >= 1, got {getattr(self, name)}")
        if not self.feature_strides:
            raise ConfigError("feature_strides: expected at least one backbone level to sample")
        if any(s < 1 for s in self.feature_strides) or len(set(self.feature_strides)) != len(self.feature_strides):
            raise ConfigError(f"feature_strides: expected distinct positive strides, got {self.feature_strides}")
        if not (math.isfinite(self.position_scale) and self.position_scale > 0):
            raise ConfigError(f"position_scale: expected a positive length in metres, got {self.position_scale}")
        if self.object_nodes < 4:
            raise ConfigError(f"object_nodes: expected at least 4, got {self.object_nodes}")
        self.losses.validate()


@dataclass
class DMAOutput:
    """Refined hand and object, camera frame, metres."""

    hand_vertices: torch.Tensor  # (B, 778, 3)
    hand_joints: torch.Tensor  # (B, 21, 3), HO-3D order
    object_rotation: torch.Tensor  # (B, 3, 3), x_cam = R x_obj + t
    object_translation: torch.Tensor  # (B, 3)
    object_vertices: torch.Tensor  # (B, N_o, 3): the object graph's template under the refined pose
    attention: tuple[AttentionMaps, ...]  # one per block

    def flat(self) -> dict[str, torch.Tensor]:
        """The pose outputs by name in :data:`EXPORT_OUTPUT_NAMES` order (attention maps left out)."""
        return {name: getattr(self, name) for name in EXPORT_OUTPUT_NAMES}


EXPORT_OUTPUT_NAMES: tuple[str, ...] = ("hand_vertices", "hand_joints", "object_rotation", "object_translation",
                                        "object_vertices")


class _Block(nn.Module):
    def __init__(self, config: DMAConfig, hand_adjacency: NeighbourLists, object_adjacency: NeighbourLists) -> None:
        super().__init__()
        dim = config.hidden_dim
        self.hand_gcn = nn.ModuleList(GraphConv(hand_adjacency, dim) for _ in range(config.gcn_layers))
        self.object_gcn = nn.ModuleList(GraphConv(object_adjacency, dim) for _ in range(config.gcn_layers))
        self.attention = MutualAttention(dim, config.attention_dim)

    def forward(self, hand: torch.Tensor, obj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, AttentionMaps]:
        for layer in self.hand_gcn:
            hand = layer(hand)
        for layer in self.object_gcn:
            obj = layer(obj)
        out = self.attention(hand, obj)
        return out.hand, out.object, out.maps


class DMARefiner(nn.Module):
    """Refines a coarse hand mesh and a coarse object mesh (see the module docstring).

    Args:
        config: the network's configuration.
        hand_graph: ``graph.hand_graph(HandModel(side))``.
        object_graph: ``graph.object_graph(model.vertices, model.faces, config.object_nodes)``.
        feature_channels: channels of the feature maps at ``config.feature_strides``, in that order.
        global_feature_dim: width of the global feature (e.g. ``features.pool_global_feature``).
    """

    hand_template: torch.Tensor  # buffer, registered in __init__
    joint_regressor: torch.Tensor  # buffer, registered in __init__
    object_template: torch.Tensor  # buffer, registered in __init__
    identity_6d: torch.Tensor  # buffer, registered in __init__

    def __init__(self, config: DMAConfig, hand_graph: HandGraph, object_graph: MeshGraph,
                 feature_channels: Sequence[int], global_feature_dim: int) -> None:
        super().__init__()
        config.validate()
        if len(feature_channels) != len(config.feature_strides) or any(c < 1 for c in feature_channels):
            raise ValueError(f"feature_channels: expected {len(config.feature_strides)} positive channel counts "
                             f"(one per stride {config.feature_strides}), got {list(feature_channels)}")
        if global_feature_dim < 1:
            raise ValueError(f"global_feature_dim: expected >= 1, got {global_feature_dim}")
        self.config = config
        self.feature_channels = tuple(int(c) for c in feature_channels)
        self.global_feature_dim = int(global_feature_dim)
        self.num_hand_nodes = hand_graph.num_nodes
        self.register_buffer("hand_template", torch.as_tensor(hand_graph.template, dtype=torch.float32),
                             persistent=False)
        self.register_buffer("joint_regressor", torch.as_tensor(hand_graph.joint_regressor, dtype=torch.float32),
                             persistent=False)
        self.register_buffer("object_template", torch.empty(0, 3), persistent=False)
        self._check_object_graph(object_graph)
        self.object_template = torch.as_tensor(object_graph.template, dtype=torch.float32)

        dim = config.hidden_dim
        local_dim = sum(self.feature_channels) + 6  # sampled features, coarse position, template position
        self.hand_input = nn.Linear(local_dim, dim)
        self.object_input = nn.Linear(local_dim, dim)
        self.global_input = nn.Linear(self.global_feature_dim, dim, bias=False)
        hand_adjacency = hand_graph.neighbour_lists()
        object_adjacency = object_graph.neighbour_lists()
        self.blocks = nn.ModuleList(_Block(config, hand_adjacency, object_adjacency) for _ in range(config.num_blocks))
        self.hand_output = nn.Linear(dim, 3)
        self.object_output = nn.Linear(dim, 9)  # 6D rotation correction, position offset
        for layer in (self.hand_output, self.object_output):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.register_buffer("identity_6d", torch.tensor(_IDENTITY_6D), persistent=False)

    @property
    def num_object_nodes(self) -> int:
        return self.object_template.shape[0]

    def _check_object_graph(self, graph: MeshGraph) -> None:
        if graph.num_nodes != self.config.object_nodes:
            raise ValueError(f"object_graph: has {graph.num_nodes} nodes but config.object_nodes is "
                             f"{self.config.object_nodes}; build it with object_graph(..., num_nodes=object_nodes)")

    def set_object_graph(self, graph: MeshGraph) -> None:
        """Switch to another object's graph; learned weights are shared by all objects."""
        self._check_object_graph(graph)
        adjacency = graph.neighbour_lists()
        self.object_template = torch.as_tensor(graph.template, dtype=self.object_template.dtype,
                                               device=self.object_template.device)
        for block in self.blocks:
            assert isinstance(block, _Block)
            for layer in block.object_gcn:
                assert isinstance(layer, GraphConv)
                layer.set_adjacency(adjacency)

    def forward(self, feature_maps: Sequence[torch.Tensor], strides: Sequence[int], camera_matrix: torch.Tensor,
                hand_vertices: torch.Tensor, object_vertices: torch.Tensor, global_feature: torch.Tensor
                ) -> DMAOutput:
        """Refine one batch.

        feature_maps: backbone maps (B, C, H, W), any number of levels; strides: crop
        pixels per cell of each (the levels in ``config.feature_strides`` are used);
        camera_matrix: (B, 3, 3) crop camera matrix; hand_vertices (B, 778, 3) and
        object_vertices (B, N_o, 3): coarse meshes in the camera frame (metres), the
        object's in the order of the object graph's nodes; global_feature (B, G).
        """
        selected = self._select_levels(feature_maps, strides)
        self._check_inputs(selected, camera_matrix, hand_vertices, object_vertices, global_feature)
        scale = self.config.position_scale
        batch = hand_vertices.shape[0]
        wrist = torch.matmul(self.joint_regressor[0:1], hand_vertices)  # (B, 1, 3)
        level_strides = list(self.config.feature_strides)

        def node_inputs(vertices: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
            sampled = sample_vertex_features(selected, level_strides, camera_matrix, vertices)
            rest = (template / scale).unsqueeze(0).expand(batch, -1, -1)
            return torch.cat([sampled, (vertices - wrist) / scale, rest], dim=-1)

        global_term = self.global_input(global_feature).unsqueeze(1)
        hand = self.hand_input(node_inputs(hand_vertices, self.hand_template)) + global_term
        obj = self.object_input(node_inputs(object_vertices, self.object_template)) + global_term
        maps = []
        for block in self.blocks:
            hand, obj, block_maps = block(hand, obj)
            maps.append(block_maps)

        refined_hand = hand_vertices + self.hand_output(hand) * scale
        joints = torch.matmul(self.joint_regressor, refined_hand)

        template = self.object_template.unsqueeze(0).expand(batch, -1, -1)
        coarse_rotation, _ = fit_rigid_transform(template, object_vertices)
        votes = self.object_output(obj)
        node_rotations = torch.matmul(rot6d_to_matrix(votes[..., :6] + self.identity_6d), coarse_rotation.unsqueeze(1))
        node_positions = object_vertices + votes[..., 6:] * scale
        node_translations = node_positions - torch.matmul(node_rotations, template.unsqueeze(-1)).squeeze(-1)
        rotation, translation = se3_mean(node_rotations, node_translations)
        refined_object = torch.matmul(template, rotation.transpose(1, 2)) + translation.unsqueeze(1)
        return DMAOutput(hand_vertices=refined_hand, hand_joints=joints, object_rotation=rotation,
                         object_translation=translation, object_vertices=refined_object, attention=tuple(maps))

    def _select_levels(self, feature_maps: Sequence[torch.Tensor], strides: Sequence[int]) -> list[torch.Tensor]:
        if len(feature_maps) != len(strides):
            raise ValueError(f"feature_maps and strides: expected one stride per map, got {len(feature_maps)} maps "
                             f"and {len(strides)} strides")
        by_stride = {int(s): f for s, f in zip(strides, feature_maps)}
        missing = [s for s in self.config.feature_strides if s not in by_stride]
        if missing:
            raise ValueError(f"feature_maps: no level with stride {missing} (config.feature_strides "
                             f"{self.config.feature_strides}); got strides {list(strides)}")
        return [by_stride[s] for s in self.config.feature_strides]

    def _check_inputs(self, selected: list[torch.Tensor], camera_matrix: torch.Tensor, hand_vertices: torch.Tensor,
                      object_vertices: torch.Tensor, global_feature: torch.Tensor) -> None:
        if torch.jit.is_tracing():  # shapes are symbolic while exporting; checked in eager runs
            return
        if hand_vertices.dim() != 3 or tuple(hand_vertices.shape[1:]) != (self.num_hand_nodes, 3):
            raise ValueError(f"hand_vertices: expected (B, {self.num_hand_nodes}, 3) camera-frame vertices, "
                             f"got {tuple(hand_vertices.shape)}")
        batch = hand_vertices.shape[0]
        if tuple(object_vertices.shape) != (batch, self.num_object_nodes, 3):
            raise ValueError(f"object_vertices: expected ({batch}, {self.num_object_nodes}, 3) coarse object graph "
                             f"nodes in the camera frame, got {tuple(object_vertices.shape)}")
        if tuple(camera_matrix.shape) != (batch, 3, 3):
            raise ValueError(f"camera_matrix: expected ({batch}, 3, 3), got {tuple(camera_matrix.shape)}")
        if tuple(global_feature.shape) != (batch, self.global_feature_dim):
            raise ValueError(f"global_feature: expected ({batch}, {self.global_feature_dim}), "
                             f"got {tuple(global_feature.shape)}")
        for stride, channels, features in zip(self.config.feature_strides, self.feature_channels, selected):
            if features.dim() != 4 or features.shape[0] != batch or features.shape[1] != channels:
                raise ValueError(f"feature map at stride {stride}: expected ({batch}, {channels}, H, W), "
                                 f"got {tuple(features.shape)}")


class DMARefinerExport(nn.Module):
    """ONNX view of :class:`DMARefiner`: inputs are the feature maps at ``config.feature_strides``
    (in that order), then camera_matrix, coarse_hand_vertices, coarse_object_vertices,
    global_feature; outputs are :data:`EXPORT_OUTPUT_NAMES`."""

    output_names = EXPORT_OUTPUT_NAMES

    def __init__(self, refiner: DMARefiner) -> None:
        super().__init__()
        self.refiner = refiner
        self.strides = list(refiner.config.feature_strides)
        self.input_names = tuple(f"features_stride{s}" for s in self.strides) + (
            "camera_matrix", "coarse_hand_vertices", "coarse_object_vertices", "global_feature")

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        levels = len(self.strides)
        if len(inputs) != levels + 4:
            raise ValueError(f"DMARefinerExport: expected {levels + 4} inputs {list(self.input_names)}, "
                             f"got {len(inputs)}")
        camera_matrix, hand_vertices, object_vertices, global_feature = inputs[levels:]
        out = self.refiner(list(inputs[:levels]), self.strides, camera_matrix, hand_vertices, object_vertices,
                           global_feature)
        return tuple(out.flat().values())
