"""Hand-object interaction metrics: penetration depth and contact percentage.

A physically plausible reconstruction neither pushes the hand into the object nor
leaves a grasping hand hovering beside it. Both are measured on the predicted hand
mesh against the object mesh in its predicted pose:

* **penetration depth** - hand vertices inside the object, each at its distance
  to the object surface (closest point on the triangles). Per frame we keep the
  maximum (the homan convention, ``max_penetration_depth``) and the mean over the
  penetrating vertices (``mean_penetration_depth``; DMA's code reports such a mean
  under the name "max"). Frames without penetration contribute 0 to both averages.
* **contact percentage** - the fraction of frames where at least one hand vertex
  is inside the object or within ``contact_threshold`` of its surface (distance
  ``<=`` threshold; default 2 mm).

The inside test uses generalised winding numbers (Jacobson et al. 2013): the
signed solid angles of all triangles seen from a point, summed and divided by 4 pi,
are +-1 inside a closed mesh and 0 outside, and degrade gracefully on meshes with
small holes. ``|w| >= 0.5`` counts as inside, so either consistent face
orientation works.

Cost: object meshes have thousands to tens of thousands of triangles, so neither
quantity is computed against every triangle. Triangles are grouped into spatial
clusters; a cluster far from the point (distance > ``_FAR_FIELD_RATIO`` x its
radius) contributes its dipole term (summed area vector, as in Barill et al. 2018,
first order), near clusters are summed exactly. Surface distances are exact: a cluster
whose bounding sphere lies beyond the nearest mesh vertex (found with a k-d tree)
cannot hold the closest point and is skipped.
Vertices outside the object's bounding box grown by the contact threshold are
skipped altogether. The structures are built once per mesh, so evaluate hand
vertices in the object's own frame (see :func:`evaluate_interaction`'s callers)
rather than re-posing the mesh every frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.spatial import cKDTree

DEFAULT_CONTACT_THRESHOLD_M = 0.002
# Point-triangle pairs evaluated at once; bounds the temporaries to tens of MB.
_PAIRS_PER_CHUNK = 250_000
# A triangle cluster farther than this many cluster radii is summed as one dipole; at 3
# the winding-number error stays a few hundredths, far from the 0.5 decision level.
_FAR_FIELD_RATIO = 3.0
# Target number of triangles per cluster.
_TRIANGLES_PER_CLUSTER = 32


@dataclass(frozen=True, eq=False)
class _MeshSearch:
    """Search structures of one mesh for pruned distance and winding-number queries."""

    vertex_tree: cKDTree
    cluster_centres: np.ndarray  # (C, 3) area-weighted centroid of each cluster
    cluster_area_vectors: np.ndarray  # (C, 3) sum of the member triangles' area vectors
    cluster_radii: np.ndarray  # (C,) largest centre-to-corner distance in the cluster
    cluster_offsets: np.ndarray  # (C + 1,) CSR offsets into cluster_faces
    cluster_faces: np.ndarray  # (M,) face indices grouped by cluster


def _build_search(vertices: np.ndarray, triangles: np.ndarray) -> _MeshSearch:
    centroids = triangles.mean(axis=1)
    area_vectors = 0.5 * np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    areas = np.linalg.norm(area_vectors, axis=1)
    # Clusters = occupied cells of a grid over the triangle centroids.
    lo, hi = centroids.min(axis=0), centroids.max(axis=0)
    # A surface fills about cells_per_axis^2 cells of the grid, hence the square root.
    cells_per_axis = max(1, round((len(triangles) / _TRIANGLES_PER_CLUSTER) ** 0.5))
    cell = np.maximum((hi - lo) / cells_per_axis, 1e-12)
    ijk = np.minimum(((centroids - lo) / cell).astype(np.int64), cells_per_axis - 1)
    keys = (ijk[:, 0] * cells_per_axis + ijk[:, 1]) * cells_per_axis + ijk[:, 2]
    _, cluster_of_face = np.unique(keys, return_inverse=True)
    order = np.argsort(cluster_of_face, kind="stable")
    counts = np.bincount(cluster_of_face)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    num_clusters = counts.size
    weights = np.where(areas > 0, areas, 1e-30)
    centres = np.zeros((num_clusters, 3))
    np.add.at(centres, cluster_of_face, centroids * weights[:, None])
    centres /= np.bincount(cluster_of_face, weights=weights)[:, None]
    area_sums = np.zeros((num_clusters, 3))
    np.add.at(area_sums, cluster_of_face, area_vectors)
    corner_reach = np.linalg.norm(triangles - centres[cluster_of_face][:, None], axis=-1).max(axis=1)
    radii = np.zeros(num_clusters)
    np.maximum.at(radii, cluster_of_face, corner_reach)
    return _MeshSearch(
        vertex_tree=cKDTree(vertices),
        cluster_centres=centres,
        cluster_area_vectors=area_sums,
        cluster_radii=radii,
        cluster_offsets=offsets,
        cluster_faces=order,
    )


@dataclass(frozen=True, eq=False)
class TriangleMesh:
    """A triangle mesh: ``vertices`` (V, 3) float and ``faces`` (M, 3) vertex indices."""

    vertices: np.ndarray
    faces: np.ndarray

    def __post_init__(self) -> None:
        vertices = np.asarray(self.vertices, dtype=np.float64)
        faces = np.asarray(self.faces)
        if vertices.ndim != 2 or vertices.shape[1] != 3 or vertices.shape[0] < 3:
            raise ValueError(f"mesh vertices: expected shape (V, 3) with V >= 3, got {vertices.shape}")
        if not np.all(np.isfinite(vertices)):
            raise ValueError("mesh vertices: contain NaN or infinite values")
        if faces.ndim != 2 or faces.shape[1] != 3 or faces.shape[0] == 0 or not np.issubdtype(faces.dtype, np.integer):
            raise ValueError(f"mesh faces: expected integer indices of shape (M, 3) with M >= 1, got "
                             f"{faces.shape} {faces.dtype}")
        if faces.min() < 0 or faces.max() >= vertices.shape[0]:
            raise ValueError(f"mesh faces: indices must lie in [0, {vertices.shape[0] - 1}], "
                             f"got [{faces.min()}, {faces.max()}]")
        object.__setattr__(self, "vertices", vertices)
        object.__setattr__(self, "faces", faces.astype(np.int64))

    @property
    def triangles(self) -> np.ndarray:
        """Corner coordinates per face, ``(M, 3, 3)``."""
        return self.vertices[self.faces]

    @cached_property
    def _search(self) -> _MeshSearch:
        return _build_search(self.vertices, self.triangles)

    def transformed(self, rotation: np.ndarray, translation: np.ndarray) -> TriangleMesh:
        """The mesh posed by ``x -> R @ x + t`` (e.g. object model into the camera frame)."""
        rotation = np.asarray(rotation, dtype=np.float64)
        translation = np.asarray(translation, dtype=np.float64)
        if rotation.shape != (3, 3) or translation.shape != (3,):
            raise ValueError(f"pose: expected rotation (3, 3) and translation (3,), got "
                             f"{rotation.shape} and {translation.shape}")
        return TriangleMesh(self.vertices @ rotation.T + translation, self.faces)


def _as_points(points: np.ndarray) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"points: expected shape (P, 3), got {np.shape(points)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("points: contain NaN or infinite values")
    return arr


def _points_per_chunk(num_faces: int) -> int:
    return max(1, _PAIRS_PER_CHUNK // num_faces)


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("...i,...i->...", a, b)


def _solid_angles(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Signed solid angle of triangles with corners a, b, c given relative to the viewpoint (..., 3)."""
    la, lb, lc = (np.linalg.norm(v, axis=-1) for v in (a, b, c))
    # Van Oosterom-Strackee: tan(omega / 2) = det[a b c] / (|a||b||c| + (a.b)|c| + (b.c)|a| + (c.a)|b|)
    numerator = _dot(a, np.cross(b, c))
    denominator = la * lb * lc + _dot(a, b) * lc + _dot(b, c) * la + _dot(c, a) * lb
    return 2.0 * np.arctan2(numerator, denominator)


def winding_numbers(points: np.ndarray, mesh: TriangleMesh) -> np.ndarray:
    """Exact generalised winding number of ``mesh`` at each point ``(P,)``: about +-1 inside, 0 outside.

    Sums every triangle; :func:`points_inside_mesh` uses the clustered approximation.
    """
    pts = _as_points(points)
    tri = mesh.triangles  # (M, 3, 3)
    out = np.empty(pts.shape[0])
    step = _points_per_chunk(tri.shape[0])
    for start in range(0, pts.shape[0], step):
        p = pts[start : start + step]
        rel = tri[None, :, :, :] - p[:, None, None, :]  # (P, M, 3, 3): corners relative to the point
        out[start : start + p.shape[0]] = _solid_angles(rel[:, :, 0], rel[:, :, 1], rel[:, :, 2]).sum(axis=1)
    return out / (4.0 * np.pi)


def _expand_pairs(point_ids: np.ndarray, cluster_ids: np.ndarray, search: _MeshSearch) -> tuple[np.ndarray, ...]:
    """(point, face) index pairs for every face of each (point, cluster) pair."""
    starts = search.cluster_offsets[cluster_ids]
    sizes = search.cluster_offsets[cluster_ids + 1] - starts
    pair_points = np.repeat(point_ids, sizes)
    within = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    pair_faces = search.cluster_faces[np.repeat(starts, sizes) + within]
    return pair_points, pair_faces


def fast_winding_numbers(points: np.ndarray, mesh: TriangleMesh) -> np.ndarray:
    """Winding numbers ``(P,)`` with far triangle clusters replaced by their dipole term.

    Exact for clusters within ``_FAR_FIELD_RATIO`` radii of the point; the far-field
    error is a few hundredths at most, which cannot move a value across 0.5.
    """
    pts = _as_points(points)
    search = mesh._search
    rel = search.cluster_centres[None, :, :] - pts[:, None, :]  # (P, C, 3)
    dist = np.linalg.norm(rel, axis=-1)
    far = dist > _FAR_FIELD_RATIO * search.cluster_radii[None, :]
    dipole = np.einsum("pci,ci->pc", rel, search.cluster_area_vectors) / np.where(far, dist, 1.0) ** 3
    total = np.where(far, dipole, 0.0).sum(axis=1)
    near_points, near_clusters = np.nonzero(~far)
    pair_points, pair_faces = _expand_pairs(near_points, near_clusters, search)
    tri = mesh.triangles
    for start in range(0, pair_points.size, _PAIRS_PER_CHUNK):
        pp = pair_points[start : start + _PAIRS_PER_CHUNK]
        rel_tri = tri[pair_faces[start : start + _PAIRS_PER_CHUNK]] - pts[pp][:, None, :]
        np.add.at(total, pp, _solid_angles(rel_tri[:, 0], rel_tri[:, 1], rel_tri[:, 2]))
    return total / (4.0 * np.pi)


def points_inside_mesh(points: np.ndarray, mesh: TriangleMesh) -> np.ndarray:
    """Boolean inside test ``(P,)``: ``|winding number| >= 0.5`` (independent of face orientation)."""
    return np.abs(fast_winding_numbers(points, mesh)) >= 0.5


def _closest_points_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Closest point on each triangle (a, b, c) to each point p; broadcasts, returns (..., 3).

    Voronoi-region classification of the point against the triangle's vertices,
    edges and face (Ericson, Real-Time Collision Detection, 5.1.5), vectorised with
    the regions tested in the same order so the first matching region wins.
    """
    ab, ac = b - a, c - a
    ap, bp, cp = p - a, p - b, p - c
    d1, d2 = _dot(ab, ap), _dot(ac, ap)
    d3, d4 = _dot(ab, bp), _dot(ac, bp)
    d5, d6 = _dot(ab, cp), _dot(ac, cp)
    vc = d1 * d4 - d3 * d2
    vb = d5 * d2 - d1 * d6
    va = d3 * d6 - d5 * d4

    def safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.where(den != 0, num / np.where(den != 0, den, 1.0), 0.0)[..., None]

    on_ab = a + safe_ratio(d1, d1 - d3) * ab
    on_ac = a + safe_ratio(d2, d2 - d6) * ac
    on_bc = b + safe_ratio(d4 - d3, (d4 - d3) + (d5 - d6)) * (c - b)
    total = va + vb + vc
    in_face = a + safe_ratio(vb, total) * ab + safe_ratio(vc, total) * ac
    conditions = [
        (d1 <= 0) & (d2 <= 0),  # vertex a
        (d3 >= 0) & (d4 <= d3),  # vertex b
        (vc <= 0) & (d1 >= 0) & (d3 <= 0),  # edge ab
        (d6 >= 0) & (d5 <= d6),  # vertex c
        (vb <= 0) & (d2 >= 0) & (d6 <= 0),  # edge ac
        (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0),  # edge bc
    ]
    shape = np.broadcast_shapes(p.shape, a.shape)
    choices = [np.broadcast_to(x, shape) for x in (a, b, on_ab, c, on_ac, on_bc)]
    return np.select([np.broadcast_to(cond[..., None], shape) for cond in conditions], choices,
                     default=np.broadcast_to(in_face, shape))


def surface_distances(points: np.ndarray, mesh: TriangleMesh, max_distance: float | None = None) -> np.ndarray:
    """Unsigned distance from each point to the mesh surface (closest point over all triangles), ``(P,)``.

    Exact: a triangle cluster is skipped only when its bounding sphere lies farther than
    the nearest mesh vertex, which bounds the distance from above. With ``max_distance``
    clusters beyond it are skipped too: values up to ``max_distance`` stay exact, larger
    ones are only guaranteed to exceed it (enough for a contact test, and much cheaper).
    """
    pts = _as_points(points)
    search = mesh._search
    nearest_vertex, _ = search.vertex_tree.query(pts)
    best = nearest_vertex**2
    reach = nearest_vertex if max_distance is None else np.minimum(nearest_vertex, max_distance)
    reach = reach[:, None] * (1 + 1e-9) + 1e-12
    dist = np.linalg.norm(search.cluster_centres[None, :, :] - pts[:, None, :], axis=-1)  # (P, C)
    pair_points, pair_faces = _expand_pairs(*np.nonzero(dist - search.cluster_radii[None, :] <= reach), search)
    tri = mesh.triangles
    for start in range(0, pair_points.size, _PAIRS_PER_CHUNK):
        pp = pair_points[start : start + _PAIRS_PER_CHUNK]
        t = tri[pair_faces[start : start + _PAIRS_PER_CHUNK]]
        closest = _closest_points_on_triangles(pts[pp], t[:, 0], t[:, 1], t[:, 2])
        np.minimum.at(best, pp, ((closest - pts[pp]) ** 2).sum(axis=-1))
    return np.sqrt(best)


@dataclass(frozen=True)
class InteractionFrameResult:
    """Interaction measures of one frame; depths in metres."""

    max_penetration_depth: float  # deepest penetrating hand vertex; 0 when none penetrates (homan)
    mean_penetration_depth: float  # mean depth over penetrating vertices; 0 when none penetrates
    penetrating_vertices: int  # number of hand vertices inside the object
    in_contact: bool  # some vertex penetrates or lies within the contact threshold of the surface


def evaluate_interaction(hand_vertices: np.ndarray, object_mesh: TriangleMesh,
                         contact_threshold: float = DEFAULT_CONTACT_THRESHOLD_M) -> InteractionFrameResult:
    """Penetration and contact of one frame's hand vertices ``(V, 3)`` against the object mesh.

    Both must be in one frame; passing the hand in the object's model frame lets the
    mesh's search structures be reused across frames (as :mod:`.report` does).
    """
    if not np.isfinite(contact_threshold) or contact_threshold < 0:
        raise ValueError(f"contact_threshold must be a non-negative distance in metres, got {contact_threshold}")
    hand = _as_points(hand_vertices)
    box_lo, box_hi = object_mesh.vertices.min(axis=0), object_mesh.vertices.max(axis=0)
    near = np.all((hand >= box_lo - contact_threshold) & (hand <= box_hi + contact_threshold), axis=1)
    if not np.any(near):
        return InteractionFrameResult(0.0, 0.0, 0, False)
    candidates = hand[near]
    in_box = np.all((candidates >= box_lo) & (candidates <= box_hi), axis=1)
    inside = np.zeros(candidates.shape[0], dtype=bool)
    if np.any(in_box):
        inside[in_box] = points_inside_mesh(candidates[in_box], object_mesh)
    if np.any(inside):
        depths = surface_distances(candidates[inside], object_mesh)
        return InteractionFrameResult(float(depths.max()), float(depths.mean()), int(depths.size), True)
    distances = surface_distances(candidates, object_mesh, max_distance=contact_threshold)
    return InteractionFrameResult(0.0, 0.0, 0, bool(np.any(distances <= contact_threshold)))


@dataclass(frozen=True)
class InteractionSummary:
    """Interaction measures over a set of frames; depths in metres, contact as a fraction."""

    num_frames: int
    max_penetration_depth: float  # mean over frames of the per-frame maximum depth (homan)
    mean_penetration_depth: float  # mean over frames of the per-frame mean depth of penetrating vertices
    contact_fraction: float  # fraction of frames in contact (contact percentage / 100)
    penetrating_frame_fraction: float  # fraction of frames with at least one penetrating vertex


def summarize_interaction(results: Sequence[InteractionFrameResult]) -> InteractionSummary:
    """Average per-frame interaction results; every frame counts, including frames without penetration."""
    if len(results) == 0:
        raise ValueError("results: at least one frame is needed to summarise interaction metrics")
    return InteractionSummary(
        num_frames=len(results),
        max_penetration_depth=float(np.mean([r.max_penetration_depth for r in results])),
        mean_penetration_depth=float(np.mean([r.mean_penetration_depth for r in results])),
        contact_fraction=float(np.mean([r.in_contact for r in results])),
        penetrating_frame_fraction=float(np.mean([r.penetrating_vertices > 0 for r in results])),
    )
