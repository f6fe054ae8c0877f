"""Dense mutual attention between the hand graph and the object graph (Wang et al. 2023, eq. 13-17).

Every hand node attends over all object nodes and every object node over all hand
nodes, single head, scaled dot product as in the authors' code:

    A_o->h = softmax(Q_h K_o^T / sqrt(F))   (B, N_h, N_o), rows sum to one
    A_h->o = softmax(Q_o K_h^T / sqrt(F))   (B, N_o, N_h)

Queries, keys and values come from per-node linear maps (DMA's 1x1 1D convolutions)
of layer-normalised node features. The attended features are fused into each node by
a fusion unit on the concatenation ``h (+) A V`` (eq. 17; here a linear layer and ReLU,
one per graph), added to the node as a residual (not in the paper; it keeps a stack of
blocks trainable from scratch). No positional terms are involved, so the layer is
equivariant to permutations of either graph's nodes; the graphs' structure enters
through the node features and the graph convolutions around it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class AttentionMaps:
    """The two attention maps of one layer; each row sums to one."""

    object_to_hand: torch.Tensor  # (B, N_h, N_o): row i = weights of all object nodes for hand node i
    hand_to_object: torch.Tensor  # (B, N_o, N_h): row j = weights of all hand nodes for object node j


@dataclass
class MutualAttentionOutput:
    """Updated node features and the layer's attention maps (kept for inspection and tests)."""

    hand: torch.Tensor  # (B, N_h, D)
    object: torch.Tensor  # (B, N_o, D)
    maps: AttentionMaps


class MutualAttention(nn.Module):
    """One mutual attention layer over (B, N_h, dim) hand and (B, N_o, dim) object node features."""

    def __init__(self, dim: int, attention_dim: int = 64) -> None:
        super().__init__()
        if dim <= 0 or attention_dim <= 0:
            raise ValueError(f"MutualAttention: dims must be positive, got dim={dim}, attention_dim={attention_dim}")
        self.scale = 1.0 / math.sqrt(attention_dim)
        self.hand_norm = nn.LayerNorm(dim)
        self.object_norm = nn.LayerNorm(dim)
        self.hand_qkv = nn.Linear(dim, 3 * attention_dim)
        self.object_qkv = nn.Linear(dim, 3 * attention_dim)
        self.hand_fusion = nn.Sequential(nn.Linear(dim + attention_dim, dim), nn.ReLU(inplace=True))
        self.object_fusion = nn.Sequential(nn.Linear(dim + attention_dim, dim), nn.ReLU(inplace=True))

    def forward(self, hand: torch.Tensor, obj: torch.Tensor) -> MutualAttentionOutput:
        if not torch.jit.is_tracing() and (hand.dim() != 3 or obj.dim() != 3 or hand.shape[0] != obj.shape[0]
                                           or hand.shape[-1] != obj.shape[-1]):
            raise ValueError(f"MutualAttention: expected hand (B, N_h, D) and object (B, N_o, D) node features, "
                             f"got {tuple(hand.shape)} and {tuple(obj.shape)}")
        hand_normed = self.hand_norm(hand)
        obj_normed = self.object_norm(obj)
        q_h, k_h, v_h = self.hand_qkv(hand_normed).chunk(3, dim=-1)
        q_o, k_o, v_o = self.object_qkv(obj_normed).chunk(3, dim=-1)
        object_to_hand = torch.softmax(torch.matmul(q_h, k_o.transpose(1, 2)) * self.scale, dim=-1)
        hand_to_object = torch.softmax(torch.matmul(q_o, k_h.transpose(1, 2)) * self.scale, dim=-1)
        from_object = torch.matmul(object_to_hand, v_o)  # (B, N_h, F)
        from_hand = torch.matmul(hand_to_object, v_h)  # (B, N_o, F)
        hand = hand + self.hand_fusion(torch.cat([hand_normed, from_object], dim=-1))
        obj = obj + self.object_fusion(torch.cat([obj_normed, from_hand], dim=-1))
        return MutualAttentionOutput(hand=hand, object=obj,
                                     maps=AttentionMaps(object_to_hand=object_to_hand, hand_to_object=hand_to_object))
