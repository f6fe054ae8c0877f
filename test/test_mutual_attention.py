"""Dense mutual attention between hand and object nodes (hoi_perception.models.dma.attention)."""

from __future__ import annotations

import pytest
import torch

from hoi_perception.models.dma.attention import MutualAttention


@pytest.fixture
def layer():
    torch.manual_seed(0)
    return MutualAttention(dim=16, attention_dim=8).eval()


def _nodes(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 30, 16, generator=g), torch.randn(2, 20, 16, generator=g)


def test_attention_rows_are_distributions(layer):
    hand, obj = _nodes()
    out = layer(hand, obj)
    assert out.hand.shape == hand.shape and out.object.shape == obj.shape
    assert out.maps.object_to_hand.shape == (2, 30, 20)
    assert out.maps.hand_to_object.shape == (2, 20, 30)
    for attention in (out.maps.object_to_hand, out.maps.hand_to_object):
        assert torch.all(attention >= 0)
        assert torch.allclose(attention.sum(-1), torch.ones(1), atol=1e-6)
        assert attention.std() > 1e-3  # not trivially uniform


def test_attention_is_scaled_dot_product(layer):
    hand, obj = _nodes()
    out = layer(hand, obj)
    q_h, _, _ = layer.hand_qkv(layer.hand_norm(hand)).chunk(3, dim=-1)
    _, k_o, _ = layer.object_qkv(layer.object_norm(obj)).chunk(3, dim=-1)
    expected = torch.softmax(q_h @ k_o.transpose(1, 2) / 8 ** 0.5, dim=-1)
    assert torch.allclose(out.maps.object_to_hand, expected, atol=1e-6)


def test_permuting_hand_nodes_permutes_hand_outputs_only(layer):
    hand, obj = _nodes()
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(3))
    out = layer(hand, obj)
    permuted = layer(hand[:, perm], obj)
    assert torch.allclose(permuted.hand, out.hand[:, perm], atol=1e-5)
    assert torch.allclose(permuted.object, out.object, atol=1e-5)
    assert torch.allclose(permuted.maps.object_to_hand, out.maps.object_to_hand[:, perm], atol=1e-6)
    assert torch.allclose(permuted.maps.hand_to_object, out.maps.hand_to_object[:, :, perm], atol=1e-6)


def test_permuting_object_nodes_permutes_object_outputs_only(layer):
    hand, obj = _nodes()
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(4))
    out = layer(hand, obj)
    permuted = layer(hand, obj[:, perm])
    assert torch.allclose(permuted.object, out.object[:, perm], atol=1e-5)
    assert torch.allclose(permuted.hand, out.hand, atol=1e-5)
    assert torch.allclose(permuted.maps.hand_to_object, out.maps.hand_to_object[:, perm], atol=1e-6)
    assert torch.allclose(permuted.maps.object_to_hand, out.maps.object_to_hand[:, :, perm], atol=1e-6)


def test_each_graph_is_updated_from_the_other(layer):
    hand, obj = _nodes()
    out = layer(hand, obj)
    other = layer(hand, obj + torch.randn_like(obj))
    assert (other.hand - out.hand).abs().max() > 1e-3  # hand nodes read the object nodes
    changed_hand = layer(hand + torch.randn_like(hand), obj)
    assert (changed_hand.object - out.object).abs().max() > 1e-3
    # Gradients reach both graphs' inputs through the attention maps.
    hand = hand.clone().requires_grad_(True)
    obj = obj.clone().requires_grad_(True)
    layer(hand, obj).hand.sum().backward()
    assert obj.grad.abs().sum() > 0


def test_bad_shapes_are_rejected(layer):
    with pytest.raises(ValueError, match="node features"):
        layer(torch.zeros(2, 30, 16), torch.zeros(3, 20, 16))
    with pytest.raises(ValueError, match="dims must be positive"):
        MutualAttention(0)
