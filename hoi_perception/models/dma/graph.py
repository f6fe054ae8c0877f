"""Mesh graphs of the hand and the object, and the graph convolution that runs on them.

DMA (Wang et al., ICCV 2023, section 3.3) refines a hand graph and an object graph
whose nodes are mesh vertices and whose edges are mesh edges.

* Hand: the 778 MANO vertices and the edges of MANO's 1538 faces (:func:`hand_graph`),
  with the 21 x 778 joint regressor (MANO's 16 rows plus one-hot rows for HO-3D's five
  fingertip vertices) so refined vertices give joints in HO-3D order.
* Object: DMA resamples each CAD model to 1000 vertices with ACVD (a Voronoi
  clustering of the surface). :func:`object_graph` does the same kind of clustering,
  deterministically, so the graph can be computed once per object and shipped:

  1. weld duplicate vertices, then split triangles until the mesh has about ten
     vertices per requested node (a dense, roughly uniform surface sampling);
  2. pick the nodes by farthest-point sampling among the dense vertices, starting at
     the vertex farthest from the centroid;
  3. assign every dense vertex to its geodesically nearest node (multi-source
     Dijkstra along mesh edges, so the two sides of a thin wall or a mug handle
     are not merged); vertices of parts without a node go to the Euclidean-nearest one;
  4. nodes are adjacent when their regions share a dense mesh edge, and each dense
     triangle touching three regions gives a face (oriented like that triangle),
     which the normal-consistency loss needs.

Both graphs carry ``template``: node positions in the model's rest frame (hand:
flat-hand MANO pose relative to the wrist; object: the model frame). The refiner uses
them as node identities and, for the object, as the points its poses move.

:class:`GraphConv` aggregates neighbours with the symmetrically normalised adjacency
with self loops, ``D^-1/2 (A + I) D^-1/2``. DMA follows GIN (sum over neighbours, eq.
12); the normalisation keeps the feature scale independent of the node degree, which
varies more on the resampled object graph. The matrix is stored as padded neighbour
lists (:class:`NeighbourLists`: for each node the indices and weights of itself and its
neighbours, padded with weight-0 entries to the largest degree): aggregation is then a
gather, a multiply and a sum, which exports to ONNX as plain Gather/Mul/ReduceSum and
costs N x max-degree instead of the N x N of a dense matmul (about 70x less for MANO).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree
from torch import nn
from trimesh import remesh

from hoi_perception.hand_model.joint_orders import FINGERTIP_VERTEX_IDS, NUM_HAND_JOINTS
from hoi_perception.hand_model.mano import HandModel

NUM_HAND_VERTICES = 778
DEFAULT_OBJECT_NODES = 1000
# Dense vertices per object node before clustering (step 1 of the module docstring).
_OVERSAMPLING = 10


@dataclass(frozen=True)
class MeshGraph:
    """A fixed graph over mesh nodes: rest positions, triangles and undirected edges.

    template (N, 3) float64 metres; faces (F, 3) int64 node indices; edges (E, 2) int64
    with i < j, each undirected edge once.
    """

    template: np.ndarray
    faces: np.ndarray
    edges: np.ndarray

    def __post_init__(self) -> None:
        template = np.asarray(self.template, dtype=np.float64)
        faces = np.asarray(self.faces, dtype=np.int64).reshape(-1, 3)
        edges = np.asarray(self.edges, dtype=np.int64).reshape(-1, 2)
        if template.ndim != 2 or template.shape[1] != 3 or len(template) < 2:
            raise ValueError(f"MeshGraph template: expected (N >= 2, 3) node positions, got {template.shape}")
        if not np.all(np.isfinite(template)):
            raise ValueError("MeshGraph template: node positions must be finite")
        for name, index in (("faces", faces), ("edges", edges)):
            if index.size and (index.min() < 0 or index.max() >= len(template)):
                raise ValueError(f"MeshGraph {name}: node indices must lie in [0, {len(template)})")
        if edges.size and np.any(edges[:, 0] >= edges[:, 1]):
            raise ValueError("MeshGraph edges: expected pairs (i, j) with i < j")
        object.__setattr__(self, "template", template)
        object.__setattr__(self, "faces", faces)
        object.__setattr__(self, "edges", edges)

    @property
    def num_nodes(self) -> int:
        return len(self.template)

    def normalized_adjacency(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Dense ``D^-1/2 (A + I) D^-1/2`` (N, N)."""
        return normalized_adjacency(self.edges, self.num_nodes, dtype)

    def neighbour_lists(self, dtype: torch.dtype = torch.float32) -> NeighbourLists:
        """The normalised adjacency as padded neighbour lists (what :class:`GraphConv` uses)."""
        return neighbour_lists(self.normalized_adjacency(torch.float64), dtype)


@dataclass(frozen=True)
class HandGraph(MeshGraph):
    """MANO's mesh graph plus ``joint_regressor`` (21, 778): joints = regressor @ vertices, HO-3D order."""

    joint_regressor: np.ndarray

    def __post_init__(self) -> None:
        super().__post_init__()
        regressor = np.asarray(self.joint_regressor, dtype=np.float64)
        if regressor.shape != (NUM_HAND_JOINTS, self.num_nodes):
            raise ValueError(f"HandGraph joint_regressor: expected ({NUM_HAND_JOINTS}, {self.num_nodes}), "
                             f"got {regressor.shape}")
        object.__setattr__(self, "joint_regressor", regressor)


def mesh_edges(faces: np.ndarray) -> np.ndarray:
    """Unique undirected edges (E, 2), i < j, sorted, of triangles (F, 3)."""
    faces = np.asarray(faces, dtype=np.int64)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces: expected (F, 3) vertex indices, got {faces.shape}")
    pairs = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    pairs = np.sort(pairs, axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return np.unique(pairs, axis=0)


def normalized_adjacency(edges: np.ndarray, num_nodes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Dense symmetric-normalised adjacency with self loops, ``D^-1/2 (A + I) D^-1/2``."""
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    if edges.size and (edges.min() < 0 or edges.max() >= num_nodes):
        raise ValueError(f"edges: node indices must lie in [0, {num_nodes})")
    adjacency = np.eye(num_nodes)
    adjacency[edges[:, 0], edges[:, 1]] = 1.0
    adjacency[edges[:, 1], edges[:, 0]] = 1.0
    inv_sqrt_degree = 1.0 / np.sqrt(adjacency.sum(1))
    return torch.as_tensor(adjacency * inv_sqrt_degree[:, None] * inv_sqrt_degree[None, :], dtype=dtype)


@dataclass(frozen=True)
class NeighbourLists:
    """A sparse (N, N) matrix as padded rows: ``row i = sum_k weight[i, k] * e_{index[i, k]}``.

    index (N, K) int64, weight (N, K); padding entries point at node i with weight 0.
    """

    index: torch.Tensor
    weight: torch.Tensor

    def aggregate(self, nodes: torch.Tensor) -> torch.Tensor:
        """The matrix times node features (B, N, D) -> (B, N, D)."""
        num_nodes, width = self.index.shape
        gathered = nodes[:, self.index.reshape(-1)].reshape(nodes.shape[0], num_nodes, width, nodes.shape[-1])
        return (gathered * self.weight.unsqueeze(-1)).sum(2)


def neighbour_lists(matrix: torch.Tensor, dtype: torch.dtype = torch.float32) -> NeighbourLists:
    """Padded neighbour lists of a square matrix's non-zero entries (see :class:`NeighbourLists`)."""
    dense = matrix.detach().cpu().double().numpy()
    if dense.ndim != 2 or dense.shape[0] != dense.shape[1]:
        raise ValueError(f"neighbour_lists: expected a square matrix, got shape {dense.shape}")
    num_nodes = dense.shape[0]
    rows, cols = np.nonzero(dense)
    counts = np.bincount(rows, minlength=num_nodes)
    width = max(int(counts.max(initial=0)), 1)
    index = np.repeat(np.arange(num_nodes)[:, None], width, axis=1)
    weight = np.zeros((num_nodes, width))
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)  # rows come out sorted
    index[rows, slot] = cols
    weight[rows, slot] = dense[rows, cols]
    return NeighbourLists(index=torch.as_tensor(index, dtype=torch.long), weight=torch.as_tensor(weight, dtype=dtype))


def hand_graph(hand_model: HandModel) -> HandGraph:
    """The graph of a :class:`~hoi_perception.hand_model.mano.HandModel` (real MANO or stand-in).

    Template: vertices of the zero pose and zero shape, relative to the wrist joint.
    """
    like = hand_model.pca_components  # a buffer of the model: gives its device and dtype
    with torch.no_grad():
        rest = hand_model(like.new_zeros(1, 3), like.new_zeros(1, hand_model.pose_dim))
    vertices = rest.vertices[0].detach().cpu().double().numpy()
    template = vertices - rest.joints[0, 0].detach().cpu().double().numpy()
    mano_regressor = hand_model.mano.J_regressor.detach().cpu().double().numpy()
    tips = np.zeros((len(FINGERTIP_VERTEX_IDS), vertices.shape[0]))
    tips[np.arange(len(FINGERTIP_VERTEX_IDS)), list(FINGERTIP_VERTEX_IDS)] = 1.0
    faces = np.asarray(hand_model.faces, dtype=np.int64)
    return HandGraph(template=template, faces=faces, edges=mesh_edges(faces),
                     joint_regressor=np.concatenate([mano_regressor, tips]))


def _weld(vertices: np.ndarray, faces: np.ndarray, tolerance: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """Merge vertices closer than ``tolerance`` (meshes split at seams or creases) and drop degenerate faces."""
    keys = np.round(vertices / tolerance).astype(np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    welded_faces = inverse.reshape(-1)[faces]
    keep = ((welded_faces[:, 0] != welded_faces[:, 1]) & (welded_faces[:, 1] != welded_faces[:, 2])
            & (welded_faces[:, 2] != welded_faces[:, 0]))
    return vertices[first], welded_faces[keep]


def farthest_point_sampling(points: np.ndarray, count: int) -> np.ndarray:
    """Indices of ``count`` points chosen greedily far apart, starting at the point farthest
    from the centroid (deterministic)."""
    points = np.asarray(points, dtype=np.float64)
    if not 1 <= count <= len(points):
        raise ValueError(f"farthest_point_sampling: cannot choose {count} of {len(points)} points")
    x, y, z = (np.ascontiguousarray(points[:, k]) for k in range(3))  # per-axis arrays: faster than (N, 3) sums

    def squared_distance(i: int) -> np.ndarray:
        return (x - x[i]) ** 2 + (y - y[i]) ** 2 + (z - z[i]) ** 2

    chosen = np.empty(count, dtype=np.int64)
    chosen[0] = int(np.argmax(((points - points.mean(0)) ** 2).sum(1)))
    nearest = squared_distance(chosen[0])
    for i in range(1, count):
        chosen[i] = int(np.argmax(nearest))
        np.minimum(nearest, squared_distance(chosen[i]), out=nearest)
    return chosen


def object_graph(vertices: np.ndarray, faces: np.ndarray, num_nodes: int = DEFAULT_OBJECT_NODES) -> MeshGraph:
    """Resample an object mesh to a ``num_nodes``-node graph (see the module docstring).

    vertices (V, 3) in the object's frame (metres), faces (F, 3). Deterministic: the same
    mesh always gives the same graph.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise ValueError(f"object mesh: expected vertices (V, 3) and faces (F >= 1, 3), got {vertices.shape} "
                         f"and {faces.shape}")
    if num_nodes < 4:
        raise ValueError(f"num_nodes: expected at least 4 object graph nodes, got {num_nodes}")
    vertices, faces = _weld(vertices, faces)
    tri = vertices[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum()
    if not area > 0:
        raise ValueError("object mesh: the surface has zero area")
    # Edge of an equilateral triangle when the surface holds _OVERSAMPLING * num_nodes vertices
    # (about two triangles per vertex).
    max_edge = np.sqrt(2.0 * area / (np.sqrt(3.0) * _OVERSAMPLING * num_nodes))
    dense_vertices, dense_faces = remesh.subdivide_to_size(vertices, faces, max_edge, max_iter=20)
    dense_vertices, dense_faces = _weld(np.asarray(dense_vertices, dtype=np.float64), np.asarray(dense_faces))
    if len(dense_vertices) < num_nodes:
        raise ValueError(f"object mesh: only {len(dense_vertices)} surface vertices after subdivision, "
                         f"fewer than the {num_nodes} nodes requested")

    seeds = farthest_point_sampling(dense_vertices, num_nodes)
    dense_edges = mesh_edges(dense_faces)
    lengths = np.linalg.norm(dense_vertices[dense_edges[:, 0]] - dense_vertices[dense_edges[:, 1]], axis=1)
    n = len(dense_vertices)
    # Zero-length edges were welded away, so every stored weight is a real edge.
    csgraph = coo_matrix((lengths, (dense_edges[:, 0], dense_edges[:, 1])), shape=(n, n)).tocsr()
    distance, _, source = dijkstra(csgraph, directed=False, indices=seeds, min_only=True,
                                   return_predecessors=True)
    seed_of = np.full(n, -1, dtype=np.int64)
    seed_of[seeds] = np.arange(num_nodes)
    label = np.where(np.isfinite(distance), seed_of[np.maximum(source, 0)], -1)
    unreached = label < 0
    if unreached.any():
        _, nearest = cKDTree(dense_vertices[seeds]).query(dense_vertices[unreached])
        label[unreached] = nearest

    crossing = label[dense_edges]
    crossing = crossing[crossing[:, 0] != crossing[:, 1]]
    edges = np.unique(np.sort(crossing, axis=1), axis=0) if len(crossing) else np.zeros((0, 2), dtype=np.int64)
    face_labels = label[dense_faces]
    distinct = ((face_labels[:, 0] != face_labels[:, 1]) & (face_labels[:, 1] != face_labels[:, 2])
                & (face_labels[:, 2] != face_labels[:, 0]))
    face_labels = face_labels[distinct]
    if len(face_labels):
        _, unique_rows = np.unique(np.sort(face_labels, axis=1), axis=0, return_index=True)
        face_labels = face_labels[np.sort(unique_rows)]
    return MeshGraph(template=dense_vertices[seeds], faces=face_labels.reshape(-1, 3), edges=edges)


class GraphConv(nn.Module):
    """One residual graph-convolution layer: ``h + MLP(A_norm @ LayerNorm(h))`` on (B, N, D) node features.

    The adjacency is held in non-persistent buffers: it comes from the graph, not from
    the checkpoint, so trained weights apply to any object graph.
    """

    neighbour_index: torch.Tensor  # buffer, registered in __init__
    neighbour_weight: torch.Tensor  # buffer, registered in __init__

    def __init__(self, adjacency: NeighbourLists, dim: int) -> None:
        super().__init__()
        self.register_buffer("neighbour_index", adjacency.index, persistent=False)
        self.register_buffer("neighbour_weight", adjacency.weight, persistent=False)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))

    def set_adjacency(self, adjacency: NeighbourLists) -> None:
        """Swap the graph (e.g. another object's), keeping the learned weights."""
        self.neighbour_index = adjacency.index.to(self.neighbour_index.device)
        self.neighbour_weight = adjacency.weight.to(self.neighbour_weight.device, self.neighbour_weight.dtype)

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        adjacency = NeighbourLists(self.neighbour_index, self.neighbour_weight)
        return nodes + self.mlp(adjacency.aggregate(self.norm(nodes)))
