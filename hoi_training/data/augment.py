"""Training augmentation and evaluation crops, as Semi-Hand-Object and HFL-Net prepare their inputs.

The network sees a square crop around the hand and the object: the union of the two
boxes, each first enlarged x1.5 about its centre, made square. Training jitters that
crop (scale +-20 %, centre +-10 % of the side), rotates it by up to +-180 degrees,
and jitters colour (+-10 % per channel) and sharpness (Gaussian blur).

Rotation is done exactly, in 3D. A rotation ``Q`` of the scene about the camera's
optical axis leaves depth unchanged, so in the image it is the affine map
``H = K Q K^-1`` (a rotation about the principal point, stretched by fy/fx when the
pixels are not square). The whole image warp is ``M = A H`` with ``A`` the crop's
scale-and-shift, and

* 2D labels (joints, control points, box corners) map through ``M``;
* 3D labels rotate by ``Q``: joints, vertices, the object pose (``Q R``, ``Q t``) and
  MANO's global orientation and translation (:func:`~hoi_training.data.sample.rotate_mano_global`);
* the output intrinsics are ``A K``,

so every 3D label still projects onto its 2D label in the crop (the property the
tests check). Implementations that rotate the image about the crop centre and only the
3D joints about the camera axis are consistent only near the principal point.

Optionally (HFL-Net's treatment of DexYCB) left hands are mirrored into right hands
first: image flipped, x negated in 3D, the y and z axis-angle components negated.

SemiHand's diversity augmentation adds random grayscale and random erasing
(:func:`grayscale_and_erase_image`) on top; they change pixels only.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from typing import Any, Protocol

import cv2
import numpy as np

from hoi_perception.config import ConfigError
from hoi_perception.geometry.camera import box_from_points, crop_intrinsics, project
from hoi_perception.geometry.crop import DEFAULT_BOX_EXPANSION, square_crop_box
from hoi_perception.geometry.mirror import MIRROR_X, reflection
from hoi_training.data.sample import HandObjectSample, SampleError, rotate_sample_3d

# ITU-R BT.601 luma weights (R, G, B) of the grayscale step.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# Erased rectangles have a height / width ratio in [1 / ERASING_MAX_ASPECT, ERASING_MAX_ASPECT].
ERASING_MAX_ASPECT = 3.0


@dataclass
class AugmentConfig:
    """Crop and jitter settings; the defaults are SHO/HFL's (HFL's 256 px input)."""

    output_size: int = 256
    box_expansion: float = DEFAULT_BOX_EXPANSION
    scale_jitter: float = 0.2
    center_jitter: float = 0.1
    rotation_deg: float = 180.0
    color_jitter: float = 0.1
    blur_probability: float = 0.5
    blur_sigma_max: float = 1.0
    mirror_left_hands: bool = False

    def validate(self) -> None:
        if self.output_size < 8:
            raise ConfigError(f"output_size must be at least 8 pixels, got {self.output_size}")
        if self.box_expansion < 1.0:
            raise ConfigError(f"box_expansion must be >= 1, got {self.box_expansion}")
        if not 0.0 <= self.scale_jitter < 1.0:
            raise ConfigError(f"scale_jitter must lie in [0, 1), got {self.scale_jitter}")
        for name in ("center_jitter", "color_jitter", "blur_sigma_max"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.rotation_deg <= 180.0:
            raise ConfigError(f"rotation_deg must lie in [0, 180], got {self.rotation_deg}")
        if not 0.0 <= self.blur_probability <= 1.0:
            raise ConfigError(f"blur_probability must lie in [0, 1], got {self.blur_probability}")


@dataclass(frozen=True)
class CropTransform:
    """How one sample was cropped: ``image_to_crop`` (3, 3) maps full-image pixels to crop
    pixels (after any mirroring), ``camera_rotation`` (3, 3) rotated the 3D labels."""

    image_to_crop: np.ndarray
    camera_rotation: np.ndarray
    output_size: int
    mirrored: bool

    def crop_to_image(self, points_2d: np.ndarray) -> np.ndarray:
        """Map crop pixels (..., 2) back to full-image pixels (of the mirrored image if ``mirrored``)."""
        inverse = np.linalg.inv(self.image_to_crop)
        return _apply_affine(inverse, points_2d)


def rotation_about_optical_axis(angle_rad: float) -> np.ndarray:
    """Camera-frame rotation about +z; positive angles turn the image clockwise (y points down)."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def crop_box_of(sample: HandObjectSample, box_expansion: float) -> np.ndarray:
    """The square crop box: union of the hand and object boxes, each enlarged, squared.

    Falls back to the 2D joints' extent, then to the largest centred square of the image.
    """
    boxes = [b for b in (sample.hand_box, sample.object_box) if b is not None]
    if not boxes and sample.joints_2d is not None:
        boxes = [np.concatenate([sample.joints_2d.min(0), sample.joints_2d.max(0)])]
    if not boxes:
        width, height = sample.image_size
        side = min(width, height)
        return np.array([(width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2])
    return square_crop_box(boxes, box_expansion)


def _apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def _transform_box(matrix: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    corners = _apply_affine(matrix, np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]))
    out = np.concatenate([corners.min(0), corners.max(0)])
    return np.clip(out, 0.0, float(size))


def mirror_sample(sample: HandObjectSample) -> HandObjectSample:
    """Mirror a sample left-right: image flipped, 3D x negated, hand side swapped.

    A pixel u maps to W - 1 - u; the camera matrix becomes ``P K X`` with X = diag(-1, 1, 1)
    and P the image flip, so mirrored 3D labels project onto mirrored 2D labels. MANO
    axis-angles (16 x 3) have their y and z components negated, and the translation is
    mirrored (``X t``), which is exact when the left model is the mirror of the right one
    (MANO's are, up to the known left shapedirs sign bug).

    The object: the mirror image of an object with a mirror plane (reflection ``M``,
    ``object_mirror_axis``) is the object itself at the pose ``X R M``, so it keeps its own
    control points and each control point label names the same point of the object as in
    unmirrored samples (otherwise a mirrored sample would label the box corner across the
    plane, and the network would learn the average of the two). Symmetry rotations
    become ``M S M``. An object without a mirror plane has no real pose in the mirror: its
    control points are mirrored in its model frame and its rotation conjugated (``X R X``),
    so use such samples for training, not for scoring against the unmirrored object mesh.
    """
    width = sample.image.shape[1]
    flip = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    changes: dict[str, Any] = {
        "image": np.ascontiguousarray(sample.image[:, ::-1]),
        "K": flip @ sample.K @ MIRROR_X,
        "hand_side": "left" if sample.hand_side == "right" else "right",
    }
    for name in ("joints_2d", "object_points_2d"):
        value = getattr(sample, name)
        if value is not None:
            changes[name] = _apply_affine(flip, value)
    for name in ("hand_box", "object_box"):
        value = getattr(sample, name)
        if value is not None:
            changes[name] = np.array([width - 1.0 - value[2], value[1], width - 1.0 - value[0], value[3]])
    for name in ("joints_3d", "hand_root_3d", "vertices_3d", "object_translation", "object_control_points",
                 "mano_trans"):
        value = getattr(sample, name)
        if value is not None:
            changes[name] = value * np.array([-1.0, 1.0, 1.0])
    object_frame = MIRROR_X if sample.object_mirror_axis is None else reflection(sample.object_mirror_axis)
    if sample.object_rotation is not None:
        changes["object_rotation"] = MIRROR_X @ sample.object_rotation @ object_frame
    if sample.object_symmetry_rotations is not None:
        changes["object_symmetry_rotations"] = object_frame @ sample.object_symmetry_rotations @ object_frame
    if sample.object_mirror_axis is not None and sample.object_control_points is not None:
        changes["object_control_points"] = sample.object_control_points
        if sample.object_rotation is not None:  # the object's own points at its pose in the mirrored camera
            changes["object_points_2d"] = project(
                sample.object_control_points @ changes["object_rotation"].T + changes["object_translation"],
                changes["K"])
    if sample.mano_pose is not None:
        changes["mano_pose"] = (sample.mano_pose.reshape(-1, 3) * np.array([1.0, -1.0, -1.0])).reshape(-1)
    for name in ("hand_mask", "object_mask"):
        value = getattr(sample, name)
        if value is not None:
            changes[name] = np.ascontiguousarray(value[:, ::-1])
    return replace(sample, **changes)


def draw_crop_transform(sample: HandObjectSample, config: AugmentConfig,
                        rng: np.random.Generator | None) -> CropTransform:
    """Draw the geometric part of the augmentation; ``rng=None`` gives the plain evaluation crop."""
    box = crop_box_of(sample, config.box_expansion)
    side = float(box[2] - box[0])
    if not side > 1.0:
        raise SampleError(f"{sample.sample_id}: the crop box {box.tolist()} is degenerate; check the hand/object boxes")
    angle = 0.0
    if rng is not None:
        side *= 1.0 + rng.uniform(-config.scale_jitter, config.scale_jitter)
        angle = np.deg2rad(rng.uniform(-config.rotation_deg, config.rotation_deg))
    Q = rotation_about_optical_axis(angle)  # noqa: N806
    K = sample.K  # noqa: N806
    rotate_image = K @ Q @ np.linalg.inv(K)
    centre = _apply_affine(rotate_image, (box[:2] + box[2:]) / 2)
    if rng is not None:
        centre = centre + rng.uniform(-config.center_jitter, config.center_jitter, 2) * side
    crop = np.concatenate([centre - side / 2, centre + side / 2])
    crop_affine = crop_intrinsics(np.eye(3), crop, config.output_size)
    return CropTransform(image_to_crop=crop_affine @ rotate_image, camera_rotation=Q,
                         output_size=config.output_size, mirrored=False)


def apply_crop_transform(sample: HandObjectSample, transform: CropTransform) -> HandObjectSample:
    """Warp the image and every label of ``sample`` by ``transform`` (see the module docstring)."""
    size = transform.output_size
    M = transform.image_to_crop  # noqa: N806
    image = cv2.warpAffine(sample.image, M[:2], (size, size), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    out = rotate_sample_3d(sample, transform.camera_rotation)
    # M = A K Q K^-1, so the crop's intrinsics A K equal M K Q^T.
    changes: dict[str, Any] = {"image": image, "K": M @ sample.K @ transform.camera_rotation.T}
    for name in ("joints_2d", "object_points_2d"):
        value = getattr(sample, name)
        if value is not None:
            changes[name] = _apply_affine(M, value)
    for name in ("hand_mask", "object_mask"):
        value = getattr(sample, name)
        if value is not None:
            warped = cv2.warpAffine(value.astype(np.uint8), M[:2], (size, size), flags=cv2.INTER_NEAREST,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            changes[name] = warped.astype(bool)
    # Boxes stay tight under rotation: the bound of a rotated box is up to twice its area,
    # while the runtime's detector boxes are tight. The hand's box is its mesh projected into
    # the crop (the labels' definition); the object's is its warped mask; else the rotated box.
    if sample.hand_box is not None:
        if out.vertices_3d is not None:
            changes["hand_box"] = _clip_box(box_from_points(project(out.vertices_3d, changes["K"])), size)
        else:
            changes["hand_box"] = _box_of_mask(changes.get("hand_mask"), M, sample.hand_box, size)
    if sample.object_box is not None:
        changes["object_box"] = _box_of_mask(changes.get("object_mask"), M, sample.object_box, size)
    return replace(out, **changes)


def _clip_box(box: np.ndarray, size: int) -> np.ndarray:
    return np.clip(box, 0.0, float(size))


def _box_of_mask(mask: np.ndarray | None, matrix: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Tight box of a warped mask's pixels (pixel edges), or the bound of the warped box without pixels."""
    if mask is not None and mask.any():
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        return np.array([cols[0], rows[0], cols[-1] + 1.0, rows[-1] + 1.0])
    return _transform_box(matrix, box, size)


def jitter_appearance(image: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Per-channel gain in 1 +- color_jitter, then Gaussian blur with probability blur_probability."""
    gains = 1.0 + rng.uniform(-config.color_jitter, config.color_jitter, 3)
    out = np.clip(image.astype(np.float32) * gains.astype(np.float32), 0, 255)
    if config.blur_sigma_max > 0 and rng.random() < config.blur_probability:
        sigma = rng.uniform(0.1, config.blur_sigma_max)
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=sigma, sigmaY=sigma)
    return np.round(out).astype(np.uint8)


class GrayscaleErasingSettings(Protocol):
    """What :func:`grayscale_and_erase_image` reads; SemiHand's
    :class:`~hoi_training.semihand.consistency.GrayscaleErasingConfig` provides it (validated there)."""

    grayscale_probability: float
    erasing_probability: float
    erasing_min_area: float
    erasing_max_area: float


def grayscale_and_erase_image(image: np.ndarray, settings: GrayscaleErasingSettings,
                              rng: np.random.Generator) -> np.ndarray:
    """Random grayscale, then random erasing, of one (H, W, 3) uint8 image (a new array).

    With probability ``grayscale_probability`` every channel becomes the BT.601 luma; with
    probability ``erasing_probability`` one rectangle, its area a fraction of the image
    uniform in [erasing_min_area, erasing_max_area] and its height / width ratio
    log-uniform in [1/3, 3] (sides rounded to pixels), is filled with uniform noise. Only
    pixels change, so every label of a crop stays valid; the draws come from ``rng`` alone.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image: expected an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    out = image.copy()
    if rng.random() < settings.grayscale_probability:
        luma = image.astype(np.float32) @ np.asarray(LUMA_WEIGHTS, dtype=np.float32)
        out[:] = np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None]
    if rng.random() < settings.erasing_probability:
        area = rng.uniform(settings.erasing_min_area, settings.erasing_max_area) * height * width
        aspect = float(np.exp(rng.uniform(-1.0, 1.0) * np.log(ERASING_MAX_ASPECT)))
        rect_h = min(height, max(1, round(np.sqrt(area * aspect))))
        rect_w = min(width, max(1, round(np.sqrt(area / aspect))))
        top = int(rng.integers(0, height - rect_h + 1))
        left = int(rng.integers(0, width - rect_w + 1))
        out[top:top + rect_h, left:left + rect_w] = rng.integers(0, 256, (rect_h, rect_w, 3), dtype=np.uint8)
    return out


def augment_sample(sample: HandObjectSample, config: AugmentConfig,
                   rng: np.random.Generator) -> tuple[HandObjectSample, CropTransform]:
    """One random training view of ``sample`` and the transform that made it."""
    mirrored = config.mirror_left_hands and sample.hand_side == "left"
    if mirrored:
        sample = mirror_sample(sample)
    transform = draw_crop_transform(sample, config, rng)
    out = apply_crop_transform(sample, transform)
    out = replace(out, image=jitter_appearance(out.image, config, rng))
    return out, replace(transform, mirrored=mirrored)


def evaluation_crop(sample: HandObjectSample, config: AugmentConfig) -> tuple[HandObjectSample, CropTransform]:
    """The deterministic crop used at test time: no jitter, rotation, colour change or mirroring."""
    transform = draw_crop_transform(sample, config, None)
    return apply_crop_transform(sample, transform), transform


def plain_crop(sample: HandObjectSample, config: AugmentConfig) -> tuple[HandObjectSample, CropTransform]:
    """The training crop without any random change: left hands mirrored first when
    ``mirror_left_hands`` is set (as :func:`augment_sample` does), then the evaluation crop.

    This is the view a network trained on mirrored crops is run on, e.g. to predict
    pseudo-labels; ``transform.mirrored`` says whether the sample was mirrored.
    """
    mirrored = config.mirror_left_hands and sample.hand_side == "left"
    if mirrored:
        sample = mirror_sample(sample)
    crop, transform = evaluation_crop(sample, config)
    return crop, replace(transform, mirrored=mirrored)


class Augmenter:
    """Dataset transform: a random view per sample, reproducible from (seed, epoch, sample id).

    The generator is seeded from the sample's id rather than shared, so results do not
    depend on DataLoader worker scheduling. Call :meth:`set_epoch` each epoch for new views.
    """

    def __init__(self, config: AugmentConfig | None = None, seed: int = 0, train: bool = True):
        self.config = config or AugmentConfig()
        self.config.validate()
        self.seed = int(seed)
        self.train = train
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def generator_for(self, sample: HandObjectSample) -> np.random.Generator:
        """The random stream of ``sample`` this epoch: a function of (seed, epoch, sample id) only."""
        return np.random.default_rng([self.seed, self.epoch, zlib.crc32(sample.sample_id.encode())])

    def __call__(self, sample: HandObjectSample) -> HandObjectSample:
        if not self.train:
            return evaluation_crop(sample, self.config)[0]
        return augment_sample(sample, self.config, self.generator_for(sample))[0]
