"""SemiHand consistency training inside ``hoi-train fit`` (Yang et al. 2021, Algorithm 1).

The trainer builds a :class:`SemiHandTraining` when any switch of the run's ``semihand:``
section is on (none is by default, and the trainer then runs exactly as without it).

Coordinates. SemiHand's distances (eq. 2) and perturbations are defined on its input
crop, so every pose here is in *crop units*: the augmented square training crop spans
[0, 1] x [0, 1] (``hoi_training.semihand.consistency``). The hand decoder's 2D joints are
in hand-box units; :func:`hand_box_to_crop_units` converts them. Depth is a joint's z
minus the wrist's z, in metres, as the decoder's root-relative joints give it.

Per training step (:meth:`SemiHandTraining.step_losses`):

* *pseudo-label term* (eq. 6) on the samples of ``kind: pseudo`` datasets that carry a
  2.5D pseudo-label (2D and 3D joints): ``keep * l(p, p_hat) + l(r, p)`` with ``r``
  the label correction ``P(p_hat)`` (greedy registration onto the bone lengths of the
  hand model's rest pose) and ``keep`` the round's selection flag. These samples leave
  the supervised hand terms (their MANO and mesh labels no longer match the updated
  2.5D label after the first round) and are trained by eq. 6 alone. Both terms are
  scaled by the supervised 2D weight (``loss.weights.joints2d``), because eq. 1 adds
  the pseudo-label loss to the supervised one on an equal footing, and by the sample's
  weight. Correction commutes with the training augmentation (a similarity of the
  image with the matching rotation of the 3D joints, or a mirror), so it is computed on
  the augmented label in the batch.
* *view consistency* (eq. 10) on every sample: the batch is fed twice in one forward,
  as is and perturbed (translation, small rotation or quarter turn about the crop
  centre, boxes moved along), and the prediction on the perturbed crop must equal the
  perturbed prediction. Scaled by ``lambda_c`` (``loss.consistency_weight``) times the
  supervised 2D weight. The original view is the target (gradient stopped), as for a
  pseudo-label.

Augmentation of differing difficulty (section 3.4, :class:`DiversityAugmenter`). With the
pseudo-label term on, the trainer crops every sample with SemiHand's ``diversity``
augmentation in place of the run's ``augmentation``: labelled samples and the round's
confidently pseudo-labelled ones (selected by eq. 8, or all scored ones without selection)
get the random crop, rotation, scale and colour jitter plus random grayscale and erasing
(``diversity_appearance``, pixels only, so every label stays valid); the other
pseudo-labelled samples are unlabelled data for the round and get the plain crop the
round scored them on, their only augmentation being view consistency's perturbation.

Between rounds (:class:`PseudoLabelRounds`, Algorithm 1 lines 4 and 6): at the start of
every round the network (eval mode) predicts on the plain evaluation crop of every
pseudo-labelled sample and on a perturbed copy; from the second round on the
pseudo-labels are first updated by eq. 7 (the midpoint of the prediction and the
previous correction); then each label's confidence (eq. 8: stability under the
perturbation plus distance to its correction) decides whether the round keeps its
first eq. 6 term. Updated labels are stored in the pseudo-label set's own frame (its
stored crop's pixels and camera) and replace the stored ones as samples are loaded, so
the training augmentation applies to them as to any label.

Hand masks. With the hand head's optional mask head (``hand_head.mask_head``) the
network predicts a hand mask on the hand-box grid, and

* view consistency adds eq. 10's mask term: the reference view's mask (gradient
  stopped) resampled onto the perturbed view's hand-box grid, L1 over the pixels with a
  source, weighted by ``view_consistency.mask_weight``;
* *cross-modal consistency* (eq. 11, ``cross_modal.enabled``) compares the 55-circle
  hand model drawn from the predicted 2D joints with the predicted mask (gradient
  stopped, so only the joints move), in crop units with the mask's grid on the hand
  box. The circle radii come from ``cross_modal.radii_file`` or are fitted before
  training on up to ``fit_frames`` labelled frames with hand masks
  (:meth:`SemiHandTraining.fit_circle_radii`). It is scaled like view consistency.

Cross-modal consistency without a mask head is refused with a :class:`ConfigError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import nn
from torch.utils.data import Dataset

from hoi_perception.config import ConfigError
from hoi_perception.models.object_head import box_units_to_points
from hoi_training.data.augment import AugmentConfig, Augmenter, augment_sample, grayscale_and_erase_image, plain_crop
from hoi_training.data.sample import HandObjectSample, collate_samples
from hoi_training.losses import HandObjectTargets, LossOutput
from hoi_training.pseudolabel.dataset import DATASET_NAME as PSEUDO_DATASET_NAME
from hoi_training.pseudolabel.dataset import PseudoLabelDataset
from hoi_training.semihand.circle_model import (
    CircleHandModel,
    RadiusFit,
    cross_modal_consistency_loss,
    fit_circle_radii,
    load_circle_radii,
)
from hoi_training.semihand.config import AugmentationConfig, SemiHandConfig
from hoi_training.semihand.consistency import (
    HandPose25D,
    HandViewPrediction,
    Perturbation,
    pose_distance,
    sample_perturbations,
    view_consistency_loss,
)
from hoi_training.semihand.label_correction import HandPoseLabel, correct_hand_pose, rest_pose_template
from hoi_training.semihand.selection import pseudo_label_confidence, select_confident, update_pseudo_labels

log = logging.getLogger(__name__)

TERM_PSEUDO_LABEL = "semihand_pseudo_label"
TERM_LABEL_CORRECTION = "semihand_label_correction"
TERM_VIEW_CONSISTENCY = "semihand_view_consistency"
TERM_CROSS_MODAL = "semihand_cross_modal"
# Side of the masks the circle radii are fitted on: crops are area-averaged down to it,
# which keeps the fit's pixel-to-circle distances (frames x S^2 x 55) small.
RADIUS_FIT_MASK_SIZE = 64
PSEUDO_SAMPLE_PREFIX = f"{PSEUDO_DATASET_NAME}/"


def hand_box_to_crop_units(joints2d: torch.Tensor, hand_box: torch.Tensor, crop_size: int) -> torch.Tensor:
    """(B, 21, 2) hand-box units -> crop units (the square crop spans [0, 1])."""
    return box_units_to_points(joints2d, hand_box.to(joints2d.dtype)) / crop_size


def perturb_boxes(boxes: torch.Tensor, perturbation: Perturbation, crop_size: int) -> torch.Tensor:
    """(B, 4) crop-pixel boxes -> the axis-aligned bounds of their perturbed corners, inside the crop.

    Exact for quarter turns and translations; for small rotations the box grows by the
    rotated corners' overhang, so the hand stays inside it.
    """
    x0, y0, x1, y1 = boxes.unbind(-1)
    corners = torch.stack([torch.stack([x0, y0], -1), torch.stack([x1, y0], -1), torch.stack([x0, y1], -1),
                           torch.stack([x1, y1], -1)], 1) / crop_size
    moved = perturbation.apply_points(corners.to(perturbation.angle_deg.dtype)).to(boxes.dtype) * crop_size
    out = torch.cat([moved.min(1).values, moved.max(1).values], -1)
    return out.clamp(0.0, float(crop_size))


@dataclass
class PerturbedView:
    """The perturbed copy of a batch fed alongside it: its crops, boxes and the perturbation."""

    image: torch.Tensor
    hand_box: torch.Tensor
    object_box: torch.Tensor
    perturbation: Perturbation


def make_perturbed_view(image: torch.Tensor, hand_box: torch.Tensor, object_box: torch.Tensor,
                        config: SemiHandConfig, generator: torch.Generator | None = None) -> PerturbedView:
    """Draw one perturbation per sample (section 3.4) and apply it to crops and boxes."""
    size = image.shape[-1]
    perturbation = sample_perturbations(image.shape[0], config.augmentation.perturbation, generator=generator,
                                        dtype=torch.float32, device=image.device)
    return PerturbedView(image=perturbation.apply_image(image), hand_box=perturb_boxes(hand_box, perturbation, size),
                         object_box=perturb_boxes(object_box, perturbation, size), perturbation=perturbation)


def _pose_from_output(joints2d: torch.Tensor, joints3d: torch.Tensor, hand_box: torch.Tensor,
                      crop_size: int) -> HandPose25D:
    return HandPose25D.from_joints(hand_box_to_crop_units(joints2d, hand_box, crop_size), joints3d)


def batch_pseudo_labels(crop: dict, crop_size: int) -> tuple[torch.Tensor, HandPoseLabel]:
    """(rows, labels): the batch rows holding a 2.5D pseudo-label and those labels in crop units.

    A row qualifies when it comes from a ``kind: pseudo`` set and has 2D and 3D joints.
    """
    from_pseudo = torch.tensor([sid.startswith(PSEUDO_SAMPLE_PREFIX) for sid in crop["sample_id"]],
                               dtype=torch.bool, device=crop["has_hand_2d"].device)
    rows = torch.nonzero(from_pseudo & crop["has_hand_2d"] & crop["has_hand_3d"]).flatten()
    joints3d = crop["joints_3d"][rows]
    label = HandPoseLabel(uv=crop["joints_2d"][rows] / crop_size, joints3d=joints3d - joints3d[:, :1])
    return rows, label


def drop_hand_supervision(targets: HandObjectTargets, rows: torch.Tensor) -> HandObjectTargets:
    """``targets`` with the supervised hand terms off for ``rows`` (trained by eq. 6 instead)."""
    if rows.numel() == 0:
        return targets
    changes = {}
    for name in ("has_hand2d", "has_hand3d", "has_mano"):
        flags = getattr(targets, name).clone()
        flags[rows] = 0.0
        changes[name] = flags
    return replace(targets, **changes)


@dataclass
class SemiHandTerms:
    """SemiHand's weighted loss terms of one step and the batch rows they took over."""

    loss: LossOutput
    pseudo_rows: torch.Tensor  # rows trained by eq. 6 instead of the supervised hand terms


def labelled_mask_samples(datasets: Sequence[Dataset], count: int) -> list[HandObjectSample]:
    """Up to ``count`` samples with 2D joints, a hand box and a hand mask, from frames spread
    evenly over ``datasets`` (taken end to end), for fitting the circle radii."""
    if count < 1:
        raise ValueError(f"count: expected >= 1, got {count}")
    sizes = [len(d) for d in datasets]
    total = sum(sizes)
    picks = sorted({int(i) for i in np.linspace(0, total - 1, num=min(count, total))}) if total else []
    ends = np.cumsum(sizes)
    samples = []
    for index in picks:
        part = int(np.searchsorted(ends, index, side="right"))
        sample = datasets[part][index - (int(ends[part - 1]) if part else 0)]
        if sample.joints_2d is not None and sample.hand_box is not None and sample.hand_mask is not None:
            samples.append(sample)
    return samples


class SemiHandTraining:
    """The per-step part of SemiHand (see the module docstring).

    config: the run's ``semihand`` section (at least one switch on); hand_model: the
    network's MANO layer (its rest pose is the correction template and the circle model's
    scale reference); crop_size: the network's input size; supervised_2d_weight:
    ``loss.weights.joints2d`` of the run; mask_head: whether the network predicts a hand
    mask (``hand_head.mask_head``).
    """

    def __init__(self, config: SemiHandConfig, hand_model: nn.Module, crop_size: int,
                 supervised_2d_weight: float, mask_head: bool = False) -> None:
        self.config = config
        self.crop_size = int(crop_size)
        self.supervised_2d_weight = float(supervised_2d_weight)
        self.mask_head = bool(mask_head)
        self.template = rest_pose_template(hand_model)[0].float().cpu()
        self.rounds: PseudoLabelRounds | None = None
        self.circle_model: CircleHandModel | None = None
        self.circle_radii_ready = False
        cross_modal = config.cross_modal
        if cross_modal.enabled:
            if not self.mask_head:
                raise ConfigError("semihand.cross_modal.enabled: the cross-modal term needs a hand-mask output; "
                                  "turn on the model's hand_head.mask_head")
            radii = None if cross_modal.radii_file is None else load_circle_radii(cross_modal.radii_file)
            # Radii are fixed during training (SemiHand pre-trains them on labelled data).
            self.circle_model = CircleHandModel(self.template, radii, cross_modal.softness_px).requires_grad_(False)
            self.circle_radii_ready = radii is not None

    @property
    def uses_perturbed_view(self) -> bool:
        return self.config.view_consistency.enabled

    @property
    def needs_circle_radii(self) -> bool:
        """Cross-modal consistency is on and its radii still have to be fitted."""
        return self.circle_model is not None and not self.circle_radii_ready

    def fit_circle_radii(self, samples: Sequence[HandObjectSample], augment: AugmentConfig) -> RadiusFit:
        """Fit the circle radii (:func:`~hoi_training.semihand.circle_model.fit_circle_radii`) on the
        evaluation crops of labelled ``samples`` (left hands mirrored as in training), with
        2D joints and hand masks in crop units."""
        if self.circle_model is None:
            raise RuntimeError("fit_circle_radii: semihand.cross_modal is off")
        if not samples:
            raise ValueError("semihand.cross_modal: no labelled frames with 2D joints and a hand mask to fit the "
                             "circle radii on; give cross_modal.radii_file instead")
        uv, masks = [], []
        for sample in samples:
            crop, _ = plain_crop(sample, augment)
            if crop.joints_2d is None or crop.hand_mask is None:
                raise ValueError(f"sample {sample.sample_id}: expected 2D joints and a hand mask to fit radii on")
            uv.append(torch.as_tensor(crop.joints_2d / augment.output_size, dtype=torch.float32))
            masks.append(torch.as_tensor(crop.hand_mask, dtype=torch.float32))
        stacked = torch.stack(masks)[:, None]
        if stacked.shape[-1] > RADIUS_FIT_MASK_SIZE:
            stacked = F.interpolate(stacked, size=(RADIUS_FIT_MASK_SIZE,) * 2, mode="area")
        fit = fit_circle_radii(self.circle_model, torch.stack(uv), (stacked[:, 0] > 0.5).float())
        self.circle_radii_ready = True
        log.info("semihand cross-modal: circle radii fitted on %d labelled frames (mean IoU %.3f, factor %.2f)",
                 len(samples), fit.fitted_iou, fit.scale_factor)
        return fit

    def perturbed_view(self, image: torch.Tensor, hand_box: torch.Tensor, object_box: torch.Tensor) -> PerturbedView:
        return make_perturbed_view(image, hand_box, object_box, self.config)

    def correct(self, label: HandPoseLabel) -> HandPoseLabel:
        """r = P(p_hat): the label registered onto the template's bone lengths."""
        return correct_hand_pose(label, self.template.to(label.joints3d))

    def keep_flags(self, sample_ids: Sequence[str], device: torch.device) -> torch.Tensor | None:
        """(N,) selection flags of the current round for ``sample_ids``; None when selection is off."""
        if not self.config.selection.enabled:
            return None
        if self.rounds is None:
            raise RuntimeError("selection is on but no pseudo-label round has been started")
        return torch.tensor([self.rounds.keep(sid) for sid in sample_ids], dtype=torch.bool, device=device)

    def _check_masks(self, mask_logits: torch.Tensor | None, perturbed_mask_logits: torch.Tensor | None,
                     view: PerturbedView | None) -> None:
        if not self.mask_head:
            return
        if mask_logits is None:
            raise ValueError("the network has a mask head: its mask logits are needed")
        if view is not None and perturbed_mask_logits is None:
            raise ValueError("the network has a mask head: the perturbed view's mask logits are needed")

    def step_losses(self, crop: dict, hand_joints2d: torch.Tensor, hand_joints3d: torch.Tensor,
                    hand_box: torch.Tensor, view: PerturbedView | None = None,
                    perturbed_joints2d: torch.Tensor | None = None,
                    perturbed_joints3d: torch.Tensor | None = None, *,
                    mask_logits: torch.Tensor | None = None,
                    perturbed_mask_logits: torch.Tensor | None = None) -> SemiHandTerms:
        """The step's SemiHand terms from the network's hand outputs (float32, the batch's rows).

        hand_joints2d/3d: predictions on the batch's crops; perturbed_joints2d/3d: on
        ``view``'s crops (needed when view consistency is on); mask_logits,
        perturbed_mask_logits: the mask head's (B, 1, R, R) logits on the two views (needed
        when the network has a mask head).
        """
        self._check_masks(mask_logits, perturbed_mask_logits, view if self.uses_perturbed_view else None)
        device = hand_joints2d.device
        weight = crop["weight"].to(device)
        prediction = _pose_from_output(hand_joints2d, hand_joints3d, hand_box, self.crop_size)
        terms: dict[str, torch.Tensor] = {}
        total = hand_joints2d.new_zeros(())
        pseudo_rows = torch.zeros(0, dtype=torch.long, device=device)
        batch = hand_joints2d.shape[0]
        consistency_scale = self.supervised_2d_weight * self.config.loss.consistency_weight
        mask = None if mask_logits is None else torch.sigmoid(mask_logits)
        if self.config.pseudo_labels.enabled:
            pseudo_rows, label = batch_pseudo_labels(crop, self.crop_size)
            first = hand_joints2d.new_zeros(())
            second = hand_joints2d.new_zeros(())
            if pseudo_rows.numel():
                predicted = HandPose25D(uv=prediction.uv[pseudo_rows], depth=prediction.depth[pseudo_rows])
                target = label.pose25d()
                keep = self.keep_flags([crop["sample_id"][i] for i in pseudo_rows.tolist()], device)
                row_weight = weight[pseudo_rows]
                depth_weight = self.config.loss.depth_weight
                fit = pose_distance(predicted, target, depth_weight)
                if keep is not None:
                    fit = torch.where(keep, fit, torch.zeros_like(fit))
                first = (fit * row_weight).sum() / batch
                if self.config.label_correction.enabled:
                    corrected = self.correct(label).pose25d()
                    second = (pose_distance(corrected, predicted, depth_weight) * row_weight).sum() / batch
            terms[TERM_PSEUDO_LABEL] = self.supervised_2d_weight * first
            total = total + terms[TERM_PSEUDO_LABEL]
            if self.config.label_correction.enabled:
                terms[TERM_LABEL_CORRECTION] = self.supervised_2d_weight * second
                total = total + terms[TERM_LABEL_CORRECTION]
        if self.config.view_consistency.enabled:
            if view is None or perturbed_joints2d is None or perturbed_joints3d is None:
                raise ValueError("view consistency is on: the perturbed view and its predictions are needed")
            perturbed_pose = _pose_from_output(perturbed_joints2d, perturbed_joints3d, view.hand_box, self.crop_size)
            if mask is None:
                reference = HandViewPrediction(prediction.detach())
                perturbed = HandViewPrediction(perturbed_pose)
            else:
                reference = HandViewPrediction(prediction.detach(), mask.detach(), hand_box / self.crop_size)
                perturbed = HandViewPrediction(perturbed_pose, torch.sigmoid(perturbed_mask_logits),
                                               view.hand_box / self.crop_size)
            mask_weight = self.config.view_consistency.mask_weight
            consistency = view_consistency_loss(reference, perturbed, view.perturbation,
                                                self.config.loss.depth_weight, mask_weight)
            per_sample = consistency.pose
            if consistency.mask is not None:
                per_sample = per_sample + mask_weight * consistency.mask
            terms[TERM_VIEW_CONSISTENCY] = consistency_scale * (per_sample * weight).mean()
            total = total + terms[TERM_VIEW_CONSISTENCY]
        if self.circle_model is not None:
            if not self.circle_radii_ready:
                raise RuntimeError("semihand.cross_modal: the circle radii have not been fitted (fit_circle_radii) "
                                   "and no radii_file was given")
            # The mask is detached inside the loss (stop-gradient of eq. 11).
            cross_modal = cross_modal_consistency_loss(self.circle_model.to(device), prediction.uv, mask,
                                                       hand_box.to(prediction.uv.dtype) / self.crop_size)
            per_sample = cross_modal.model_to_data + cross_modal.data_to_model
            terms[TERM_CROSS_MODAL] = consistency_scale * (per_sample * weight).mean()
            total = total + terms[TERM_CROSS_MODAL]
        return SemiHandTerms(loss=LossOutput(total=total, terms={k: v.detach() for k, v in terms.items()}),
                             pseudo_rows=pseudo_rows)


# ----------------------------------------------------------------------------- diversity augmentation (section 3.4)


class DiversityAugmenter(Augmenter):
    """Dataset transform of runs with SemiHand's pseudo-label term (see the module docstring).

    A sample gets the diversity augmentation, :func:`~hoi_training.data.augment.augment_sample`
    with ``augmentation.diversity`` followed by
    :func:`~hoi_training.data.augment.grayscale_and_erase_image` with
    ``augmentation.diversity_appearance``, unless ``confident`` is given and says no for its
    sample id; then it gets the plain crop (:func:`~hoi_training.data.augment.plain_crop`).
    Labelled sets pass no ``confident``; pseudo-labelled sets pass
    :meth:`PseudoLabelRounds.confident`. The draws are a function of (seed, epoch, sample id),
    as :class:`~hoi_training.data.augment.Augmenter`'s, and the geometric ones are exactly
    that augmenter's with the ``diversity`` config: the appearance step only adds pixels.
    """

    def __init__(self, augmentation: AugmentationConfig, seed: int = 0,
                 confident: Callable[[str], bool] | None = None) -> None:
        super().__init__(augmentation.diversity, seed=seed, train=True)
        augmentation.diversity_appearance.validate()
        self.appearance = augmentation.diversity_appearance
        self.confident = confident

    def __call__(self, sample: HandObjectSample) -> HandObjectSample:
        if self.confident is not None and not self.confident(sample.sample_id):
            return plain_crop(sample, self.config)[0]
        rng = self.generator_for(sample)
        out, _ = augment_sample(sample, self.config, rng)
        return replace(out, image=grayscale_and_erase_image(out.image, self.appearance, rng))


# ----------------------------------------------------------------------------- rounds (Algorithm 1)


@dataclass
class _EvaluationView:
    """A pseudo-labelled sample's plain evaluation crop and how to map crop results back."""

    crop: HandObjectSample
    image_to_crop: np.ndarray
    mirrored: bool
    image_width: int
    root: np.ndarray  # the stored label's camera-frame wrist (unmirrored)


@dataclass
class RoundSummary:
    """What :meth:`PseudoLabelRounds.start_round` did: samples seen, kept, updated; mean confidence."""

    round_number: int
    samples: int
    kept: int
    updated: int
    mean_confidence: float


class PseudoLabelRounds:
    """Per-sample pseudo-label state across Algorithm 1's rounds, keyed by sample id.

    ``labels`` holds the updated 2D (stored-crop pixels) and camera-frame 3D joints that
    replace a sample's stored ones (installed as the pseudo-label sets' ``transform``);
    ``corrections`` the previous round's correction r' in the same frame; ``keep`` the
    round's selection flags.
    """

    def __init__(self, training: SemiHandTraining, datasets: Sequence[PseudoLabelDataset],
                 augment: AugmentConfig, batch_size: int) -> None:
        if not datasets:
            raise ValueError("semihand.pseudo_labels is on but the run has no 'kind: pseudo' dataset")
        self.training = training
        self.config = training.config
        self.datasets = list(datasets)
        self.augment = augment
        self.batch_size = int(batch_size)
        self.labels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.corrections: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.confidence: dict[str, float] = {}
        self._keep: dict[str, bool] = {}
        self.round_number = 0
        for dataset in self.datasets:
            dataset.transform = self.apply
        training.rounds = self

    def keep(self, sample_id: str) -> bool:
        if sample_id not in self._keep:
            raise KeyError(f"sample '{sample_id}' has no selection flag; was it in the pseudo-label sets when the "
                           "round started?")
        return self._keep[sample_id]

    def confident(self, sample_id: str) -> bool:
        """Whether the sample trains as confidently pseudo-labelled data this round (section 3.4): it was
        scored at the round's start and selected (every scored sample when selection is off)."""
        if self.round_number == 0:
            raise RuntimeError("no pseudo-label round has been started: call start_round before loading samples")
        if sample_id not in self._keep:  # no 2.5D pseudo-label to score: unlabelled data
            return False
        return self._keep[sample_id] or not self.config.selection.enabled

    def apply(self, sample: HandObjectSample) -> HandObjectSample:
        """Dataset transform: the sample with its current (updated) pseudo-label."""
        stored = self.labels.get(sample.sample_id)
        if stored is None:
            return sample
        return replace(sample, joints_2d=stored[0].copy(), joints_3d=stored[1].copy()).validate()

    def _views(self, dataset: PseudoLabelDataset) -> list[_EvaluationView]:
        views = []
        for index in range(len(dataset)):
            sample = self.apply(dataset.load(index))
            if sample.joints_2d is None or sample.joints_3d is None:
                continue
            width = sample.image.shape[1]
            root = sample.joints_3d[0].copy()
            # The crop that DiversityAugmenter gives the samples this round does not select.
            crop, transform = plain_crop(sample, self.augment)
            views.append(_EvaluationView(crop, transform.image_to_crop, transform.mirrored, width, root))
        return views

    def _to_stored_frame(self, view: _EvaluationView, uv: np.ndarray, joints3d: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
        """Crop-unit 2D and root-relative 3D joints of an evaluation crop -> the stored sample's frame."""
        pixels = uv.astype(np.float64) * self.augment.output_size
        inverse = np.linalg.inv(view.image_to_crop)
        image_points = pixels @ inverse[:2, :2].T + inverse[:2, 2]
        relative = joints3d.astype(np.float64)
        if view.mirrored:
            image_points[:, 0] = view.image_width - 1.0 - image_points[:, 0]
            relative = relative * np.array([-1.0, 1.0, 1.0])
        return image_points, relative + view.root

    @torch.no_grad()
    def start_round(self, network: nn.Module, round_number: int, device: torch.device) -> RoundSummary:
        """Algorithm 1 at the start of round ``round_number``: eq. 7 update (from round 2), then eq. 8.

        The network runs in eval mode on the evaluation crops and on perturbed copies
        (one draw per sample from the global torch RNG, which the checkpoint saves).
        """
        if round_number < 1:
            raise ValueError(f"round_number: expected >= 1, got {round_number}")
        was_training = network.training
        network.eval()
        update = round_number > 1
        size = self.augment.output_size
        kept = updated = 0
        confidences = []
        try:
            views = [v for dataset in self.datasets for v in self._views(dataset)]
            for start in range(0, len(views), self.batch_size):
                chunk = views[start:start + self.batch_size]
                crop = collate_samples([v.crop for v in chunk])
                image = crop["image"].to(device)
                hand_box = _nonzero_boxes(crop["hand_box"]).to(device)
                object_box = _nonzero_boxes(crop["object_box"]).to(device)
                object_box = torch.where(crop["has_object_box"].to(device)[:, None], object_box, hand_box)
                view = make_perturbed_view(image, hand_box, object_box, self.config)
                both = network(torch.cat([image, view.image]), torch.cat([hand_box, view.hand_box]),
                               torch.cat([object_box, view.object_box])).hand
                count = len(chunk)
                joints2d, joints3d = both.joints2d.float(), both.joints3d.float()
                label = HandPoseLabel(uv=crop["joints_2d"].to(device) / size,
                                      joints3d=(crop["joints_3d"] - crop["joints_3d"][:, :1]).to(device))
                if update:
                    prediction = HandPoseLabel(uv=hand_box_to_crop_units(joints2d[:count], hand_box, size),
                                               joints3d=joints3d[:count])
                    previous = self._previous_corrections(chunk, label)
                    state = update_pseudo_labels(prediction, previous, None)
                    label = state.pseudo_label
                    for i, v in enumerate(chunk):
                        self.labels[v.crop.sample_id] = self._to_stored_frame(
                            v, label.uv[i].cpu().numpy(), label.joints3d[i].cpu().numpy())
                    updated += count
                corrected = self.training.correct(label) if self.config.label_correction.enabled else None
                if corrected is not None:
                    for i, v in enumerate(chunk):
                        self.corrections[v.crop.sample_id] = self._to_stored_frame(
                            v, corrected.uv[i].cpu().numpy(), corrected.joints3d[i].cpu().numpy())
                on_perturbed = _pose_from_output(joints2d[count:], joints3d[count:], view.hand_box, size)
                confidence = pseudo_label_confidence(label.pose25d(), None if corrected is None else
                                                     corrected.pose25d(), on_perturbed, view.perturbation,
                                                     self.config.loss.depth_weight)
                keep = select_confident(confidence, self.config.selection.confidence_threshold)
                for i, v in enumerate(chunk):
                    sample_id = v.crop.sample_id
                    self.confidence[sample_id] = float(confidence.value[i])
                    self._keep[sample_id] = bool(keep[i])
                kept += int(keep.sum())
                confidences.append(confidence.value.cpu())
        finally:
            network.train(was_training)
        self.round_number = round_number
        mean = float(torch.cat(confidences).mean()) if confidences else float("nan")
        summary = RoundSummary(round_number=round_number, samples=len(views), kept=kept, updated=updated,
                               mean_confidence=mean)
        log.info("semihand round %d: %d pseudo-labelled samples, %d updated, %d selected (mean confidence %.3g)",
                 round_number, summary.samples, updated, kept, mean)
        return summary

    def _previous_corrections(self, chunk: Sequence[_EvaluationView], label: HandPoseLabel) -> HandPoseLabel | None:
        """r' of the chunk in its evaluation crops; None without label correction (eq. 7 then keeps p')."""
        if not self.config.label_correction.enabled:
            return None
        uv, joints3d = [], []
        for i, v in enumerate(chunk):
            stored = self.corrections.get(v.crop.sample_id)
            if stored is None:  # first update: r' = P(p_hat) of the current label
                corrected = self.training.correct(HandPoseLabel(uv=label.uv[i:i + 1], joints3d=label.joints3d[i:i + 1]))
                uv.append(corrected.uv[0])
                joints3d.append(corrected.joints3d[0])
                continue
            points, absolute = stored
            if v.mirrored:
                points = points.copy()
                points[:, 0] = v.image_width - 1.0 - points[:, 0]
                absolute = absolute * np.array([-1.0, 1.0, 1.0])
            in_crop = points @ v.image_to_crop[:2, :2].T + v.image_to_crop[:2, 2]
            uv.append(torch.as_tensor(in_crop / self.augment.output_size, dtype=label.uv.dtype, device=label.uv.device))
            joints3d.append(torch.as_tensor(absolute - absolute[:1], dtype=label.uv.dtype, device=label.uv.device))
        return HandPoseLabel(uv=torch.stack(uv), joints3d=torch.stack(joints3d))


def _nonzero_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes with sides of at least one pixel (a missing box is all zeros)."""
    x0, y0 = boxes[:, 0], boxes[:, 1]
    return torch.stack([x0, y0, torch.maximum(boxes[:, 2], x0 + 1.0), torch.maximum(boxes[:, 3], y0 + 1.0)], 1)

