"""Left hands through a right-hand network: mirror the input, un-mirror the outputs.

The network and its MANO layer model a right hand. A left hand seen in an image is,
after a horizontal flip of that image, a right hand seen by the mirrored camera
(HFL-Net does this for DexYCB). The mirror is M = diag(-1, 1, 1) in camera axes:

* image: columns reversed; a pixel coordinate u becomes ``W - 1 - u`` (OpenCV
  convention, pixel centres at integer coordinates; boxes and points use the same
  continuous coordinates, so a box (x0, x1) becomes (W - 1 - x1, W - 1 - x0));
* camera matrix: ``cx`` becomes ``W - 1 - cx`` (fx, fy, cy unchanged), so that
  projecting M X with the mirrored K lands on the mirrored pixel of X;
* 3D points (joints, vertices, translations): x negated;
* axis-angle rotations: M R M = R(-M a), i.e. (ax, ay, az) -> (ax, -ay, -az), for the
  global orientation and every joint rotation alike.

* an object with a mirror plane (reflection P in its frame) is, mirrored, the same
  object at the pose ``M R P``: its control points keep their meaning
  (:func:`mirrored_crop_point_order`).

Mirroring is its own inverse, so the same functions un-mirror. Mirrored vertices
keep their indices, which is how MANO's left model relates to its right model; a
renderer must reverse the face winding of the mirrored mesh. MANO shape
coefficients are used as they are.
"""

from __future__ import annotations

import numpy as np

# The mirror M in camera axes: x negated.
MIRROR_X = np.diag([-1.0, 1.0, 1.0])


def reflection(axis: int) -> np.ndarray:
    """The reflection (3, 3) that negates coordinate ``axis`` (0 = x, 1 = y, 2 = z)."""
    matrix = np.eye(3)
    matrix[axis, axis] = -1.0
    return matrix


def model_points_in_crop(points: np.ndarray, mirror_axis: int | None, mirrored: bool) -> np.ndarray:
    """Model-frame ``points`` (N, 3) of the object a crop shows: in a mirrored crop an object with a
    mirror plane is its own mirror image and keeps them, any other is the mirrored model
    (augment.mirror_sample)."""
    return points @ MIRROR_X if mirrored and mirror_axis is None else points


def mirrored_crop_point_order(control_points: np.ndarray, mirror_axis: int | None) -> np.ndarray:
    """Indices that put a mirrored crop's control-point outputs (votes, confidences) back in the
    model's order once they are mapped into the camera image: there, output j lies on the model
    point reflected about the object's mirror plane, ``P c_j = c_order[j]`` (the order is its own
    inverse). Identity for an object without a mirror plane (its labels were the mirrored points)."""
    if mirror_axis is None:
        return np.arange(len(control_points))
    reflected = control_points @ reflection(mirror_axis)
    distance = np.linalg.norm(reflected[:, None] - control_points[None], axis=2)
    order = distance.argmin(axis=1)
    if distance[np.arange(len(order)), order].max() > 1e-9 + 1e-6 * np.abs(control_points).max():
        raise ValueError(f"the control points are not symmetric about the object's mirror plane (axis {mirror_axis})")
    return order


def _width(width: int) -> int:
    if int(width) != width or width < 1:
        raise ValueError(f"width: expected a positive integer image width in pixels, got {width!r}")
    return int(width)


def mirror_image(image: np.ndarray) -> np.ndarray:
    """Image (H, W) or (H, W, C) with its columns reversed (a contiguous copy)."""
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"image: expected (H, W) or (H, W, C), got shape {image.shape}")
    return np.ascontiguousarray(image[:, ::-1])


def mirror_points_2d(points: np.ndarray, width: int) -> np.ndarray:
    """Pixel points (..., 2) of a ``width``-wide image -> their mirrored positions (u -> W - 1 - u)."""
    p = np.array(points, dtype=np.float64)
    if p.shape[-1:] != (2,):
        raise ValueError(f"points: expected shape (..., 2), got {p.shape}")
    p[..., 0] = _width(width) - 1 - p[..., 0]
    return p


def mirror_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """Boxes (..., 4) as (x0, y0, x1, y1) -> mirrored boxes, still with x0 <= x1."""
    b = np.array(boxes, dtype=np.float64)
    if b.shape[-1:] != (4,):
        raise ValueError(f"boxes: expected shape (..., 4) as (x0, y0, x1, y1), got {b.shape}")
    w = _width(width)
    x0, x1 = b[..., 0].copy(), b[..., 2].copy()
    b[..., 0], b[..., 2] = w - 1 - x1, w - 1 - x0
    return b


def mirror_camera_matrix(K: np.ndarray, width: int) -> np.ndarray:
    """Camera matrix of the mirrored image: cx -> W - 1 - cx (a skew term changes sign)."""
    K = np.array(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K: expected a 3x3 camera matrix, got shape {K.shape}")
    K[0, 2] = _width(width) - 1 - K[0, 2]
    K[0, 1] = -K[0, 1]
    return K


def mirror_points_3d(points: np.ndarray) -> np.ndarray:
    """Camera-frame points (..., 3) -> mirrored points (x negated)."""
    p = np.array(points, dtype=np.float64)
    if p.shape[-1:] != (3,):
        raise ValueError(f"points: expected shape (..., 3), got {p.shape}")
    p[..., 0] = -p[..., 0]
    return p


def mirror_axis_angle(axis_angle: np.ndarray) -> np.ndarray:
    """Axis-angle rotations (..., 3k), e.g. a 48-D MANO pose -> rotations of the mirrored hand."""
    a = np.array(axis_angle, dtype=np.float64)
    if a.shape[-1] % 3:
        raise ValueError(f"axis_angle: expected a last dimension that is a multiple of 3, got {a.shape}")
    a = a.reshape(a.shape[:-1] + (-1, 3))
    a[..., 1:] = -a[..., 1:]
    return a.reshape(a.shape[:-2] + (-1,))


def mirror_rotation_matrix(rotation: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> M R M of the mirrored scene (e.g. an object pose)."""
    r = np.array(rotation, dtype=np.float64)
    if r.shape[-2:] != (3, 3):
        raise ValueError(f"rotation: expected shape (..., 3, 3), got {r.shape}")
    m = np.array([-1.0, 1.0, 1.0])
    return r * m[:, None] * m[None, :]
