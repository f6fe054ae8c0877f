"""CPU rendering: a vectorised NumPy z-buffer rasteriser.

Overlay drawing lives in :mod:`hoi_perception.render.overlay` (import it directly;
it depends on the object models, which depend on this package's rasteriser).
"""

from hoi_perception.render.rasterizer import Lighting, Mesh, RenderResult, render, vertex_normals

__all__ = ["Lighting", "Mesh", "RenderResult", "render", "vertex_normals"]
