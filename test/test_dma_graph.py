"""DMA mesh graphs and graph convolution (hoi_perception.models.dma.graph)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hoi_perception.hand_model.joint_orders import FINGERTIP_VERTEX_IDS
from hoi_perception.hand_model.mano import HandModel
from hoi_perception.models.dma.graph import (
    GraphConv,
    MeshGraph,
    farthest_point_sampling,
    hand_graph,
    mesh_edges,
    neighbour_lists,
    normalized_adjacency,
    object_graph,
)
from hoi_perception.objects import shapes


@pytest.fixture(scope="module")
def hand_model():
    return HandModel("right")


@pytest.fixture(scope="module")
def box_graph():
    box = shapes.box(0.06, 0.04, 0.10)
    return object_graph(box.vertices, box.faces, 150)


def test_mesh_edges_of_two_triangles():
    edges = mesh_edges(np.array([[0, 1, 2], [2, 1, 3]]))
    assert edges.tolist() == [[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]]


def test_normalized_adjacency_of_a_path():
    adjacency = normalized_adjacency(np.array([[0, 1], [1, 2]]), 3, torch.float64).numpy()
    degree = np.array([2.0, 3.0, 2.0])  # with self loops
    a = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=float)
    assert np.allclose(adjacency, a / np.sqrt(degree[:, None] * degree[None, :]))
    assert np.allclose(adjacency, adjacency.T)


def test_hand_graph_matches_mano(hand_model):
    graph = hand_graph(hand_model)
    assert graph.num_nodes == 778 and graph.faces.shape == (1538, 3)
    # MANO is a disc-like surface open at the wrist: V - E + F = 1.
    assert graph.num_nodes - len(graph.edges) + len(graph.faces) == 1
    assert np.allclose(graph.joint_regressor.sum(1), 1.0)
    assert np.array_equal(graph.joint_regressor[16:].argmax(1), FINGERTIP_VERTEX_IDS)
    # The template is the zero pose relative to the wrist, so the regressed wrist is the origin.
    assert np.abs(graph.joint_regressor[0] @ graph.template).max() < 1e-6
    # Regressing posed vertices reproduces the 21 HandModel joints: exactly for the tips,
    # and within the usual ~1 mm of MANO's rest-shape joint regression for the others.
    out = hand_model(torch.tensor([[0.3, -0.2, 0.1]]), torch.full((1, 45), 0.1))
    regressed = graph.joint_regressor @ out.vertices[0].double().numpy()
    error = np.linalg.norm(regressed - out.joints[0].double().numpy(), axis=1)
    assert error[16:].max() < 1e-6
    assert error.max() < 4e-3


def test_object_graph_is_a_closed_uniform_surface_graph(box_graph):
    graph = box_graph
    assert graph.num_nodes == 150
    # Nodes lie on the box surface: one coordinate at its half-extent.
    half = np.array([0.03, 0.02, 0.05])
    on_face = np.isclose(np.abs(graph.template), half, atol=1e-9).any(1)
    inside = (np.abs(graph.template) <= half + 1e-9).all(1)
    assert on_face.all() and inside.all()
    # The clustering triangulates the closed box: Euler characteristic 2, every node connected.
    assert graph.num_nodes - len(graph.edges) + len(graph.faces) == 2
    degree = np.bincount(graph.edges.ravel(), minlength=graph.num_nodes)
    assert degree.min() >= 3 and 5.5 < degree.mean() < 6.5
    lengths = np.linalg.norm(graph.template[graph.edges[:, 0]] - graph.template[graph.edges[:, 1]], axis=1)
    expected = np.sqrt(2 * 0.0248 / (np.sqrt(3) * 150))  # equilateral spacing for the box's area
    assert 0.7 * expected < np.median(lengths) < 1.5 * expected
    assert lengths.max() < 3.0 * np.median(lengths)


def test_object_graph_is_deterministic_and_ignores_split_vertices(box_graph):
    box = shapes.box(0.06, 0.04, 0.10)
    # The same box with every face's vertices duplicated (as meshes split at creases are).
    split_vertices = box.vertices[box.faces].reshape(-1, 3)
    split_faces = np.arange(len(split_vertices)).reshape(-1, 3)
    again = object_graph(split_vertices, split_faces, 150)
    assert np.array_equal(again.template, box_graph.template)
    assert np.array_equal(again.edges, box_graph.edges)


def test_object_graph_keeps_a_thin_wall_apart():
    # A mug: inner and outer wall are 5 mm apart, closer than the node spacing; geodesic
    # clustering must not connect nodes through the wall.
    mug = shapes.mug(0.04, 0.10, 0.005, 0.03, 0.008, segments=24)
    graph = object_graph(mug.vertices, mug.faces, 120)
    # Shapes are centred on their bounding box; the handle is on +x, so the body axis
    # sits one body radius right of the leftmost point.
    axis = np.array([mug.vertices[:, 0].min() + 0.04, 0.0])
    radius = np.linalg.norm(graph.template[:, :2] - axis, axis=1)
    height = graph.template[:, 2]
    body = (height > height.min() + 0.02) & (height < height.max() - 0.02) & (radius < 0.041)
    inner = body & (radius < 0.037)
    outer = body & (radius > 0.038)
    crossing = (inner[graph.edges[:, 0]] & outer[graph.edges[:, 1]]) | (outer[graph.edges[:, 0]]
                                                                       & inner[graph.edges[:, 1]])
    assert inner.sum() > 5 and outer.sum() > 5
    assert not crossing.any()


def test_farthest_point_sampling_spreads_points():
    points = np.random.default_rng(0).random((500, 3))
    chosen = farthest_point_sampling(points, 20)
    assert len(set(chosen.tolist())) == 20
    picked = points[chosen]
    d = np.linalg.norm(picked[:, None] - picked[None], axis=-1) + np.eye(20) * 9
    random_pick = points[:20]
    d_random = np.linalg.norm(random_pick[:, None] - random_pick[None], axis=-1) + np.eye(20) * 9
    assert d.min() > 1.5 * d_random.min()


def test_neighbour_lists_equal_the_dense_matrix(box_graph):
    dense = box_graph.normalized_adjacency(torch.float64)
    lists = neighbour_lists(dense, torch.float64)
    nodes = torch.randn(2, box_graph.num_nodes, 5, dtype=torch.float64)
    assert torch.allclose(lists.aggregate(nodes), torch.matmul(dense, nodes), atol=1e-12)
    assert lists.index.shape[1] == int((dense > 0).sum(1).max())


def test_graph_conv_mixes_only_neighbours(box_graph):
    torch.manual_seed(0)
    layer = GraphConv(box_graph.neighbour_lists(), 8)
    nodes = torch.randn(1, box_graph.num_nodes, 8)
    changed = nodes.clone()
    changed[0, 0] = torch.randn(8)
    delta = (layer(changed) - layer(nodes)).abs().sum(-1)[0]
    neighbours = set(box_graph.edges[(box_graph.edges == 0).any(1)].ravel().tolist())
    assert neighbours - {0}
    assert (delta[sorted(neighbours)] > 0).all()
    others = sorted(set(range(box_graph.num_nodes)) - neighbours)
    assert torch.all(delta[others] == 0)
    assert not any(k.startswith("neighbour") for k in layer.state_dict())  # the graph is not a weight


def test_bad_graphs_are_rejected():
    with pytest.raises(ValueError, match="node indices"):
        MeshGraph(template=np.zeros((3, 3)), faces=np.array([[0, 1, 5]]), edges=np.array([[0, 1]]))
    with pytest.raises(ValueError, match="i < j"):
        MeshGraph(template=np.zeros((3, 3)), faces=np.zeros((0, 3)), edges=np.array([[1, 0]]))
    with pytest.raises(ValueError, match="zero area"):
        object_graph(np.zeros((3, 3)) + [[0, 0, 0], [1, 0, 0], [2, 0, 0]], np.array([[0, 1, 2]]), 10)
    with pytest.raises(ValueError, match="faces"):
        object_graph(np.zeros((3, 3)), np.zeros((0, 3), dtype=int), 10)
