"""Generator of the MANO-format stand-in hand shipped with the package.

MANO itself is licensed and cannot be redistributed, yet every stage of the package
(training targets, the runtime mesh, evaluation) needs a hand model. The stand-in is a
hand built here from simple geometry and saved with MANO's exact array layout, so
``smplx.MANO`` loads it unchanged and the real MANO_RIGHT/MANO_LEFT files drop in
through the same code path.

How it is built (``build_standin_right``):

* Skeleton: the 16 joint positions of MANO's right-hand template (metres, MANO's
  canonical frame: fingers point to -x, thumb to +z, palm faces -y) plus fingertips
  extended along each distal bone, so dataset poses look alike on both models.
* Surface: an implicit solid (a rounded palm slab, tapered capsules per finger
  segment, smooth-blended at the knuckles and the thenar). A coarse quad mesh is made
  by "box modelling" (a palm tube open at the wrist, capped at the knuckles, with one
  tube extruded per finger from a 2x2 patch and closed by a fan at the tip), its
  longest interior edges are split until it has exactly 778 vertices, then it is
  relaxed onto the implicit surface. A disk-topology mesh with 778 vertices and a
  16-vertex wrist boundary has 2V - 2 - 16 = 1538 faces, MANO's counts.
* Fingertip vertices sit at HO-3D's ids (see ``FINGERTIP_VERTEX_IDS``).
* Skinning weights blend parent and child segment over a band around each joint.
* J_regressor rows are non-negative averages of the vertex ring around each joint.
* shapedirs: ten smooth, orthogonalised directions (size, palm width, finger length...).
* hands_components/hands_mean: PCA of sampled grasp-like articulations.
* posedirs are zero (no pose-corrective blend shapes).

The left hand is the exact mirror of the right (x negated, pose y/z axis-angle
components negated, face winding flipped), as MANO's left relates to its right.

Regenerate the shipped files with ``python -m hoi_training.assets.standin_hand --out hoi_perception/hand_model/assets``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.optimize import lsq_linear
from scipy.spatial.transform import Rotation

from hoi_perception.hand_model.joint_orders import (
    FINGER_NAMES,
    FINGERTIP_VERTEX_IDS,
    MANO_PARENTS,
    NUM_MANO_JOINTS,
)
from hoi_perception.hand_model.mano import ASSET_DIR, STANDIN_FILES

NUM_VERTICES = 778
NUM_FACES = 1538
NUM_WRIST_BOUNDARY = 16
NUM_BETAS = 10
NUM_POSE_PARAMS = 45

# MANO's right-hand template joints (metres): fixes the canonical frame and the joint
# layout the stand-in copies. Order: MANO's 16 (wrist, index, middle, pinky, ring, thumb).
MANO_RIGHT_TEMPLATE_JOINTS = np.array([
    [0.09566994, 0.00638343, 0.00618630],
    [0.00757268, 0.00118307, 0.02687230],
    [-0.02510622, 0.00519243, 0.02908936],
    [-0.04726213, 0.00389400, 0.02897524],
    [0.00100949, 0.00490447, 0.00282876],
    [-0.03017318, 0.00676579, -0.00276574],
    [-0.05307782, 0.00551369, -0.00671026],
    [0.02688296, -0.00355690, -0.03702303],
    [0.00986855, -0.00349507, -0.04952181],
    [-0.00599835, -0.00418623, -0.05985371],
    [0.01393437, 0.00242601, -0.02048689],
    [-0.01437990, 0.00449301, -0.02558542],
    [-0.03790042, 0.00280490, -0.03321924],
    [0.07158022, -0.00913891, 0.03199915],
    [0.05194698, -0.00824762, 0.05569870],
    [0.02972924, -0.01368059, 0.07022282],
])

# Per finger (thumb, index, middle, ring, pinky): MANO joints from base to last joint,
# the distance from the last joint to the fingertip surface, and the capsule radii at
# each joint and at the tip (metres).
_FINGERS = {
    "thumb": dict(joints=(13, 14, 15), distal=0.0245, radii=(0.0112, 0.0096, 0.0086, 0.0078)),
    "index": dict(joints=(1, 2, 3), distal=0.0215, radii=(0.0086, 0.0078, 0.0070, 0.0064)),
    "middle": dict(joints=(4, 5, 6), distal=0.0230, radii=(0.0089, 0.0080, 0.0072, 0.0066)),
    "ring": dict(joints=(10, 11, 12), distal=0.0220, radii=(0.0083, 0.0076, 0.0068, 0.0063)),
    "pinky": dict(joints=(7, 8, 9), distal=0.0190, radii=(0.0075, 0.0068, 0.0061, 0.0056)),
}
# Thumb base inside the thenar eminence, and its radius (the thenar's bulk).
_THUMB_BASE = np.array([0.0900, -0.0045, 0.0150])
_THUMB_BASE_RADIUS = 0.0125

# Palm: an (x, z) outline (inset by the rounding radius), extruded in y around _PALM_Y.
_PALM_OUTLINE_XZ = np.array([
    [0.125, 0.020], [0.070, 0.022], [0.030, 0.025], [0.011, 0.023], [0.004, 0.003],
    [0.016, -0.019], [0.028, -0.033], [0.060, -0.029], [0.125, -0.016],
])
_PALM_ROUNDING = 0.009
_PALM_Y = 0.0015
_PALM_HALF_SLAB = ((0.02, 0.0035), (0.09, 0.0070))  # (x, half-thickness before rounding)
_WRIST_CUT_X = 0.1000
_FINGER_BLEND = 0.007
_THUMB_BLEND = 0.012

# Finger patches on the knuckle cap: first column of each 2x2 patch (index at +z side).
_CAP_COLUMNS = 12
_FINGER_PATCH_COLUMN = {"index": 0, "middle": 3, "ring": 6, "pinky": 9}
_PALM_RINGS = 7
_THUMB_PATCH_RING = 2  # patch centred on this palm ring (1-based, wrist side first)
_RING_SPACING = 0.0065


@dataclass
class Skeleton:
    """Rest joints and per-finger capsule chains of the stand-in."""

    joints: np.ndarray  # (16, 3) MANO joints
    chains: dict[str, np.ndarray]  # finger -> (4, 3): base joint, two joints, tip-sphere centre
    radii: dict[str, np.ndarray]  # finger -> (4,)
    tips: dict[str, np.ndarray]  # finger -> (3,) fingertip surface point


def build_skeleton() -> Skeleton:
    """Joints from MANO's template; tips continue each finger's last bone."""
    joints = MANO_RIGHT_TEMPLATE_JOINTS.copy()
    chains, radii, tips = {}, {}, {}
    for name, spec in _FINGERS.items():
        j = joints[list(spec["joints"])]
        direction = _unit(j[2] - j[1])
        r = np.asarray(spec["radii"], dtype=float)
        tip = j[2] + direction * spec["distal"]
        chains[name] = np.vstack([j, tip - direction * r[3]])
        radii[name] = r
        tips[name] = tip
    return Skeleton(joints=joints, chains=chains, radii=radii, tips=tips)


# ----------------------------------------------------------------------------------------
# Implicit surface
# ----------------------------------------------------------------------------------------

def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum: blends two solids over a width k (a fillet)."""
    h = np.clip(k - np.abs(a - b), 0.0, None) / k
    return np.minimum(a, b) - h * h * k * 0.25


def _capsule_chain_sdf(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Distance to a chain of tapered capsules (exact enough for projection)."""
    best = np.full(len(points), np.inf)
    for a, b, ra, rb in zip(centres[:-1], centres[1:], radii[:-1], radii[1:]):
        ab = b - a
        t = np.clip(((points - a) @ ab) / (ab @ ab), 0.0, 1.0)
        d = np.linalg.norm(points - (a + t[:, None] * ab), axis=1) - (ra + t * (rb - ra))
        best = np.minimum(best, d)
    return best


def _polygon_sdf(points_2d: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Signed distance to a simple closed polygon (negative inside)."""
    d = np.full(len(points_2d), np.inf)
    sign = np.ones(len(points_2d))
    n = len(polygon)
    for i in range(n):
        a, b = polygon[i], polygon[(i + 1) % n]
        e, w = b - a, points_2d - a
        t = np.clip((w @ e) / (e @ e), 0.0, 1.0)
        d = np.minimum(d, np.linalg.norm(w - t[:, None] * e, axis=1))
        c1 = points_2d[:, 1] >= a[1]
        c2 = points_2d[:, 1] < b[1]
        c3 = e[0] * w[:, 1] > e[1] * w[:, 0]
        flip = (c1 & c2 & c3) | (~c1 & ~c2 & ~c3)
        sign[flip] *= -1.0
    return sign * d


class HandSurface:
    """Implicit solid of the stand-in hand: negative inside, metres."""

    def __init__(self, skeleton: Skeleton):
        self.skeleton = skeleton
        self.thumb_centres = np.vstack([_THUMB_BASE, skeleton.chains["thumb"]])
        self.thumb_radii = np.concatenate([[_THUMB_BASE_RADIUS], skeleton.radii["thumb"]])

    def palm(self, p: np.ndarray) -> np.ndarray:
        (x0, h0), (x1, h1) = _PALM_HALF_SLAB
        half = np.interp(p[:, 0], [x0, x1], [h0, h1])
        d2 = _polygon_sdf(p[:, [0, 2]], _PALM_OUTLINE_XZ)
        dy = np.abs(p[:, 1] - _PALM_Y) - half
        outside = np.linalg.norm(np.stack([np.maximum(d2, 0), np.maximum(dy, 0)], 1), axis=1)
        return outside + np.minimum(np.maximum(d2, dy), 0.0) - _PALM_ROUNDING

    def finger(self, p: np.ndarray, name: str) -> np.ndarray:
        if name == "thumb":
            return _capsule_chain_sdf(p, self.thumb_centres, self.thumb_radii)
        return _capsule_chain_sdf(p, self.skeleton.chains[name], self.skeleton.radii[name])

    def __call__(self, p: np.ndarray) -> np.ndarray:
        palm = self.palm(p)
        parts = [_smooth_min(palm, self.finger(p, "thumb"), _THUMB_BLEND)]
        parts += [_smooth_min(palm, self.finger(p, f), _FINGER_BLEND) for f in FINGER_NAMES[1:]]
        return np.min(np.stack(parts), axis=0)

    def gradient(self, p: np.ndarray, eps: float = 1e-5) -> np.ndarray:
        g = np.empty_like(p)
        for axis in range(3):
            step = np.zeros(3)
            step[axis] = eps
            g[:, axis] = (self(p + step) - self(p - step)) / (2 * eps)
        return g

    def project(self, p: np.ndarray, iterations: int = 3) -> np.ndarray:
        """Newton steps onto the zero level set."""
        for _ in range(iterations):
            g = self.gradient(p)
            p = p - (self(p) / np.maximum((g * g).sum(1), 1e-12))[:, None] * g
        return p


# ----------------------------------------------------------------------------------------
# Coarse topology ("box modelling")
# ----------------------------------------------------------------------------------------

class _MeshBuilder:
    def __init__(self):
        self.points: list[np.ndarray] = []
        self.faces: list[tuple[int, int, int]] = []

    def add(self, p) -> int:
        self.points.append(np.asarray(p, dtype=float))
        return len(self.points) - 1

    def quad(self, a: int, b: int, c: int, d: int) -> None:
        self.faces += [(a, b, c), (a, c, d)]

    def loft(self, loop_a: list[int], loop_b: list[int]) -> None:
        """Strip between two equal-length loops with corresponding vertices."""
        n = len(loop_a)
        for i in range(n):
            j = (i + 1) % n
            self.quad(loop_a[i], loop_a[j], loop_b[j], loop_b[i])

    def loft_uneven(self, loop_a: list[int], frac_a: np.ndarray, loop_b: list[int], frac_b: np.ndarray) -> None:
        """Strip between loops of different sizes, matched by their perimeter fractions."""
        na, nb = len(loop_a), len(loop_b)
        i = j = 0
        while i < na or j < nb:
            next_a = frac_a[i + 1] if i + 1 < na else 1.0 + frac_a[0]
            next_b = frac_b[j + 1] if j + 1 < nb else 1.0 + frac_b[0]
            if (next_a <= next_b and i < na) or j >= nb:
                self.faces.append((loop_a[i % na], loop_a[(i + 1) % na], loop_b[j % nb]))
                i += 1
            else:
                self.faces.append((loop_a[i % na], loop_b[(j + 1) % nb], loop_b[j % nb]))
                j += 1


def _knuckle_x(z: np.ndarray | float, skeleton: Skeleton) -> np.ndarray:
    """x of the palm's distal end (just below the knuckles) as a function of z."""
    mcp = skeleton.joints[[1, 4, 10, 7]]
    order = np.argsort(mcp[:, 2])
    return np.interp(z, mcp[order, 2], mcp[order, 0]) + 0.004


def _palm_ring(u: float, skeleton: Skeleton) -> np.ndarray:
    """A 26-vertex palm cross-section: dorsal row (index to pinky side), pinky side,
    palmar row (pinky to index side), index side. u=0 at the wrist, 1 at the knuckles."""
    z_index, z_pinky = 0.030 + 0.004 * u, -0.023 - 0.020 * u
    # Columns spread evenly at the wrist and gather around each finger's base at the top.
    z_wrist = np.linspace(z_index, z_pinky, _CAP_COLUMNS)
    z_top = np.empty(_CAP_COLUMNS)
    for finger, c0 in _FINGER_PATCH_COLUMN.items():
        mcp_z = skeleton.joints[_FINGERS[finger]["joints"][0], 2]
        half = _FINGERS[finger]["radii"][0] * 0.8
        z_top[c0:c0 + 3] = (mcp_z + half, mcp_z, mcp_z - half)
    z = z_wrist + (z_top - z_wrist) * u
    x = _WRIST_CUT_X + (_knuckle_x(z, skeleton) - _WRIST_CUT_X) * u
    half = 0.015 - 0.003 * u
    dorsal = np.stack([x, np.full_like(x, _PALM_Y + half), z], 1)
    palmar = np.stack([x, np.full_like(x, _PALM_Y - half), z], 1)[::-1]
    side_pinky = np.array([[x[-1], _PALM_Y, z_pinky - 0.004]])
    side_index = np.array([[x[0], _PALM_Y, z_index + 0.004]])
    return np.vstack([dorsal, side_pinky, palmar, side_index])


def _perimeter_fractions(loop: np.ndarray) -> np.ndarray:
    seg = np.linalg.norm(np.roll(loop, -1, axis=0) - loop, axis=1)
    return np.concatenate([[0.0], np.cumsum(seg)[:-1]]) / seg.sum()


class _Polyline:
    """Arc-length parametrised polyline, extrapolated linearly beyond both ends."""

    def __init__(self, points: np.ndarray, radii: np.ndarray):
        self.points, self.radii = points, radii
        self.lengths = np.linalg.norm(np.diff(points, axis=0), axis=1)
        self.stations = np.concatenate([[0.0], np.cumsum(self.lengths)])

    @property
    def length(self) -> float:
        return float(self.stations[-1])

    def segment_of(self, s: float) -> int:
        return int(np.clip(np.searchsorted(self.stations, s) - 1, 0, len(self.lengths) - 1))

    def at(self, s: float) -> tuple[np.ndarray, np.ndarray, float]:
        k = self.segment_of(s)
        t = (s - self.stations[k]) / self.lengths[k]
        point = self.points[k] + t * (self.points[k + 1] - self.points[k])
        radius = float(np.interp(s, self.stations, self.radii))
        return point, _unit(self.points[k + 1] - self.points[k]), radius

    def project(self, p: np.ndarray) -> float:
        """Arc-length parameter of the closest point (unclamped before the start)."""
        best, best_d = 0.0, np.inf
        for k in range(len(self.lengths)):
            a, b = self.points[k], self.points[k + 1]
            t = ((p - a) @ (b - a)) / self.lengths[k] ** 2
            t = t if k == 0 else max(t, 0.0)
            t = t if k == len(self.lengths) - 1 else min(t, 1.0)
            d = np.linalg.norm(p - (a + t * (b - a)))
            if d < best_d:
                best, best_d = self.stations[k] + t * self.lengths[k], d
        return float(best)


def _ring_frame(tangent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    up = np.array([0.0, 1.0, 0.0])
    e2 = _unit(up - (up @ tangent) * tangent)
    return np.cross(e2, tangent), e2


def _extrude_finger(mb: _MeshBuilder, loop: list[int], chain: np.ndarray, radii: np.ndarray) -> int:
    """Tube from a patch loop along a finger chain, closed by a fan at the tip.

    Returns the id of the tip vertex (the most distal point of the finger)."""
    line = _Polyline(chain, radii)
    loop_pts = np.array([mb.points[i] for i in loop])
    s0 = line.project(loop_pts.mean(0))
    centre, tangent, _ = line.at(s0)
    e1, e2 = _ring_frame(tangent)
    rel = loop_pts - loop_pts.mean(0)
    u, v = rel @ e1, rel @ e2
    # Evenly spaced ring angles, starting at the loop's first vertex and turning its way
    # (the sign of the loop's signed area in the ring plane).
    turning = np.sign(np.sum(u * np.roll(v, -1) - np.roll(u, -1) * v))
    angles = np.arctan2(v[0], u[0]) + turning * 2.0 * np.pi * np.arange(len(loop)) / len(loop)

    stations = list(np.arange(s0 + _RING_SPACING, line.length - 0.002, _RING_SPACING))
    end_radius = float(radii[-1])
    prev = loop
    for s in stations:
        c, t, r = line.at(s)
        f1, f2 = _ring_frame(t)
        ring = [mb.add(c + r * (np.cos(a) * f1 + np.sin(a) * f2)) for a in angles]
        mb.loft(prev, ring)
        prev = ring
    end, t, _ = line.at(line.length)
    f1, f2 = _ring_frame(t)
    for polar in np.radians([25.0, 50.0, 72.0]):
        c = end + t * end_radius * np.sin(polar)
        r = end_radius * np.cos(polar)
        ring = [mb.add(c + r * (np.cos(a) * f1 + np.sin(a) * f2)) for a in angles]
        mb.loft(prev, ring)
        prev = ring
    tip = mb.add(end + t * end_radius)
    n = len(prev)
    for i in range(n):
        mb.faces.append((prev[i], prev[(i + 1) % n], tip))
    return tip


@dataclass
class _CoarseMesh:
    points: np.ndarray
    faces: np.ndarray
    tips: dict[str, int]
    boundary: list[int]


def _build_coarse_mesh(skeleton: Skeleton) -> _CoarseMesh:
    mb = _MeshBuilder()
    rings_pts = [_palm_ring(k / _PALM_RINGS, skeleton) for k in range(1, _PALM_RINGS + 1)]
    n = len(rings_pts[0])  # 26
    n_cols = _CAP_COLUMNS
    idx_pinky_side, idx_index_side = n_cols, n - 1
    palmar = lambda c: n_cols + 1 + (n_cols - 1 - c)  # noqa: E731  palmar row index of column c

    # Thumb patch: index side, palmar corner and next palmar column on three rings.
    tk = _THUMB_PATCH_RING - 1
    thumb_centre = (tk, palmar(0))
    rings: list[list[int]] = []
    for k, pts in enumerate(rings_pts):
        rings.append([-1 if (k, i) == thumb_centre else mb.add(p) for i, p in enumerate(pts)])

    # Wrist boundary: 16 vertices on the cut plane, lofted to the first palm ring.
    frac26 = _perimeter_fractions(rings_pts[0])
    frac16 = np.arange(NUM_WRIST_BOUNDARY) / NUM_WRIST_BOUNDARY
    first = rings_pts[0]
    closed = np.vstack([first, first[:1]])
    fr = np.concatenate([frac26, [1.0]])
    wrist_pts = np.stack([np.interp(frac16, fr, closed[:, a]) for a in range(3)], 1)
    wrist_pts[:, 0] = _WRIST_CUT_X
    boundary = [mb.add(p) for p in wrist_pts]
    mb.loft_uneven(boundary, frac16, rings[0], frac26)

    thumb_quads = {(tk - 1, palmar(1)), (tk - 1, palmar(0)), (tk, palmar(1)), (tk, palmar(0))}
    for k in range(len(rings) - 1):
        for i in range(n):
            if (k, i) in thumb_quads:
                continue
            j = (i + 1) % n
            mb.quad(rings[k][i], rings[k][j], rings[k + 1][j], rings[k + 1][i])
    a, b, c = rings[tk - 1], rings[tk], rings[tk + 1]
    thumb_loop = [a[palmar(1)], a[palmar(0)], a[idx_index_side], b[idx_index_side], c[idx_index_side],
                  c[palmar(0)], c[palmar(1)], b[palmar(1)]]

    # Knuckle cap: a 3-row grid (dorsal, middle, palmar) closing the last palm ring.
    top = rings[-1]
    top_pts = rings_pts[-1]
    patch_centres = {c0 + 1 for c0 in _FINGER_PATCH_COLUMN.values()}
    middle_row = {0: top[idx_index_side], n_cols - 1: top[idx_pinky_side]}
    for col in range(1, n_cols - 1):
        if col in patch_centres:
            continue
        p = 0.5 * (top_pts[col] + top_pts[palmar(col)])
        p[0] -= 0.004
        middle_row[col] = mb.add(p)
    grid = [[top[col] for col in range(n_cols)], [middle_row.get(col, -1) for col in range(n_cols)],
            [top[palmar(col)] for col in range(n_cols)]]
    patch_cols = {c for c0 in _FINGER_PATCH_COLUMN.values() for c in (c0, c0 + 1)}
    for col in range(n_cols - 1):
        if col in patch_cols:
            continue
        for row in range(2):
            mb.quad(grid[row][col + 1], grid[row][col], grid[row + 1][col], grid[row + 1][col + 1])

    tips = {"thumb": _extrude_finger(mb, thumb_loop, np.vstack([_THUMB_BASE, skeleton.chains["thumb"]]),
                                     np.concatenate([[_THUMB_BASE_RADIUS], skeleton.radii["thumb"]]))}
    for name, c0 in _FINGER_PATCH_COLUMN.items():
        loop = [grid[0][c0], grid[0][c0 + 1], grid[0][c0 + 2], grid[1][c0 + 2],
                grid[2][c0 + 2], grid[2][c0 + 1], grid[2][c0], grid[1][c0]]
        tips[name] = _extrude_finger(mb, loop, skeleton.chains[name], skeleton.radii[name])

    points = np.array(mb.points)
    faces = np.array(mb.faces, dtype=np.int64)
    return _CoarseMesh(points=points, faces=faces, tips=tips, boundary=boundary)


# ----------------------------------------------------------------------------------------
# Mesh operations
# ----------------------------------------------------------------------------------------

def _edges_with_counts(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    return np.unique(e, axis=0, return_counts=True)


def _split_longest_edges(points: np.ndarray, faces: np.ndarray, target_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """Split the longest interior edge until the mesh has ``target_vertices`` vertices."""
    points, faces = points.copy(), faces.copy()
    while len(points) < target_vertices:
        edges, counts = _edges_with_counts(faces)
        interior = edges[counts == 2]
        lengths = np.linalg.norm(points[interior[:, 0]] - points[interior[:, 1]], axis=1)
        a, b = interior[np.argmax(lengths)]
        m = len(points)
        points = np.vstack([points, 0.5 * (points[a] + points[b])])
        new_faces = []
        for f in faces:
            fl = list(f)
            if a in fl and b in fl:
                # Rotate so the face reads (u, v, w) with {u, v} = {a, b}.
                while not ({fl[0], fl[1]} == {a, b}):
                    fl = fl[1:] + fl[:1]
                u, v, w = fl
                new_faces += [(u, m, w), (m, v, w)]
            else:
                new_faces.append(tuple(fl))
        faces = np.array(new_faces, dtype=np.int64)
    return points, faces


def vertex_neighbours(faces: np.ndarray, num_vertices: int) -> list[np.ndarray]:
    """One-ring neighbour ids of every vertex."""
    nbrs: list[set[int]] = [set() for _ in range(num_vertices)]
    for a, b, c in faces:
        nbrs[a].update((b, c))
        nbrs[b].update((a, c))
        nbrs[c].update((a, b))
    return [np.array(sorted(s), dtype=np.int64) for s in nbrs]


def boundary_loops(faces: np.ndarray) -> list[list[int]]:
    """Vertex loops of the edges used by exactly one face, following face orientation."""
    directed = {}
    edges, counts = _edges_with_counts(faces)
    single = {tuple(e) for e in edges[counts == 1]}
    for f in faces:
        for u, v in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0])):
            if (min(u, v), max(u, v)) in single:
                directed[int(u)] = int(v)
    loops, seen = [], set()
    for start in directed:
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen:
            seen.add(v)
            loop.append(v)
            v = directed.get(v, start)
        loops.append(loop)
    return loops


@dataclass
class TopologyReport:
    """Manifold facts about a triangle mesh (what a MANO-format mesh must satisfy)."""

    edge_manifold: bool  # no edge used by more than two faces
    vertex_manifold: bool  # every vertex's faces form a single fan
    consistently_oriented: bool  # each interior edge is traversed once in each direction
    components: int
    boundary_loop_sizes: list[int]
    unused_vertices: int


def topology_report(faces: np.ndarray, num_vertices: int) -> TopologyReport:
    faces = np.asarray(faces, dtype=np.int64)
    edges, counts = _edges_with_counts(faces)
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    _, dir_counts = np.unique(directed, axis=0, return_counts=True)
    # Vertex fans: faces around a vertex, connected through shared edges at that vertex.
    vertex_ok = True
    incident: list[list[int]] = [[] for _ in range(num_vertices)]
    for fi, f in enumerate(faces):
        for v in f:
            incident[v].append(fi)
    for v, fis in enumerate(incident):
        if not fis:
            continue
        others = [set(int(x) for x in faces[fi] if x != v) for fi in fis]
        reached, frontier = {0}, [0]
        while frontier:
            i = frontier.pop()
            for j in range(len(fis)):
                if j not in reached and others[i] & others[j]:
                    reached.add(j)
                    frontier.append(j)
        vertex_ok &= len(reached) == len(fis)
    # Connected components over the face graph.
    parent = list(range(num_vertices))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        parent[find(int(a))] = find(int(b))
    used = np.unique(faces)
    components = len({find(int(v)) for v in used})
    return TopologyReport(
        edge_manifold=bool(counts.max() <= 2),
        vertex_manifold=bool(vertex_ok),
        consistently_oriented=bool(dir_counts.max() == 1),
        components=components,
        boundary_loop_sizes=sorted(len(loop) for loop in boundary_loops(faces)),
        unused_vertices=int(num_vertices - len(used)),
    )


def _orient_consistently(faces: np.ndarray) -> np.ndarray:
    """Flip faces so that neighbours traverse their shared edge in opposite directions."""
    faces = faces.copy()
    by_edge: dict[tuple[int, int], list[int]] = {}
    for fi, f in enumerate(faces):
        for u, v in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0])):
            by_edge.setdefault((min(u, v), max(u, v)), []).append(fi)
    done = np.zeros(len(faces), dtype=bool)
    for seed in range(len(faces)):
        if done[seed]:
            continue
        done[seed] = True
        stack = [seed]
        while stack:
            fi = stack.pop()
            f = faces[fi]
            for u, v in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0])):
                for fj in by_edge[(min(u, v), max(u, v))]:
                    if done[fj]:
                        continue
                    g = list(faces[fj])
                    same_direction = any(g[k] == u and g[(k + 1) % 3] == v for k in range(3))
                    if same_direction:
                        faces[fj] = faces[fj][[0, 2, 1]]
                    done[fj] = True
                    stack.append(fj)
    return faces


def _orient_outward(points: np.ndarray, faces: np.ndarray, boundary: list[int]) -> np.ndarray:
    """Flip all faces if the enclosed volume (wrist capped by a fan) is negative."""
    centre = points[boundary].mean(0)
    tri = points[faces]
    volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum()
    loop = boundary_loops(faces)[0]
    for i in range(len(loop)):
        a, b = points[loop[i]], points[loop[(i + 1) % len(loop)]]
        volume += centre @ np.cross(b, a)
    return faces if volume > 0 else faces[:, [0, 2, 1]]


def _relax(points: np.ndarray, faces: np.ndarray, surface: HandSurface, pinned: dict[int, np.ndarray],
           boundary: list[int], iterations: int = 60) -> np.ndarray:
    """Alternate umbrella smoothing and projection onto the implicit surface."""
    nbrs = vertex_neighbours(faces, len(points))
    rows = np.concatenate([np.full(len(nb), v) for v, nb in enumerate(nbrs)])
    cols = np.concatenate(nbrs)
    vals = np.concatenate([np.full(len(nb), 1.0 / len(nb)) for nb in nbrs])
    umbrella = sparse.csr_matrix((vals, (rows, cols)), shape=(len(points), len(points)))
    loop = boundary_loops(faces)[0]
    ring_nbrs = {v: (loop[i - 1], loop[(i + 1) % len(loop)]) for i, v in enumerate(loop)}
    pin_ids = np.array(list(pinned))
    pin_pos = np.array([pinned[i] for i in pin_ids])
    bidx = np.array(boundary)
    p = points.copy()
    for _ in range(iterations):
        avg = umbrella @ p
        for v, (u, w) in ring_nbrs.items():
            avg[v] = 0.5 * (p[u] + p[w])
        p = p + 0.5 * (avg - p)
        p = surface.project(p, iterations=1)
        for _ in range(2):  # boundary: on the surface and on the cut plane
            p[bidx, 0] = _WRIST_CUT_X
            p[bidx] = surface.project(p[bidx], iterations=1)
        p[bidx, 0] = _WRIST_CUT_X
        p[pin_ids] = pin_pos
    interior = np.setdiff1d(np.arange(len(p)), np.concatenate([bidx, pin_ids]))
    p[interior] = surface.project(p[interior], iterations=3)
    return p


# ----------------------------------------------------------------------------------------
# Skinning, joint regressor, shape space, pose PCA
# ----------------------------------------------------------------------------------------

def _smoothstep(t: np.ndarray) -> np.ndarray:
    """0 for t <= -1, 1 for t >= 1, C1 in between."""
    u = np.clip((t + 1.0) * 0.5, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _compact_kernel(d: np.ndarray, radius: float) -> np.ndarray:
    u = np.clip(d / radius, 0.0, 1.0)
    return (1.0 - u * u) ** 3


@dataclass
class _ChainCoords:
    """Per vertex and finger: distance to the finger's capsules and arc position (0 at its base joint)."""

    distance: np.ndarray  # (V, 5)
    arc: np.ndarray  # (V, 5)
    joint_arcs: dict[str, np.ndarray]  # finger -> arc positions of its 3 joints


def _chain_coordinates(points: np.ndarray, skeleton: Skeleton, surface: HandSurface) -> _ChainCoords:
    distance = np.stack([surface.finger(points, f) for f in FINGER_NAMES], 1)
    arc = np.zeros_like(distance)
    joint_arcs = {}
    for ci, f in enumerate(FINGER_NAMES):
        line = _Polyline(skeleton.chains[f], skeleton.radii[f])
        arc[:, ci] = [line.project(p) for p in points]
        joint_arcs[f] = line.stations[:3]
    return _ChainCoords(distance=distance, arc=arc, joint_arcs=joint_arcs)


# Half-widths (metres) of the blend bands at each finger's first, second and third joint.
_BANDS = {"thumb": (0.016, 0.006, 0.005), "default": (0.009, 0.005, 0.004)}
_FINGER_AFFINITY_RADIUS = 0.006
_FINGER_REACH = 0.012


def _skinning_weights(coords: _ChainCoords) -> np.ndarray:
    """Blend weights: palm (wrist joint) vs the nearest finger, banded along each finger.

    Along a finger, weight passes from one segment to the next with a smoothstep over a
    band centred on the joint; between fingers (the webs) it is shared by the fingers
    within a few millimetres of the nearest one; far from every finger it is all palm.
    """
    V = len(coords.distance)
    d = np.maximum(coords.distance, 0.0)
    d_min = d.min(1, keepdims=True)
    reach = _compact_kernel(d_min[:, 0], _FINGER_REACH)
    share = _compact_kernel(d - d_min, _FINGER_AFFINITY_RADIUS)
    share /= share.sum(1, keepdims=True)
    weights = np.zeros((V, NUM_MANO_JOINTS))
    weights[:, 0] = 1.0 - reach
    for ci, f in enumerate(FINGER_NAMES):
        j1, j2, j3 = _FINGERS[f]["joints"]
        b0, b1, b2 = _BANDS.get(f, _BANDS["default"])
        s = coords.arc[:, ci]
        arcs = coords.joint_arcs[f]
        t0 = _smoothstep((s - arcs[0]) / b0)
        t1 = _smoothstep((s - arcs[1]) / b1)
        t2 = _smoothstep((s - arcs[2]) / b2)
        g = reach * share[:, ci]
        weights[:, 0] += g * (1.0 - t0)
        weights[:, j1] += g * (t0 - t1)
        weights[:, j2] += g * (t1 - t2)
        weights[:, j3] += g * t2
    weights[weights < 1e-6] = 0.0
    return weights / weights.sum(1, keepdims=True)


def _joint_regressor(points: np.ndarray, coords: _ChainCoords, skeleton: Skeleton,
                     boundary: list[int]) -> np.ndarray:
    """Each joint as a non-negative, sum-to-one average of the vertex ring around it,
    the average chosen closest to uniform that reproduces the joint's rest position."""
    regressor = np.zeros((NUM_MANO_JOINTS, len(points)))
    nearest = np.argmin(np.maximum(coords.distance, 0.0), axis=1)
    wrist_x = skeleton.joints[0, 0]
    rings: dict[int, np.ndarray] = {0: np.flatnonzero(np.abs(points[:, 0] - wrist_x) < 0.012)}
    for ci, f in enumerate(FINGER_NAMES):
        for k, j in enumerate(_FINGERS[f]["joints"]):
            offset = coords.arc[:, ci] - coords.joint_arcs[f][k]
            on_finger = (nearest == ci) & (coords.distance[:, ci] < 0.012)
            # Widen the band until it holds vertices on both sides of the joint.
            width = 0.003
            while min(np.sum(on_finger & (offset < 0) & (offset > -width)),
                      np.sum(on_finger & (offset >= 0) & (offset < width))) < 6:
                width += 0.0005
            rings[j] = np.flatnonzero(on_finger & (np.abs(offset) < width))
    for j, ring in rings.items():
        target = skeleton.joints[j]
        n = len(ring)
        uniform = np.full(n, 1.0 / n)
        fit, reg = 1000.0, 0.05
        A = np.vstack([fit * points[ring].T, fit * np.ones((1, n)), reg * np.eye(n)])
        b = np.concatenate([fit * target, [fit], reg * uniform])
        w = lsq_linear(A, b, bounds=(0.0, 1.0)).x
        regressor[j, ring] = w / w.sum()
    return regressor


def _shape_directions(points: np.ndarray, weights: np.ndarray, skeleton: Skeleton) -> np.ndarray:
    """Ten smooth shape directions (778, 3, 10), orthogonalised, ~one standard deviation each.

    Each direction rescales bones: the palm by an affine map about the wrist, each finger
    segment along its axis (length) and across it (thickness); vertices follow their
    bones through the skinning weights, so the fields are smooth across joints."""
    J = skeleton.joints
    children = {j: [c for c in range(NUM_MANO_JOINTS) if MANO_PARENTS[c] == j] for j in range(NUM_MANO_JOINTS)}
    tip_of = {_FINGERS[f]["joints"][2]: skeleton.tips[f] for f in FINGER_NAMES}
    finger_of = {j: f for f in FINGER_NAMES for j in _FINGERS[f]["joints"]}

    def field(palm_scale=(1.0, 1.0, 1.0), length=None, thickness=None) -> np.ndarray:
        length = length or {}
        thickness = thickness or {}
        M = np.diag(palm_scale)
        new_j = J.copy()
        for j in range(1, NUM_MANO_JOINTS):  # parents precede children
            p = MANO_PARENTS[j]
            if p == 0:
                new_j[j] = J[0] + M @ (J[j] - J[0])
            else:
                new_j[j] = new_j[p] + length.get((finger_of[j], j), 1.0) * (J[j] - J[p])
        moved = np.zeros((len(points), NUM_MANO_JOINTS, 3))
        moved[:, 0] = J[0] + (points - J[0]) @ M.T
        for j in range(1, NUM_MANO_JOINTS):
            f = finger_of[j]
            end = J[children[j][0]] if children[j] else tip_of[j]
            axis = _unit(end - J[j])
            rel = points - J[j]
            along = (rel @ axis)[:, None] * axis
            lam = length.get((f, children[j][0] if children[j] else "tip"), 1.0)
            moved[:, j] = new_j[j] + lam * along + thickness.get(f, 1.0) * (rel - along)
        return np.einsum("vj,vjk->vk", weights, moved) - points

    fingers4 = FINGER_NAMES[1:]

    def lengths(fingers, factor, segments=(0, 1, 2)):
        out = {}
        for f in fingers:
            js = _FINGERS[f]["joints"]
            ends = [js[1], js[2], "tip"]
            for s in segments:
                out[(f, ends[s])] = factor
        return out

    all_fingers = lengths(FINGER_NAMES, 1.05)
    raw = [
        field((1.05, 1.05, 1.05), all_fingers, {f: 1.05 for f in FINGER_NAMES}),  # overall size
        field((1.0, 1.0, 1.06)),  # palm width
        field(length=lengths(fingers4, 1.06)),  # finger length
        field(thickness={f: 1.08 for f in fingers4}),  # finger thickness
        field(length=lengths(("thumb",), 1.07)),  # thumb length
        field((1.05, 1.0, 1.0), lengths(fingers4, 0.96)),  # long palm, short fingers
        field((1.0, 1.06, 1.0), thickness={"thumb": 1.08}),  # palm and thenar bulk
        field(length={**lengths(("index",), 1.05), **lengths(("ring",), 0.95)}),  # index vs ring
        field(length=lengths(("pinky",), 1.07)),  # pinky length
        field(length={**lengths(fingers4, 0.96, (0,)), **lengths(fingers4, 1.08, (1, 2))}),  # phalanx ratio
    ]
    # Orthogonalise in the order above (each direction minus its part along the earlier
    # ones), keeping each direction's original magnitude.
    matrix = np.stack([d.ravel() for d in raw], 1)
    q, r = np.linalg.qr(matrix)
    basis = q * np.sign(np.diag(r)) * np.linalg.norm(matrix, axis=0)
    return basis.reshape(len(points), 3, NUM_BETAS)


def _pose_axes(skeleton: Skeleton) -> tuple[np.ndarray, np.ndarray]:
    """Flexion and abduction axes (15, 3) of MANO's 15 articulated joints at rest."""
    J = skeleton.joints
    palm_normal = np.array([0.0, -1.0, 0.0])
    flex = np.zeros((15, 3))
    abd = np.zeros((15, 3))
    for f in FINGER_NAMES:
        js = _FINGERS[f]["joints"]
        ends = [J[js[1]], J[js[2]], skeleton.tips[f]]
        for j, end in zip(js, ends):
            d = _unit(end - J[j])
            if f == "thumb":
                # The thumb pad faces across the palm: it curls toward the palm and the pinky.
                toward = _unit(np.array([0.0, -0.75, -0.65]))
                toward = _unit(toward - (toward @ d) * d)
                flex[j - 1] = _unit(np.cross(d, toward))
                abd[j - 1] = toward
            else:
                flex[j - 1] = _unit(np.cross(d, palm_normal))
                abd[j - 1] = palm_normal
    return flex, abd


def _sample_articulations(skeleton: Skeleton, count: int, rng: np.random.Generator) -> np.ndarray:
    """Grasp-like hand poses (count, 45): coupled finger curls, spread, thumb opposition."""
    flex_axes, abd_axes = _pose_axes(skeleton)
    grasp = rng.beta(1.6, 2.2, size=count)
    curl = {
        "index": grasp + rng.normal(0, 0.12, count),
        "middle": grasp + rng.normal(0, 0.08, count),
    }
    ulnar = grasp + rng.normal(0, 0.10, count)  # ring and little finger move together
    curl["ring"] = ulnar + rng.normal(0, 0.05, count)
    curl["pinky"] = ulnar + rng.normal(0, 0.07, count)
    curl["thumb"] = grasp + rng.normal(0, 0.15, count)
    curl = {k: np.clip(v, -0.08, 1.0) for k, v in curl.items()}
    spread = rng.normal(0.0, np.radians(7.0), count)
    spread_gain = {"index": 1.0, "middle": 0.2, "ring": -0.6, "pinky": -1.2}
    opposition = np.clip(0.7 * grasp + rng.normal(0.15, 0.2, count), 0.0, 1.0)

    pose = np.zeros((count, 15, 3))
    for f in FINGER_NAMES:
        js = _FINGERS[f]["joints"]
        c = curl[f]
        if f == "thumb":
            flexion = [np.radians(35) * opposition + np.radians(10) * c,
                       np.radians(45) * c + rng.normal(0, np.radians(4), count),
                       np.radians(60) * c + rng.normal(0, np.radians(5), count)]
            abduction = [np.radians(25) * (opposition - 0.4), np.zeros(count), np.zeros(count)]
        else:
            pip = np.radians(95) * c * rng.uniform(0.85, 1.1, count)
            flexion = [np.radians(75) * c + rng.normal(0, np.radians(5), count), pip,
                       0.67 * pip + rng.normal(0, np.radians(4), count)]
            abduction = [spread * spread_gain[f] * (1.0 - np.clip(c, 0, 1)), np.zeros(count), np.zeros(count)]
        for k, j in enumerate(js):
            rot = (Rotation.from_rotvec(abduction[k][:, None] * abd_axes[j - 1])
                   * Rotation.from_rotvec(flexion[k][:, None] * flex_axes[j - 1]))
            pose[:, j - 1] = rot.as_rotvec()
    pose += rng.normal(0.0, np.radians(1.5), pose.shape)  # keeps all 45 directions populated
    return pose.reshape(count, NUM_POSE_PARAMS)


def _pose_pca(poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (45,) and components (45, 45) with rows as orthonormal components by variance."""
    mean = poses.mean(0)
    centred = poses - mean
    variance, vectors = np.linalg.eigh(centred.T @ centred)
    vt = vectors[:, np.argsort(variance)[::-1]].T
    # Fix each component's sign so the largest entry is positive (deterministic output).
    signs = np.sign(vt[np.arange(len(vt)), np.argmax(np.abs(vt), axis=1)])
    return mean, vt * signs[:, None]


# ----------------------------------------------------------------------------------------
# Assembly and mirroring
# ----------------------------------------------------------------------------------------

def build_standin_right(seed: int = 0) -> dict[str, np.ndarray]:
    """All MANO arrays of the right stand-in hand (float32 where smplx allows)."""
    skeleton = build_skeleton()
    surface = HandSurface(skeleton)
    coarse = _build_coarse_mesh(skeleton)
    if len(coarse.points) > NUM_VERTICES:
        raise RuntimeError(f"coarse mesh already has {len(coarse.points)} > {NUM_VERTICES} vertices")
    points, faces = _split_longest_edges(coarse.points, coarse.faces, NUM_VERTICES)
    pinned = {coarse.tips[f]: skeleton.tips[f] for f in FINGER_NAMES}
    points = _relax(points, faces, surface, pinned, coarse.boundary)
    faces = _orient_outward(points, _orient_consistently(faces), coarse.boundary)

    # Put each fingertip vertex at its HO-3D id; the others keep their relative order.
    tip_old = {FINGERTIP_VERTEX_IDS[k]: coarse.tips[f] for k, f in enumerate(FINGER_NAMES)}
    rest = iter(v for v in range(NUM_VERTICES) if v not in set(tip_old.values()))
    new_to_old = np.array([tip_old[i] if i in tip_old else next(rest) for i in range(NUM_VERTICES)])
    old_to_new = np.argsort(new_to_old)
    points = points[new_to_old]
    faces = old_to_new[faces]
    boundary = [int(old_to_new[b]) for b in coarse.boundary]

    coords = _chain_coordinates(points, skeleton, surface)
    weights = _skinning_weights(coords)
    regressor = _joint_regressor(points, coords, skeleton, boundary)
    shapedirs = _shape_directions(points, weights, skeleton)
    hands_mean, hands_components = _pose_pca(_sample_articulations(skeleton, 20000, np.random.default_rng(seed)))

    kintree = np.array([[4294967295] + list(MANO_PARENTS[1:]), list(range(NUM_MANO_JOINTS))], dtype=np.int64)
    return {
        "v_template": points.astype(np.float32),
        "shapedirs": shapedirs.astype(np.float32),
        "posedirs": np.zeros((NUM_VERTICES, 3, 9 * (NUM_MANO_JOINTS - 1)), dtype=np.float32),
        "J_regressor": regressor.astype(np.float32),
        "weights": weights.astype(np.float32),
        "kintree_table": kintree,
        "f": faces.astype(np.int32),
        "hands_components": hands_components.astype(np.float32),
        "hands_mean": hands_mean.astype(np.float32),
    }


_MIRROR = np.array([-1.0, 1.0, 1.0])
_POSE_MIRROR = np.tile([1.0, -1.0, -1.0], NUM_MANO_JOINTS - 1)


def mirror_mano_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The other hand's arrays: reflect x, mirror pose spaces, flip face winding."""
    out = dict(arrays)
    out["v_template"] = arrays["v_template"] * _MIRROR.astype(np.float32)
    out["shapedirs"] = arrays["shapedirs"] * _MIRROR.astype(np.float32)[None, :, None]
    # Pose features are entries of (R - I); reflecting conjugates R by diag(-1, 1, 1).
    m = _MIRROR
    feature_sign = np.tile(np.outer(m, m).ravel(), NUM_MANO_JOINTS - 1)
    out["posedirs"] = arrays["posedirs"] * (m[None, :, None] * feature_sign[None, None, :]).astype(np.float32)
    out["f"] = arrays["f"][:, [0, 2, 1]]
    out["hands_components"] = arrays["hands_components"] * _POSE_MIRROR.astype(np.float32)
    out["hands_mean"] = arrays["hands_mean"] * _POSE_MIRROR.astype(np.float32)
    return out


def build_standin(side: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Arrays of the stand-in for ``side`` ('right' or 'left')."""
    if side not in STANDIN_FILES:
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    right = build_standin_right(seed)
    return right if side == "right" else mirror_mano_arrays(right)


def write_standin(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write both stand-in hands as MANO-format .npz files; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    right = build_standin_right(seed)
    paths = {}
    for side, arrays in (("right", right), ("left", mirror_mano_arrays(right))):
        path = out / STANDIN_FILES[side]
        np.savez_compressed(path, **arrays)
        paths[side] = path
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Regenerate the MANO-format stand-in hand models.")
    parser.add_argument("--out", type=Path, default=ASSET_DIR, help=f"output directory (default {ASSET_DIR})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pose sampling behind the PCA")
    args = parser.parse_args(argv)
    for side, path in write_standin(args.out, args.seed).items():
        print(f"{side}: {path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
