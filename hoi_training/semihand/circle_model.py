"""55-circle hand model and the cross-modal consistency loss (SemiHand section 3.3, eqs. 11-14).

SemiHand ties the predicted 2D pose to the predicted hand mask by drawing the hand as
55 circles placed by the 2D joints (9 per finger, 10 for the palm), rendering them into
a soft mask, and comparing that with the network's mask (with the gradient into the
mask stopped, so a bad pose cannot drag the mask along).

Circle centres ``G(uv)`` are fixed linear combinations of the 21 2D joints (HO-3D order,
box units), so they follow the pose exactly and cost one small matrix product:

* each finger's three phalanges (base-middle, middle-end, end-tip joints of its chain)
  carry three circles each, at 1/6, 1/2 and 5/6 of the phalanx;
* the palm carries ten: four at 80 % of the way from the wrist to each finger's base
  joint (the knuckle row), three at 50 % towards the index base, the middle of the
  middle and ring bases, and the pinky base, one at 15 % towards the middle base (near
  the wrist), and two on the thumb side (the centroid of wrist, thumb base and index
  base; the midpoint of thumb base and index base).

Radii are physical: ``radii_m`` holds one radius per circle in metres, turned into box
units by the hand's image scale ``s`` (box units per metre) read off the 2D pose. A
projection never lengthens a segment (weak perspective), so each palm segment's 2D length
divided by its 3D template length is a lower bound of ``s``; the model takes the largest
over wrist-to-base of index, middle, ring and pinky and the index-to-pinky base width.
These span the palm plane in directions about 90 degrees apart, and a tilt of that plane
leaves a segment along the tilt axis at full length, so the largest bound stays close to
``s`` unless the palm is strongly tilted about an axis between those directions.

Fitting (:func:`fit_circle_radii`): on labelled (2D joints, mask) pairs, each circle's
radius starts as the median over frames of the mask's distance transform at its centre
(the largest circle at that centre that stays inside the silhouette, in metres via
``s``); the median is robust to frames where a circle is occluded or misplaced. Inscribed
circles leave slivers between neighbours uncovered, so one common factor for all radii
is then chosen by maximising the mean IoU with the masks over a small grid.

Rendering (:meth:`CircleHandModel.render`): the signed distance to the union of circles
``sdf(g) = min_i |g - c_i| - r_i`` (box units), turned into a soft mask
``sigmoid(-sdf / softness)``; ``softness`` is given in pixels of the rendered mask.

Loss (:func:`cross_modal_consistency_loss`), per sample:

* model to data (eq. 12): mean over pixels of ``|R(G(uv)) - w|``;
* data to model (eqs. 13-14): mean over pixels of ``w * max(sdf, 0) + (1 - w) * max(-sdf, 0)``
  (units of ``uv``): a hand pixel outside every circle costs its distance to the nearest
  circle, a background pixel inside a circle costs its depth inside the deepest one.
  The paper defines it for a binary mask; the predicted soft mask weighs the two cases.

Both are means over pixels rather than the paper's sums, so they do not depend on the
mask resolution. The mask need not span the joints' unit square: ``mask_box`` places its
grid anywhere in the joints' (isotropic) coordinates, e.g. the network's mask on the
hand box of a square crop, with joints and box both in crop units. A non-square box
gives non-square pixels; the soft edge is then ``softness_px`` times their geometric-mean
side.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias

from hoi_perception.atomic import atomic_write_bytes
from hoi_perception.hand_model.joint_orders import HO3D_FINGER_CHAINS, NUM_HAND_JOINTS

CIRCLES_PER_PHALANX_FRACTIONS: tuple[float, ...] = (1.0 / 6.0, 0.5, 5.0 / 6.0)
NUM_FINGER_CIRCLES = 9
NUM_PALM_CIRCLES = 10
NUM_CIRCLES = 5 * NUM_FINGER_CIRCLES + NUM_PALM_CIRCLES
# Segments whose 2D length over 3D length bounds the image scale from below.
SCALE_SEGMENTS: tuple[tuple[int, int], ...] = ((0, 1), (0, 4), (0, 10), (0, 7), (1, 7))
_WRIST, _INDEX_BASE, _MIDDLE_BASE, _PINKY_BASE, _RING_BASE, _THUMB_BASE = 0, 1, 4, 7, 10, 13
_MIN_SCALE_LENGTH = 1e-9


def _palm_weights() -> list[dict[int, float]]:
    """The ten palm centres as {joint: weight} (weights sum to 1)."""

    def towards(target: dict[int, float], t: float) -> dict[int, float]:
        weights = {_WRIST: 1.0 - t}
        for joint, w in target.items():
            weights[joint] = weights.get(joint, 0.0) + t * w
        return weights

    knuckles = [towards({j: 1.0}, 0.8) for j in (_INDEX_BASE, _MIDDLE_BASE, _RING_BASE, _PINKY_BASE)]
    mid = [towards({_INDEX_BASE: 1.0}, 0.5), towards({_MIDDLE_BASE: 0.5, _RING_BASE: 0.5}, 0.5),
           towards({_PINKY_BASE: 1.0}, 0.5)]
    near_wrist = [towards({_MIDDLE_BASE: 1.0}, 0.15)]
    thumb_side = [{_WRIST: 1 / 3, _THUMB_BASE: 1 / 3, _INDEX_BASE: 1 / 3}, {_THUMB_BASE: 0.5, _INDEX_BASE: 0.5}]
    return knuckles + mid + near_wrist + thumb_side


def circle_centre_weights() -> np.ndarray:
    """(55, 21) matrix W with circle centres = W @ joints: 45 finger circles (thumb, index,
    middle, ring, pinky; 9 each, base to tip) then the 10 palm circles."""
    weights = np.zeros((NUM_CIRCLES, NUM_HAND_JOINTS))
    row = 0
    for chain in HO3D_FINGER_CHAINS:
        for start, end in zip(chain[1:4], chain[2:5]):
            for t in CIRCLES_PER_PHALANX_FRACTIONS:
                weights[row, start] += 1.0 - t
                weights[row, end] += t
                row += 1
    for palm in _palm_weights():
        for joint, w in palm.items():
            weights[row, joint] += w
        row += 1
    assert row == NUM_CIRCLES
    return weights


def _check_uv(uv: torch.Tensor) -> None:
    if not isinstance(uv, torch.Tensor) or uv.ndim != 3 or tuple(uv.shape[1:]) != (NUM_HAND_JOINTS, 2):
        raise ValueError(f"uv: expected a tensor of shape (B, {NUM_HAND_JOINTS}, 2) in box units, got "
                         f"{type(uv).__name__} {tuple(getattr(uv, 'shape', ()))}")


def _check_masks(masks: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    """Accept (B, S, S) or (B, 1, S, S); return (B, S, S)."""
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(masks).__name__}")
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.ndim != 3 or masks.shape[0] != batch or masks.shape[1] != masks.shape[2]:
        raise ValueError(f"{name}: expected square masks of shape ({batch}, S, S) or ({batch}, 1, S, S), got "
                         f"{tuple(masks.shape)}")
    return masks


def pixel_centres(size: int, like: torch.Tensor) -> torch.Tensor:
    """(S, S, 2) box-unit (x, y) of the pixel centres of an S x S map."""
    coords = (torch.arange(size, device=like.device, dtype=like.dtype) + 0.5) / size
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([xs, ys], dim=-1)


class CircleHandModel(torch.nn.Module):
    """Circle approximation of the hand silhouette drawn from 2D joints (box units).

    template: (21, 3) template joints in metres (the hand model's rest pose), used for the
        image scale; radii_m: (55,) initial radii in metres (1 cm when None);
    softness_px: edge width of the soft rendering, in pixels of the rendered mask.
    The radii are a parameter (stored as their logarithm so they stay positive).
    """

    def __init__(self, template: torch.Tensor | np.ndarray, radii_m: torch.Tensor | np.ndarray | None = None,
                 softness_px: float = 1.0):
        super().__init__()
        template = torch.as_tensor(np.asarray(template, dtype=np.float64) if isinstance(template, np.ndarray)
                                   else template.detach().cpu().double())
        if tuple(template.shape) != (NUM_HAND_JOINTS, 3) or not bool(torch.isfinite(template).all()):
            raise ValueError(f"template: expected finite (21, 3) joints in metres, got shape {tuple(template.shape)}")
        lengths = torch.stack([torch.linalg.vector_norm(template[b] - template[a]) for a, b in SCALE_SEGMENTS])
        if bool((lengths < _MIN_SCALE_LENGTH).any()):
            raise ValueError(f"template: palm segments {SCALE_SEGMENTS} must have non-zero length, got "
                             f"{lengths.tolist()}")
        if radii_m is None:
            radii_m = torch.full((NUM_CIRCLES,), 0.01)
        radii_m = torch.as_tensor(np.asarray(radii_m) if isinstance(radii_m, np.ndarray) else radii_m.detach())
        if tuple(radii_m.shape) != (NUM_CIRCLES,) or not bool((radii_m > 0).all()):
            raise ValueError(f"radii_m: expected {NUM_CIRCLES} positive radii in metres, got shape "
                             f"{tuple(radii_m.shape)}")
        if not softness_px > 0:
            raise ValueError(f"softness_px: expected a positive edge width in pixels, got {softness_px}")
        self.softness_px = float(softness_px)
        self.register_buffer("centre_weights", torch.tensor(circle_centre_weights(), dtype=torch.float32))
        self.register_buffer("segment_lengths", lengths.float())
        self.log_radii = torch.nn.Parameter(radii_m.float().log())

    @property
    def radii_m(self) -> torch.Tensor:
        """(55,) circle radii in metres."""
        return self.log_radii.exp()

    def image_scale(self, uv: torch.Tensor) -> torch.Tensor:
        """(B,) box units per metre: the largest 2D/3D length ratio of the palm segments."""
        _check_uv(uv)
        starts = uv[:, [a for a, _ in SCALE_SEGMENTS]]
        ends = uv[:, [b for _, b in SCALE_SEGMENTS]]
        ratios = torch.linalg.vector_norm(ends - starts, dim=-1) / self.segment_lengths.to(uv.dtype)
        return ratios.max(dim=-1).values

    def circles(self, uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """G(uv): centres (B, 55, 2) and radii (B, 55), box units."""
        _check_uv(uv)
        centres = torch.einsum("cj,bjd->bcd", self.centre_weights.to(uv.dtype), uv)
        radii = self.image_scale(uv)[:, None] * self.radii_m.to(uv.dtype)[None]
        return centres, radii

    def signed_distance_at(self, uv: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """(B, N) signed distance from points (B, N, 2) to the union of circles, both in uv's units."""
        centres, radii = self.circles(uv)
        if points.ndim != 3 or points.shape[0] != uv.shape[0] or points.shape[2] != 2:
            raise ValueError(f"points: expected shape ({uv.shape[0]}, N, 2), got {tuple(points.shape)}")
        # Direct differences, not the matrix-product expansion: exact in float32 and finite gradients at 0.
        distances = torch.cdist(points.to(uv.dtype), centres, compute_mode="donot_use_mm_for_euclid_dist")
        return (distances - radii[:, None, :]).min(dim=-1).values

    def signed_distance(self, uv: torch.Tensor, size: int) -> torch.Tensor:
        """(B, S, S) signed distance (box units) from each pixel centre to the union of circles."""
        if size < 1:
            raise ValueError(f"size: expected a positive mask size, got {size}")
        grid = pixel_centres(size, uv).reshape(1, size * size, 2).expand(uv.shape[0], -1, -1)
        return self.signed_distance_at(uv, grid).view(uv.shape[0], size, size)

    def render(self, uv: torch.Tensor, size: int) -> torch.Tensor:
        """R(G(uv)): (B, S, S) soft hand mask in [0, 1]."""
        return torch.sigmoid(-self.signed_distance(uv, size) * (size / self.softness_px))

    def forward(self, uv: torch.Tensor, size: int) -> torch.Tensor:
        return self.render(uv, size)


@dataclass
class CrossModalLoss:
    """Per-sample terms of eq. 11 and their batch mean."""

    model_to_data: torch.Tensor  # (B,) mean |R(G(uv)) - w|
    data_to_model: torch.Tensor  # (B,) mean registration distance, box units
    total: torch.Tensor  # scalar: mean over the batch of their sum


def box_pixel_centres(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(B, S * S, 2) (x, y) pixel centres, row-major, of an S x S grid laid over each box (B, 4)
    (x0, y0, x1, y1); the unit box gives :func:`pixel_centres`."""
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"mask_box: expected boxes of shape (B, 4) (x0, y0, x1, y1), got {tuple(boxes.shape)}")
    unit = pixel_centres(size, boxes).reshape(1, size * size, 2)
    return boxes[:, None, :2] + unit * (boxes[:, None, 2:] - boxes[:, None, :2])


def cross_modal_consistency_loss(model: CircleHandModel, uv: torch.Tensor, mask: torch.Tensor,
                                 mask_box: torch.Tensor | None = None) -> CrossModalLoss:
    """SemiHand's eq. 11 with a stop-gradient on the mask: gradients reach only the 2D joints
    (and the radii, if they are trainable).

    uv: (B, 21, 2) predicted 2D joints; mask: (B, S, S) or (B, 1, S, S) predicted hand
    probability in [0, 1]; mask_box: (B, 4) the box the mask grid spans, in uv's units
    (None: the unit square, i.e. uv in the mask's box units).
    """
    _check_uv(uv)
    target = _check_masks(mask, uv.shape[0], "mask").detach().to(uv.dtype)
    batch, size = uv.shape[0], target.shape[-1]
    if mask_box is None:
        mask_box = uv.new_tensor([0.0, 0.0, 1.0, 1.0]).expand(batch, 4)
    elif tuple(mask_box.shape) != (batch, 4):
        raise ValueError(f"mask_box: expected shape ({batch}, 4) (x0, y0, x1, y1), got {tuple(mask_box.shape)}")
    mask_box = mask_box.detach().to(uv.dtype)
    sides = mask_box[:, 2:] - mask_box[:, :2]
    if not bool((sides > 0).all()):
        raise ValueError("mask_box: every box needs x1 > x0 and y1 > y0")
    sdf = model.signed_distance_at(uv, box_pixel_centres(mask_box, size)).view(batch, size, size)
    pixel = sides.prod(-1).sqrt() / size  # (B,) geometric-mean pixel side, uv units
    rendered = torch.sigmoid(-sdf / (model.softness_px * pixel)[:, None, None])
    model_to_data = (rendered - target).abs().flatten(1).mean(-1)
    data_to_model = (target * F.relu(sdf) + (1.0 - target) * F.relu(-sdf)).flatten(1).mean(-1)
    return CrossModalLoss(model_to_data=model_to_data, data_to_model=data_to_model,
                          total=(model_to_data + data_to_model).mean())


def mask_iou(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> np.ndarray:
    """(B,) intersection over union of binary masks (B, S, S); 1 where both are empty."""
    a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a).astype(bool)
    b = np.asarray(b.detach().cpu() if isinstance(b, torch.Tensor) else b).astype(bool)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"mask_iou: expected two (B, S, S) masks of the same shape, got {a.shape} and {b.shape}")
    inter = (a & b).sum((1, 2))
    union = (a | b).sum((1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def inscribed_radii(model: CircleHandModel, uv: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(N, 55) per-frame radius estimates in metres: the mask's distance transform at each
    circle centre (distance to the nearest background pixel centre) divided by the image scale."""
    _check_uv(uv)
    masks = _check_masks(masks, uv.shape[0], "masks")
    size = masks.shape[-1]
    with torch.no_grad():
        centres = model.circles(uv.float())[0].cpu()
        scale = model.image_scale(uv.float()).cpu()
    estimates = torch.zeros(uv.shape[0], NUM_CIRCLES)
    for frame in range(uv.shape[0]):
        binary = (masks[frame].detach().cpu().numpy() > 0.5).astype(np.uint8)
        distance_px = cv2.distanceTransform(binary, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        # Sample the distance map at the centres (box units -> pixel indices), bilinearly.
        grid = (centres[frame] * 2.0 - 1.0).view(1, 1, NUM_CIRCLES, 2)
        sampled = F.grid_sample(torch.from_numpy(distance_px)[None, None], grid, mode="bilinear",
                                padding_mode="zeros", align_corners=False)
        estimates[frame] = sampled.view(-1) / size / scale[frame]
    return estimates


@dataclass
class RadiusFit:
    """Result of :func:`fit_circle_radii`: radii (55,) in metres, the common factor applied to
    the inscribed-radius medians, and the fitting masks' mean IoU before and after that factor."""

    radii_m: torch.Tensor
    scale_factor: float
    inscribed_iou: float
    fitted_iou: float


DEFAULT_SCALE_FACTORS: tuple[float, ...] = tuple(round(0.8 + 0.05 * k, 2) for k in range(13))  # 0.8 .. 1.4


def fit_circle_radii(model: CircleHandModel, uv: torch.Tensor, masks: torch.Tensor,
                     scale_factors: tuple[float, ...] = DEFAULT_SCALE_FACTORS, min_radius_m: float = 1e-3) -> RadiusFit:
    """Fit the model's radii to labelled (2D joints, mask) pairs and store them in ``model``.

    uv: (N, 21, 2) box units; masks: (N, S, S) or (N, 1, S, S) binary hand masks.
    Each radius starts as the median over frames of :func:`inscribed_radii` (at least
    ``min_radius_m``). Inscribed circles leave slivers uncovered between neighbours, so all
    radii are then multiplied by the factor among ``scale_factors`` that maximises the mean
    IoU of the (thresholded) rendering with the masks: a one-dimensional search on the
    measure itself, which a gradient on a soft IoU (whose optimum differs from the hard
    one by the width of the soft edge) does not match.
    """
    _check_uv(uv)
    masks = _check_masks(masks, uv.shape[0], "masks")
    if not scale_factors or min(scale_factors) <= 0 or not min_radius_m > 0:
        raise ValueError(f"expected positive scale_factors and min_radius_m, got {scale_factors}, {min_radius_m}")
    uv = uv.detach().float()
    binary = masks.detach().cpu() > 0.5
    size = masks.shape[-1]
    start = inscribed_radii(model, uv, masks).median(dim=0).values.clamp(min=min_radius_m)

    def mean_iou(radii: torch.Tensor) -> float:
        model.log_radii.copy_(radii.log())
        return float(mask_iou(model.render(uv, size).cpu() > 0.5, binary).mean())

    with torch.no_grad():
        inscribed_iou = mean_iou(start)
        ious = {factor: mean_iou(start * factor) for factor in scale_factors}
        best = max(scale_factors, key=lambda f: ious[f])
        model.log_radii.copy_((start * best).log())
    return RadiusFit(radii_m=model.radii_m.detach().clone(), scale_factor=best, inscribed_iou=inscribed_iou,
                     fitted_iou=ious[best])


RADII_KEY = "radii_m"


def save_circle_radii(path: str | Path, radii_m: torch.Tensor | np.ndarray) -> Path:
    """Write fitted radii (55,) in metres to an .npz file (atomically), for ``CrossModalConfig.radii_file``."""
    radii = np.asarray(radii_m.detach().cpu() if isinstance(radii_m, torch.Tensor) else radii_m, dtype=np.float64)
    if radii.shape != (NUM_CIRCLES,) or not np.all(radii > 0):
        raise ValueError(f"radii_m: expected {NUM_CIRCLES} positive radii in metres, got shape {radii.shape}")
    path = Path(path)
    buffer = io.BytesIO()
    np.savez(buffer, **{RADII_KEY: radii})
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load_circle_radii(path: str | Path) -> torch.Tensor:
    """Read radii written by :func:`save_circle_radii`; errors name the file and what was expected."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: circle radii file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            if RADII_KEY not in data.files:
                raise ValueError(f"{path}: expected an array '{RADII_KEY}', found {data.files}")
            radii = np.asarray(data[RADII_KEY], dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a circle radii .npz file: {exc}") from exc
    if radii.shape != (NUM_CIRCLES,) or not np.all(np.isfinite(radii)) or not np.all(radii > 0):
        raise ValueError(f"{path}: '{RADII_KEY}' must hold {NUM_CIRCLES} positive radii in metres, got shape "
                         f"{radii.shape}")
    return torch.tensor(radii, dtype=torch.float32)
