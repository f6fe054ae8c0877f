"""Training losses of the hand decoder, object decoder and detection head.

Weights follow the papers (HFL-Net section 4.1, taken from Semi-Hand-Object's code):
2D heatmaps 100, MANO vertices and joints 10000 (root-relative metres), MANO pose and
shape 1, control-point votes 500, vote confidences 100. SHO's released code wires
pose 10 and shape 0.1 but never passes MANO targets, so those terms were unused
there; HFL-Net states 1 for both, which is the default here.

Every term is a per-sample loss averaged over the samples that carry the label it
needs, flagged in :class:`HandObjectTargets` (``has_hand2d``, ``has_hand3d``,
``has_mano``, ``has_hand_mask``, ``has_object``). A flag of 0 removes the sample from that term, which
is how the semi-supervised stage trains on pseudo-labelled frames with hand labels
only (SHO eq. 8: L = L_hand + B * L_object). With every flag 1 each term equals the
reference code's batch mean.

Term definitions (each then multiplied by its weight):

* ``heatmaps``: per joint, the sum over cells of the squared difference between the
  predicted heatmap (a spatial softmax, sums to 1) and a gaussian of std
  ``heatmap_sigma`` cells at the true joint, normalised to unit mass; mean over joints.
  With ``heatmap_loss: cross_entropy``, -sum(target * log(heatmap)) instead.
* ``joints2d``: mean squared error of the soft-argmax joints, hand-box units (SHO's code).
* ``vertices``, ``joints3d``: mean squared error, root-relative metres.
* ``mano_pose``: mean squared error between predicted and true joint rotation
  matrices (16 x 3 x 3; continuous, unlike raw axis-angle); ``mano_shape``: on betas.
* ``hand_mask``: with the optional mask head, the mean over the hand-box grid of the
  binary cross-entropy between the mask logits and the true hand mask sampled on that
  grid. SemiHand's eq. 3 uses an L1 distance on the mask probability; cross-entropy on
  the logits keeps a full gradient on confidently wrong cells, where the L1 of a
  saturated sigmoid has almost none.
* ``hand_side``: with the optional side head, binary cross-entropy of the side logit:
  1 on the batch's crops, 0 on copies mirrored against their side (:func:`hand_side_loss`).
* ``object_votes``: mean over control points and object cells of the L1 distance
  (|dx| + |dy|, object-box units) between each cell's vote and the true point; cells
  outside the object mask count as zero error (SHO's normalisation).
* ``object_confidence``: mean over all cells of |c - exp(-||vote - point||)| where the
  target is 0 outside the object mask (those cells learn to abstain).
* detection (:func:`detection_loss`): CenterNet's penalty-reduced focal loss on the
  heatmaps, L1 on box size and centre offset at the true centres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias

from hoi_perception.config import ConfigError
from hoi_perception.geometry.rotations import axis_angle_to_matrix, rot6d_to_matrix
from hoi_perception.models.detection_head import DetectionHeadOutput
from hoi_perception.models.hand_head import HandDecoderOutput
from hoi_perception.models.object_head import ObjectHeadOutput


@dataclass
class LossWeights:
    """Multipliers of the loss terms (0 disables a term)."""

    heatmaps: float = 100.0
    joints2d: float = 100.0
    vertices: float = 10000.0
    joints3d: float = 10000.0
    mano_pose: float = 1.0
    mano_shape: float = 1.0
    hand_mask: float = 1.0
    hand_side: float = 100.0
    object_votes: float = 500.0
    object_confidence: float = 100.0
    detection_heatmap: float = 1.0
    detection_size: float = 0.1
    detection_offset: float = 1.0

    def validate(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"loss weight '{f.name}' must be a finite number >= 0, got {value}")


@dataclass
class LossConfig:
    """Loss weights plus the shape parameters of the targets built inside the loss."""

    weights: LossWeights = field(default_factory=LossWeights)
    heatmap_sigma: float = 1.0  # gaussian std of the 2D joint heatmap target, in heatmap cells
    # "mse": SHO/HFL's squared error between the softmax and the gaussian. Its gradient
    # scales with the predicted probabilities, so from a uniform start (no pretrained
    # trunk) it barely moves; "cross_entropy" (-sum target * log softmax, the target
    # gaussian normalised over the grid) pulls with the full (p - q) from step one.
    heatmap_loss: Literal["mse", "cross_entropy"] = "mse"
    focal_alpha: float = 2.0  # CenterNet focal loss exponents
    focal_beta: float = 4.0
    # The 3D hand terms (vertices, joints3d, mano_pose, mano_shape) start at 0 and reach
    # their weights linearly over this many steps (0: full weight from the first step).
    # Their gradients reach the backbone as strongly as the heatmaps' from step 0; a backbone
    # trained on 2D heatmaps first keeps what it learnt while the 3D regressor catches up.
    ramp_3d_steps: int = 0

    def validate(self) -> None:
        self.weights.validate()
        if self.heatmap_sigma <= 0:
            raise ConfigError(f"heatmap_sigma must be > 0 cells, got {self.heatmap_sigma}")
        if self.focal_alpha < 0 or self.focal_beta < 0:
            raise ConfigError(f"focal exponents must be >= 0, got {self.focal_alpha}, {self.focal_beta}")
        if self.ramp_3d_steps < 0:
            raise ConfigError(f"ramp_3d_steps must be >= 0 (0: no ramp), got {self.ramp_3d_steps}")

    def at_step(self, step: int) -> LossConfig:
        """This config with the 3D hand weights scaled by the ramp at optimiser step ``step``."""
        if self.ramp_3d_steps == 0 or step >= self.ramp_3d_steps:
            return self
        w, ramp = self.weights, step / self.ramp_3d_steps
        weights = replace(w, vertices=w.vertices * ramp, joints3d=w.joints3d * ramp, mano_pose=w.mano_pose * ramp,
                          mano_shape=w.mano_shape * ramp)
        return replace(self, weights=weights)


@dataclass
class HandObjectTargets:
    """Labels of one batch; a ``None`` field means no sample in the batch has it.

    joints2d: (B, 21, 2) hand-box units; joints2d_visible: (B, 21) 0/1 (None: all visible).
    joints3d: (B, 21, 3), vertices: (B, 778, 3) root-relative metres.
    pose: (B, 48) MANO axis-angle; betas: (B, 10).
    object_points2d: (B, 21, 2) control points in object-box units.
    object_symmetric_points2d: (B, S, 21, 2) the control points of each equally right pose
        ``R S`` of a symmetric object (index 0 = ``object_points2d``); the vote loss takes the
        nearest (None: no symmetries).
    object_mask: (B, H, W) 1 on object cells of the object RoI grid (None: every cell).
    hand_mask: (B, H, W) 1 on hand cells of the hand RoI grid (the mask head's grid).
    has_*: (B,) 0/1 label-presence flags (None: all 1 when the matching labels exist).
    """

    joints2d: torch.Tensor | None = None
    joints2d_visible: torch.Tensor | None = None
    joints3d: torch.Tensor | None = None
    vertices: torch.Tensor | None = None
    pose: torch.Tensor | None = None
    betas: torch.Tensor | None = None
    object_points2d: torch.Tensor | None = None
    object_symmetric_points2d: torch.Tensor | None = None
    object_mask: torch.Tensor | None = None
    hand_mask: torch.Tensor | None = None
    has_hand2d: torch.Tensor | None = None
    has_hand3d: torch.Tensor | None = None
    has_mano: torch.Tensor | None = None
    has_hand_mask: torch.Tensor | None = None
    has_object: torch.Tensor | None = None


@dataclass
class LossOutput:
    """Weighted total (for backward) and each weighted term, detached, for logging."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]


def sample_flags(flag: torch.Tensor | None, batch: int, like: torch.Tensor, name: str) -> torch.Tensor:
    if flag is None:
        return torch.ones(batch, dtype=like.dtype, device=like.device)
    flag = flag.to(dtype=like.dtype, device=like.device).reshape(-1)
    if flag.shape[0] != batch:
        raise ValueError(f"{name}: expected {batch} flags (one per sample), got {flag.shape[0]}")
    return flag


def masked_mean(per_sample: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
    """Mean of per-sample losses over flagged samples (0 when none is flagged)."""
    return (per_sample * flags).sum() / flags.sum().clamp_min(1.0)


def check_target_shape(pred: torch.Tensor, target: torch.Tensor, name: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"targets.{name}: expected shape {tuple(pred.shape)} to match the prediction, "
                         f"got {tuple(target.shape)}")


def gaussian_heatmaps(joints2d: torch.Tensor, height: int, width: int, sigma: float) -> torch.Tensor:
    """Unit-mass gaussian targets (B, J, H, W) for joints (B, J, 2) in box units.

    Normalised by the gaussian's analytic mass 2 pi sigma^2 (not by the in-grid sum), so a
    joint outside the box gets a faint or empty target instead of a spike at the border.
    """
    ys = (torch.arange(height, dtype=joints2d.dtype, device=joints2d.device) + 0.5)
    xs = (torch.arange(width, dtype=joints2d.dtype, device=joints2d.device) + 0.5)
    jx = joints2d[..., 0:1, None] * width  # (B, J, 1, 1) in cells
    jy = joints2d[..., 1:2, None] * height
    d2 = (xs.view(1, 1, 1, -1) - jx) ** 2 + (ys.view(1, 1, -1, 1) - jy) ** 2
    return torch.exp(-d2 / (2 * sigma**2)) / (2 * math.pi * sigma**2)


def hand_object_loss(hand: HandDecoderOutput, obj: ObjectHeadOutput | None, targets: HandObjectTargets,
                     config: LossConfig | None = None) -> LossOutput:
    """Weighted hand + object loss with per-sample label masks (see the module docstring)."""
    config = config or LossConfig()
    w = config.weights
    batch = hand.joints2d.shape[0]
    ref = hand.joints2d
    terms: dict[str, torch.Tensor] = {}

    if targets.joints2d is not None:
        terms.update(hand_2d_losses(hand.heatmaps, hand.joints2d, targets, config))

    if targets.joints3d is not None:
        check_target_shape(hand.joints3d, targets.joints3d, "joints3d")
        flags = sample_flags(targets.has_hand3d, batch, ref, "has_hand3d")
        terms["joints3d"] = w.joints3d * masked_mean(((hand.joints3d - targets.joints3d) ** 2).mean((1, 2)), flags)

    if targets.vertices is not None or targets.pose is not None or targets.betas is not None:
        flags = sample_flags(targets.has_mano, batch, ref, "has_mano")
        if targets.vertices is not None:
            check_target_shape(hand.vertices, targets.vertices, "vertices")
            terms["vertices"] = w.vertices * masked_mean(((hand.vertices - targets.vertices) ** 2).mean((1, 2)),
                                                          flags)
        if targets.pose is not None:
            check_target_shape(hand.pose, targets.pose, "pose")
            pred_rot = rot6d_to_matrix(hand.rot6d)
            true_rot = axis_angle_to_matrix(targets.pose.reshape(batch, -1, 3).to(ref.dtype))
            terms["mano_pose"] = w.mano_pose * masked_mean(((pred_rot - true_rot) ** 2).mean((1, 2, 3)), flags)
        if targets.betas is not None:
            check_target_shape(hand.betas, targets.betas, "betas")
            terms["mano_shape"] = w.mano_shape * masked_mean(((hand.betas - targets.betas) ** 2).mean(1), flags)

    if hand.mask_logits is not None and targets.hand_mask is not None:
        terms["hand_mask"] = w.hand_mask * hand_mask_loss(hand.mask_logits, targets.hand_mask,
                                                          sample_flags(targets.has_hand_mask, batch, ref,
                                                                       "has_hand_mask"))

    if obj is not None and targets.object_points2d is not None:
        points2d = targets.object_points2d
        if targets.object_symmetric_points2d is not None:
            points2d = nearest_symmetric_points(obj, targets.object_symmetric_points2d, targets.object_mask)
        votes_terms = object_vote_losses(obj, points2d, targets.object_mask,
                                         sample_flags(targets.has_object, batch, ref, "has_object"))
        terms["object_votes"] = w.object_votes * votes_terms[0]
        terms["object_confidence"] = w.object_confidence * votes_terms[1]

    if not terms:
        raise ValueError("hand_object_loss: the targets hold no labels for any term")
    total = torch.stack(list(terms.values())).sum()
    return LossOutput(total=total, terms={k: v.detach() for k, v in terms.items()})


def hand_2d_losses(heatmaps: torch.Tensor, joints2d: torch.Tensor, targets: HandObjectTargets,
                   config: LossConfig) -> dict[str, torch.Tensor]:
    """The weighted ``heatmaps`` and ``joints2d`` terms (the whole loss of the heatmap training stage)."""
    w = config.weights
    check_target_shape(joints2d, targets.joints2d, "joints2d")
    batch = joints2d.shape[0]
    flags = sample_flags(targets.has_hand2d, batch, joints2d, "has_hand2d")
    visible = (torch.ones_like(joints2d[..., 0]) if targets.joints2d_visible is None
               else targets.joints2d_visible.to(joints2d.dtype))
    n_visible = visible.sum(1).clamp_min(1.0)
    height, width = heatmaps.shape[-2:]
    target_maps = gaussian_heatmaps(targets.joints2d.to(joints2d.dtype), height, width, config.heatmap_sigma)
    if config.heatmap_loss == "cross_entropy":
        target_maps = target_maps / target_maps.sum((-1, -2), keepdim=True).clamp_min(1e-12)
        log_p = torch.log(heatmaps.clamp_min(1e-30))
        per_joint = -(target_maps * log_p).sum((-1, -2))
    else:
        per_joint = ((heatmaps - target_maps) ** 2).sum((-1, -2))
    terms = {"heatmaps": w.heatmaps * masked_mean((per_joint * visible).sum(1) / n_visible, flags)}
    per_joint = ((joints2d - targets.joints2d) ** 2).mean(-1)
    terms["joints2d"] = w.joints2d * masked_mean((per_joint * visible).sum(1) / n_visible, flags)
    return terms


def hand_mask_loss(logits: torch.Tensor, mask: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
    """Unweighted per-cell binary cross-entropy of (B, 1, H, W) mask logits against (B, H, W)
    0/1 masks, averaged over cells and then over flagged samples."""
    if logits.ndim != 4 or logits.shape[1] != 1:
        raise ValueError(f"mask_logits: expected shape (B, 1, H, W), got {tuple(logits.shape)}")
    batch, _, height, width = logits.shape
    if mask.shape != (batch, height, width):
        raise ValueError(f"targets.hand_mask: expected shape {(batch, height, width)} (the mask head's grid), got "
                         f"{tuple(mask.shape)}")
    per_cell = F.binary_cross_entropy_with_logits(logits[:, 0], mask.to(logits.dtype), reduction="none")
    return masked_mean(per_cell.mean((1, 2)), flags)


def hand_side_loss(side_logit: torch.Tensor, is_right: torch.Tensor) -> torch.Tensor:
    """Unweighted mean binary cross-entropy of (B,) side logits against (B,) 0/1 targets: 1 for a
    crop as the network expects it (a right hand, or a left hand mirrored), 0 for one mirrored
    against its side (``TrainConfig.side_negatives``)."""
    if side_logit.shape != is_right.shape:
        raise ValueError(f"side_logit: expected shape {tuple(is_right.shape)}, got {tuple(side_logit.shape)}")
    return F.binary_cross_entropy_with_logits(side_logit, is_right.to(side_logit.dtype))


def nearest_symmetric_points(obj: ObjectHeadOutput, candidates: torch.Tensor,
                             mask: torch.Tensor | None) -> torch.Tensor:
    """(B, 21, 2): per sample, the candidate control points (B, S, 21, 2) its votes lie nearest to
    (mean L1 over the object cells). A symmetric object's poses ``R S`` look alike, so the head
    is trained towards whichever it already leans to instead of their average."""
    batch, num_points, _, height, width = obj.votes.shape
    if candidates.dim() != 4 or candidates.shape[0] != batch or candidates.shape[2:] != (num_points, 2):
        raise ValueError(f"targets.object_symmetric_points2d: expected shape ({batch}, S, {num_points}, 2), got "
                         f"{tuple(candidates.shape)}")
    with torch.no_grad():
        cells = torch.ones(batch, height, width, dtype=obj.votes.dtype, device=obj.votes.device) if mask is None \
            else mask.to(obj.votes.dtype)
        weights = cells.flatten(1) / cells.flatten(1).sum(1, keepdim=True).clamp(min=1)  # (B, HW)
        votes = obj.votes.detach().flatten(3)  # (B, P, 2, HW)
        distance = (votes[:, None] - candidates.to(votes.dtype)[..., None]).abs().sum(3)  # (B, S, P, HW)
        best = (distance.mean(2) * weights[:, None]).sum(2).argmin(1)  # (B,)
    return candidates[torch.arange(batch, device=candidates.device), best]


def object_vote_losses(obj: ObjectHeadOutput, points2d: torch.Tensor, mask: torch.Tensor | None,
                       flags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unweighted (vote L1, confidence L1) of the object head, averaged over flagged samples."""
    batch, num_points, _, height, width = obj.votes.shape
    if points2d.shape != (batch, num_points, 2):
        raise ValueError(f"targets.object_points2d: expected shape {(batch, num_points, 2)}, got "
                         f"{tuple(points2d.shape)}")
    if mask is None:
        mask = torch.ones(batch, height, width, dtype=obj.votes.dtype, device=obj.votes.device)
    elif mask.shape != (batch, height, width):
        raise ValueError(f"targets.object_mask: expected shape {(batch, height, width)}, got {tuple(mask.shape)}")
    cell_mask = mask.to(obj.votes.dtype)[:, None]  # (B, 1, H, W)
    error = (obj.votes - points2d.to(obj.votes.dtype)[..., None, None]) * cell_mask[:, :, None]  # (B, P, 2, H, W)
    votes = error.abs().sum(2).mean((1, 2, 3))
    distance = torch.sqrt((error.detach() ** 2).sum(2) + 1e-12)
    target = torch.exp(-distance) * cell_mask
    confidence = (obj.confidence - target).abs().mean((1, 2, 3))
    return masked_mean(votes, flags), masked_mean(confidence, flags)


@dataclass
class DetectionTargetBatch:
    """Batched :class:`~hoi_perception.models.detection_head.DetectionTargets` as tensors.

    heatmap (B, 3, H, W); indices (B, M) int64; sizes, offsets (B, M, 2); mask (B, M).
    known (B, 3) bool: whether the frame's labels say where each class is (None: every class).
    A class a frame's labels do not cover (a pseudo-labelled frame without an object box) is
    unknown, not absent: its heatmap is left out of the focal loss instead of trained to 0.
    """

    heatmap: torch.Tensor
    indices: torch.Tensor
    sizes: torch.Tensor
    offsets: torch.Tensor
    mask: torch.Tensor
    known: torch.Tensor | None = None


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0,
               known: torch.Tensor | None = None) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, summed and divided by the number of peaks (>= 1).

    ``known`` (B, C) leaves out the heatmaps of classes whose presence a frame does not label.
    """
    log_p = F.logsigmoid(logits)
    log_not_p = F.logsigmoid(-logits)
    p = torch.sigmoid(logits)
    positive = (target >= 1.0).to(logits.dtype)
    pos = -((1 - p) ** alpha) * log_p * positive
    neg = -((1 - target) ** beta) * (p**alpha) * log_not_p * (1 - positive)
    if known is not None:
        weight = known.to(logits.dtype)[:, :, None, None]
        pos, neg, positive = pos * weight, neg * weight, positive * weight
    return (pos.sum() + neg.sum()) / positive.sum().clamp_min(1.0)


def detection_loss(output: DetectionHeadOutput, targets: DetectionTargetBatch,
                   config: LossConfig | None = None) -> LossOutput:
    """Focal heatmap loss + L1 size and offset at the true centres (CenterNet)."""
    config = config or LossConfig()
    w = config.weights
    check_target_shape(output.heatmap_logits, targets.heatmap, "heatmap")
    batch = output.sizes.shape[0]
    index = targets.indices.long().unsqueeze(1).expand(-1, 2, -1)  # (B, 2, M)
    sizes = torch.gather(output.sizes.flatten(2), 2, index).transpose(1, 2)  # (B, M, 2)
    offsets = torch.gather(output.offsets.flatten(2), 2, index).transpose(1, 2)
    mask = targets.mask.to(sizes.dtype).reshape(batch, -1, 1)
    count = (mask.sum() * 2).clamp_min(1.0)
    terms = {
        "detection_heatmap": w.detection_heatmap * focal_loss(output.heatmap_logits, targets.heatmap.to(sizes.dtype),
                                                              config.focal_alpha, config.focal_beta, targets.known),
        "detection_size": w.detection_size * ((sizes - targets.sizes).abs() * mask).sum() / count,
        "detection_offset": w.detection_offset * ((offsets - targets.offsets).abs() * mask).sum() / count,
    }
    total = torch.stack(list(terms.values())).sum()
    return LossOutput(total=total, terms={k: v.detach() for k, v in terms.items()})
