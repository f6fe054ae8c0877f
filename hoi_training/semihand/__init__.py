"""SemiHand consistency training (Yang et al. 2021): pseudo-label correction and selection,
view consistency, cross-modal consistency through a 55-circle hand model, and their config.

The pieces are pure functions and small ``nn.Module``s that the trainer composes:

* :mod:`~hoi_training.semihand.label_correction`: greedy registration onto template bone lengths (P);
* :mod:`~hoi_training.semihand.selection`: confidence (eq. 8), selection, eq. 6 loss, eq. 7 update;
* :mod:`~hoi_training.semihand.consistency`: 2.5D poses and distance (eq. 2), perturbations,
  view-consistency loss (eq. 10, with masks on the crop or on each view's hand box),
  grayscale/erasing augmentation;
* :mod:`~hoi_training.semihand.circle_model`: circle hand model, radius fitting, eq. 11 loss;
* :mod:`~hoi_training.semihand.config`: :class:`SemiHandConfig` (config/semihand.yaml);
* :mod:`~hoi_training.semihand.training`: the terms inside ``hoi-train fit`` and the rounds.
"""

from hoi_training.semihand.circle_model import (
    CircleHandModel,
    CrossModalLoss,
    box_pixel_centres,
    cross_modal_consistency_loss,
    fit_circle_radii,
    load_circle_radii,
    save_circle_radii,
)
from hoi_training.semihand.config import SemiHandConfig, load_semihand_config
from hoi_training.semihand.consistency import (
    HandPose25D,
    HandViewPrediction,
    Perturbation,
    PerturbationConfig,
    ViewConsistencyLoss,
    pose_distance,
    resample_box_mask,
    sample_perturbations,
    view_consistency_loss,
)
from hoi_training.semihand.label_correction import (
    HandPoseLabel,
    correct_hand_pose,
    register_to_template,
    rest_pose_template,
)
from hoi_training.semihand.selection import (
    PseudoLabelConfidence,
    PseudoLabelState,
    pseudo_label_confidence,
    pseudo_label_loss,
    select_confident,
    update_pseudo_labels,
)

__all__ = [
    "CircleHandModel",
    "CrossModalLoss",
    "HandPose25D",
    "HandPoseLabel",
    "HandViewPrediction",
    "Perturbation",
    "PerturbationConfig",
    "PseudoLabelConfidence",
    "PseudoLabelState",
    "SemiHandConfig",
    "ViewConsistencyLoss",
    "box_pixel_centres",
    "correct_hand_pose",
    "cross_modal_consistency_loss",
    "fit_circle_radii",
    "load_circle_radii",
    "load_semihand_config",
    "pose_distance",
    "pseudo_label_confidence",
    "pseudo_label_loss",
    "register_to_template",
    "resample_box_mask",
    "rest_pose_template",
    "sample_perturbations",
    "save_circle_radii",
    "select_confident",
    "update_pseudo_labels",
    "view_consistency_loss",
]
