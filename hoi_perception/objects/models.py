"""Object models: meshes with the quantities pose estimation and scoring need.

An :class:`ObjectModel` is built from a mesh file (OBJ, PLY; e.g. the YCB
``textured_simple.obj``) or a parametric shape, as listed in ``config/objects.yaml``.
Per object it holds:

* ``control_points`` (21, 3): the keypoints the object head regresses and PnP
  solves from, taken from the axis-aligned bounding box of the vertices in this
  fixed order:

  - 0-7: corners; corner i takes the max along x if bit 2 of i is set, along y
    if bit 1 is set, along z if bit 0 is set, else the min (0 = all min, 7 = all max);
  - 8-19: midpoints of the 12 edges in :data:`BOX_CORNER_EDGES` order (the 4 edges
    along x, then the 4 along y, then the 4 along z);
  - 20: the box centre.

* ``diameter``: the largest distance between two model vertices (exact, over the
  convex hull), as ADD(-S)-0.1D thresholds use (BOP definition).
* ``points``: points sampled uniformly by area on the surface, deterministic per
  seed, for ADD / ADD-S.
* ``normals`` per face corner, smooth except across creases sharper than
  ``crease_angle`` degrees, so box edges and can rims render crisp.

Mesh files keep their own frame (dataset poses refer to it); parametric shapes
are centred on their bounding-box centre. Units are metres.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import trimesh
from scipy.spatial import ConvexHull, QhullError

from hoi_perception.config import ConfigError, from_dict, read_yaml, resolve_config_path
from hoi_perception.geometry.boxes import BOX_CORNER_EDGES, box_corners
from hoi_perception.objects import shapes
from hoi_perception.objects.textures import TextureSpec, make_texture
from hoi_perception.render.rasterizer import Mesh

NUM_CONTROL_POINTS = 21

Symmetry = Literal["none", "x_axis", "y_axis", "z_axis", "discrete"]
ShapeName = Literal["box", "cylinder", "bottle", "mug"]
_SHAPE_BUILDERS: dict[str, Callable[..., shapes.ShapeMesh]] = {
    "box": shapes.box, "cylinder": shapes.cylinder, "bottle": shapes.bottle, "mug": shapes.mug}
_SHAPE_DIMENSIONS = {
    "box": ({"width", "depth", "height"}, set()),
    "cylinder": ({"radius", "height"}, set()),
    "bottle": ({"radius", "height", "neck_radius", "neck_height", "shoulder_height"}, {"depth"}),
    "mug": ({"radius", "height", "wall", "handle_radius", "handle_thickness"}, set()),
}
_LATHE_SHAPES = {"cylinder", "bottle", "mug"}
DEFAULT_COLOR = (180, 180, 180)


@dataclass
class ObjectSpec:
    """One entry of ``objects.yaml``: exactly one of ``mesh`` (a file; relative paths are
    relative to the YAML file) or ``shape`` with its ``dimensions`` in metres.

    ``segments``: points around the axis for cylinder/bottle/mug (default 48).
    ``scale``: factor applied to a mesh file's coordinates (0.001 for millimetres).
    ``symmetry``: ``none``; ``x_axis``/``y_axis``/``z_axis`` for continuous rotational
    symmetry about that axis; ``discrete`` for a finite symmetry group. Any symmetry
    means ADD-S scoring. ``color``: RGB albedo of an untextured object; ``texture``:
    a procedural texture for a shape (they exclude each other).
    """

    shape: ShapeName | None = None
    mesh: Path | None = None
    dimensions: dict[str, float] = field(default_factory=dict)
    segments: int | None = None
    scale: float | None = None
    symmetry: Symmetry = "none"
    color: tuple[int, int, int] | None = None
    texture: TextureSpec | None = None
    crease_angle: float = 40.0

    def validate(self) -> None:
        if (self.shape is None) == (self.mesh is None):
            raise ConfigError("give exactly one of 'shape' or 'mesh'")
        if self.mesh is not None:
            for key in ("dimensions", "segments", "texture"):
                if getattr(self, key):
                    raise ConfigError(f"'{key}' applies to parametric shapes, not to mesh files")
            if self.scale is not None and not self.scale > 0:
                raise ConfigError(f"scale: expected a positive factor, got {self.scale}")
        else:
            if self.scale is not None:
                raise ConfigError("'scale' applies to mesh files; give a shape's dimensions in metres")
            assert self.shape is not None  # exactly one of shape and mesh, checked above
            required, optional = _SHAPE_DIMENSIONS[self.shape]
            missing = sorted(required - set(self.dimensions))
            unknown = sorted(set(self.dimensions) - required - optional)
            if missing or unknown:
                raise ConfigError(f"dimensions: shape '{self.shape}' needs {sorted(required)}"
                                  + (f" (optional {sorted(optional)})" if optional else "")
                                  + (f"; missing {missing}" if missing else "")
                                  + (f"; unknown {unknown}" if unknown else ""))
            bad = {k: v for k, v in self.dimensions.items() if not (np.isfinite(v) and v > 0)}
            if bad:
                raise ConfigError(f"dimensions: expected positive lengths in metres, got {bad}")
            if self.segments is not None:
                if self.shape not in _LATHE_SHAPES:
                    raise ConfigError(f"segments: shape '{self.shape}' has no round parts")
                if self.segments < 3:
                    raise ConfigError(f"segments: expected >= 3, got {self.segments}")
        if self.color is not None:
            if self.texture is not None:
                raise ConfigError("give either 'color' or 'texture', not both")
            if any(not 0 <= c <= 255 for c in self.color):
                raise ConfigError(f"color: expected RGB in 0..255, got {list(self.color)}")
        if not 0.0 <= self.crease_angle <= 180.0:
            raise ConfigError(f"crease_angle: expected degrees in [0, 180], got {self.crease_angle}")


@dataclass
class ObjectLibraryConfig:
    """``objects.yaml``: the objects by name, and how many surface points to sample."""

    objects: dict[str, ObjectSpec]
    num_points: int = 1000
    points_seed: int = 0

    def validate(self) -> None:
        if not self.objects:
            raise ConfigError("objects: the library lists no objects")
        if self.num_points < 1:
            raise ConfigError(f"num_points: expected >= 1, got {self.num_points}")


@dataclass
class ObjectModel:
    """A rigid object in its own frame (metres); see the module docstring for the fields' meaning.

    ``uv`` (F, 3, 2) per face corner or None; ``texture`` (H, W, 3) uint8 or None;
    ``vertex_colors`` (V, 3) uint8 or None; ``color`` RGB albedo used when neither is set.
    """

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray
    uv: np.ndarray | None
    texture: np.ndarray | None
    vertex_colors: np.ndarray | None
    color: tuple[int, int, int]
    symmetry: str
    control_points: np.ndarray
    diameter: float
    points: np.ndarray

    @property
    def is_symmetric(self) -> bool:
        """True when pose errors should be scored with ADD-S rather than ADD."""
        return self.symmetry != "none"

    @property
    def corners(self) -> np.ndarray:
        """The 8 bounding-box corners (8, 3), in control-point order."""
        return self.control_points[:8]

    @property
    def bbox_diagonal(self) -> float:
        """Bounding-box diagonal: the "diameter" SHO's evaluation code uses (not the BOP one)."""
        return float(np.linalg.norm(self.control_points[7] - self.control_points[0]))

    def mesh(self, rotation: np.ndarray | None = None, translation: np.ndarray | None = None,
             specular: float = 0.0) -> Mesh:
        """The model posed by x_cam = R x + t, as a :class:`Mesh` ready for the rasteriser."""
        R = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
        t = np.zeros(3) if translation is None else np.asarray(translation, dtype=np.float64).reshape(-1)
        if R.shape != (3, 3) or t.shape != (3,):
            raise ValueError(f"rotation must be 3x3 and translation a 3-vector, got {R.shape} and {t.shape}")
        if self.texture is not None:
            colors = None
        elif self.vertex_colors is not None:
            colors = self.vertex_colors
        else:
            colors = np.asarray(self.color, dtype=np.float64)
        return Mesh(vertices=self.vertices @ R.T + t, faces=self.faces, vertex_colors=colors, uv=self.uv,
                    texture=self.texture, normals=self.normals @ R.T, specular=specular)


class UnknownObjectError(KeyError):
    """An object name that the library does not list."""

    def __str__(self) -> str:
        return str(self.args[0])


class ObjectLibrary:
    """Object models by name, read-only."""

    def __init__(self, models: dict[str, ObjectModel]):
        self._models = dict(models)

    def get(self, name: str) -> ObjectModel:
        """The model called ``name``; an unknown name raises an error listing the known ones."""
        try:
            return self._models[name]
        except KeyError:
            raise UnknownObjectError(f"unknown object '{name}'; known objects: {sorted(self._models)}") from None

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def __iter__(self) -> Iterator[str]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    @property
    def names(self) -> list[str]:
        return list(self._models)

    def items(self) -> list[tuple[str, ObjectModel]]:
        return list(self._models.items())


def load_object_library(path: str | Path | None = None) -> ObjectLibrary:
    """Build every object listed in ``path`` (default: the shipped ``objects.yaml``)."""
    yaml_path = resolve_config_path(path if path is not None else "objects.yaml")
    config = from_dict(ObjectLibraryConfig, read_yaml(yaml_path), str(yaml_path))
    models = {}
    for name, spec in config.objects.items():
        models[name] = build_object(name, spec, yaml_path.parent, config.num_points, config.points_seed,
                                    where=f"{yaml_path}: objects.{name}")
    return ObjectLibrary(models)


def build_object(name: str, spec: ObjectSpec, base_dir: str | Path = ".", num_points: int = 1000,
                 seed: int = 0, where: str | None = None) -> ObjectModel:
    """Build one model from its spec; errors name ``where`` (default: the object's name)."""
    where = where or f"objects.{name}"
    spec.validate()
    uv = texture = vertex_colors = None
    if spec.mesh is not None:
        path = spec.mesh if spec.mesh.is_absolute() else Path(base_dir) / spec.mesh
        vertices, faces, uv, texture, vertex_colors = load_mesh_file(path, spec.scale or 1.0)
    else:
        dims = dict(spec.dimensions)
        if spec.segments is not None:
            dims["segments"] = spec.segments
        assert spec.shape is not None  # ObjectSpec.validate: exactly one of shape and mesh
        try:
            built = _SHAPE_BUILDERS[spec.shape](**dims)
        except ValueError as exc:
            raise ConfigError(f"{where}: {spec.shape}: {exc}") from None
        vertices, faces = built.vertices, built.faces
        if spec.texture is not None:
            uv, texture = built.uv, make_texture(spec.texture)
    return make_object_model(name, vertices, faces, uv=uv, texture=texture, vertex_colors=vertex_colors,
                             color=spec.color or DEFAULT_COLOR, symmetry=spec.symmetry, num_points=num_points,
                             seed=seed, crease_angle=spec.crease_angle)


def make_object_model(name: str, vertices: np.ndarray, faces: np.ndarray, *, uv: np.ndarray | None = None,
                      texture: np.ndarray | None = None, vertex_colors: np.ndarray | None = None,
                      color: tuple[int, int, int] = DEFAULT_COLOR, symmetry: str = "none",
                      num_points: int = 1000, seed: int = 0, crease_angle: float = 40.0) -> ObjectModel:
    """An :class:`ObjectModel` from raw arrays (e.g. a dataset's own model files)."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) < 3:
        raise ValueError(f"{name}: vertices must be (V >= 3, 3), got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise ValueError(f"{name}: faces must be (F >= 1, 3), got {faces.shape}")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise ValueError(f"{name}: face indices must lie in [0, {len(vertices)})")
    if symmetry not in get_args(Symmetry):
        raise ValueError(f"{name}: symmetry must be one of {list(get_args(Symmetry))}, got {symmetry!r}")
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    return ObjectModel(name=name, vertices=vertices, faces=faces,
                       normals=crease_normals(vertices, faces, crease_angle), uv=uv, texture=texture,
                       vertex_colors=vertex_colors, color=(int(color[0]), int(color[1]), int(color[2])),
                       symmetry=symmetry,
                       control_points=bbox_control_points(lo, hi), diameter=exact_diameter(vertices),
                       points=sample_surface(vertices, faces, num_points, seed))


def bbox_control_points(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The 21 control points (21, 3) of the box [lo, hi], in the module docstring's order."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    corners = box_corners(lo, hi)
    midpoints = corners[BOX_CORNER_EDGES].mean(axis=1)
    return np.concatenate([corners, midpoints, ((lo + hi) / 2)[None]])


def exact_diameter(points: np.ndarray) -> float:
    """Largest pairwise distance; exact, since the farthest pair lies on the convex hull."""
    pts = np.asarray(points, dtype=np.float64)
    try:
        pts = pts[ConvexHull(pts).vertices]
    except (QhullError, ValueError):  # flat or degenerate point sets: use every point
        pts = np.unique(pts, axis=0)
    best = 0.0
    for start in range(0, len(pts), 1024):
        block = pts[start:start + 1024]
        d2 = ((block[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
        best = max(best, float(d2.max()))
    return float(np.sqrt(best))


def sample_surface(vertices: np.ndarray, faces: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """``count`` points uniform by area on the mesh surface, the same for the same seed."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    tri = np.asarray(vertices, dtype=np.float64)[faces]
    areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    total = areas.sum()
    if not total > 0:
        raise ValueError("cannot sample a surface of zero area")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(faces), size=count, p=areas / total)
    r1 = np.sqrt(rng.random(count))
    r2 = rng.random(count)
    a, b, c = tri[chosen, 0], tri[chosen, 1], tri[chosen, 2]
    return (1 - r1)[:, None] * a + (r1 * (1 - r2))[:, None] * b + (r1 * r2)[:, None] * c


def crease_normals(vertices: np.ndarray, faces: np.ndarray, crease_angle: float = 40.0) -> np.ndarray:
    """Unit normals per face corner (F, 3, 3): each corner averages (area-weighted) the
    faces around its vertex position whose normal is within ``crease_angle`` degrees of
    its own face's. Vertices are matched by position, so meshes split at texture seams
    still shade smoothly across the seam."""
    vertices = np.asarray(vertices, dtype=np.float64)
    _, welded = np.unique(vertices, axis=0, return_inverse=True)
    welded = welded.reshape(-1)
    tri = vertices[faces]
    weighted = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # 2 * area * unit normal
    unit = weighted / np.maximum(np.linalg.norm(weighted, axis=1, keepdims=True), 1e-300)
    corner_vertex = welded[faces].reshape(-1)
    corner_face = np.repeat(np.arange(len(faces)), 3)
    order = np.argsort(corner_vertex, kind="stable")
    sorted_vertex = corner_vertex[order]
    group_start = np.searchsorted(sorted_vertex, sorted_vertex, side="left")
    group_size = np.searchsorted(sorted_vertex, sorted_vertex, side="right") - group_start
    # Every (corner, other corner at the same vertex) pair, in one batch.
    owner = np.repeat(np.arange(len(order)), group_size)
    within = np.arange(len(owner)) - np.repeat(np.cumsum(group_size) - group_size, group_size)
    mine = corner_face[order[owner]]
    other = corner_face[order[group_start[owner] + within]]
    close = np.einsum("ij,ij->i", unit[mine], unit[other]) >= np.cos(np.radians(crease_angle)) - 1e-9
    normals = np.zeros((len(order), 3))
    np.add.at(normals, owner[close], weighted[other[close]])
    result: np.ndarray = np.empty_like(normals)
    result[order] = normals
    result = result.reshape(-1, 3, 3)
    # A degenerate face's corners (no close neighbour) fall back to zero; keep them finite.
    length = np.linalg.norm(result, axis=2, keepdims=True)
    return np.where(length > 0, result / np.maximum(length, 1e-300), 0.0)


def load_mesh_file(path: str | Path, scale: float = 1.0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Read an OBJ or PLY mesh: vertices (scaled), faces, per-corner uv and texture image
    (when the file has a texture), vertex colours (when it has them)."""
    path = Path(path)
    if path.suffix.lower() not in (".obj", ".ply"):
        raise ConfigError(f"{path}: unsupported mesh format '{path.suffix}'; expected .obj or .ply")
    if not path.is_file():
        raise ConfigError(f"{path}: mesh file not found")
    try:
        loaded = trimesh.load(path, force="mesh", process=False)
    except Exception as exc:  # trimesh raises many types for malformed files
        raise ConfigError(f"{path}: cannot read mesh: {exc}") from None
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0 or len(loaded.vertices) < 3:
        raise ConfigError(f"{path}: no triangles found; expected a triangle mesh")
    vertices = np.asarray(loaded.vertices, dtype=np.float64) * scale
    faces = np.asarray(loaded.faces, dtype=np.int64)
    if not np.all(np.isfinite(vertices)):
        raise ConfigError(f"{path}: vertices contain NaN or infinite values")
    uv = texture = vertex_colors = None
    visual = loaded.visual
    if isinstance(visual, trimesh.visual.TextureVisuals):
        image = getattr(visual.material, "image", None)
        if image is None:
            image = getattr(visual.material, "baseColorTexture", None)
        if visual.uv is not None and len(visual.uv) == len(vertices) and image is not None:
            uv = np.asarray(visual.uv, dtype=np.float64)[faces]
            texture = np.ascontiguousarray(np.asarray(image.convert("RGB")), dtype=np.uint8)
    elif visual is not None and visual.kind == "vertex":
        vertex_colors = np.asarray(visual.vertex_colors)[:, :3].astype(np.uint8)
    return vertices, faces, uv, texture, vertex_colors


def load_object_model(name: str, library: str | Path | None) -> ObjectModel:
    """Build only the named entry of an object library YAML (default: the shipped objects.yaml)."""
    path = resolve_config_path(library if library is not None else "objects.yaml")
    config = from_dict(ObjectLibraryConfig, read_yaml(path), str(path))
    if name not in config.objects:
        raise ConfigError(f"object_name '{name}' is not in the object library {path}; it lists "
                          f"{sorted(config.objects)}")
    return build_object(name, config.objects[name], path.parent, config.num_points, config.points_seed,
                        where=f"{path}: objects.{name}")


def load_object_library_names(library: str | Path | None) -> list[str]:
    """The object names of an object library YAML (default: the shipped objects.yaml), sorted."""
    path = resolve_config_path(library if library is not None else "objects.yaml")
    return sorted(from_dict(ObjectLibraryConfig, read_yaml(path), str(path)).objects)
