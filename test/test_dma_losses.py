"""DMA refinement losses (hoi_training.dma_losses)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.spatial.transform import Rotation

from hoi_perception.hand_model.mano import HandModel
from hoi_perception.models.dma.attention import AttentionMaps
from hoi_perception.models.dma.graph import hand_graph
from hoi_perception.models.dma.refiner import DMALossWeights, DMAOutput
from hoi_training.dma_losses import DMALoss, DMATargets, edge_length_loss, normal_consistency_loss, quaternion_distance


@pytest.fixture(scope="module")
def setup():
    model = HandModel("right")
    graph = hand_graph(model)
    with torch.no_grad():
        hand = model(torch.tensor([[0.1, 0.2, -0.3], [0.0, 0.5, 0.2]]), torch.randn(2, 45,
                     generator=torch.Generator().manual_seed(0)) * 0.2, transl=torch.tensor([[0.0, 0.0, 0.5]] * 2))
    joints = torch.as_tensor(graph.joint_regressor, dtype=torch.float32) @ hand.vertices
    rotation = torch.tensor(Rotation.random(2, random_state=0).as_matrix(), dtype=torch.float32)
    translation = torch.tensor([[0.05, 0.0, 0.5], [0.0, 0.05, 0.45]])
    targets = DMATargets(hand_vertices=hand.vertices, hand_joints=joints, object_rotation=rotation,
                         object_translation=translation)
    return graph, targets


def _output(vertices, joints, rotation, translation) -> DMAOutput:
    return DMAOutput(hand_vertices=vertices, hand_joints=joints, object_rotation=rotation,
                     object_translation=translation, object_vertices=torch.zeros(vertices.shape[0], 4, 3),
                     attention=(AttentionMaps(torch.zeros(1), torch.zeros(1)),))


def test_default_weights_are_the_papers():
    w = DMALossWeights()
    assert (w.mesh, w.edge, w.normal, w.object_pose, w.joints) == (1.0, 1.0, 1.0, 10.0, 1.0)


def test_losses_vanish_at_the_truth(setup):
    graph, t = setup
    out = DMALoss(graph)(_output(t.hand_vertices, t.hand_joints, t.object_rotation, t.object_translation), t)
    assert set(out.terms) == {"mesh", "edge", "normal", "joints", "object_pose"}
    # The normal term is |<edge, normal>| of the true mesh against itself: zero up to rounding.
    assert all(v.item() < 1e-6 for v in out.terms.values()), out.terms
    assert out.total.item() < 1e-5


def test_translated_hand_costs_only_mesh_and_joints(setup):
    graph, t = setup
    shift = torch.tensor([0.002, -0.001, 0.003])
    out = DMALoss(graph)(_output(t.hand_vertices + shift, t.hand_joints + shift, t.object_rotation,
                                 t.object_translation), t)
    assert out.terms["mesh"].item() == pytest.approx(0.006, rel=1e-4)  # L1 norm per vertex
    assert out.terms["joints"].item() == pytest.approx(0.006, rel=1e-4)
    assert out.terms["edge"].item() < 1e-7 and out.terms["normal"].item() < 1e-5


def test_edge_and_normal_terms_on_known_deformations(setup):
    graph, t = setup
    faces = torch.as_tensor(graph.faces)
    true = t.hand_vertices.double()
    centre = true.mean(1, keepdim=True)
    scaled = centre + 1.1 * (true - centre)
    edges = (true[:, faces].roll(-1, dims=2) - true[:, faces]).norm(dim=-1).mean((1, 2))
    assert torch.allclose(edge_length_loss(scaled, true, faces), 0.1 * edges, rtol=1e-9)
    assert normal_consistency_loss(scaled, true, faces).max() < 1e-9  # scaling keeps faces' planes
    # Moving one vertex 3 mm in a random direction changes its edges' lengths and tilts them
    # out of their faces' planes.
    bumped = true.clone()
    bumped[:, 100] += 0.003 * torch.nn.functional.normalize(torch.randn(3, dtype=torch.float64), dim=0)
    assert normal_consistency_loss(bumped, true, faces).min() > 1e-5
    assert edge_length_loss(bumped, true, faces).min() > 1e-7


def test_object_pose_term_is_quaternion_and_translation_distance(setup):
    graph, t = setup
    angle = math.radians(10.0)
    delta = torch.tensor(Rotation.from_rotvec([0.0, 0.0, angle]).as_matrix(), dtype=torch.float32)
    rotated = delta @ t.object_rotation
    out = DMALoss(graph, DMALossWeights(object_pose=1.0))(
        _output(t.hand_vertices, t.hand_joints, rotated, t.object_translation + torch.tensor([0.0, 0.004, 0.0])), t)
    # |q1 - q2| for unit quaternions at relative angle a is 2 sin(a / 4).
    assert out.terms["object_pose"].item() == pytest.approx(2 * math.sin(angle / 4) + 0.004, rel=1e-3)
    # Just below and just above a half-turn, the w >= 0 quaternions have opposite signs;
    # compared up to sign they are 0.2 degrees apart, not ~2 apart.
    near_half_turns = torch.tensor(Rotation.from_rotvec([[0, 0, math.radians(179.9)], [0, 0, math.radians(-179.9)]])
                                   .as_matrix(), dtype=torch.float64)
    distance = quaternion_distance(near_half_turns[:1], near_half_turns[1:]).item()
    assert distance == pytest.approx(2 * math.sin(math.radians(0.2) / 4), rel=1e-4)


def test_flags_select_samples_and_weights_scale(setup):
    graph, t = setup
    vertices = t.hand_vertices.clone()
    vertices[1] += 0.01  # only sample 1 is wrong
    targets = DMATargets(hand_vertices=t.hand_vertices, has_hand=torch.tensor([1.0, 0.0]))
    out = DMALoss(graph, DMALossWeights(mesh=2.0))(_output(vertices, t.hand_joints, t.object_rotation,
                                                           t.object_translation), targets)
    assert out.terms["mesh"].item() < 1e-7
    targets.has_hand = None
    out = DMALoss(graph, DMALossWeights(mesh=2.0))(_output(vertices, t.hand_joints, t.object_rotation,
                                                           t.object_translation), targets)
    assert out.terms["mesh"].item() == pytest.approx(2.0 * 0.03 / 2, rel=1e-4)
    assert "object_pose" not in out.terms


def test_gradients_and_errors(setup):
    graph, t = setup
    vertices = (t.hand_vertices + 0.001).requires_grad_(True)
    out = DMALoss(graph)(_output(vertices, t.hand_joints, t.object_rotation, t.object_translation), t)
    out.total.backward()
    assert torch.isfinite(vertices.grad).all() and vertices.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="hand_vertices"):
        DMALoss(graph)(_output(t.hand_vertices, t.hand_joints, t.object_rotation, t.object_translation),
                       DMATargets(hand_vertices=t.hand_vertices[:, :10]))
    with pytest.raises(ValueError, match="both object_rotation and object_translation"):
        DMALoss(graph)(_output(t.hand_vertices, t.hand_joints, t.object_rotation, t.object_translation),
                       DMATargets(object_rotation=t.object_rotation))
    with pytest.raises(ValueError, match="no labels"):
        DMALoss(graph)(_output(t.hand_vertices, t.hand_joints, t.object_rotation, t.object_translation),
                       DMATargets())
