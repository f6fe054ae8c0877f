"""The corners and edges of an axis-aligned 3D box, in the order the object control points use.

Corner ``i`` takes ``hi`` on the axes whose bit is set in ``i`` (x = 4, y = 2, z = 1), else
``lo``. Objects build their control points from them and overlays draw their edges.
"""

from __future__ import annotations

import numpy as np

# Corner index pairs of the 12 box edges: along x, along y, along z.
BOX_CORNER_EDGES = np.array([[0, 4], [1, 5], [2, 6], [3, 7],
                             [0, 2], [1, 3], [4, 6], [5, 7],
                             [0, 1], [2, 3], [4, 5], [6, 7]], dtype=np.int64)


def box_corners(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The 8 corners (8, 3) of the box [lo, hi] in the module docstring's order."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    bits = np.array([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)], dtype=bool)
    return np.where(bits, hi, lo)
