"""Object models (mesh files or parametric shapes) with control points, diameter and surface points."""

from hoi_perception.objects.models import (
    NUM_CONTROL_POINTS,
    ObjectLibrary,
    ObjectLibraryConfig,
    ObjectModel,
    ObjectSpec,
    UnknownObjectError,
    bbox_control_points,
    build_object,
    crease_normals,
    exact_diameter,
    load_mesh_file,
    load_object_library,
    make_object_model,
    sample_surface,
    symmetry_group,
)
from hoi_perception.objects.textures import TextureSpec, make_texture

__all__ = [
    "NUM_CONTROL_POINTS", "ObjectLibrary", "ObjectLibraryConfig", "ObjectModel", "ObjectSpec",
    "TextureSpec", "UnknownObjectError", "bbox_control_points", "build_object", "crease_normals", "exact_diameter",
    "load_mesh_file", "load_object_library", "make_object_model", "make_texture", "sample_surface",
    "symmetry_group",
]
