"""Pseudo-label correction by greedy pose registration to a template skeleton (SemiHand section 3.2).

A network's joints are estimated independently, so a pseudo-label's bones rarely have
the hand's true lengths. SemiHand projects every pseudo-label onto the set of poses
whose bone lengths equal a given template's with a greedy walk down the kinematic
chain (its Fig. 4, right):

1. the root (wrist) is aligned by translation: it stays where the prediction put it;
2. for each joint ``c`` with parent ``p``, parents first, the registered joint is
   ``r_c = r_p + L_pc * (x_c - r_p) / |x_c - r_p|``: the direction runs from the
   *registered* parent to the *predicted* child and the length ``L_pc`` is the
   template's.

Anchoring each direction on the predicted child (rather than copying the predicted
bone vector ``x_c - x_p``) keeps every registered joint on the ray towards its own
prediction, so a wrong length early in a finger does not push the whole rest of the
finger off (the paper's "avoids the accumulation of end point errors"). The result has
exactly the template's bone lengths; a pose that already has them is returned
unchanged; no training and no iterations are involved.

Degenerate directions (a predicted child on top of the registered parent) fall back to
the predicted bone ``x_c - x_p`` and then to the template's own bone direction, so the
output is always finite for finite input.

Everything is batched over leading axes and works on NumPy arrays and torch tensors
(differentiable) alike; joints are (..., 21, 3) in the project's HO-3D order, any
length unit shared by the joints and the template.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from hoi_perception.hand_model.joint_orders import HO3D_PARENTS, NUM_HAND_JOINTS
from hoi_training.semihand.consistency import HandPose25D

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

# A direction shorter than this (in the joints' unit) counts as undefined.
_DEGENERATE_LENGTH = 1e-9
# Joints in an order that visits every parent before its children (HO-3D already does).
_CHAIN_ORDER: tuple[int, ...] = tuple(range(1, NUM_HAND_JOINTS))
assert all(HO3D_PARENTS[c] < c for c in _CHAIN_ORDER), "HO-3D parents must precede their children"


def _check_joints(value: torch.Tensor, name: str) -> None:
    if value.ndim < 2 or tuple(value.shape[-2:]) != (NUM_HAND_JOINTS, 3):
        raise ValueError(f"{name}: expected shape (..., {NUM_HAND_JOINTS}, 3) in HO-3D order, got "
                         f"{tuple(value.shape)}")


def _as_tensor(value, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        tensor = value
    elif isinstance(value, np.ndarray):
        tensor = torch.from_numpy(np.asarray(value, dtype=np.float64))
    else:
        raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(value).__name__}")
    if like is not None:
        tensor = tensor.to(device=like.device, dtype=like.dtype)
    if not torch.is_floating_point(tensor):
        tensor = tensor.to(torch.float64)
    return tensor


def _unit(vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(directions, defined) with defined False where the vector is (nearly) zero."""
    length = torch.linalg.vector_norm(vectors, dim=-1, keepdim=True)
    defined = length > _DEGENERATE_LENGTH
    return vectors / torch.where(defined, length, torch.ones_like(length)), defined


def register_to_template(joints: ArrayT, template: np.ndarray | torch.Tensor) -> ArrayT:
    """Greedy registration of predicted joints onto the template's bone lengths.

    joints: (..., 21, 3) predicted joints (HO-3D order), NumPy or torch.
    template: (..., 21, 3) template joints broadcastable to ``joints`` (e.g. the rest
        pose of the hand model with the subject's shape, or one template for all); only
        its bone lengths and, for degenerate bones, its bone directions are used.

    Returns the registered joints, same type, shape and (for torch) device and dtype as
    ``joints``; differentiable with respect to ``joints`` for torch input.
    """
    is_numpy = isinstance(joints, np.ndarray)
    pred = _as_tensor(joints, "joints")
    _check_joints(pred, "joints")
    tmpl = _as_tensor(template, "template", like=pred)
    _check_joints(tmpl, "template")
    try:
        batch_shape = torch.broadcast_shapes(pred.shape[:-2], tmpl.shape[:-2])
    except RuntimeError:
        raise ValueError(f"template: batch shape {tuple(tmpl.shape[:-2])} does not broadcast with the joints' "
                         f"{tuple(pred.shape[:-2])}") from None
    if tuple(batch_shape) != tuple(pred.shape[:-2]):
        raise ValueError(f"template: batch shape {tuple(tmpl.shape[:-2])} is larger than the joints' "
                         f"{tuple(pred.shape[:-2])}")
    if not bool(torch.isfinite(pred).all()):
        raise ValueError("joints: contains NaN or infinite values")
    parents = torch.tensor(HO3D_PARENTS[1:], device=pred.device)
    children = torch.arange(1, NUM_HAND_JOINTS, device=pred.device)
    template_bones = tmpl[..., children, :] - tmpl[..., parents, :]
    template_lengths = torch.linalg.vector_norm(template_bones, dim=-1, keepdim=True).expand(
        *batch_shape, NUM_HAND_JOINTS - 1, 1)
    template_dirs = _unit(template_bones)[0].expand(*batch_shape, NUM_HAND_JOINTS - 1, 3)

    registered: list[torch.Tensor] = [pred[..., 0, :]]
    for child in _CHAIN_ORDER:
        parent = HO3D_PARENTS[child]
        bone = child - 1
        anchored, anchored_ok = _unit(pred[..., child, :] - registered[parent])
        predicted, predicted_ok = _unit(pred[..., child, :] - pred[..., parent, :])
        direction = torch.where(anchored_ok, anchored,
                                torch.where(predicted_ok, predicted, template_dirs[..., bone, :]))
        registered.append(registered[parent] + template_lengths[..., bone, :] * direction)
    out = torch.stack(registered, dim=-2)
    if is_numpy:
        return out.detach().cpu().numpy().astype(np.result_type(joints.dtype, np.float32), copy=False)
    return out


@dataclass
class HandPoseLabel:
    """A 2.5D hand pose with its 3D joints: what a pseudo-label and its correction hold.

    uv: (B, 21, 2) 2D joints in box units; joints3d: (B, 21, 3) root-relative joints in
    the camera's orientation, metres. Its 2.5D pose (eq. 2 distances) is uv and the z of
    joints3d relative to the wrist.
    """

    uv: torch.Tensor
    joints3d: torch.Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.uv, torch.Tensor) or self.uv.ndim != 3 or \
                tuple(self.uv.shape[1:]) != (NUM_HAND_JOINTS, 2):
            raise ValueError(f"HandPoseLabel.uv: expected a tensor of shape (B, {NUM_HAND_JOINTS}, 2), got "
                             f"{type(self.uv).__name__} {tuple(getattr(self.uv, 'shape', ()))}")
        if not isinstance(self.joints3d, torch.Tensor) or \
                tuple(self.joints3d.shape) != (self.uv.shape[0], NUM_HAND_JOINTS, 3):
            raise ValueError(f"HandPoseLabel.joints3d: expected a tensor of shape ({self.uv.shape[0]}, "
                             f"{NUM_HAND_JOINTS}, 3), got {tuple(getattr(self.joints3d, 'shape', ()))}")

    def pose25d(self) -> HandPose25D:
        return HandPose25D.from_joints(self.uv, self.joints3d)

    def detach(self) -> HandPoseLabel:
        return HandPoseLabel(uv=self.uv.detach(), joints3d=self.joints3d.detach())


def correct_hand_pose(label: HandPoseLabel, template: torch.Tensor) -> HandPoseLabel:
    """Register a pseudo-label (SemiHand's P) to the template: the corrected pose r = P(p).

    The 3D joints are registered with :func:`register_to_template`; the 2D joints move by
    the same xy displacement seen through the label's own weak-perspective camera
    ``uv = s * xy + t`` (least-squares ``s`` between the xy of ``joints3d`` and ``uv``):
    ``uv_r = uv + s * (xy_r - xy)``. A joint the registration leaves in place therefore
    keeps its exact 2D position. A degenerate fit (all 3D joints at one xy) leaves the 2D
    joints unchanged.

    template: (21, 3) or (B, 21, 3) joints in the unit of ``joints3d`` (metres).
    """
    registered = register_to_template(label.joints3d, template)
    xy = label.joints3d[..., :2]
    xy_centred = xy - xy.mean(dim=-2, keepdim=True)
    uv_centred = label.uv - label.uv.mean(dim=-2, keepdim=True)
    denominator = (xy_centred * xy_centred).sum(dim=(-1, -2))
    numerator = (xy_centred * uv_centred).sum(dim=(-1, -2))
    fit_ok = denominator > _DEGENERATE_LENGTH ** 2
    scale = torch.where(fit_ok, numerator / torch.where(fit_ok, denominator, torch.ones_like(denominator)),
                        torch.zeros_like(denominator))
    corrected_uv = label.uv + scale[:, None, None] * (registered[..., :2] - xy)
    return HandPoseLabel(uv=corrected_uv, joints3d=registered)


def rest_pose_template(hand_model: torch.nn.Module, betas: torch.Tensor | None = None) -> torch.Tensor:
    """Template joints (B, 21, 3) in metres: ``hand_model`` (a ``HandModel``) in its zero pose.

    betas: (B, 10) shapes (e.g. each pseudo-label's own), None for the mean shape (B = 1).
    Joint-to-joint lengths do not depend on the pose (the fingertips, skinned vertices,
    move by well under a millimetre), so the zero pose serves for any pseudo-label.
    """
    if betas is None:
        betas = torch.zeros(1, 10)
    batch = betas.shape[0]
    with torch.no_grad():
        output = hand_model(global_orient=betas.new_zeros(batch, 3),
                            hand_pose=betas.new_zeros(batch, hand_model.pose_dim), betas=betas)
    return output.joints
