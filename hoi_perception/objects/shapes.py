"""Parametric object meshes: box, cylinder (can), bottle and mug.

The shipped object library needs hand-held objects without shipping mesh files.
Every builder returns a closed triangle mesh with consistently outward-facing
triangles (counter-clockwise seen from outside), welded vertices, and texture
coordinates per face corner so seams do not break the welding:

* boxes map every face onto the whole texture, upright for the side faces;
* surfaces of revolution (cylinder, bottle, mug body) use u = angle around the
  z axis / 2 pi and v = arc length along the profile from the bottom centre,
  normalised to [0, 1];
* the mug handle, a half torus capped inside the wall, maps u along the arc and
  v around the tube.

Dimensions are in metres, z is up, and the mesh is centred on the centre of its
axis-aligned bounding box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class ShapeMesh:
    """Vertices (V, 3), faces (F, 3) and per-corner texture coordinates (F, 3, 2)."""

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray


def box(width: float, depth: float, height: float) -> ShapeMesh:
    """Axis-aligned box with extents ``width`` (x), ``depth`` (y), ``height`` (z)."""
    _check_positive(width=width, depth=depth, height=height)
    half = np.array([width, depth, height]) / 2.0
    # Vertex i has sign bits (x, y, z) = (i >> 2, i >> 1, i) & 1, 1 meaning +half.
    signs = np.array([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)]) * 2 - 1
    vertices = signs * half
    # Each face: outward normal n, "right" r and "up" u as seen from outside, r x u = n.
    frames = [
        ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
        ((-1, 0, 0), (0, -1, 0), (0, 0, 1)),
        ((0, 1, 0), (-1, 0, 0), (0, 0, 1)),
        ((0, -1, 0), (1, 0, 0), (0, 0, 1)),
        ((0, 0, 1), (1, 0, 0), (0, 1, 0)),
        ((0, 0, -1), (-1, 0, 0), (0, 1, 0)),
    ]
    faces, uv = [], []
    for frame in frames:
        n, r, u = (np.array(a) for a in frame)
        quad = []  # bottom-left, bottom-right, top-right, top-left
        for sr, su in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
            s = n + sr * r + su * u
            quad.append(int(((s[0] > 0) << 2) | ((s[1] > 0) << 1) | (s[2] > 0)))
        quad_uv = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
        faces += [[quad[0], quad[1], quad[2]], [quad[0], quad[2], quad[3]]]
        uv += [quad_uv[[0, 1, 2]], quad_uv[[0, 2, 3]]]
    return ShapeMesh(vertices.astype(np.float64), np.array(faces, dtype=np.int64), np.array(uv))


def cylinder(radius: float, height: float, segments: int = 48) -> ShapeMesh:
    """Closed can: a cylinder of ``radius`` and ``height`` with a small bevel at both rims."""
    _check_positive(radius=radius, height=height)
    bevel = min(0.08 * radius, 0.08 * height, 0.003)
    profile = [(0.0, 0.0), (radius - bevel, 0.0), (radius, bevel), (radius, height / 2),
               (radius, height - bevel), (radius - bevel, height), (0.0, height)]
    return _centred(lathe(profile, segments))


def bottle(radius: float, height: float, neck_radius: float, neck_height: float, shoulder_height: float,
           depth: float | None = None, segments: int = 48) -> ShapeMesh:
    """Bottle: round body of ``radius``, a smooth shoulder narrowing over ``shoulder_height``
    to a neck of ``neck_radius`` and ``neck_height`` (the cap). ``depth`` flattens the
    body to that extent along y (mustard or bleach bottles); None keeps it round."""
    _check_positive(radius=radius, height=height, neck_radius=neck_radius, neck_height=neck_height,
                    shoulder_height=shoulder_height)
    if neck_radius >= radius:
        raise ValueError(f"neck_radius ({neck_radius}) must be smaller than radius ({radius})")
    body_top = height - neck_height - shoulder_height
    if body_top <= 0:
        raise ValueError(f"neck_height + shoulder_height ({neck_height + shoulder_height}) must be less than "
                         f"height ({height})")
    if depth is not None:
        _check_positive(depth=depth)
        if depth > 2 * radius:
            raise ValueError(f"depth ({depth}) must not exceed the body's diameter ({2 * radius})")
    bevel = min(0.1 * radius, 0.05 * body_top, 0.004)
    profile = [(0.0, 0.0), (radius - bevel, 0.0), (radius, bevel)]
    profile += [(radius, bevel + (body_top - bevel) * k / 4) for k in range(1, 5)]
    for k in range(1, 9):  # cosine shoulder: tangent to body and neck
        t = k / 8
        r = neck_radius + (radius - neck_radius) * 0.5 * (1 + math.cos(math.pi * t))
        profile.append((r, body_top + shoulder_height * t))
    cap_bevel = min(0.2 * neck_radius, 0.2 * neck_height, 0.002)
    profile += [(neck_radius, height - cap_bevel), (neck_radius - cap_bevel, height), (0.0, height)]
    mesh = lathe(profile, segments)
    if depth is not None:
        mesh.vertices[:, 1] *= depth / (2 * radius)
    return _centred(mesh)


def mug(radius: float, height: float, wall: float, handle_radius: float, handle_thickness: float,
        segments: int = 48) -> ShapeMesh:
    """Open mug: a cup of outer ``radius`` and ``height`` with walls and bottom ``wall``
    thick, plus a half-torus handle on +x of arc radius ``handle_radius`` and tube
    radius ``handle_thickness``.

    The handle is its own closed surface whose capped ends sit in the middle of the
    wall, so the mesh is two closed, outward-oriented components that meet inside
    the wall (no boolean union)."""
    _check_positive(radius=radius, height=height, wall=wall, handle_radius=handle_radius,
                    handle_thickness=handle_thickness)
    if 2 * wall >= radius or wall >= height:
        raise ValueError(f"wall ({wall}) must be less than half the radius ({radius}) and the height ({height})")
    if 2 * (handle_radius + handle_thickness) >= height:
        raise ValueError(f"the handle (2 x (handle_radius + handle_thickness) = "
                         f"{2 * (handle_radius + handle_thickness)}) must fit within height ({height})")
    if handle_thickness >= handle_radius:
        raise ValueError(f"handle_thickness ({handle_thickness}) must be smaller than handle_radius ({handle_radius})")
    inner = radius - wall
    bevel = min(0.5 * wall, 0.002)
    profile = [(0.0, 0.0), (radius - bevel, 0.0), (radius, bevel), (radius, height / 2),
               (radius, height - bevel), (radius - bevel, height), (inner + bevel, height),
               (inner, height - bevel), (inner, height / 2), (inner, wall + bevel),
               (inner - bevel, wall), (0.0, wall)]
    body = lathe(profile, segments)
    handle = _half_torus(centre=(radius - wall / 2, 0.0, height / 2), arc_radius=handle_radius,
                         tube_radius=handle_thickness, arc_segments=max(8, segments // 2),
                         tube_segments=max(8, segments // 4))
    mesh = ShapeMesh(np.concatenate([body.vertices, handle.vertices]),
                     np.concatenate([body.faces, handle.faces + len(body.vertices)]),
                     np.concatenate([body.uv, handle.uv]))
    return _centred(mesh)


def lathe(profile: list[tuple[float, float]], segments: int) -> ShapeMesh:
    """Surface of revolution about z of a profile [(r, z), ...] that starts and ends on the
    axis (r = 0). Drawn with r to the right and z up, the profile must keep the solid on
    its left (bottom centre, out along the bottom, up the outside, ... back to the axis);
    the triangles then face outward."""
    if int(segments) != segments or segments < 3:
        raise ValueError(f"segments must be an integer >= 3, got {segments}")
    prof = np.asarray(profile, dtype=np.float64)
    if prof.ndim != 2 or prof.shape[1] != 2 or len(prof) < 3:
        raise ValueError(f"profile must be a list of at least 3 (r, z) pairs, got shape {prof.shape}")
    if prof[0, 0] != 0 or prof[-1, 0] != 0 or np.any(prof[1:-1, 0] <= 0):
        raise ValueError("profile must start and end on the axis (r = 0) and stay off it in between")
    n_rings = len(prof) - 2
    angle = 2 * np.pi * np.arange(segments) / segments
    ring_r, ring_z = prof[1:-1, 0], prof[1:-1, 1]
    rings = np.stack([ring_r[:, None] * np.cos(angle)[None, :], ring_r[:, None] * np.sin(angle)[None, :],
                      np.broadcast_to(ring_z[:, None], (n_rings, segments))], axis=-1).reshape(-1, 3)
    bottom, top = 0, 1 + n_rings * segments
    vertices = np.concatenate([[[0.0, 0.0, prof[0, 1]]], rings, [[0.0, 0.0, prof[-1, 1]]]])

    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(prof, axis=0), axis=1))])
    v_of = arc / arc[-1]
    j = np.arange(segments)
    j1 = (j + 1) % segments
    u0, u1, umid = j / segments, (j + 1) / segments, (j + 0.5) / segments

    def ring(i: int, jj: np.ndarray) -> np.ndarray:  # vertex index of ring i (0-based) at angle index jj
        return 1 + i * segments + jj

    faces, uv = [], []
    faces.append(np.stack([np.full(segments, bottom), ring(0, j1), ring(0, j)], axis=1))
    uv.append(np.stack([np.stack([umid, np.full(segments, v_of[0])], 1), np.stack([u1, np.full(segments, v_of[1])], 1),
                        np.stack([u0, np.full(segments, v_of[1])], 1)], axis=1))
    for i in range(n_rings - 1):
        a, b, c, d = ring(i, j), ring(i, j1), ring(i + 1, j1), ring(i + 1, j)
        va, vc = np.full(segments, v_of[i + 1]), np.full(segments, v_of[i + 2])
        uva, uvb = np.stack([u0, va], 1), np.stack([u1, va], 1)
        uvc, uvd = np.stack([u1, vc], 1), np.stack([u0, vc], 1)
        faces += [np.stack([a, b, c], 1), np.stack([a, c, d], 1)]
        uv += [np.stack([uva, uvb, uvc], 1), np.stack([uva, uvc, uvd], 1)]
    last = n_rings - 1
    faces.append(np.stack([ring(last, j), ring(last, j1), np.full(segments, top)], axis=1))
    v_last = np.full(segments, v_of[-2])
    uv.append(np.stack([np.stack([u0, v_last], 1), np.stack([u1, v_last], 1),
                        np.stack([umid, np.full(segments, v_of[-1])], 1)], axis=1))
    return ShapeMesh(vertices, np.concatenate(faces).astype(np.int64), np.concatenate(uv))


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Volume enclosed by a closed mesh; positive when its triangles face outward."""
    tri = np.asarray(vertices, dtype=np.float64)[faces]
    return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0)


def _half_torus(centre: tuple[float, float, float], arc_radius: float, tube_radius: float,
                arc_segments: int, tube_segments: int) -> ShapeMesh:
    """Half torus in the x-z plane bulging towards +x, with flat caps at both ends."""
    cx, cy, cz = centre
    phi = np.linspace(-np.pi / 2, np.pi / 2, arc_segments + 1)  # along the arc
    theta = 2 * np.pi * np.arange(tube_segments) / tube_segments  # around the tube
    # Arc centre line p(phi) = c + a (cos phi, 0, sin phi); the tube circle spans the
    # radial direction (cos phi, 0, sin phi) and y.
    radial = np.stack([np.cos(phi), np.zeros_like(phi), np.sin(phi)], axis=1)
    line = np.array(centre) + arc_radius * radial
    yaxis = np.array([0.0, 1.0, 0.0])
    tube = (line[:, None, :] + tube_radius * (np.cos(theta)[None, :, None] * radial[:, None, :]
                                              + np.sin(theta)[None, :, None] * yaxis))
    n_arc, n_tube = len(phi), tube_segments
    vertices = np.concatenate([tube.reshape(-1, 3), line[[0, -1]]])
    start_cap, end_cap = n_arc * n_tube, n_arc * n_tube + 1
    grid_i, grid_k = np.meshgrid(np.arange(n_arc - 1), np.arange(n_tube), indexing="ij")
    i, k = grid_i.ravel(), grid_k.ravel()
    k1 = (k + 1) % n_tube
    a, b, c, d = i * n_tube + k, i * n_tube + k1, (i + 1) * n_tube + k1, (i + 1) * n_tube + k
    kk = np.arange(n_tube)
    kk1 = (kk + 1) % n_tube
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1),
                            np.stack([np.full(n_tube, start_cap), kk1, kk], 1),
                            np.stack([np.full(n_tube, end_cap), (n_arc - 1) * n_tube + kk,
                                      (n_arc - 1) * n_tube + kk1], 1)])
    if signed_volume(vertices, faces) < 0:
        faces = faces[:, ::-1].copy()
    # u along the arc, v around the tube; the caps take the texel at their ring.
    u_of = np.arange(n_arc) / (n_arc - 1)
    vert_uv = np.concatenate([np.stack(np.meshgrid(u_of, np.arange(n_tube) / n_tube, indexing="ij"),
                                       -1).reshape(-1, 2), [[0.0, 0.5], [1.0, 0.5]]])
    uv = vert_uv[faces]
    # The quad strip's last column wraps to v = 0; give those corners v = 1 instead.
    quads = len(a) * 2
    tri_v = uv[:quads, :, 1]
    k_of = np.concatenate([k, k])
    wraps = (k_of == n_tube - 1)[:, None] & (tri_v == 0.0)
    tri_v[wraps] = 1.0
    return ShapeMesh(vertices, faces.astype(np.int64), uv)


def _centred(mesh: ShapeMesh) -> ShapeMesh:
    lo, hi = mesh.vertices.min(axis=0), mesh.vertices.max(axis=0)
    mesh.vertices = mesh.vertices - (lo + hi) / 2.0
    return mesh


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive length in metres, got {value!r}")
