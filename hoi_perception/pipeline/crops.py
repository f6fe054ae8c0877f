"""The network's crop of a full frame: one implementation for the runtime, the offline tools
and the hand-side check.

The crop is the training crop (``hoi_training.data.augment.evaluation_crop``): the union of
the hand and object boxes, each enlarged, squared and resized to the network's input; a
left hand's crop is cut from the mirrored image, as the network models right hands.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from hoi_perception.geometry.camera import crop_intrinsics
from hoi_perception.geometry.crop import DEFAULT_BOX_EXPANSION, square_crop_box
from hoi_perception.geometry.mirror import mirror_boxes


@dataclass(frozen=True)
class CropGeometry:
    """How one network crop was cut from the full frame.

    ``image_to_crop`` (3, 3) maps full-image pixels to crop pixels; for a mirrored crop it
    includes the flip u -> W - 1 - u, so :meth:`to_image` un-mirrors as it maps back.
    ``hand_box`` and ``object_box`` are the network's box inputs, crop pixels.
    """

    image_to_crop: np.ndarray
    size: int
    mirrored: bool
    hand_box: np.ndarray
    object_box: np.ndarray

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Crop pixels (..., 2) -> full-image pixels (of the original, un-mirrored image)."""
        inverse = np.linalg.inv(self.image_to_crop)
        points = np.asarray(points, dtype=np.float64)
        return points @ inverse[:2, :2].T + inverse[:2, 2]


def _box_through(matrix: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]) @ matrix[:2, :2].T + matrix[:2, 2]
    return np.clip(np.concatenate([corners.min(0), corners.max(0)]), 0.0, float(size))


def crop_geometry(hand_box: np.ndarray, object_box: np.ndarray, image_width: int, size: int, mirrored: bool,
                  box_expansion: float = DEFAULT_BOX_EXPANSION) -> CropGeometry:
    """The training crop (``hoi_training.data.augment.evaluation_crop``) for these full-image boxes.

    Mirrored crops are the training crop of the mirrored image (``mirror_sample``: boxes
    x -> W - 1 - x), with the flip folded into the affine so the image is never copied.
    """
    hand_box = np.asarray(hand_box, dtype=np.float64)
    object_box = np.asarray(object_box, dtype=np.float64)
    flip = np.eye(3)
    if mirrored:
        flip = np.array([[-1.0, 0.0, image_width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    hand_w, object_w = (mirror_boxes(b, image_width) if mirrored else b for b in (hand_box, object_box))
    union = square_crop_box((hand_w, object_w), box_expansion)
    side = float(union[2] - union[0])
    if not side > 1.0:
        raise ValueError(f"crop box {union.tolist()} is degenerate (hand box {hand_box.tolist()}, "
                         f"object box {object_box.tolist()})")
    centre = (union[:2] + union[2:]) / 2
    crop_box = np.concatenate([centre - side / 2, centre + side / 2])
    image_to_crop = crop_intrinsics(np.eye(3), crop_box, size) @ flip
    return CropGeometry(image_to_crop, size, mirrored, _box_through(image_to_crop, hand_box, size),
                        _box_through(image_to_crop, object_box, size))


def extract_crop(image: np.ndarray, geometry: CropGeometry) -> np.ndarray:
    """The (S, S, 3) uint8 crop; outside the image is black, as in training."""
    return cv2.warpAffine(image, geometry.image_to_crop[:2], (geometry.size, geometry.size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def network_images(images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) images (or a (B, H, W, 3) array) -> float32 (B, 3, H, W) in [0, 1], the network's input."""
    return np.stack(list(images)).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
