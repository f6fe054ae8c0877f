"""View consistency (SemiHand section 3.3, eq. 10) and the augmentations of section 3.4.

SemiHand asks the network to commute with small image perturbations ``T``: the
prediction on ``T(x)`` must equal ``T`` applied to the prediction on ``x``, for the 2D
joints, the root-relative depth and the hand mask. ``T`` is a translation by up to
+-5 pixels of the paper's 64-pixel input, a rotation by up to +-2 degrees, or a quarter
turn (90, 180 or 270 degrees), all about the crop centre.

Coordinates. Everything is in *box units*, the convention of the hand head's
soft-argmax (``hoi_perception.models.hand_head``): (0, 0) is the top-left corner of the
square crop, (1, 1) its bottom-right corner, and pixel (row i, column j) of an S x S
map has its centre at ((j + 0.5) / S, (i + 0.5) / S). The same perturbation therefore
acts on a 256 px input image, a 64 px mask and the 2D joints without any rescaling;
this is also ``grid_sample``'s ``align_corners=False`` convention (grid = 2 u - 1).
The paper's +-5 px at 64 px is +-5/64 = 0.078 box units.

A perturbation maps a point ``p`` to ``A (p - c) + c + t`` with ``c = (0.5, 0.5)``,
``A = [[cos a, -sin a], [sin a, cos a]]`` (y points down, so a positive angle turns the
content clockwise on screen) and ``t`` the translation. Depth relative to the root is
unchanged by in-plane rotations and translations. Images and masks are resampled
bilinearly with ``grid_sample`` (zeros outside the source); quarter turns without
translation sample exactly at pixel centres and so reproduce ``torch.rot90`` up to
rounding. Pixels whose source lies outside the region spanned by the source's pixel
centres have no well-defined value; :meth:`Perturbation.valid_mask` marks the others,
and the mask term of the loss ignores them.

A network's mask may also live on a box of the crop (the hand box, as the hand head's
mask does) rather than on the whole crop. Each view then has its own box, and the
reference mask is resampled onto the perturbed view's box grid through the crop:
perturbed-box pixel centre -> crop units -> inverse perturbation -> reference-box units
(:func:`resample_box_mask`), with pixels whose source falls outside the reference grid's
pixel centres left out as above.

The pose distance is SemiHand's eq. 2, ``l(p1, p2) = |uv1 - uv2|^2 + lambda_d |d1 - d2|^2``,
here averaged over the 21 joints (not summed) with uv in box units and d in metres, so
``lambda_d`` (``depth_weight``) converts squared metres into squared box units: 10
weighs 1 cm of depth like 3.2 % of the crop side, i.e. like 1 cm in the image plane
when the crop spans about 0.32 m at the hand (a 1.5x enlarged hand box).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias

from hoi_perception.config import ConfigError
from hoi_perception.hand_model.joint_orders import NUM_HAND_JOINTS

# Exact (cos, sin) of the quarter turns 0, 90, 180, 270 degrees.
_QUARTER_COS = (1.0, 0.0, -1.0, 0.0)
_QUARTER_SIN = (0.0, 1.0, 0.0, -1.0)
_QUARTER_TOLERANCE_DEG = 1e-9
# Slack (grid units) when deciding whether a resampled pixel's source lies inside the image.
_VALID_SLACK = 1e-5


def _check_tensor(value, shape: tuple[int | None, ...], name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    ok = value.ndim == len(shape) and all(e is None or e == s for e, s in zip(shape, value.shape))
    if not ok:
        want = "(" + ", ".join("N" if e is None else str(e) for e in shape) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(value.shape)}")
    return value


@dataclass
class HandPose25D:
    """A 2.5D hand pose (SemiHand's p = (uv, d)): 2D joints in box units, depth relative to the root.

    uv: (B, 21, 2) box units of the crop; depth: (B, 21) metres, joint z minus root z.
    """

    uv: torch.Tensor
    depth: torch.Tensor

    def __post_init__(self) -> None:
        _check_tensor(self.uv, (None, NUM_HAND_JOINTS, 2), "HandPose25D.uv")
        _check_tensor(self.depth, (self.uv.shape[0], NUM_HAND_JOINTS), "HandPose25D.depth")

    @classmethod
    def from_joints(cls, uv: torch.Tensor, joints3d: torch.Tensor) -> HandPose25D:
        """From 2D joints and camera-oriented 3D joints (B, 21, 3): depth = z minus the wrist's z."""
        _check_tensor(joints3d, (None, NUM_HAND_JOINTS, 3), "joints3d")
        return cls(uv=uv, depth=joints3d[..., 2] - joints3d[..., :1, 2])

    def detach(self) -> HandPose25D:
        return HandPose25D(uv=self.uv.detach(), depth=self.depth.detach())


def pose_distance(a: HandPose25D, b: HandPose25D, depth_weight: float) -> torch.Tensor:
    """SemiHand's eq. 2 per sample (B,): mean over joints of |duv|^2 + depth_weight * dd^2."""
    if a.uv.shape != b.uv.shape:
        raise ValueError(f"pose_distance: poses have different shapes {tuple(a.uv.shape)} and {tuple(b.uv.shape)}")
    if depth_weight < 0:
        raise ValueError(f"depth_weight: expected >= 0, got {depth_weight}")
    uv_term = ((a.uv - b.uv) ** 2).sum(-1).mean(-1)
    depth_term = ((a.depth - b.depth) ** 2).mean(-1)
    return uv_term + depth_weight * depth_term


@dataclass
class PerturbationConfig:
    """SemiHand's perturbation augmentation for unlabelled data (section 3.4).

    Each sample draws one kind with the given probabilities (they must sum to 1):
    a translation uniform in [-max_translation, max_translation] per axis (box units;
    0.078 = the paper's 5 px of its 64 px input), a rotation uniform in
    [-max_small_rotation_deg, max_small_rotation_deg], or a quarter turn of 90, 180 or
    270 degrees (equally likely).
    """

    translation_probability: float = 1.0 / 3.0
    small_rotation_probability: float = 1.0 / 3.0
    quarter_turn_probability: float = 1.0 / 3.0
    max_translation: float = 5.0 / 64.0
    max_small_rotation_deg: float = 2.0

    def validate(self) -> None:
        probabilities = (self.translation_probability, self.small_rotation_probability,
                         self.quarter_turn_probability)
        if any(not (0.0 <= p <= 1.0) for p in probabilities) or abs(sum(probabilities) - 1.0) > 1e-6:
            raise ConfigError("translation_probability, small_rotation_probability, quarter_turn_probability: "
                              f"expected values in [0, 1] summing to 1, got {probabilities}")
        if not (0.0 <= self.max_translation < 0.5):
            raise ConfigError(f"max_translation: expected box units in [0, 0.5), got {self.max_translation}")
        if not (0.0 <= self.max_small_rotation_deg <= 45.0):
            raise ConfigError(f"max_small_rotation_deg: expected [0, 45] degrees, got {self.max_small_rotation_deg}")


@dataclass
class Perturbation:
    """A batch of in-plane perturbations about the crop centre (one per sample).

    angle_deg: (B,) rotation, positive = clockwise on screen; translation: (B, 2) box units.
    """

    angle_deg: torch.Tensor
    translation: torch.Tensor

    def __post_init__(self) -> None:
        _check_tensor(self.angle_deg, (None,), "Perturbation.angle_deg")
        _check_tensor(self.translation, (self.angle_deg.shape[0], 2), "Perturbation.translation")

    @property
    def batch_size(self) -> int:
        return int(self.angle_deg.shape[0])

    @classmethod
    def identity(cls, batch_size: int, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> Perturbation:
        return cls(angle_deg=torch.zeros(batch_size, dtype=dtype, device=device),
                   translation=torch.zeros(batch_size, 2, dtype=dtype, device=device))

    def linear(self) -> torch.Tensor:
        """(B, 2, 2) rotation matrices, exact for multiples of 90 degrees."""
        radians = torch.deg2rad(self.angle_deg)
        cos, sin = torch.cos(radians), torch.sin(radians)
        quarter = torch.round(self.angle_deg / 90.0)
        exact = (self.angle_deg - 90.0 * quarter).abs() < _QUARTER_TOLERANCE_DEG
        index = torch.remainder(quarter, 4).long()
        cos = torch.where(exact, self.angle_deg.new_tensor(_QUARTER_COS)[index], cos)
        sin = torch.where(exact, self.angle_deg.new_tensor(_QUARTER_SIN)[index], sin)
        return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)

    def offset(self) -> torch.Tensor:
        """(B, 2) the b of p' = A p + b: c - A c + t."""
        centre = self.translation.new_full((2,), 0.5)
        return centre - self.linear() @ centre + self.translation

    def inverse(self) -> Perturbation:
        """The perturbation undoing this one: rotation by -a and translation -A^T t."""
        back = -(self.linear().transpose(-1, -2) @ self.translation[..., None])[..., 0]
        return Perturbation(angle_deg=-self.angle_deg, translation=back)

    def apply_points(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 2) box-unit points of the original crop -> the perturbed crop."""
        _check_tensor(points, (self.batch_size, None, 2), "points")
        linear = self.linear().to(points.dtype)
        return points @ linear.transpose(-1, -2) + self.offset().to(points.dtype)[:, None, :]

    def apply_pose(self, pose: HandPose25D) -> HandPose25D:
        """The pose as seen in the perturbed crop: 2D joints move, root-relative depth does not."""
        return HandPose25D(uv=self.apply_points(pose.uv), depth=pose.depth)

    def _source_grid(self, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 2) grid_sample coordinates of the source of every output pixel."""
        if height != width:
            raise ValueError(f"images: expected square crops (box units are isotropic only then), got {height}x{width}")
        inverse_linear = self.linear().transpose(-1, -2).to(like.dtype)  # rotations: inverse = transpose
        offset = self.offset().to(like.dtype)
        ones = like.new_ones(2)
        # Box units p = (g + 1) / 2; source p_s = A^-1 (p' - b)  =>  g_s = A^-1 g' + A^-1 1 - 2 A^-1 b - 1.
        shift = inverse_linear @ ones - 2.0 * (inverse_linear @ offset[..., None])[..., 0] - 1.0
        theta = torch.cat([inverse_linear, shift[..., None]], dim=-1)
        return F.affine_grid(theta, [self.batch_size, 1, height, width], align_corners=False)

    def apply_image(self, images: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """Resample (B, C, S, S) images or masks into the perturbed crop (zeros where there is no source).

        mode: ``bilinear`` (images, soft masks) or ``nearest`` (label maps that must stay discrete).
        """
        _check_tensor(images, (self.batch_size, None, None, None), "images")
        if mode not in ("bilinear", "nearest"):
            raise ValueError(f"mode: expected 'bilinear' or 'nearest', got {mode!r}")
        if not torch.is_floating_point(images):
            raise TypeError(f"images: expected a floating-point tensor, got {images.dtype}")
        grid = self._source_grid(images.shape[-2], images.shape[-1], images)
        return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)

    def valid_mask(self, size: int, like: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) 1 where the perturbed pixel's source lies within the source's pixel centres."""
        grid = self._source_grid(size, size, like)
        limit = 1.0 - 1.0 / size + _VALID_SLACK
        return (grid.abs() <= limit).all(dim=-1)[:, None].to(like.dtype)


def sample_perturbations(batch_size: int, config: PerturbationConfig, generator: torch.Generator | None = None,
                         dtype: torch.dtype = torch.float32,
                         device: torch.device | str | None = None) -> Perturbation:
    """Draw one perturbation per sample as :class:`PerturbationConfig` describes."""
    config.validate()
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    probabilities = torch.tensor([config.translation_probability, config.small_rotation_probability,
                                  config.quarter_turn_probability], dtype=torch.float64)
    kind = torch.multinomial(probabilities, batch_size, replacement=True, generator=generator)
    uniform = torch.rand(batch_size, 3, generator=generator, dtype=torch.float64) * 2.0 - 1.0
    quarter = torch.randint(1, 4, (batch_size,), generator=generator).to(torch.float64) * 90.0
    small = uniform[:, 2] * config.max_small_rotation_deg
    angle = torch.where(kind == 1, small, torch.where(kind == 2, quarter, torch.zeros_like(small)))
    translation = torch.where((kind == 0)[:, None], uniform[:, :2] * config.max_translation,
                              torch.zeros_like(uniform[:, :2]))
    return Perturbation(angle_deg=angle.to(device=device, dtype=dtype),
                        translation=translation.to(device=device, dtype=dtype))


@dataclass
class HandViewPrediction:
    """What the network predicts for one view: the 2.5D pose and, optionally, the hand mask.

    mask: (B, 1, S, S) hand probability in [0, 1] (any square resolution), or None;
    mask_box: (B, 4) the box (x0, y0, x1, y1) in crop units that the mask grid spans, or
        None when it spans the whole crop.
    """

    pose: HandPose25D
    mask: torch.Tensor | None = None
    mask_box: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.mask is not None:
            _check_tensor(self.mask, (self.pose.uv.shape[0], 1, None, None), "HandViewPrediction.mask")
        if self.mask_box is not None:
            if self.mask is None:
                raise ValueError("HandViewPrediction.mask_box: given without a mask")
            _check_tensor(self.mask_box, (self.pose.uv.shape[0], 4), "HandViewPrediction.mask_box")


@dataclass
class ViewConsistencyLoss:
    """Per-sample terms of eq. 10 and their weighted batch mean ``total``."""

    pose: torch.Tensor  # (B,) pose distance (eq. 2 units)
    mask: torch.Tensor | None  # (B,) mean |w| difference over valid pixels, None without masks
    total: torch.Tensor  # scalar


def masked_l1(a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B,) mean of |a - b| over the pixels where ``valid`` is 1 (0 for a sample with none)."""
    per_pixel = (a - b).abs() * valid
    count = valid.expand_as(per_pixel).flatten(1).sum(-1)
    return per_pixel.flatten(1).sum(-1) / count.clamp(min=1.0)


def resample_box_mask(mask: torch.Tensor, box: torch.Tensor, target_box: torch.Tensor, perturbation: Perturbation
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """A mask on ``box`` of the original crop, resampled (bilinearly) onto the grid of
    ``target_box`` in the perturbed crop; and (B, 1, S, S) 1 where a pixel's source lies
    within the pixel centres of the source grid (see the module docstring).

    mask: (B, 1, S, S); box, target_box: (B, 4) (x0, y0, x1, y1) in crop units.
    """
    batch = perturbation.batch_size
    _check_tensor(mask, (batch, 1, None, None), "mask")
    _check_tensor(box, (batch, 4), "box")
    _check_tensor(target_box, (batch, 4), "target_box")
    size = mask.shape[-1]
    if mask.shape[-2] != size:
        raise ValueError(f"mask: expected a square grid, got {tuple(mask.shape[-2:])}")
    centres = (torch.arange(size, dtype=mask.dtype, device=mask.device) + 0.5) / size
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    unit = torch.stack([xs, ys], -1).reshape(1, size * size, 2)
    target_box, box = target_box.to(mask.dtype), box.to(mask.dtype)
    points = target_box[:, None, :2] + unit * (target_box[:, None, 2:] - target_box[:, None, :2])
    source = perturbation.inverse().apply_points(points.to(perturbation.angle_deg.dtype)).to(mask.dtype)
    in_box = (source - box[:, None, :2]) / (box[:, None, 2:] - box[:, None, :2]).clamp(min=1e-12)
    grid = (in_box * 2.0 - 1.0).view(batch, size, size, 2)
    resampled = F.grid_sample(mask, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    limit = 1.0 - 1.0 / size + _VALID_SLACK
    valid = (grid.abs() <= limit).all(dim=-1)[:, None].to(mask.dtype)
    return resampled, valid


def view_consistency_loss(reference: HandViewPrediction, perturbed: HandViewPrediction, perturbation: Perturbation,
                          depth_weight: float, mask_weight: float = 1.0) -> ViewConsistencyLoss:
    """SemiHand's eq. 10: l(f(T(x)), T(f(x))) + mask_weight * |f_w(T(x)) - T(f_w(x))|_1.

    reference: the prediction on the original crop x; perturbed: the prediction on
    ``perturbation.apply_image(x)``. Gradients flow into both; pass ``reference.detach()``
    to use the original view as a fixed target. The mask term is the mean absolute
    difference over the pixels with a defined source (see :meth:`Perturbation.valid_mask`);
    it needs masks in both predictions, and is None when neither has one. Masks on boxes
    (``mask_box``) are compared on the perturbed view's box grid (:func:`resample_box_mask`).
    """
    if perturbation.batch_size != reference.pose.uv.shape[0]:
        raise ValueError(f"perturbation: {perturbation.batch_size} perturbations for a batch of "
                         f"{reference.pose.uv.shape[0]}")
    if mask_weight < 0:
        raise ValueError(f"mask_weight: expected >= 0, got {mask_weight}")
    pose_term = pose_distance(perturbed.pose, perturbation.apply_pose(reference.pose), depth_weight)
    total = pose_term.mean()
    mask_term = None
    if (reference.mask is None) != (perturbed.mask is None):
        raise ValueError("view_consistency_loss: masks must be given for both views or for neither")
    if reference.mask is not None:
        if reference.mask.shape != perturbed.mask.shape:
            raise ValueError(f"masks: reference {tuple(reference.mask.shape)} and perturbed "
                             f"{tuple(perturbed.mask.shape)} differ")
        if (reference.mask_box is None) != (perturbed.mask_box is None):
            raise ValueError("view_consistency_loss: mask boxes must be given for both views or for neither")
        if reference.mask_box is None:
            target = perturbation.apply_image(reference.mask)
            valid = perturbation.valid_mask(reference.mask.shape[-1], reference.mask)
        else:
            target, valid = resample_box_mask(reference.mask, reference.mask_box, perturbed.mask_box, perturbation)
        mask_term = masked_l1(perturbed.mask, target, valid)
        total = total + mask_weight * mask_term.mean()
    return ViewConsistencyLoss(pose=pose_term, mask=mask_term, total=total)


@dataclass
class GrayscaleErasingConfig:
    """The parts of SemiHand's diversity augmentation (section 3.4) beyond the usual crop,
    rotation, scale and colour jitter (``hoi_training.data.augment.AugmentConfig``):
    grayscale with probability ``grayscale_probability``, and with probability
    ``erasing_probability`` one random rectangle (area a fraction of the crop uniform in
    [erasing_min_area, erasing_max_area], aspect ratio in [1/3, 3]) filled with uniform noise.
    """

    grayscale_probability: float = 0.1
    erasing_probability: float = 0.5
    erasing_min_area: float = 0.02
    erasing_max_area: float = 0.2

    def validate(self) -> None:
        for name in ("grayscale_probability", "erasing_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}: expected a probability in [0, 1], got {getattr(self, name)}")
        if not 0.0 < self.erasing_min_area <= self.erasing_max_area <= 1.0:
            raise ConfigError("erasing_min_area, erasing_max_area: expected 0 < min <= max <= 1, got "
                              f"{self.erasing_min_area}, {self.erasing_max_area}")

