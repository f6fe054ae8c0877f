"""``hoi-train fit``: supervised (and pseudo-label) training of :class:`~hoi_perception.models.network.HOINet`.

Batches (:mod:`hoi_training.training.batches`): one dataset sample feeds both entry points,
the augmented square crop with crop-level targets (left hands mirrored) and the letterboxed
full frame with CenterNet targets for the hand (right or left, as labelled) and the object.
A set entry with ``object_loss: false`` zeroes the object-term flags of its samples, and
every flag is scaled by the sample's weight (1 for ground truth, the confidence for
pseudo-labels). A step's loss is the supervised terms plus each optional objective's
(SemiHand, DMA refinement, detection); ``stage`` runs a part of the network alone.

Distribution (:mod:`hoi_training.training.distributed`): under ``torchrun`` each process
trains a DistributedDataParallel replica (gloo on CPU, nccl on CUDA) on its share of every
epoch, drawn by :class:`~hoi_training.training.distributed.EpochSampler`.

Checkpoints (``<run>/checkpoints/last.pt``, written atomically by rank 0) hold the model,
optimiser, scheduler, GradScaler, RNG states, the step, epoch and batch position, the
resolved configs and the code version; ``--resume`` continues from it bit-for-bit on CPU.
A non-finite loss stops training with :class:`NonFiniteLossError` naming the step, and
nothing is written, so the last checkpoint stays the last good state.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from hoi_perception.atomic import atomic_save_with, atomic_write_text
from hoi_perception.config import ConfigError, load_config, to_dict
from hoi_perception.geometry.crop import CROP_SETTINGS_KEY
from hoi_perception.models.checkpoint import code_version
from hoi_perception.models.network import HandHeatmaps, HOINet, NetworkOutput
from hoi_perception.models.object_head import points_to_box_units
from hoi_training.data.augment import Augmenter
from hoi_training.losses import (
    HandObjectTargets,
    LossOutput,
    detection_loss,
    hand_2d_losses,
    hand_object_loss,
    hand_side_loss,
)
from hoi_training.semihand.training import (
    DiversityAugmenter,
    PseudoLabelRounds,
    SemiHandTraining,
    drop_hand_supervision,
    labelled_mask_samples,
)
from hoi_training.train_config import TrainConfig
from hoi_training.training.batches import (
    ConcatExamples,
    TrainingBatch,
    build_dataset,
    build_hand_object_targets,
    collate_examples,
    float32_outputs,
    safe_boxes,
    to_device,
    valid_boxes,
)
from hoi_training.training.distributed import DistributedContext, EpochSampler, all_finite, init_distributed
from hoi_training.training.refinement import RefinementTraining, select_rows, training_object_library
from hoi_training.training.state import (
    DETECTION_HEAD_PREFIX,
    DETECTOR_TRUNK_PREFIX,
    check_model_config,
    config_differences,
    freeze_first_stage,
    load_initial_weights,
    read_checkpoint,
    rng_state,
    set_rng_state,
)
from hoi_training.training.step import (
    SideNegatives,
    StepInputs,
    StepOutputs,
    StepResult,
    TrainingModule,
    crop_grid,
    sum_losses,
)

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "hoi_training_checkpoint/1"
CONFIG_FILE = "config.yaml"
CODE_VERSION_FILE = "code_version.txt"
LAST_CHECKPOINT = Path("checkpoints") / "last.pt"
NON_FINITE_EXIT_CODE = 3
DETECTOR_PREFIXES = (DETECTION_HEAD_PREFIX, DETECTOR_TRUNK_PREFIX)  # what the "detector" stage trains


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped without writing a checkpoint."""



# ----------------------------------------------------------------------------- trainer


class Trainer:
    """Builds model, data and optimiser from a :class:`TrainConfig` and runs (or resumes) training.

    Args:
        config: the run; ``config.output_dir`` is the run folder.
        context: this process's rank and device (:func:`init_distributed`); default single-process.
        config_source: where the config came from, for messages.
    """

    def __init__(self, config: TrainConfig, context: DistributedContext | None = None,
                 config_source: str = "the training config") -> None:
        self.config = config
        self.context = context or DistributedContext(0, 1, 0, torch.device("cpu"))
        self.config_source = config_source
        self.run_dir = Path(config.output_dir)
        self.checkpoint_path = self.run_dir / LAST_CHECKPOINT
        self.model_config = config.model_config()
        if config.cpu_threads:
            torch.set_num_threads(config.cpu_threads)
        _seed_everything(config.seed)
        device = self.context.device
        self.network = HOINet(self.model_config)
        if config.imagenet_weights is not None:
            self.network.load_imagenet_weights(config.imagenet_weights)
        if config.init_checkpoint is not None:
            load_initial_weights(self.network, config.init_checkpoint, config_source, config.init_exclude)
        self.frozen_modules = [self._module_named(name) for name in config.frozen_modules]
        for module in self.frozen_modules:
            module.requires_grad_(False)
        if config.detector_trunk_init == "crop_backbone":
            assert self.network.detector_trunk is not None  # TrainConfig.validate checks the model has one
            self.network.detector_trunk.copy_from(self.network.backbone)
        self.frozen_first_stage = config.trainable == "refiner"
        self.stage = config.stage
        if self.frozen_first_stage:
            freeze_first_stage(self.network)
        if self.stage == "detector":  # the detector alone learns; the crop network runs as at inference
            for name, parameter in self.network.named_parameters():
                parameter.requires_grad_(name.startswith(DETECTOR_PREFIXES))
        self.network.to(device)
        self.module: nn.Module = TrainingModule(self.network, config.stage)
        self.refinement = (RefinementTraining(self.network, training_object_library(config))
                           if self.network.refiner is not None else None)
        weights = config.loss.weights
        self.train_detection = ((weights.detection_heatmap + weights.detection_size + weights.detection_offset) > 0
                                and not self.frozen_first_stage and self.stage != "heatmaps")
        if self.context.distributed:
            # A batch without a refinable crop leaves the refiner unused.
            self.module = DistributedDataParallel(
                self.module, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=not self.train_detection or self.refinement is not None)
        augmenter = Augmenter(config.augmentation, seed=config.seed, train=True)
        names = list(config.datasets)
        detector_size = self.model_config.detector_input_size
        self.dataset = ConcatExamples([build_dataset(n, config.datasets[n], augmenter, detector_size,
                                                     config.detection_augmentation) for n in names])
        self.sampler = EpochSampler([len(p) for p in self.dataset.parts],
                                    [config.datasets[n].weight for n in names], config.batch_size, config.seed,
                                    self.context.rank, self.context.world_size)
        optimizer_class = torch.optim.AdamW if config.optimizer.kind == "adamw" else torch.optim.Adam
        self.optimizer = optimizer_class([p for p in self.network.parameters() if p.requires_grad],
                                         lr=config.optimizer.lr, weight_decay=config.optimizer.weight_decay)
        # Per-step schedules (warm-up, cosine) step after every optimiser step; the others per epoch.
        self.per_step_schedule = config.optimizer.schedule == "cosine" or config.optimizer.warmup_steps > 0
        if config.semihand.pseudo_labels.enabled:  # SemiHand's rounds: one drop at the middle round
            rounds = config.semihand.schedule
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda epoch: rounds.learning_rate_at(
                min(epoch // rounds.epochs_per_round + 1, rounds.rounds)) / rounds.learning_rate)
        elif self.per_step_schedule:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda step: config.optimizer.lr_factor(step, self.total_steps))
        else:
            self.scheduler = torch.optim.lr_scheduler.StepLR(
                self.optimizer, step_size=config.optimizer.lr_step_epochs, gamma=config.optimizer.lr_decay)
        cuda = device.type == "cuda"
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp) if cuda else None
        self.scaler = torch.amp.GradScaler(device.type, enabled=cuda and config.amp == "fp16")
        if not cuda and config.amp != "off":
            log.info("amp '%s' applies on CUDA only; training in fp32 on %s", config.amp, device)

        self.semihand, self.semihand_rounds = self._build_semihand(names)
        # The crops' enlargement travels in the checkpoint: the runtime crops as the model was trained.
        self.crop_box_expansion = (config.semihand.augmentation.diversity.box_expansion
                                   if config.semihand.pseudo_labels.enabled else config.augmentation.box_expansion)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.writer = None

    def _build_semihand(self, names: Sequence[str]) -> tuple[SemiHandTraining | None, PseudoLabelRounds | None]:
        """SemiHand's per-step terms and pseudo-label rounds; (None, None) with every switch off."""
        semihand = self.config.semihand
        if not (semihand.pseudo_labels.enabled or semihand.view_consistency.enabled or semihand.cross_modal.enabled):
            return None, None
        training = SemiHandTraining(semihand, self.network.hand_decoder.hand_model, self.model_config.input_size,
                                    self.config.loss.weights.joints2d, self.model_config.hand_head.mask_head)
        # With the pseudo-label term, SemiHand's diversity augmentation makes every crop of the run.
        crops = semihand.augmentation.diversity if semihand.pseudo_labels.enabled else self.config.augmentation
        if training.needs_circle_radii:
            labelled = [part.base for name, part in zip(names, self.dataset.parts)
                        if self.config.datasets[name].kind != "pseudo"]
            training.fit_circle_radii(labelled_mask_samples(labelled, semihand.cross_modal.fit_frames), crops)
        if not semihand.pseudo_labels.enabled:
            return training, None
        pseudo = [part.base for name, part in zip(names, self.dataset.parts) if self.config.datasets[name].kind ==
                  "pseudo"]
        rounds = PseudoLabelRounds(training, pseudo, crops, self.config.batch_size)
        for name, part in zip(names, self.dataset.parts):  # section 3.4's split, per round for pseudo-labels
            confident = rounds.confident if self.config.datasets[name].kind == "pseudo" else None
            part.builder.augmenter = DiversityAugmenter(semihand.augmentation, self.config.seed, confident)
        return training, rounds

    # -- bookkeeping

    @property
    def total_steps(self) -> int:
        per_epoch = self.sampler.batches_per_epoch()
        steps = per_epoch * self.config.epochs
        return min(steps, self.config.max_steps) if self.config.max_steps else steps

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model_config": to_dict(self.model_config),
            "model": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(self.context.device),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "world_size": self.context.world_size,
            "train_config": to_dict(self.config),
            CROP_SETTINGS_KEY: {"box_expansion": self.crop_box_expansion},
            "code_version": code_version(),
        }

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/last.pt`` atomically (rank 0); refuses a state with non-finite weights."""
        if not self.context.is_main:
            return None
        bad = [n for n, p in self.network.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise NonFiniteLossError(f"step {self.step}: parameters {bad[:3]} are not finite; not overwriting the "
                                     f"last good checkpoint {self.checkpoint_path}")
        state = self.checkpoint_state()
        atomic_save_with(self.checkpoint_path, lambda f: torch.save(state, f))
        log.info("step %d: checkpoint %s", self.step, self.checkpoint_path)
        return self.checkpoint_path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore everything :meth:`checkpoint_state` saved, after checking the model config."""
        data = read_checkpoint(path)
        check_model_config(data, path, self.model_config, self.config_source)
        device = self.context.device
        self.network.load_state_dict(data["model"])
        self.optimizer.load_state_dict(data["optimizer"])
        self.scheduler.load_state_dict(data["scheduler"])
        self.scaler.load_state_dict(data["scaler"])
        set_rng_state(data["rng"], device)
        self.step, self.epoch, self.batch_in_epoch = int(data["step"]), int(data["epoch"]), int(data["batch_in_epoch"])
        if int(data.get("world_size", 1)) != self.context.world_size:
            log.warning("checkpoint was written by %s process(es), resuming with %s: the data order from here on "
                        "differs from the uninterrupted run", data.get("world_size"), self.context.world_size)
        log.info("resumed from %s at step %d (epoch %d, batch %d)", path, self.step, self.epoch, self.batch_in_epoch)

    def write_run_files(self) -> None:
        """Save the resolved config and code version in the run folder (rank 0)."""
        if not self.context.is_main:
            return
        atomic_write_text(self.run_dir / CONFIG_FILE, yaml.safe_dump(to_dict(self.config), sort_keys=False))
        atomic_write_text(self.run_dir / CODE_VERSION_FILE, code_version() + "\n")

    # -- training

    def train_step(self, batch: TrainingBatch) -> tuple[StepResult, NetworkOutput | HandHeatmaps | None]:
        """Forward, loss, non-finite check, backward and optimiser step for one batch.

        The loss is a sum of parts: the supervised hand and object terms, then each optional
        objective's (SemiHand's consistency and pseudo-label terms, DMA refinement, detection).
        """
        if self.stage != "full":
            return self._partial_step(batch)
        inputs = self._step_inputs(batch)
        outputs = self._forward(inputs)
        semihand = self._semihand_loss(inputs, outputs)
        parts = [self._supervised_loss(inputs, outputs, semihand), None if semihand is None else semihand.loss,
                 self._refinement_loss(inputs, outputs), self._detection_loss(batch, outputs),
                 self._side_loss(outputs)]
        total, terms = sum_losses([part for part in parts if part is not None], self.context.device)
        return self._optimise(total, terms, len(batch)), outputs.network

    def _train_mode(self) -> None:
        """Training mode, except for ``frozen_modules`` (BatchNorm on their running statistics)."""
        self.module.train()
        for module in self.frozen_modules:
            module.eval()

    def _module_named(self, name: str) -> nn.Module:
        try:
            return self.network.get_submodule(name)
        except AttributeError:
            raise ConfigError(f"frozen_modules: model '{self.model_config.name}' has no module '{name}' (dotted "
                              "names such as backbone.resnet.layer1)") from None

    def _step_inputs(self, batch: TrainingBatch) -> StepInputs:
        """The batch on the device with its targets, and what the optional objectives add to the forward:
        SemiHand's perturbed view (more rows) and the refinement closure."""
        device = self.context.device
        crop = to_device(batch.crop, device)
        targets, hand_box, object_box = build_hand_object_targets(
            crop, batch.object_loss.to(device), self.network.hand_decoder.hand_model, self.model_config.roi.output_size)
        refine, refinement_loss = (self.refinement.step(crop, targets, hand_box, object_box)
                                   if self.refinement is not None else (None, None))
        view = (self.semihand.perturbed_view(crop["image"], hand_box, object_box)
                if self.semihand is not None and self.semihand.uses_perturbed_view else None)
        negatives = max(1, round(self.config.side_negatives * len(batch))) if self.config.side_negatives > 0 else 0
        side_negatives = (SideNegatives.mirror(crop["image"][:negatives], hand_box[:negatives],
                                               object_box[:negatives]) if negatives else None)
        return StepInputs(crop=crop, targets=targets, hand_box=hand_box, object_box=object_box,
                          frame=batch.frame.to(device, non_blocking=True) if self.train_detection else None,
                          view=view, refine=refine, refinement_loss=refinement_loss, rows=len(batch),
                          side_negatives=side_negatives)

    def _forward(self, inputs: StepInputs) -> StepOutputs:
        """One forward over the crops (and the perturbed view's and the side negatives', split off
        again) and the frames."""
        crop, view, negatives = inputs.crop, inputs.view, inputs.side_negatives
        extra = [rows for rows in (view, negatives) if rows is not None]
        image = torch.cat([crop["image"], *(rows.image for rows in extra)])
        hand_in = torch.cat([inputs.hand_box, *(rows.hand_box for rows in extra)])
        object_in = torch.cat([inputs.object_box, *(rows.object_box for rows in extra)])
        self._train_mode()
        if self.frozen_first_stage:  # the first stage runs as at inference; only the refiner trains
            self.network.eval()
            self.network.refiner.train()
        autocast = (torch.autocast(self.context.device.type, dtype=self.autocast_dtype)
                    if self.autocast_dtype is not None else nullcontext())
        with autocast:
            output, detection, refined = self.module(image, hand_in, object_in, inputs.frame, inputs.refine)
        perturbed = negative_side_logit = None
        if view is not None:
            perturbed = float32_outputs(select_rows(output.hand, slice(inputs.rows, inputs.rows + len(view.image))))
        if negatives is not None:
            assert output.hand.side_logit is not None  # TrainConfig: side_negatives needs the side head
            negative_side_logit = output.hand.side_logit[-len(negatives.image):].float()
        if extra:
            first = slice(0, inputs.rows)
            output = replace(output, hand=select_rows(output.hand, first), object=select_rows(output.object, first))
        output32 = NetworkOutput(hand=float32_outputs(output.hand), object=float32_outputs(output.object))
        return StepOutputs(network=output, network32=output32, perturbed=perturbed, detection=detection,
                           refined=refined, negative_side_logit=negative_side_logit)

    def _semihand_loss(self, inputs: StepInputs, outputs: StepOutputs) -> Any:
        """SemiHand's terms (:meth:`SemiHandTraining.step_losses`), or None without SemiHand."""
        if self.semihand is None:
            return None
        hand, perturbed = outputs.network32.hand, outputs.perturbed
        return self.semihand.step_losses(
            inputs.crop, hand.joints2d, hand.joints3d, inputs.hand_box, inputs.view,
            None if perturbed is None else perturbed.joints2d, None if perturbed is None else perturbed.joints3d,
            mask_logits=hand.mask_logits, perturbed_mask_logits=None if perturbed is None else perturbed.mask_logits)

    def _supervised_loss(self, inputs: StepInputs, outputs: StepOutputs, semihand: Any) -> LossOutput:
        """The hand and object terms on labelled rows (pseudo-labelled rows are SemiHand's). A frozen
        first stage's terms are logged (its error on the training crops) but not trained."""
        targets = inputs.targets if semihand is None else drop_hand_supervision(inputs.targets, semihand.pseudo_rows)
        losses = hand_object_loss(outputs.network32.hand, outputs.network32.object, targets,
                                  self.config.loss.at_step(self.step))
        if self.frozen_first_stage:
            return LossOutput(total=torch.zeros((), device=self.context.device), terms=losses.terms)
        return losses

    def _refinement_loss(self, inputs: StepInputs, outputs: StepOutputs) -> LossOutput | None:
        if outputs.refined is not None:
            return inputs.refinement_loss(outputs.refined)
        if self.frozen_first_stage:  # no refinable crop: a zero loss on the refiner keeps backward uniform
            return LossOutput(total=sum(p.sum() for p in self.network.refiner.parameters()) * 0.0, terms={})
        return None

    def _detection_loss(self, batch: TrainingBatch, outputs: StepOutputs) -> LossOutput | None:
        if outputs.detection is None:
            return None
        return detection_loss(float32_outputs(outputs.detection), to_device(batch.detection, self.context.device),
                              self.config.loss)

    def _side_loss(self, outputs: StepOutputs) -> LossOutput | None:
        """The side head on the batch's crops (target 1) and their mirrored copies (target 0)."""
        if outputs.negative_side_logit is None:
            return None
        positive = outputs.network32.hand.side_logit
        assert positive is not None  # the negatives' logits come from the same head
        negative = outputs.negative_side_logit
        logits = torch.cat([positive, negative])
        targets = torch.cat([torch.ones_like(positive), torch.zeros_like(negative)])
        term = self.config.loss.weights.hand_side * hand_side_loss(logits, targets)
        accuracy = ((logits > 0) == (targets > 0.5)).float().mean()
        return LossOutput(total=term, terms={"hand_side": term.detach(), "side_accuracy": accuracy})

    def _partial_step(self, batch: TrainingBatch) -> tuple[StepResult, HandHeatmaps | None]:
        """A step of the "heatmaps" or "detector" stage (:attr:`TrainConfig.stage`)."""
        device = self.context.device
        self._train_mode()
        if self.stage == "heatmaps":
            crop = to_device(batch.crop, device)
            hand_box = safe_boxes(crop["hand_box"])
            has_hand2d = crop["has_hand_2d"] & crop["has_hand_box"] & valid_boxes(crop["hand_box"])
            targets = HandObjectTargets(joints2d=points_to_box_units(crop["joints_2d"], hand_box),
                                        has_hand2d=has_hand2d.float() * crop["weight"])
            output, _, _ = self.module(crop["image"], hand_box, hand_box, None)
            terms = hand_2d_losses(output.heatmaps.float(), output.joints2d.float(), targets, self.config.loss)
            total = torch.stack(list(terms.values())).sum()
            return self._optimise(total, {k: v.detach() for k, v in terms.items()}, len(batch)), output
        # The detector: a frozen shared backbone runs as at inference (BatchNorm on its running
        # statistics); the detector's own trunk trains with the head.
        self.network.eval()
        self.network.detection_head.train()
        if self.network.detector_trunk is not None:
            self.network.detector_trunk.train()
        _, detection, _ = self.module(None, None, None, batch.frame.to(device, non_blocking=True))
        return self._optimise(*sum_losses([self._detection_loss(batch, StepOutputs(detection=detection))], device),
                              len(batch)), None

    def _optimise(self, total: torch.Tensor, terms: dict[str, torch.Tensor], batch_size: int) -> StepResult:
        """Non-finite check, backward, clipping and the optimiser (and per-step schedule) step."""
        if not all_finite(total, self.context):
            bad = {k: float(v) for k, v in terms.items() if not math.isfinite(float(v))}
            kept = (f"the last good checkpoint {self.checkpoint_path} (step "
                    f"{_checkpoint_step(self.checkpoint_path)}) is kept" if self.checkpoint_path.is_file()
                    else "no checkpoint had been written yet")
            value = float(total.detach())
            raise NonFiniteLossError(f"loss is {value} at step {self.step + 1} (epoch {self.epoch}, batch "
                                     f"{self.batch_in_epoch}; non-finite terms {bad or 'on another rank'}); "
                                     f"training stopped and {kept}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.config.optimizer.grad_clip_norm > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.network.parameters(), self.config.optimizer.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.per_step_schedule:
            self.scheduler.step()
        return StepResult(total=float(total.detach()), terms={k: float(v) for k, v in terms.items()},
                          samples=batch_size * self.context.world_size)

    def _loader(self) -> DataLoader:
        self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
        self.dataset.set_epoch(self.epoch)
        workers = self.config.workers
        return DataLoader(self.dataset, batch_size=self.config.batch_size, sampler=self.sampler, drop_last=True,
                          num_workers=workers, collate_fn=collate_examples,
                          pin_memory=self.context.device.type == "cuda", persistent_workers=False,
                          # Own generator: creating the iterator must not consume the global RNG.
                          generator=torch.Generator().manual_seed(self.config.seed + self.epoch),
                          prefetch_factor=2 if workers else None)

    def fit(self, resume: bool = False) -> int:
        """Train to the configured length; returns the final step. ``resume`` continues from last.pt."""
        if resume:
            self.load_checkpoint(self.checkpoint_path)
        else:
            self.write_run_files()
        if self.finished:
            log.info("run %s already finished at step %d", self.run_dir, self.step)
            return self.step
        main = self.context.is_main
        if main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step)
        progress = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step", disable=not main)
        sums: dict[str, float] = defaultdict(float)
        window_steps, window_samples, window_start = 0, 0, time.perf_counter()
        try:
            while not self.finished:
                self._start_semihand_round()
                for batch in self._loader():
                    result, output = self.train_step(batch)
                    self.step += 1
                    self.batch_in_epoch += 1
                    progress.update(1)
                    for key, value in result.terms.items():
                        sums[key] += value
                    sums["total"] += result.total
                    window_steps += 1
                    window_samples += result.samples
                    if self.step % self.config.log_interval == 0 or self.finished:
                        elapsed = max(time.perf_counter() - window_start, 1e-9)
                        self._log_scalars({k: v / window_steps for k, v in sums.items()}, window_samples / elapsed)
                        progress.set_postfix(loss=f"{sums['total'] / window_steps:.4g}")
                        sums.clear()
                        window_steps, window_samples, window_start = 0, 0, time.perf_counter()
                    if self.config.image_interval and self.step % self.config.image_interval == 0:
                        self._log_images(batch, output)
                    if self.step % self.config.checkpoint_interval == 0 or self.finished:
                        self.save_checkpoint()
                    if self.finished:
                        break
                if self.batch_in_epoch >= self.sampler.batches_per_epoch():
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    if not self.per_step_schedule:
                        self.scheduler.step()
            self._sync_buffers()
        finally:
            progress.close()
            if self.writer is not None:
                self.writer.close()
                self.writer = None
        return self.step

    def _start_semihand_round(self) -> None:
        """Algorithm 1, lines 4 and 6: update and select the pseudo-labels when a round begins (or on resume)."""
        if self.semihand_rounds is None:
            return
        round_number = self.epoch // self.config.semihand.schedule.epochs_per_round + 1
        if round_number != self.semihand_rounds.round_number:
            summary = self.semihand_rounds.start_round(self.network, round_number, self.context.device)
            if self.writer is not None:
                self.writer.add_scalar("semihand/selected_fraction", summary.kept / max(summary.samples, 1), self.step)
                self.writer.add_scalar("semihand/mean_confidence", summary.mean_confidence, self.step)

    def _sync_buffers(self) -> None:
        """Give every replica rank 0's BatchNorm statistics (DDP syncs them only at the next forward), so
        all processes end with the checkpointed state."""
        if self.context.distributed:
            for buffer in self.network.buffers():
                dist.broadcast(buffer, src=0)

    def _log_scalars(self, means: dict[str, float], samples_per_s: float) -> None:
        if not self.context.is_main:
            return
        lr = self.optimizer.param_groups[0]["lr"]
        log.info("step %d epoch %d: loss %.5g, lr %.3g, %.2f samples/s", self.step, self.epoch, means["total"], lr,
                 samples_per_s)
        if self.writer is not None:
            for key, value in means.items():
                self.writer.add_scalar(f"loss/{key}", value, self.step)
            self.writer.add_scalar("train/lr", lr, self.step)
            self.writer.add_scalar("train/samples_per_s", samples_per_s, self.step)
            self.writer.add_scalar("train/epoch", self.epoch, self.step)

    def _log_images(self, batch: TrainingBatch, output: NetworkOutput | HandHeatmaps | None) -> None:
        if self.writer is None or output is None:  # the detector stage has no crop output
            return
        joints2d = output.joints2d if isinstance(output, HandHeatmaps) else output.hand.joints2d
        self.writer.add_image("train/crops_truth_vs_prediction", crop_grid(batch.crop, joints2d), self.step,
                              dataformats="HWC")


def _checkpoint_step(path: Path) -> str:
    try:
        return str(torch.load(path, map_location="cpu", weights_only=True)["step"])
    except Exception:  # a message helper: never mask the real error
        return "?"


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- command


def resolve_run_config(config_path: str | Path | None, overrides: Sequence[str], resume: bool,
                       out_dir: str | Path | None) -> tuple[TrainConfig, str]:
    """The run's config: from ``config_path`` + overrides, or on resume from the run folder's config.yaml.

    On resume a config given again must resolve to the saved one (other than the output folder).
    """
    overrides = list(overrides)
    if out_dir is not None:
        overrides.append(f"output_dir={Path(out_dir)}")
    if resume:
        if out_dir is None:
            if config_path is None:
                raise ConfigError("--resume needs the run folder (--out) or the config that names it")
            out_dir = load_config(TrainConfig, config_path, overrides).output_dir
        saved_path = Path(out_dir) / CONFIG_FILE
        if not saved_path.is_file():
            raise FileNotFoundError(f"--resume: '{saved_path}' not found; is '{out_dir}' a training run folder?")
        saved = load_config(TrainConfig, saved_path, [f"output_dir={Path(out_dir)}"])
        if config_path is not None:
            given = load_config(TrainConfig, config_path, overrides)
            differing = config_differences(to_dict(saved), to_dict(given))
            if differing:
                raise ConfigError(f"--resume: '{config_path}' differs from the run's saved config '{saved_path}' in "
                                  f"{', '.join(differing[:8])}; resume without --config or start a new --out")
        return saved, str(saved_path)
    if config_path is None:
        raise ConfigError("fit: a training config is needed (--config config/train/....yaml)")
    config = load_config(TrainConfig, config_path, overrides)
    if (Path(config.output_dir) / LAST_CHECKPOINT).exists():
        raise FileExistsError(f"'{config.output_dir}' already holds a training run; pass --resume to continue it "
                              "or choose another --out")
    return config, str(config_path)


def fit_main(config_path: str | Path | None, overrides: Sequence[str] = (), resume: bool = False,
             out_dir: str | Path | None = None) -> int:
    """``hoi-train fit``: train (or resume) under torchrun or as one process.

    Returns 0 when training finished and :data:`NON_FINITE_EXIT_CODE` when a non-finite
    loss stopped it (the message, naming the step and the kept checkpoint, is logged).
    """
    config, source = resolve_run_config(config_path, overrides, resume, out_dir)
    context = init_distributed(config.device)
    try:
        trainer = Trainer(config, context, source)
        try:
            step = trainer.fit(resume=resume)
        except NonFiniteLossError as exc:
            log.error("%s", exc)
            return NON_FINITE_EXIT_CODE
        if context.is_main:
            log.info("training finished at step %d; checkpoint %s", step, trainer.checkpoint_path)
    finally:
        if context.distributed and dist.is_initialized():
            dist.destroy_process_group()
    return 0

