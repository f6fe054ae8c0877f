"""Training losses of the DMA refinement stage (Wang et al. 2023, section 3.4).

Terms, each a per-sample value averaged over the samples that carry the label
(``has_hand`` / ``has_object`` flags, as in ``hoi_training.losses``), then weighted by
:class:`~hoi_perception.models.dma.refiner.DMALossWeights` (paper: 1, 1, 1, 10, 1):

* ``mesh``: mean over the 778 vertices of the L1 norm of the refined-minus-true vertex
  (metres), eq. 18's refined-hand term;
* ``edge``: mean over the edges of every MANO face of | |e_pred| - |e_true| | (eq. 19);
* ``normal``: mean over the edges of every face of |<e_pred / |e_pred|, n_true>| with
  n_true the true face's unit normal (eq. 20);
* ``object_pose``: ||q_pred - q_true||_2 + ||t_pred - t_true||_2 (eq. 21), quaternions
  compared up to sign (q and -q are one rotation), translation in metres;
* ``joints``: mean over the 21 joints of the L1 norm of the joint error (eq. 22's
  refined term), joints regressed from the refined mesh.

Out of scope here: the silhouette and finger-rendering terms (weights 100 in the paper;
they need a differentiable renderer) and the terms on the coarse meshes and the
auxiliary joint estimator, which belong to the first stage's own losses
(``hoi_training.losses``). Edge and normal terms on the object are omitted because its
refined mesh is the rigidly posed template, whose edges those terms cannot change.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hoi_perception.geometry.rotations import matrix_to_quaternion
from hoi_perception.models.dma.graph import HandGraph
from hoi_perception.models.dma.refiner import DMALossWeights, DMAOutput
from hoi_training.losses import LossOutput, check_target_shape, masked_mean, sample_flags


@dataclass
class DMATargets:
    """True hand and object in the same (camera) frame as the refiner's input, metres.

    hand_vertices (B, 778, 3); hand_joints (B, 21, 3) HO-3D order; object_rotation
    (B, 3, 3); object_translation (B, 3). A ``None`` label means no sample has it;
    has_hand / has_object (B,) 0/1 flags select samples (None: all).
    """

    hand_vertices: torch.Tensor | None = None
    hand_joints: torch.Tensor | None = None
    object_rotation: torch.Tensor | None = None
    object_translation: torch.Tensor | None = None
    has_hand: torch.Tensor | None = None
    has_object: torch.Tensor | None = None


def face_edge_vectors(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Edge vectors (B, F, 3, 3) of every face (v1 - v0, v2 - v1, v0 - v2) of (B, V, 3) vertices."""
    corners = vertices[:, faces]  # (B, F, 3, 3)
    return corners.roll(-1, dims=2) - corners


def edge_length_loss(pred_vertices: torch.Tensor, true_vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Per-sample mean | |e_pred| - |e_true| | over the edges of every face (B,)."""
    pred = face_edge_vectors(pred_vertices, faces).norm(dim=-1)
    true = face_edge_vectors(true_vertices, faces).norm(dim=-1)
    return (pred - true).abs().mean((1, 2))


def normal_consistency_loss(pred_vertices: torch.Tensor, true_vertices: torch.Tensor, faces: torch.Tensor
                            ) -> torch.Tensor:
    """Per-sample mean |<unit predicted edge, true unit face normal>| over every face's edges (B,)."""
    pred_edges = face_edge_vectors(pred_vertices, faces)
    pred_edges = pred_edges / pred_edges.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    true_edges = face_edge_vectors(true_vertices, faces)
    normal = torch.linalg.cross(true_edges[..., 0, :], -true_edges[..., 2, :], dim=-1)  # (v1-v0) x (v2-v0)
    normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (pred_edges * normal.unsqueeze(2)).sum(-1).abs().mean((1, 2))


def quaternion_distance(pred_rotation: torch.Tensor, true_rotation: torch.Tensor) -> torch.Tensor:
    """||q_pred - q_true||_2 with the sign of q_true chosen to minimise it: (...,)."""
    q_pred = matrix_to_quaternion(pred_rotation)
    q_true = matrix_to_quaternion(true_rotation)
    return torch.minimum((q_pred - q_true).norm(dim=-1), (q_pred + q_true).norm(dim=-1))


class DMALoss(nn.Module):
    """Weighted refinement loss (module docstring); holds the hand faces for edge and normal terms."""

    def __init__(self, hand_graph: HandGraph, weights: DMALossWeights | None = None) -> None:
        super().__init__()
        self.weights = weights or DMALossWeights()
        self.weights.validate()
        self.register_buffer("hand_faces", torch.as_tensor(hand_graph.faces, dtype=torch.long), persistent=False)

    def forward(self, output: DMAOutput, targets: DMATargets) -> LossOutput:
        w = self.weights
        ref = output.hand_vertices
        batch = ref.shape[0]
        terms: dict[str, torch.Tensor] = {}
        hand_flags = sample_flags(targets.has_hand, batch, ref, "targets.has_hand")
        if targets.hand_vertices is not None:
            check_target_shape(output.hand_vertices, targets.hand_vertices, "hand_vertices")
            true = targets.hand_vertices.to(ref.dtype)
            per_sample = (output.hand_vertices - true).abs().sum(-1).mean(-1)
            terms["mesh"] = w.mesh * masked_mean(per_sample, hand_flags)
            terms["edge"] = w.edge * masked_mean(edge_length_loss(output.hand_vertices, true, self.hand_faces),
                                                  hand_flags)
            terms["normal"] = w.normal * masked_mean(
                normal_consistency_loss(output.hand_vertices, true, self.hand_faces), hand_flags)
        if targets.hand_joints is not None:
            check_target_shape(output.hand_joints, targets.hand_joints, "hand_joints")
            per_sample = (output.hand_joints - targets.hand_joints.to(ref.dtype)).abs().sum(-1).mean(-1)
            terms["joints"] = w.joints * masked_mean(per_sample, hand_flags)
        if (targets.object_rotation is None) != (targets.object_translation is None):
            raise ValueError("targets: give both object_rotation and object_translation, or neither")
        if targets.object_rotation is not None:
            check_target_shape(output.object_rotation, targets.object_rotation, "object_rotation")
            check_target_shape(output.object_translation, targets.object_translation, "object_translation")
            object_flags = sample_flags(targets.has_object, batch, ref, "targets.has_object")
            per_sample = (quaternion_distance(output.object_rotation, targets.object_rotation.to(ref.dtype))
                          + (output.object_translation - targets.object_translation.to(ref.dtype)).norm(dim=-1))
            terms["object_pose"] = w.object_pose * masked_mean(per_sample, object_flags)
        if not terms:
            raise ValueError("targets: no labels given (expected hand_vertices, hand_joints or the object pose)")
        total = torch.stack(list(terms.values())).sum()
        return LossOutput(total=total, terms={k: v.detach() for k, v in terms.items()})
