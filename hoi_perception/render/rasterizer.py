"""Headless z-buffer rasteriser in vectorised NumPy.

Synthetic training images, debug overlays and tests need renders of a hand mesh
and an object in CI, where no GPU, display or OpenGL library exists. This module
renders triangle meshes given in the camera frame (OpenCV convention: x right,
y down, z forward, metres) with a pinhole matrix ``K``:

1. every mesh's triangles are gathered with per-corner attributes (camera-frame
   position, normal, colour, texture coordinate);
2. triangles crossing the near plane are clipped in 3D, those behind it dropped;
3. triangles are projected, culled against the image and by zero area, and all
   pixel centres inside their bounding boxes are generated in one batch; the
   edge functions keep those inside;
4. the nearest fragment per pixel wins (``np.minimum.at`` over flattened pixel
   ids); only winners are shaded, with perspective-correct barycentrics;
5. shading is ambient + Lambert + optional Blinn-Phong with normals flipped
   towards the viewer (two-sided), albedo = vertex colour x bilinear texture.

Pixel centres sit at integer coordinates, as in OpenCV: pixel (row v, column u)
samples the ray through (u, v). There is no Python loop over triangles or
pixels; loops run over meshes and over triangle chunks that bound memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Attribute layout of a triangle corner while rasterising.
_POS = slice(0, 3)
_NRM = slice(3, 6)
_COL = slice(6, 9)
_UV = slice(9, 11)
_ATTR_DIM = 11

# Upper bound on candidate (triangle, pixel) pairs evaluated at once.
_MAX_CANDIDATES = 1 << 21
_EDGE_TOLERANCE = 1e-9  # edge-function slack (pixels^2) so pixels on shared edges are never lost


@dataclass
class Mesh:
    """A triangle mesh in the camera frame, with optional appearance.

    ``vertices`` (V, 3) metres; ``faces`` (F, 3) vertex indices.
    ``vertex_colors`` RGB in 0..255, either (V, 3) or one (3,) colour; default light grey.
    ``uv`` texture coordinates, (V, 2) per vertex or (F, 3, 2) per face corner
    (the latter keeps texture seams on a welded mesh); v = 0 is the image's bottom row.
    ``texture`` (H, W, 3) uint8 RGB, multiplied with the vertex colour (so give
    white vertex colours, the default when a texture is set, for the plain texture).
    ``normals`` (V, 3) or (F, 3, 3) per corner; default: area-weighted smooth vertex normals.
    ``specular`` material specular reflectance in [0, 1]; 0 is matte.
    """

    vertices: np.ndarray
    faces: np.ndarray
    vertex_colors: np.ndarray | None = None
    uv: np.ndarray | None = None
    texture: np.ndarray | None = None
    normals: np.ndarray | None = None
    specular: float = 0.0

    def __post_init__(self) -> None:
        self.vertices = np.asarray(self.vertices, dtype=np.float64)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"Mesh.vertices: expected shape (V, 3), got {self.vertices.shape}")
        if not np.all(np.isfinite(self.vertices)):
            raise ValueError("Mesh.vertices: contains NaN or infinite values")
        faces = np.asarray(self.faces)
        if faces.size == 0:
            faces = faces.reshape(0, 3)
        if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
            raise ValueError(f"Mesh.faces: expected integer array of shape (F, 3), got {faces.dtype} {faces.shape}")
        n_vertices = len(self.vertices)
        if faces.size and (faces.min() < 0 or faces.max() >= n_vertices):
            raise ValueError(f"Mesh.faces: indices must lie in [0, {n_vertices}), got [{faces.min()}, {faces.max()}]")
        self.faces = faces.astype(np.int64)
        n_faces = len(self.faces)
        if self.vertex_colors is not None:
            colors = np.asarray(self.vertex_colors, dtype=np.float64)
            if colors.shape not in ((3,), (n_vertices, 3)):
                raise ValueError(f"Mesh.vertex_colors: expected (3,) or ({n_vertices}, 3), got {colors.shape}")
            if colors.min() < 0 or colors.max() > 255:
                raise ValueError("Mesh.vertex_colors: values must lie in 0..255")
            self.vertex_colors = colors
        if self.uv is not None:
            uv = np.asarray(self.uv, dtype=np.float64)
            if uv.shape not in ((n_vertices, 2), (n_faces, 3, 2)):
                raise ValueError(f"Mesh.uv: expected ({n_vertices}, 2) or ({n_faces}, 3, 2), got {uv.shape}")
            self.uv = uv
        if self.texture is not None:
            texture = np.asarray(self.texture)
            if texture.ndim != 3 or texture.shape[2] != 3 or texture.dtype != np.uint8 or min(texture.shape[:2]) < 1:
                raise ValueError(f"Mesh.texture: expected uint8 (H, W, 3), got {texture.dtype} {texture.shape}")
            if self.uv is None:
                raise ValueError("Mesh.texture: a texture needs uv coordinates")
            self.texture = texture
        if self.normals is not None:
            normals = np.asarray(self.normals, dtype=np.float64)
            if normals.shape not in ((n_vertices, 3), (n_faces, 3, 3)):
                raise ValueError(f"Mesh.normals: expected ({n_vertices}, 3) or ({n_faces}, 3, 3), got {normals.shape}")
            self.normals = normals
        if not 0.0 <= float(self.specular) <= 1.0:
            raise ValueError(f"Mesh.specular: expected a value in [0, 1], got {self.specular}")

    def corner_normals(self) -> np.ndarray:
        """Unit normals per face corner (F, 3, 3)."""
        if self.normals is None:
            normals = vertex_normals(self.vertices, self.faces)[self.faces]
        elif self.normals.ndim == 2:
            normals = self.normals[self.faces]
        else:
            normals = self.normals
        return _unit(normals)

    def corner_colors(self) -> np.ndarray:
        """Albedo RGB in [0, 1] per face corner (F, 3, 3)."""
        if self.vertex_colors is None:
            rgb = np.full(3, 1.0 if self.texture is not None else 0.8)
            return np.broadcast_to(rgb, (len(self.faces), 3, 3))
        if self.vertex_colors.ndim == 1:
            return np.broadcast_to(self.vertex_colors / 255.0, (len(self.faces), 3, 3))
        return self.vertex_colors[self.faces] / 255.0

    def corner_uv(self) -> np.ndarray:
        """Texture coordinates per face corner (F, 3, 2); zeros without uv."""
        if self.uv is None:
            return np.zeros((len(self.faces), 3, 2))
        return self.uv if self.uv.ndim == 3 else self.uv[self.faces]


@dataclass
class Lighting:
    """A directional light plus ambient term, in the camera frame.

    ``direction`` points from the surface towards the light; the default sits
    above (-y), left (-x) and behind the camera (-z), so the visible side is lit.
    ``specular`` is the light's specular intensity, scaled by each mesh's
    ``Mesh.specular``; ``shininess`` is the Blinn-Phong exponent.
    """

    direction: tuple[float, float, float] = (-0.3, -0.5, -1.0)
    ambient: float = 0.35
    diffuse: float = 0.65
    specular: float = 0.4
    shininess: float = 32.0

    def __post_init__(self) -> None:
        d = np.asarray(self.direction, dtype=np.float64)
        if d.shape != (3,) or not np.all(np.isfinite(d)) or np.linalg.norm(d) < 1e-12:
            raise ValueError(f"Lighting.direction: expected a non-zero 3-vector, got {self.direction}")
        for name in ("ambient", "diffuse", "specular"):
            if getattr(self, name) < 0:
                raise ValueError(f"Lighting.{name}: must be >= 0, got {getattr(self, name)}")
        if self.shininess <= 0:
            raise ValueError(f"Lighting.shininess: must be > 0, got {self.shininess}")

    def unit_direction(self) -> np.ndarray:
        d = np.asarray(self.direction, dtype=np.float64)
        return d / np.linalg.norm(d)


@dataclass
class RenderResult:
    """Rendered image (H, W, 3) uint8, depth (H, W) float32 camera z in metres (0 where
    empty) and instance ids (H, W) int16 (-1 background, else the mesh's index).

    ``stats`` counts the work done (for profiling): ``faces`` after near-plane
    clipping, ``rasterised_faces`` that cover the image, ``candidates`` (triangle,
    sample) pairs tested and ``fragments`` that passed the edge test.
    """

    rgb: np.ndarray
    depth: np.ndarray
    instance_ids: np.ndarray
    stats: dict[str, int] = field(default_factory=dict)

    def mask(self, index: int) -> np.ndarray:
        """Boolean (H, W) mask of the pixels where mesh ``index`` is visible."""
        return self.instance_ids == index


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted smooth vertex normals (V, 3); unreferenced vertices get zeros."""
    v = np.asarray(vertices, dtype=np.float64)
    tri = v[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 * area
    normals = np.zeros_like(v)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_n)
    return _unit(normals)


def render(meshes: list[Mesh], K: np.ndarray, width: int, height: int,
           background: np.ndarray | None = None, lighting: Lighting | None = None,
           supersample: int = 1, near: float = 0.01) -> RenderResult:
    """Render ``meshes`` (camera frame) into a ``width`` x ``height`` image.

    ``background`` (H, W, 3) uint8 is composited behind the geometry (black if
    None). ``supersample`` s renders s x s samples per pixel and averages colour
    (anti-aliasing); depth and instance ids are taken from the sample nearest the
    pixel centre (exactly the centre for odd s). Geometry closer than ``near``
    metres is clipped.
    """
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"K: expected a 3x3 camera matrix with positive focal lengths, got {K.tolist()}")
    if K[1, 0] != 0 or not np.array_equal(K[2], [0.0, 0.0, 1.0]):
        raise ValueError(f"K: expected rows [fx, s, cx], [0, fy, cy], [0, 0, 1], got {K.tolist()}")
    if int(width) != width or int(height) != height or width < 1 or height < 1:
        raise ValueError(f"width, height: expected positive integers, got {width} x {height}")
    width, height = int(width), int(height)
    if int(supersample) != supersample or supersample < 1:
        raise ValueError(f"supersample: expected an integer >= 1, got {supersample}")
    if near <= 0:
        raise ValueError(f"near: expected a positive distance in metres, got {near}")
    if background is not None:
        background = np.asarray(background)
        if background.shape != (height, width, 3) or background.dtype != np.uint8:
            raise ValueError(f"background: expected uint8 ({height}, {width}, 3), got {background.dtype} "
                             f"{background.shape}")
    if len(meshes) > np.iinfo(np.int16).max:
        raise ValueError(f"meshes: at most {np.iinfo(np.int16).max} meshes fit the int16 instance map")
    for i, mesh in enumerate(meshes):
        if not isinstance(mesh, Mesh):
            raise TypeError(f"meshes[{i}]: expected a Mesh, got {type(mesh).__name__}")
    lighting = lighting or Lighting()
    s = int(supersample)
    # Sample k of pixel u sits at u + (k + 0.5) / s - 0.5, i.e. index s * u + k in the fine grid.
    offset = (s - 1) / 2.0
    K_fine = np.array([[K[0, 0] * s, K[0, 1] * s, K[0, 2] * s + offset],
                       [0.0, K[1, 1] * s, K[1, 2] * s + offset],
                       [0.0, 0.0, 1.0]])
    W, H = width * s, height * s

    corners, mesh_of_face = _gather_corners(meshes)
    corners, mesh_of_face = _clip_near(corners, mesh_of_face, near)
    face_idx, bary, depth_fine, stats = _rasterise(corners, K_fine, W, H)

    pixel_ids = np.flatnonzero(face_idx >= 0)
    winner_faces = face_idx[pixel_ids]
    colour = _shade(corners, mesh_of_face, meshes, winner_faces, bary[pixel_ids], lighting)

    rgb_fine: np.ndarray = np.zeros((H * W, 3), dtype=np.float32)
    if background is not None:
        bg = background.astype(np.float32) / 255.0
        if s > 1:
            bg = np.repeat(np.repeat(bg, s, axis=0), s, axis=1)
        rgb_fine[:] = bg.reshape(-1, 3)
    rgb_fine[pixel_ids] = colour
    ids_fine = np.full(H * W, -1, dtype=np.int16)
    ids_fine[pixel_ids] = mesh_of_face[winner_faces]

    rgb_fine = rgb_fine.reshape(H, W, 3)
    rgb: np.ndarray
    if s > 1:
        # Box filter as a sum of strided views: several times faster than mean() over split axes.
        rgb = np.asarray(sum(rgb_fine[i::s, j::s] for i in range(s) for j in range(s))) / (s * s)
        centre = s // 2
        depth = depth_fine.reshape(height, s, width, s)[:, centre, :, centre]
        ids = ids_fine.reshape(height, s, width, s)[:, centre, :, centre]
    else:
        rgb, depth, ids = rgb_fine, depth_fine.reshape(H, W), ids_fine.reshape(H, W)
    rgb8 = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return RenderResult(rgb=rgb8, depth=np.ascontiguousarray(depth, dtype=np.float32),
                        instance_ids=np.ascontiguousarray(ids), stats=stats)


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.sqrt(np.einsum("...i,...i->...", v, v))[..., None]
    return v / np.maximum(norm, 1e-12)


def _gather_corners(meshes: list[Mesh]) -> tuple[np.ndarray, np.ndarray]:
    """Stack all meshes' triangles as (F, 3, _ATTR_DIM) corner attributes plus mesh index per face."""
    blocks, owners = [], []
    for index, mesh in enumerate(meshes):
        n = len(mesh.faces)
        if n == 0:
            continue
        block = np.empty((n, 3, _ATTR_DIM), dtype=np.float64)
        block[:, :, _POS] = mesh.vertices[mesh.faces]
        block[:, :, _NRM] = mesh.corner_normals()
        block[:, :, _COL] = mesh.corner_colors()
        block[:, :, _UV] = mesh.corner_uv()
        blocks.append(block)
        owners.append(np.full(n, index, dtype=np.int16))
    if not blocks:
        return np.zeros((0, 3, _ATTR_DIM)), np.zeros(0, dtype=np.int16)
    return np.concatenate(blocks), np.concatenate(owners)


def _clip_near(corners: np.ndarray, owner: np.ndarray, near: float) -> tuple[np.ndarray, np.ndarray]:
    """Clip triangles against the plane z = near; attributes are interpolated linearly in 3D."""
    in_front = corners[:, :, 2] >= near
    count = in_front.sum(axis=1)
    keep = corners[count == 3]
    keep_owner = owner[count == 3]
    parts, part_owners = [keep], [keep_owner]

    def rotated(sel: np.ndarray, first: np.ndarray) -> np.ndarray:
        # Cyclic rotation keeps the winding: corners (first, first+1, first+2).
        order = (first[:, None] + np.arange(3)[None, :]) % 3
        return np.take_along_axis(corners[sel], order[:, :, None], axis=1)

    def towards(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        t = (near - a[:, 2]) / (b[:, 2] - a[:, 2])
        return a + (b - a) * t[:, None]

    one = count == 1  # one corner in front: a smaller triangle
    if np.any(one):
        tri = rotated(one, np.argmax(in_front[one], axis=1))
        a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
        parts.append(np.stack([a, towards(a, b), towards(a, c)], axis=1))
        part_owners.append(owner[one])
    two = count == 2  # two corners in front: a quad, split in two triangles
    if np.any(two):
        behind = np.argmin(in_front[two], axis=1)
        tri = rotated(two, (behind + 1) % 3)  # the corner behind moves to position 2
        a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
        cb, ca = towards(b, c), towards(a, c)
        parts.append(np.stack([a, b, cb], axis=1))
        parts.append(np.stack([a, cb, ca], axis=1))
        part_owners += [owner[two], owner[two]]
    return np.concatenate(parts), np.concatenate(part_owners)


def _rasterise(corners: np.ndarray, K: np.ndarray, W: int, H: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """Visibility: per pixel the nearest face index (-1 none), its screen barycentrics and depth."""
    n_pix = W * H
    face_buf = np.full(n_pix, -1, dtype=np.int64)
    bary_buf = np.zeros((n_pix, 3), dtype=np.float64)
    depth_buf = np.zeros(n_pix, dtype=np.float32)
    stats = {"faces": len(corners), "rasterised_faces": 0, "candidates": 0, "fragments": 0}
    if len(corners) == 0:
        return face_buf, bary_buf, depth_buf, stats

    z = corners[:, :, 2]
    x = corners[:, :, 0] / z * K[0, 0] + corners[:, :, 1] / z * K[0, 1] + K[0, 2]
    y = corners[:, :, 1] / z * K[1, 1] + K[1, 2]
    x0 = np.ceil(x.min(axis=1))
    x1 = np.floor(x.max(axis=1))
    y0 = np.ceil(y.min(axis=1))
    y1 = np.floor(y.max(axis=1))
    # Twice the signed screen area; either winding is drawn (two-sided rendering).
    area2 = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    x0, y0 = np.maximum(x0, 0), np.maximum(y0, 0)
    x1, y1 = np.minimum(x1, W - 1), np.minimum(y1, H - 1)
    live = np.flatnonzero((x1 >= x0) & (y1 >= y0) & (np.abs(area2) > 1e-12))
    stats["rasterised_faces"] = int(len(live))
    if len(live) == 0:
        return face_buf, bary_buf, depth_buf, stats

    x, y, z, area2 = x[live], y[live], z[live], area2[live]
    x0, y0 = x0[live].astype(np.int64), y0[live].astype(np.int64)
    box_w = x1[live].astype(np.int64) - x0 + 1
    box_h = y1[live].astype(np.int64) - y0 + 1
    # Edge function e_i(p) = A_i * dx + B_i * dy + C_i of the edge opposite corner i, with
    # (dx, dy) relative to the box origin (x0, y0) to keep the numbers small, and signed
    # so that inside is positive for either winding (two-sided rendering).
    sign = np.sign(area2)[:, None]
    xr, yr = x - x0[:, None], y - y0[:, None]
    j, k = [1, 2, 0], [2, 0, 1]
    edge_a = np.ascontiguousarray(((yr[:, j] - yr[:, k]) * sign).T)
    edge_b = np.ascontiguousarray(((xr[:, k] - xr[:, j]) * sign).T)
    edge_c = np.ascontiguousarray(((xr[:, j] * yr[:, k] - xr[:, k] * yr[:, j]) * sign).T)
    inv_z_corner = np.ascontiguousarray((1.0 / z).T)

    best_inv_z = np.zeros(n_pix, dtype=np.float64)  # 1/z is larger for nearer fragments
    n_box = box_w * box_h
    frag_face, frag_pix, frag_bary, frag_inv_z = [], [], [], []
    for lo, hi in _chunks(n_box, _MAX_CANDIDATES):
        counts = n_box[lo:hi]
        total = int(counts.sum())
        stats["candidates"] += total
        tri = np.repeat(np.arange(lo, hi), counts)
        local = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        dy = local // box_w[tri]
        dx = local - dy * box_w[tri]
        dxf, dyf = dx.astype(np.float64), dy.astype(np.float64)
        e = np.empty((3, total))
        for i in range(3):
            e[i] = edge_a[i][tri] * dxf + edge_b[i][tri] * dyf + edge_c[i][tri]
        inside = np.flatnonzero((e >= -_EDGE_TOLERANCE).all(axis=0))
        tri, dx, dy, e = tri[inside], dx[inside], dy[inside], e[:, inside]
        b = (e / e.sum(axis=0)).T
        inv_z = b[:, 0] * inv_z_corner[0][tri] + b[:, 1] * inv_z_corner[1][tri] + b[:, 2] * inv_z_corner[2][tri]
        pix = (y0[tri] + dy) * W + x0[tri] + dx
        np.maximum.at(best_inv_z, pix, inv_z)
        frag_face.append(tri)
        frag_pix.append(pix)
        frag_bary.append(b)
        frag_inv_z.append(inv_z)
    tri = np.concatenate(frag_face)
    pix = np.concatenate(frag_pix)
    inv_z = np.concatenate(frag_inv_z)
    stats["fragments"] = int(len(tri))
    win = np.flatnonzero(inv_z >= best_inv_z[pix])
    # Exact depth ties (shared edges, coplanar faces) resolve to the last writer.
    face_buf[pix[win]] = live[tri[win]]
    bary_buf[pix[win]] = np.concatenate(frag_bary)[win]
    hit = best_inv_z > 0
    depth_buf[hit] = 1.0 / best_inv_z[hit]
    return face_buf, bary_buf, depth_buf, stats


def _chunks(sizes: np.ndarray, budget: int):
    """Yield (lo, hi) ranges of consecutive items whose sizes sum to about ``budget``."""
    ends = np.cumsum(sizes)
    lo = 0
    while lo < len(sizes):
        start = ends[lo - 1] if lo else 0
        hi = int(np.searchsorted(ends, start + budget, side="right"))
        hi = max(hi, lo + 1)
        yield lo, hi
        lo = hi


def _shade(corners: np.ndarray, owner: np.ndarray, meshes: list[Mesh], faces: np.ndarray,
           screen_bary: np.ndarray, lighting: Lighting) -> np.ndarray:
    """Colour (M, 3) in [0, 1] of the visible fragments."""
    if len(faces) == 0:
        return np.zeros((0, 3), dtype=np.float32)
    tri = np.take(corners, faces, axis=0)  # (M, 3, D)
    # Screen-space barycentrics weighted by 1/z give the perspective-correct ones.
    w = screen_bary / tri[:, :, 2]
    w /= w.sum(axis=1, keepdims=True)
    attr = np.einsum("mk,mkd->md", w, tri)
    position = attr[:, _POS]
    normal = _unit(attr[:, _NRM])
    albedo = attr[:, _COL]
    to_eye = _unit(-position)
    # Two-sided lighting: a normal facing away from the viewer is flipped.
    flip = np.einsum("ij,ij->i", normal, to_eye) < 0
    normal[flip] *= -1
    light = lighting.unit_direction()
    lambert = np.clip(normal @ light, 0.0, None)
    shade = lighting.ambient + lighting.diffuse * lambert

    face_owner = owner[faces]
    specular = np.zeros(len(faces))
    for index, mesh in enumerate(meshes):
        if mesh.texture is None and mesh.specular == 0:
            continue
        sel = np.flatnonzero(face_owner == index)
        if len(sel) == 0:
            continue
        if mesh.texture is not None:
            albedo[sel] *= _sample_bilinear(mesh.texture, attr[sel][:, _UV])
        if mesh.specular > 0 and lighting.specular > 0:
            half = _unit(to_eye[sel] + light)
            n_dot_h = np.clip(np.einsum("ij,ij->i", normal[sel], half), 0.0, None)
            specular[sel] = mesh.specular * lighting.specular * n_dot_h ** lighting.shininess * (lambert[sel] > 0)
    colour = albedo * shade[:, None] + specular[:, None]
    return np.clip(colour, 0.0, 1.0).astype(np.float32)


def _sample_bilinear(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear texture lookup (M, 3) in [0, 1], clamped to the edge texels.

    v = 0 is the image's bottom row (OBJ convention). Coordinates outside [0, 1]
    repeat the texture (tiling), those inside never wrap, so a face mapped onto
    the whole image does not bleed the opposite border into its edges.
    """
    th, tw = texture.shape[:2]
    outside = (uv < 0.0) | (uv > 1.0)
    uv = np.where(outside, uv - np.floor(uv), uv)
    x = np.clip(uv[:, 0] * tw - 0.5, 0.0, tw - 1.0)
    y = np.clip((1.0 - uv[:, 1]) * th - 0.5, 0.0, th - 1.0)
    xa, ya = x.astype(np.int64), y.astype(np.int64)
    fx, fy = (x - xa)[:, None], (y - ya)[:, None]
    xb, yb = np.minimum(xa + 1, tw - 1), np.minimum(ya + 1, th - 1)
    tex = texture.reshape(-1, 3)  # gather uint8 texels first: converting the whole texture costs more

    def texel(row: np.ndarray, col: np.ndarray) -> np.ndarray:
        return np.take(tex, row * tw + col, axis=0).astype(np.float32)

    top = texel(ya, xa) * (1 - fx) + texel(ya, xb) * fx
    bottom = texel(yb, xa) * (1 - fx) + texel(yb, xb) * fx
    return (top * (1 - fy) + bottom * fy) / 255.0
