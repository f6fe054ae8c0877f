"""Pseudo-label confidence, sample selection and the pseudo-label objective (SemiHand section 3.2).

Confidence (eq. 8): ``C(p) = l(T(p), f(T(x))) + l(p, P(p))``, the sum of

* *stability*: how far the network's prediction on a perturbed copy of the image lies
  from the perturbed pseudo-label, and
* *plausibility*: how far the pseudo-label lies from its registration ``P(p)`` onto the
  template's bone lengths (:mod:`hoi_training.semihand.label_correction`).

A sample is kept for the pseudo-label term when ``C <= tau``. Distances are eq. 2 as
:func:`~hoi_training.semihand.consistency.pose_distance` computes it: mean over joints,
2D joints in box units (crop side = 1), depth in metres times ``depth_weight``.

Threshold. The paper's tau = 1.5 is stated for its 64 x 64 output, whose 2D joints are
in pixels. Read as a per-joint mean, 1.5 px^2 at 64 px is ``1.5 / 64^2 = 3.66e-4`` box
units^2, a root-mean-square joint disagreement of 1.9 % of the crop side (4.9 px on a
256 px crop, about 6 mm at the hand for a crop that spans 0.32 m). That is the default
``DEFAULT_CONFIDENCE_THRESHOLD``; it scales with the square of the tolerated error, so
doubling the tolerated RMS error means multiplying tau by 4.

Objective (eq. 6), per sample: ``1(C <= tau) l(p, p_hat) + l(r, p)`` with ``r = P(p_hat)``;
pseudo-label update between rounds (eq. 7): ``p_hat = argmin l(p', p_hat) + l(r', p_hat)``,
which for eq. 2's squared distances is the midpoint of the previous prediction and the
previous correction, then ``r = P(p_hat)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hoi_training.semihand.consistency import HandPose25D, Perturbation, pose_distance
from hoi_training.semihand.label_correction import HandPoseLabel, correct_hand_pose

DEFAULT_CONFIDENCE_THRESHOLD = 1.5 / 64.0 ** 2


@dataclass
class PseudoLabelConfidence:
    """The two terms of eq. 8 per sample (B,); ``value`` is their sum (lower is more confident)."""

    stability: torch.Tensor
    plausibility: torch.Tensor

    @property
    def value(self) -> torch.Tensor:
        return self.stability + self.plausibility


def pseudo_label_confidence(pseudo_label: HandPose25D, corrected: HandPose25D | None,
                            prediction_on_perturbed: HandPose25D, perturbation: Perturbation,
                            depth_weight: float) -> PseudoLabelConfidence:
    """Eq. 8 for a batch.

    pseudo_label: the current pseudo-labels p_hat (original crop).
    corrected: their registrations P(p_hat); None when label correction is off (the
        plausibility term is then zero).
    prediction_on_perturbed: the network's prediction on ``perturbation.apply_image(x)``.
    """
    stability = pose_distance(perturbation.apply_pose(pseudo_label), prediction_on_perturbed, depth_weight)
    if corrected is None:
        plausibility = torch.zeros_like(stability)
    else:
        plausibility = pose_distance(pseudo_label, corrected, depth_weight)
    return PseudoLabelConfidence(stability=stability, plausibility=plausibility)


def select_confident(confidence: PseudoLabelConfidence | torch.Tensor, threshold: float) -> torch.Tensor:
    """(B,) bool: True for the samples with ``C <= threshold`` (NaN confidence is rejected)."""
    if not threshold >= 0:
        raise ValueError(f"threshold: expected a confidence threshold >= 0, got {threshold}")
    value = confidence.value if isinstance(confidence, PseudoLabelConfidence) else confidence
    return value <= threshold


def pseudo_label_loss(prediction: HandPose25D, pseudo_label: HandPose25D, corrected: HandPose25D | None,
                      keep: torch.Tensor | None, depth_weight: float) -> torch.Tensor:
    """Eq. 6 per sample (B,): ``1(C <= tau) l(p, p_hat) + l(r, p)``.

    keep: (B,) bool from :func:`select_confident`, or None when selection is off (every
    sample keeps the first term). corrected: None when label correction is off (no
    second term). Pseudo-labels are targets: detach them before the call if they came
    from the network being trained.
    """
    loss = pose_distance(prediction, pseudo_label, depth_weight)
    if keep is not None:
        if keep.shape != loss.shape or keep.dtype != torch.bool:
            raise ValueError(f"keep: expected a bool tensor of shape {tuple(loss.shape)}, got {keep.dtype} "
                             f"{tuple(keep.shape)}")
        loss = torch.where(keep, loss, torch.zeros_like(loss))
    if corrected is not None:
        loss = loss + pose_distance(corrected, prediction, depth_weight)
    return loss


@dataclass
class PseudoLabelState:
    """Pseudo-labels p_hat and their corrections r (None when label correction is off)."""

    pseudo_label: HandPoseLabel
    corrected: HandPoseLabel | None


def update_pseudo_labels(prediction: HandPoseLabel, previous_correction: HandPoseLabel | None,
                         template: torch.Tensor | None) -> PseudoLabelState:
    """Eq. 7 (and Algorithm 1, lines 1-2 and 6).

    prediction: the network's current prediction p' on the unlabelled samples.
    previous_correction: r' from the previous round; None in the first round or without
        label correction, in which case p_hat = p'.
    template: (21, 3) or (B, 21, 3) template joints (metres) for the new correction;
        None turns label correction off (``corrected`` is None).
    """
    prediction = prediction.detach()
    if previous_correction is None:
        pseudo = prediction
    else:
        previous_correction = previous_correction.detach()
        if previous_correction.uv.shape != prediction.uv.shape:
            raise ValueError(f"previous_correction: shape {tuple(previous_correction.uv.shape)} does not match the "
                             f"prediction's {tuple(prediction.uv.shape)}")
        pseudo = HandPoseLabel(uv=0.5 * (prediction.uv + previous_correction.uv),
                               joints3d=0.5 * (prediction.joints3d + previous_correction.joints3d))
    corrected = None if template is None else correct_hand_pose(pseudo, template)
    return PseudoLabelState(pseudo_label=pseudo, corrected=corrected)
