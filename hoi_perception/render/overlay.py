"""Debug overlays on RGB images: hand skeleton, hand mesh, object box and axes, labelled boxes.

Used by the ROS node's debug image topic, by evaluation reports and by the
synthetic-data previews. Every function takes an (H, W, 3) uint8 RGB image and
returns a new image (the input is left untouched); lines are anti-aliased and
drawn with sub-pixel precision. 3D geometry is given in the camera frame (OpenCV
convention, metres) and clipped at a near plane before projection, so points
behind the camera never produce wild lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from hoi_perception.atomic import atomic_write_bytes
from hoi_perception.geometry.boxes import BOX_CORNER_EDGES
from hoi_perception.hand_model.joint_orders import HO3D_FINGER_CHAINS, HO3D_PARENTS, NUM_HAND_JOINTS
from hoi_perception.render.rasterizer import Lighting, Mesh, render

Color = tuple[int, int, int]

# One colour per finger (RGB), in HO3D_FINGER_CHAINS order: thumb, index, middle, ring, pinky.
FINGER_COLORS: tuple[Color, ...] = ((230, 60, 60), (240, 170, 40), (70, 200, 70), (50, 150, 240), (190, 80, 220))
WRIST_COLOR: Color = (255, 255, 255)
AXIS_COLORS: tuple[Color, Color, Color] = ((255, 0, 0), (0, 200, 0), (0, 90, 255))  # x, y, z


def _ho3d_joint_colors() -> tuple[Color, ...]:
    colors = [WRIST_COLOR] * NUM_HAND_JOINTS
    for chain, color in zip(HO3D_FINGER_CHAINS, FINGER_COLORS):
        for joint in chain[1:]:
            colors[joint] = color
    return tuple(colors)


# Colour of each HO-3D joint; a bone takes its child joint's colour.
HO3D_JOINT_COLORS: tuple[Color, ...] = _ho3d_joint_colors()

_SHIFT = 4  # OpenCV fixed-point bits: coordinates drawn to 1/16 pixel
_NEAR = 1e-3  # metres: 3D segments are clipped to z >= _NEAR before projection


def draw_hand_skeleton(image: np.ndarray, joints_2d: np.ndarray, parents: Sequence[int] = HO3D_PARENTS,
                       joint_colors: Sequence[Color] | None = None, thickness: int = 2,
                       radius: int = 3) -> np.ndarray:
    """Bones (joint to parent) and joints from 2D pixel coordinates (J, 2).

    Defaults to the 21-joint HO-3D order coloured per finger; another skeleton
    needs its ``parents`` (-1 for the root) and ``joint_colors``. Joints with
    non-finite coordinates are skipped, with their bones.
    """
    out = _checked_copy(image)
    joints = np.asarray(joints_2d, dtype=np.float64)
    if joints.ndim != 2 or joints.shape[1] != 2:
        raise ValueError(f"joints_2d: expected (J, 2) pixel coordinates, got shape {joints.shape}")
    if len(parents) != len(joints):
        raise ValueError(f"parents: expected one parent per joint ({len(joints)}), got {len(parents)}")
    if joint_colors is None:
        if tuple(parents) != HO3D_PARENTS:
            raise ValueError("joint_colors: required for a skeleton other than the 21-joint HO-3D one")
        joint_colors = HO3D_JOINT_COLORS
    if len(joint_colors) != len(joints):
        raise ValueError(f"joint_colors: expected {len(joints)} colours, got {len(joint_colors)}")
    ok = np.all(np.isfinite(joints), axis=1)
    for child, parent in enumerate(parents):
        if parent >= 0 and ok[child] and ok[parent]:
            _line(out, joints[parent], joints[child], joint_colors[child], thickness)
    for j in np.flatnonzero(ok).tolist():
        cv2.circle(out, _fixed(joints[j]), radius << _SHIFT, _cv_color(joint_colors[j]), -1, cv2.LINE_AA, _SHIFT)
    return out


def draw_mesh(image: np.ndarray, vertices: np.ndarray, faces: np.ndarray, K: np.ndarray,
              color: Color = (230, 180, 150), alpha: float = 0.5, lighting: Lighting | None = None) -> np.ndarray:
    """Blend a shaded mesh (camera-frame vertices) over the image with opacity ``alpha``.

    The mesh goes through the z-buffer rasteriser, so it self-occludes correctly.
    """
    out = _checked_copy(image)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a value in [0, 1], got {alpha}")
    h, w = out.shape[:2]
    result = render([Mesh(vertices, faces, vertex_colors=np.asarray(color))], K, w, h, lighting=lighting)
    mask = result.instance_ids == 0
    blended = (1.0 - alpha) * out[mask].astype(np.float32) + alpha * result.rgb[mask].astype(np.float32)
    out[mask] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return out


def draw_box_3d(image: np.ndarray, corners_cam: np.ndarray, K: np.ndarray,
                color: Color = (0, 255, 255), thickness: int = 2) -> np.ndarray:
    """The 12 edges of a 3D box from its 8 camera-frame corners in control-point order
    (corner i is max along x, y, z where bits 2, 1, 0 of i are set)."""
    out = _checked_copy(image)
    corners = np.asarray(corners_cam, dtype=np.float64)
    if corners.shape != (8, 3):
        raise ValueError(f"corners_cam: expected (8, 3) camera-frame corners, got shape {corners.shape}")
    for a, b in BOX_CORNER_EDGES:
        _segment_3d(out, corners[a], corners[b], K, color, thickness)
    return out


def draw_axes(image: np.ndarray, rotation: np.ndarray, translation: np.ndarray, K: np.ndarray,
              length: float, thickness: int = 2) -> np.ndarray:
    """An object frame's x, y, z axes (red, green, blue) of ``length`` metres at pose (R, t)."""
    out = _checked_copy(image)
    R, t = _pose(rotation, translation)
    if not length > 0:
        raise ValueError(f"length: expected a positive axis length in metres, got {length}")
    for axis, color in enumerate(AXIS_COLORS):
        _segment_3d(out, t, t + length * R[:, axis], K, color, thickness)
    return out


def draw_object_pose(image: np.ndarray, control_points: np.ndarray, rotation: np.ndarray,
                     translation: np.ndarray, K: np.ndarray, color: Color = (0, 255, 255),
                     thickness: int = 2, axes: bool = True) -> np.ndarray:
    """An object's bounding box (from its 21 or 8 object-frame control points) posed by
    x_cam = R x + t, plus its axes (half the box's smallest extent long) when ``axes``."""
    points = np.asarray(control_points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) < 8:
        raise ValueError(f"control_points: expected (21, 3) or (8, 3) object-frame points, got {points.shape}")
    R, t = _pose(rotation, translation)
    corners = points[:8] @ R.T + t
    out = draw_box_3d(image, corners, K, color, thickness)
    if axes:
        extent = points[:8].max(axis=0) - points[:8].min(axis=0)
        length = 0.5 * float(extent.min()) if extent.min() > 0 else 0.5 * float(extent.max())
        if length > 0:
            out = draw_axes(out, R, t, K, length, thickness)
    return out


def draw_box_2d(image: np.ndarray, box: Sequence[float], label: str | None = None,
                color: Color = (0, 255, 0), thickness: int = 2, font_scale: float = 0.45) -> np.ndarray:
    """An (x0, y0, x1, y1) pixel box, with ``label`` on a filled tab above it (inside the
    image if the box touches the top edge)."""
    out = _checked_copy(image)
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape != (4,) or not np.all(np.isfinite(b)) or b[2] < b[0] or b[3] < b[1]:
        raise ValueError(f"box: expected finite (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1, got {b.tolist()}")
    cv_color = _cv_color(color)
    cv2.rectangle(out, _fixed(b[:2]), _fixed(b[2:]), cv_color, thickness, cv2.LINE_AA, _SHIFT)
    if label:
        font = cv2.FONT_HERSHEY_SIMPLEX
        (tw, th), base = cv2.getTextSize(label, font, font_scale, 1)
        x0 = int(round(b[0]))
        y_top = int(round(b[1])) - th - base - 2
        if y_top < 0:
            y_top = int(round(b[1]))
        cv2.rectangle(out, (x0, y_top), (x0 + tw + 4, y_top + th + base + 2), cv_color, -1)
        ink = (0, 0, 0) if 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2] > 128 else (255, 255, 255)
        cv2.putText(out, label, (x0 + 2, y_top + th + 1), font, font_scale, ink, 1, cv2.LINE_AA)
    return out


def save_png(path: str | Path, image: np.ndarray) -> None:
    """Write an RGB (H, W, 3) or grey (H, W) uint8 image as PNG, atomically (temp file + rename)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: expected a .png file name")
    img = np.asarray(image)
    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(f"image: expected uint8 (H, W, 3) RGB or (H, W) grey, got {img.dtype} {img.shape}")
    ok, data = cv2.imencode(".png", img[:, :, ::-1] if img.ndim == 3 else img)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, data.tobytes())


def _checked_copy(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image: expected uint8 (H, W, 3) RGB, got {img.dtype} {img.shape}")
    return np.ascontiguousarray(img).copy()


def _pose(rotation: np.ndarray, translation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    R = np.asarray(rotation, dtype=np.float64)
    t = np.asarray(translation, dtype=np.float64).reshape(-1)
    if R.shape != (3, 3) or t.shape != (3,):
        raise ValueError(f"pose: expected a 3x3 rotation and a 3-vector translation, got {R.shape} and {t.shape}")
    return R, t


def _cv_color(color: Color) -> tuple[int, int, int]:
    """OpenCV wants plain ints; channel order passes through, so RGB images take RGB colours."""
    return int(color[0]), int(color[1]), int(color[2])


def _fixed(point: np.ndarray) -> tuple[int, int]:
    return int(round(point[0] * (1 << _SHIFT))), int(round(point[1] * (1 << _SHIFT)))


def _line(image: np.ndarray, p0: np.ndarray, p1: np.ndarray, color: Color, thickness: int) -> None:
    """Anti-aliased 2D segment, first clipped to a margin around the image (no int overflow)."""
    h, w = image.shape[:2]
    margin = 2.0 * max(h, w)
    clipped = _clip_segment(p0, p1, -margin, -margin, w + margin, h + margin)
    if clipped is not None:
        cv2.line(image, _fixed(clipped[0]), _fixed(clipped[1]), _cv_color(color), thickness, cv2.LINE_AA, _SHIFT)


def _segment_3d(image: np.ndarray, a: np.ndarray, b: np.ndarray, K: np.ndarray,
                color: Color, thickness: int) -> None:
    """Draw the part of the camera-frame segment a-b that lies in front of the near plane."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return
    if a[2] < _NEAR and b[2] < _NEAR:
        return
    if a[2] < _NEAR:
        a = a + (b - a) * (_NEAR - a[2]) / (b[2] - a[2])
    elif b[2] < _NEAR:
        b = b + (a - b) * (_NEAR - b[2]) / (a[2] - b[2])
    K = np.asarray(K, dtype=np.float64)
    pa, pb = (K @ a)[:2] / a[2], (K @ b)[:2] / b[2]
    _line(image, pa, pb, color, thickness)


def _clip_segment(p0: np.ndarray, p1: np.ndarray, xmin: float, ymin: float, xmax: float, ymax: float
                  ) -> tuple[np.ndarray, np.ndarray] | None:
    """Liang-Barsky clipping of a 2D segment to a rectangle; None if it misses."""
    p0, p1 = np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64)
    d = p1 - p0
    t0, t1 = 0.0, 1.0
    for p, q in ((-d[0], p0[0] - xmin), (d[0], xmax - p0[0]), (-d[1], p0[1] - ymin), (d[1], ymax - p0[1])):
        if p == 0:
            if q < 0:
                return None
            continue
        r = q / p
        if p < 0:
            t0 = max(t0, r)
        else:
            t1 = min(t1, r)
        if t0 > t1:
            return None
    return p0 + t0 * d, p0 + t1 * d
