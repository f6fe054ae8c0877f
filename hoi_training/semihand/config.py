"""Configuration of SemiHand consistency training (config/semihand.yaml).

Every piece has its own switch, all off by default, so the plain supervised fine-tuning
is the baseline and each of SemiHand's components (its Table 1 ablation) is turned on
explicitly. Values and units are explained where the components live:

* distances, the depth weight and the perturbation: :mod:`hoi_training.semihand.consistency`;
* the confidence threshold: :mod:`hoi_training.semihand.selection`;
* the circle model: :mod:`hoi_training.semihand.circle_model`.

Schedule (Algorithm 1 and section 4.1): ``rounds`` (K = 10) rounds of fine-tuning at
``learning_rate`` (1e-4), each followed by the pseudo-label update of eq. 7; from round
``lr_drop_round`` (1-based; by default the middle round, ceil(K / 2) = 5 as in the paper)
the learning rate is multiplied by ``lr_drop_factor`` (0.1, giving 1e-5).

Augmentation of differing difficulty (section 3.4): labelled data and confidently
pseudo-labelled data get the *diversity* augmentation (the supervised crop, rotation,
scale and colour jitter of :class:`~hoi_training.data.augment.AugmentConfig`, plus random
grayscale and erasing); unlabelled data only the small *perturbation* (translation,
small rotation or quarter turn), which is also what view consistency and the
confidence's stability term apply. With ``pseudo_labels`` on, ``diversity`` replaces the
training run's own ``augmentation`` for every crop of the run
(:class:`~hoi_training.semihand.training.DiversityAugmenter`), so its ``output_size``
must be the model's input size and left hands must be mirrored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hoi_perception.config import ConfigError, load_config
from hoi_training.data.augment import AugmentConfig
from hoi_training.semihand.consistency import GrayscaleErasingConfig, PerturbationConfig
from hoi_training.semihand.selection import DEFAULT_CONFIDENCE_THRESHOLD

DEFAULT_SEMIHAND_CONFIG = "semihand.yaml"


@dataclass
class PseudoLabelTermConfig:
    """Train on pseudo-labels of the unlabelled data (eq. 4), updated once per round (eq. 7).
    Label correction and sample selection refine this term and need it on."""

    enabled: bool = False


@dataclass
class LabelCorrectionConfig:
    """Register pseudo-labels onto the template's bone lengths (r = P(p_hat)) and train on
    the correction term of eq. 6 and the eq. 7 update."""

    enabled: bool = False


@dataclass
class SelectionConfig:
    """Keep the pseudo-label term only for samples with confidence C <= confidence_threshold
    (eq. 4/6; box units squared, see hoi_training.semihand.selection)."""

    enabled: bool = False
    confidence_threshold: float = DEFAULT_CONFIDENCE_THRESHOLD

    def validate(self) -> None:
        if not (self.confidence_threshold >= 0 and math.isfinite(self.confidence_threshold)):
            raise ConfigError(f"confidence_threshold: expected a finite value >= 0, got {self.confidence_threshold}")


@dataclass
class ViewConsistencyConfig:
    """Eq. 10 on labelled and unlabelled crops; mask_weight scales its mask L1 term, which is
    part of the loss when the model has the hand-mask head (``hand_head.mask_head``)."""

    enabled: bool = False
    mask_weight: float = 1.0

    def validate(self) -> None:
        if not (self.mask_weight >= 0 and math.isfinite(self.mask_weight)):
            raise ConfigError(f"mask_weight: expected a finite value >= 0, got {self.mask_weight}")


@dataclass
class CrossModalConfig:
    """Eq. 11 between the predicted 2D joints and hand mask through the 55-circle model; needs
    the model's hand-mask head (``hand_head.mask_head``).

    radii_file: .npz written by ``circle_model.save_circle_radii``; None fits the radii on
        ``fit_frames`` labelled frames before training (``fit_circle_radii``).
    softness_px: edge width of the soft circle rendering, in mask pixels.
    """

    enabled: bool = False
    radii_file: Path | None = None
    fit_frames: int = 64
    softness_px: float = 1.0

    def validate(self) -> None:
        if self.fit_frames < 1:
            raise ConfigError(f"fit_frames: expected an integer >= 1, got {self.fit_frames}")
        if not (self.softness_px > 0 and math.isfinite(self.softness_px)):
            raise ConfigError(f"softness_px: expected a positive number of pixels, got {self.softness_px}")


@dataclass
class LossConfig:
    """consistency_weight: lambda_c of eq. 1 (on L_vc + L_cc); depth_weight: lambda_d of eq. 2
    in box units^2 per m^2 (10: 1 cm of depth weighs like 1 cm in the image plane for a crop
    spanning 0.32 m)."""

    consistency_weight: float = 0.1
    depth_weight: float = 10.0

    def validate(self) -> None:
        for name in ("consistency_weight", "depth_weight"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"{name}: expected a finite value >= 0, got {value}")


@dataclass
class ScheduleConfig:
    """Algorithm 1's K rounds with the learning-rate drop (see the module docstring)."""

    rounds: int = 10
    epochs_per_round: int = 1
    learning_rate: float = 1e-4
    lr_drop_round: int | None = None
    lr_drop_factor: float = 0.1
    batch_size: int = 128

    def validate(self) -> None:
        if self.rounds < 1 or self.epochs_per_round < 1 or self.batch_size < 1:
            raise ConfigError(f"rounds, epochs_per_round, batch_size: expected integers >= 1, got {self.rounds}, "
                              f"{self.epochs_per_round}, {self.batch_size}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ConfigError(f"learning_rate: expected a positive number, got {self.learning_rate}")
        if not 0 < self.lr_drop_factor <= 1:
            raise ConfigError(f"lr_drop_factor: expected a factor in (0, 1], got {self.lr_drop_factor}")
        if self.lr_drop_round is not None and not 1 <= self.lr_drop_round <= self.rounds:
            raise ConfigError(f"lr_drop_round: expected a round in 1..{self.rounds} or null (middle round), got "
                              f"{self.lr_drop_round}")

    @property
    def drop_round(self) -> int:
        """The first (1-based) round trained at the lowered learning rate."""
        return self.lr_drop_round if self.lr_drop_round is not None else math.ceil(self.rounds / 2)

    def learning_rate_at(self, round_number: int) -> float:
        """Learning rate of round ``round_number`` (1-based, 1..rounds)."""
        if not 1 <= round_number <= self.rounds:
            raise ValueError(f"round_number: expected 1..{self.rounds}, got {round_number}")
        factor = self.lr_drop_factor if round_number >= self.drop_round else 1.0
        return self.learning_rate * factor


@dataclass
class DiversityAugmentConfig(AugmentConfig):
    """SemiHand's diversity crop: SHO/HFL's supervised augmentation, with defaults for the
    shipped hfl_r18 (128 px input) and left hands mirrored as in every training crop of
    the right-hand network. A class of its own (not only a default instance) so that a
    partial mapping such as ``diversity: {rotation_deg: 45}`` keeps these defaults."""

    output_size: int = 128
    mirror_left_hands: bool = True


@dataclass
class AugmentationConfig:
    """Diversity augmentation (labelled and confidently pseudo-labelled data; used when
    ``pseudo_labels`` is on) and perturbation augmentation (unlabelled data; also the T of
    view consistency and of the confidence)."""

    diversity: DiversityAugmentConfig = field(default_factory=DiversityAugmentConfig)
    diversity_appearance: GrayscaleErasingConfig = field(default_factory=GrayscaleErasingConfig)
    perturbation: PerturbationConfig = field(default_factory=PerturbationConfig)


@dataclass
class SemiHandConfig:
    """Everything SemiHand consistency training adds to supervised fine-tuning."""

    pseudo_labels: PseudoLabelTermConfig = field(default_factory=PseudoLabelTermConfig)
    label_correction: LabelCorrectionConfig = field(default_factory=LabelCorrectionConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    view_consistency: ViewConsistencyConfig = field(default_factory=ViewConsistencyConfig)
    cross_modal: CrossModalConfig = field(default_factory=CrossModalConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)

    def validate(self) -> None:
        for name in ("label_correction", "selection"):
            if getattr(self, name).enabled and not self.pseudo_labels.enabled:
                raise ConfigError(f"{name}.enabled: refines the pseudo-label term; enable pseudo_labels too")
        self.selection.validate()
        self.view_consistency.validate()
        self.cross_modal.validate()
        self.loss.validate()
        self.schedule.validate()
        self.augmentation.diversity.validate()
        self.augmentation.diversity_appearance.validate()
        self.augmentation.perturbation.validate()


def load_semihand_config(source: str | Path | dict[str, Any] | None = DEFAULT_SEMIHAND_CONFIG,
                         overrides: Iterable[str] = ()) -> SemiHandConfig:
    """SemiHandConfig from a YAML file (default: the shipped config/semihand.yaml), a dict, or None."""
    return load_config(SemiHandConfig, source, overrides)
