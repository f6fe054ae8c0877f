"""Configuration of a training run (``hoi-train fit --config config/train/*.yaml``).

One YAML file fixes everything a run depends on: the architecture (a model config
file), the datasets and how often each is seen per epoch, augmentation, loss weights,
optimiser and schedule, precision and bookkeeping intervals. The defaults are the
papers' settings (Adam, lr 1e-4, weight decay 5e-4, lr x0.7 every 10 epochs).

Datasets are a mapping from a name of your choice to an entry, so that any field can
be overridden from the command line (``--set datasets.lab.config.root=/data/lab``)::

    datasets:
      lab:
        kind: synthetic            # ho3d | dexycb | synthetic | pseudo (hoi-train pseudolabel output)
        config: {root: data/synthetic/lab}
        weight: 1.0                # samples drawn per epoch = round(weight * len(dataset))
        object_loss: true          # false: hand terms only (SHO eq. 8, pseudo-labelled sets)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hoi_perception.config import ConfigError, resolve_config_path
from hoi_perception.models.config import ModelConfig, load_model_config
from hoi_training.data.augment import AugmentConfig
from hoi_training.data.registry import DatasetKind, dataset_config
from hoi_training.losses import LossConfig
from hoi_training.semihand.config import SemiHandConfig


@dataclass
class DatasetEntry:
    """One training dataset.

    kind: which loader reads it; config: that loader's config fields (``root`` etc.);
    weight: epoch repeat factor: an epoch draws ``round(weight * len)`` of its samples
    (0.5: a random half, 2: every sample twice); object_loss: ``false`` drops the object
    terms for this set's samples (hand-only pseudo-labels, SHO eq. 8).
    """

    kind: DatasetKind
    config: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0
    object_loss: bool = True

    def validate(self) -> None:
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ConfigError(f"weight must be a finite number > 0, got {self.weight}")
        self.dataset_config()

    def dataset_config(self) -> Any:
        """The entry's ``config`` read into its kind's config class (checks the fields and paths)."""
        return dataset_config(self.kind, self.config)


@dataclass
class OptimizerConfig:
    """The optimiser and its learning-rate schedule.

    The papers' default: Adam with L2 weight decay and a step schedule (lr x ``lr_decay``
    every ``lr_step_epochs`` epochs). The CPU recipe: AdamW (decoupled weight decay) with
    ``warmup_steps`` of linear warm-up, then a cosine decay per step down to
    ``min_lr_ratio`` x lr at the run's last step.
    """

    kind: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-4
    weight_decay: float = 5e-4
    schedule: Literal["step", "cosine"] = "step"
    lr_decay: float = 0.7
    lr_step_epochs: int = 10
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    # Clip the global gradient norm to this value; 0 disables clipping (the papers do not clip).
    grad_clip_norm: float = 0.0

    def validate(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.lr_step_epochs < 1:
            raise ConfigError(f"lr_step_epochs must be >= 1, got {self.lr_step_epochs}")
        if not (math.isfinite(self.grad_clip_norm) and self.grad_clip_norm >= 0):
            raise ConfigError(f"grad_clip_norm must be >= 0 (0 disables clipping), got {self.grad_clip_norm}")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")

    def lr_factor(self, step: int, total_steps: int) -> float:
        """Multiplier of ``lr`` at optimiser step ``step`` of ``total_steps`` (warm-up and cosine schedule)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule != "cosine":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class DetectionAugmentConfig:
    """Augmentation of the full frames the detection head learns from (the crops have their own).

    flip_probability: mirror the frame left-right, which turns a right hand into a left one, so
    the labels swap sides (the detector must tell them apart); scale_jitter: zoom the
    letterboxed frame by a factor in 1 +- scale_jitter about a random point, so hands of other
    sizes and at the border are seen. Boxes follow and are clipped; boxes left under
    ``min_box_side`` input pixels are dropped.
    """

    flip_probability: float = 0.0
    scale_jitter: float = 0.0
    min_box_side: float = 2.0

    def validate(self) -> None:
        if not 0 <= self.flip_probability <= 1:
            raise ConfigError(f"flip_probability must be in [0, 1], got {self.flip_probability}")
        if not 0 <= self.scale_jitter < 1:
            raise ConfigError(f"scale_jitter must be in [0, 1), got {self.scale_jitter}")
        if self.min_box_side < 0:
            raise ConfigError(f"min_box_side must be >= 0 pixels, got {self.min_box_side}")


@dataclass
class TrainConfig:
    """A whole training run; see the module docstring and ``config/train/synthetic_hfl_r18.yaml``."""

    # Architecture file (absolute, or relative to config/, e.g. models/hfl_r18.yaml) and overrides of it.
    model: str = "models/hfl_r18.yaml"
    model_overrides: list[str] = field(default_factory=list)
    datasets: dict[str, DatasetEntry] = field(default_factory=dict)
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    detection_augmentation: DetectionAugmentConfig = field(default_factory=DetectionAugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    # SemiHand consistency training (hoi_training/semihand, config/semihand.yaml); all off by default.
    semihand: SemiHandConfig = field(default_factory=SemiHandConfig)
    # Length: whole epochs, or max_steps optimiser steps when max_steps > 0 (whichever ends first).
    epochs: int = 60
    max_steps: int = 0
    # Per-process batch; the global batch is batch_size x world size.
    batch_size: int = 24
    workers: int = 4
    # auto: CUDA when available (cuda:LOCAL_RANK under torchrun), else CPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Mixed precision on CUDA: bf16 autocast, or fp16 autocast with a GradScaler. CPU runs fp32.
    amp: Literal["off", "bf16", "fp16"] = "bf16"
    # Intra-op CPU threads per process; 0 keeps PyTorch's default.
    cpu_threads: int = 0
    seed: int = 0
    # Optional initial weights: a torchvision ResNet ImageNet file for the backbone, and/or a
    # checkpoint (training or released) of the same model config, or of its first stage alone
    # for a refine: dma model (the refiner then starts untrained), whose weights start the run.
    imagenet_weights: Path | None = None
    init_checkpoint: Path | None = None
    # State-dict prefixes of init_checkpoint left out: those modules keep their fresh
    # initialisation (e.g. [detection_head.] to retrain a head whose layout changed).
    init_exclude: list[str] = field(default_factory=list)
    # For a model whose detector has its own trunk (detection_head.trunk: own), where that
    # trunk starts. "checkpoint": as init_checkpoint has it (a copy of its crop backbone if
    # it has none); "crop_backbone": a fresh copy of the crop backbone it starts from, for a
    # detector stage after crop stages that left the trunk untouched.
    detector_trunk_init: Literal["checkpoint", "crop_backbone"] = "checkpoint"
    # Modules (dotted names in the network, e.g. backbone.resnet.layer1) kept exactly as
    # init_checkpoint has them: no gradient, and BatchNorm on its running statistics. E.g.
    # the crop backbone's stem and layer1, which the detector's own trunk reads, in a crop
    # stage after the detector stage.
    frozen_modules: list[str] = field(default_factory=list)
    # What the optimiser updates. "all": every weight (DMA trains its two stages end to end,
    # section 3). "refiner": a refine: dma model's refiner only; the first stage keeps the
    # weights of init_checkpoint and runs as at inference (BatchNorm on its running
    # statistics), so the refined model's first stage stays exactly that checkpoint and
    # refinement on/off compare the same coarse estimates.
    trainable: Literal["all", "refiner"] = "all"
    # What a step computes and trains (the CPU recipe's stages, config/train/cpu_r18_*.yaml):
    # "full": every configured term; "heatmaps": the backbone and the hand heatmaps only (the
    # 2D terms; the other heads are not run, so a step costs a fraction of a full one);
    # "detector": the detector alone (its head, and its own trunk if it has one) on full frames;
    # the crop network runs as at inference and stays exactly that of init_checkpoint.
    stage: Literal["full", "heatmaps", "detector"] = "full"
    # For a model with the side head (hand_head.side_head), this fraction of each batch's crops
    # is also fed mirrored against its side, as the examples of a crop that is not a right hand
    # (loss.weights.hand_side); only the side term sees those rows. 0: no side training.
    side_negatives: float = 0.0
    # Bookkeeping, in optimiser steps (0 disables the image grids).
    log_interval: int = 20
    image_interval: int = 500
    checkpoint_interval: int = 1000
    output_dir: Path = Path("runs/train")

    def validate(self) -> None:
        if not self.datasets:
            raise ConfigError("datasets: expected at least one training dataset")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.max_steps < 0:
            raise ConfigError(f"max_steps must be >= 0 (0: train whole epochs), got {self.max_steps}")
        if self.batch_size < 2:
            raise ConfigError(f"batch_size must be >= 2 (BatchNorm needs two samples), got {self.batch_size}")
        if self.workers < 0 or self.cpu_threads < 0:
            raise ConfigError(f"workers and cpu_threads must be >= 0, got {self.workers}, {self.cpu_threads}")
        for name in ("log_interval", "checkpoint_interval"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1 step, got {getattr(self, name)}")
        if self.image_interval < 0:
            raise ConfigError(f"image_interval must be >= 0 (0 disables image grids), got {self.image_interval}")
        if self.frozen_modules and self.init_checkpoint is None:
            raise ConfigError(f"frozen_modules {self.frozen_modules} keep weights of init_checkpoint, but no "
                              "init_checkpoint is set")
        if self.init_exclude and self.init_checkpoint is None:
            raise ConfigError(f"init_exclude {self.init_exclude} leaves parts of init_checkpoint out, but no "
                              "init_checkpoint is set")
        if not self.augmentation.mirror_left_hands:
            raise ConfigError("augmentation.mirror_left_hands must be true: the network models right hands only, "
                              "and left hands are mirrored before it at run time as in training")
        model = self.model_config()
        if self.augmentation.output_size != model.input_size:
            raise ConfigError(f"augmentation.output_size ({self.augmentation.output_size}) must equal the model's "
                              f"input_size ({model.input_size}, from {self.model})")
        self._validate_semihand()
        if not 0.0 <= self.side_negatives <= 1.0:
            raise ConfigError(f"side_negatives must be a fraction in [0, 1], got {self.side_negatives}")
        if self.side_negatives > 0 and (not model.hand_head.side_head or self.stage != "full"):
            raise ConfigError(f"side_negatives ({self.side_negatives}) trains the side head in a full stage; this "
                              f"run has stage {self.stage} and hand_head.side_head {model.hand_head.side_head}")
        if self.trainable == "refiner":
            self._validate_refiner_only(model)
        if self.stage != "full":
            self._validate_stage(model)
        if self.detector_trunk_init == "crop_backbone" and (model.detection_head.trunk != "own"
                                                            or self.stage != "detector"):
            raise ConfigError(f"detector_trunk_init: crop_backbone restarts the detector's own trunk in a "
                              f"detector stage; this run has stage {self.stage} and detection_head.trunk "
                              f"{model.detection_head.trunk}")

    def _validate_stage(self, model: ModelConfig) -> None:
        """The partial stages train plain first stages, supervised."""
        semihand = self.semihand
        if model.refine != "none" or self.trainable != "all":
            raise ConfigError(f"stage: {self.stage} trains a first stage; use a model with refine: none and "
                              "trainable: all")
        if semihand.pseudo_labels.enabled or semihand.view_consistency.enabled or semihand.cross_modal.enabled:
            raise ConfigError(f"stage: {self.stage} is supervised; turn semihand off")
        if self.stage == "detector" and self.init_checkpoint is None:
            raise ConfigError("stage: detector trains the detector beside a frozen crop network, so it must "
                              "start from trained weights: set init_checkpoint")
        weights = self.loss.weights
        if self.stage == "detector" and weights.detection_heatmap <= 0:
            raise ConfigError("stage: detector needs loss.weights.detection_heatmap > 0")
        if self.stage == "heatmaps" and weights.heatmaps + weights.joints2d <= 0:
            raise ConfigError("stage: heatmaps needs loss.weights.heatmaps or joints2d > 0")

    def _validate_refiner_only(self, model: ModelConfig) -> None:
        """Training the refiner alone needs a refiner, a first stage to start from, and no first-stage terms."""
        if model.refine == "none":
            raise ConfigError(f"trainable: refiner needs a model with a refinement stage; {self.model} has "
                              "refine: none")
        if self.init_checkpoint is None:
            raise ConfigError("trainable: refiner freezes the first stage, so it must start from trained weights: "
                              "set init_checkpoint (e.g. the released hfl_r18 checkpoint)")
        semihand = self.semihand
        if semihand.pseudo_labels.enabled or semihand.view_consistency.enabled or semihand.cross_modal.enabled:
            raise ConfigError("trainable: refiner freezes the first stage, which SemiHand's terms train; turn "
                              "semihand off or use trainable: all")

    def _validate_semihand(self) -> None:
        """SemiHand's rounds run as this config's epochs, at its learning rate and batch size, and crop with
        its diversity augmentation in place of ``augmentation``: they must agree with the run and the model."""
        semihand = self.semihand
        model = self.model_config()
        if semihand.cross_modal.enabled and not model.hand_head.mask_head:
            raise ConfigError("semihand.cross_modal.enabled: the cross-modal term needs a hand-mask output, which "
                              "this network does not have; add hand_head.mask_head=true to model_overrides")
        if not semihand.pseudo_labels.enabled:
            return
        if not any(entry.kind == "pseudo" for entry in self.datasets.values()):
            raise ConfigError("semihand.pseudo_labels.enabled: expected a dataset of kind 'pseudo' to label")
        schedule = semihand.schedule
        if self.epochs != schedule.rounds * schedule.epochs_per_round:
            raise ConfigError(f"epochs ({self.epochs}) must equal semihand.schedule.rounds x epochs_per_round "
                              f"({schedule.rounds} x {schedule.epochs_per_round})")
        if self.optimizer.lr != schedule.learning_rate:
            raise ConfigError(f"optimizer.lr ({self.optimizer.lr}) must equal semihand.schedule.learning_rate "
                              f"({schedule.learning_rate}); the rounds replace the step schedule")
        if self.batch_size != schedule.batch_size:
            raise ConfigError(f"batch_size ({self.batch_size}) must equal semihand.schedule.batch_size "
                              f"({schedule.batch_size})")
        diversity = semihand.augmentation.diversity
        if diversity.output_size != model.input_size:
            raise ConfigError(f"semihand.augmentation.diversity.output_size ({diversity.output_size}) must equal the "
                              f"model's input_size ({model.input_size}, from {self.model}): with pseudo_labels on, "
                              "SemiHand's diversity augmentation makes the training crops")
        if not diversity.mirror_left_hands:
            raise ConfigError("semihand.augmentation.diversity.mirror_left_hands must be true: with pseudo_labels on "
                              "it makes the training crops, and the network models right hands only")

    def model_config(self) -> ModelConfig:
        """The architecture: the model file with ``model_overrides`` applied."""
        try:
            resolve_config_path(self.model)
        except ConfigError as exc:
            raise ConfigError(f"model: {exc}") from None
        return load_model_config(self.model, self.model_overrides)
