"""Interaction modules: shapes, attention normalisation, stopped gradients, residual structure."""

from __future__ import annotations

import pytest
import torch

from hoi_perception.models.interaction import (
    AttentionBlock,
    ContextualReasoning,
    HandToObjectEnhancement,
    HarmoniousInteraction,
    ObjectToHandEnhancement,
)

B, C, S = 2, 16, 6


def _rois(requires_grad: bool = False, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(B, C, S, S, generator=generator).requires_grad_(requires_grad) for _ in range(4)]


def test_attention_weights_are_normalised_per_query():
    torch.manual_seed(0)
    block = AttentionBlock(C, num_heads=4)
    query = torch.randn(B, C, S, S)
    context = torch.randn(B, C, 3, 5)  # key/value maps may have another size
    weights = block.attention_weights(query, context)
    assert weights.shape == (B, 4, S * S, 15)
    assert torch.all(weights >= 0)
    assert torch.allclose(weights.sum(dim=-1), torch.ones(B, 4, S * S), atol=1e-6)
    assert block(query, context).shape == query.shape


def test_attention_block_matches_explicit_single_head_formula():
    torch.manual_seed(1)
    block = AttentionBlock(C, num_heads=1, mlp_ratio=2.0)
    query, context = torch.randn(1, C, 2, 3), torch.randn(1, C, 4, 1)
    q_tokens, kv_tokens = query.flatten(2)[0].T, context.flatten(2)[0].T  # (N, C)

    def linear(conv, tokens):
        return tokens @ conv.weight[:, :, 0, 0].T + conv.bias

    attn = torch.softmax(linear(block.query, q_tokens) @ linear(block.key, kv_tokens).T / C ** 0.5, dim=-1)
    y = q_tokens + linear(block.out_proj, attn @ linear(block.value, kv_tokens))
    normed = torch.nn.functional.layer_norm(y, (C,), block.norm.norm.weight, block.norm.norm.bias)
    hidden = torch.nn.functional.gelu(linear(block.mlp[0], normed))
    expected = y + linear(block.mlp[2], hidden)
    assert block.mlp[0].out_channels == 2 * C
    assert torch.allclose(block(query, context)[0].flatten(1).T, expected, atol=1e-5)


def test_heads_must_divide_dim():
    with pytest.raises(ValueError, match="divisible"):
        AttentionBlock(10, num_heads=4)


@pytest.mark.parametrize("query", ["object", "hand", "both"])
def test_contextual_reasoning_enhances_only_the_queried_rois(query):
    torch.manual_seed(0)
    module = ContextualReasoning(C, query=query, num_heads=1)
    hand, obj, inter, _ = _rois()
    out = module(hand, obj, inter)
    assert out.hand.shape == out.object.shape == (B, C, S, S)
    assert (out.hand is hand) == (query == "object")
    assert (out.object is obj) == (query == "hand")
    if query == "both":
        assert not torch.allclose(out.hand, hand) and not torch.allclose(out.object, obj)


def test_contextual_reasoning_uses_the_intersection_as_context():
    torch.manual_seed(0)
    module = ContextualReasoning(C, query="object", num_heads=2)
    hand, obj, inter, other = _rois()
    assert not torch.allclose(module(hand, obj, inter).object, module(hand, obj, other).object)
    # The hand RoI is not an input of the object query.
    assert torch.equal(module(hand, obj, inter).object, module(other, obj, inter).object)
    with pytest.raises(ValueError, match="query"):
        ContextualReasoning(C, query="intersection")
    with pytest.raises(ValueError, match="same"):
        module(hand, obj, inter[:, :, :3])


def test_object_to_hand_keeps_first_half_and_stops_object_gradient():
    torch.manual_seed(0)
    module = ObjectToHandEnhancement(C, num_heads=4, depth=2)
    assert module.blocks[0].dim == 2 * C and len(module.blocks) == 2
    hand, hand_from_object, _, _ = _rois(requires_grad=True)
    out = module(hand, hand_from_object)
    assert out.shape == (B, C, S, S)
    out.square().sum().backward()
    assert hand.grad is not None and hand.grad.abs().sum() > 0
    assert hand_from_object.grad is None
    # ...but the object stream's view still changes the result (it is an input, not a gradient path).
    with torch.no_grad():
        assert not torch.allclose(module(hand, hand_from_object), module(hand, torch.zeros_like(hand_from_object)))


def test_hand_to_object_stops_hand_stream_gradient():
    torch.manual_seed(0)
    module = HandToObjectEnhancement(C, num_heads=4)
    obj, inter, _, _ = _rois(requires_grad=True)
    out = module(obj, inter)
    assert out.shape == (B, C, S, S)
    out.sum().backward()
    assert obj.grad.abs().sum() > 0
    assert inter.grad is None
    assert module.blocks[0].query.weight.grad.abs().sum() > 0


def test_harmonious_interaction_routes_inputs():
    torch.manual_seed(0)
    module = HarmoniousInteraction(C, num_heads=4)
    hand, hand_from_object, obj, inter = _rois()
    out = module(hand, hand_from_object, obj, inter)
    assert torch.allclose(out.hand, module.object_to_hand(hand, hand_from_object))
    assert torch.allclose(out.object, module.hand_to_object(obj, inter))


def test_zero_context_gives_uniform_attention():
    # A non-overlapping hand/object pair has an all-zero intersection RoI: keys are then the
    # key bias alone, so every query attends uniformly (no NaNs).
    torch.manual_seed(0)
    block = AttentionBlock(C, num_heads=2)
    weights = block.attention_weights(torch.randn(1, C, S, S), torch.zeros(1, C, S, S))
    assert torch.allclose(weights, torch.full_like(weights, 1.0 / (S * S)), atol=1e-6)
