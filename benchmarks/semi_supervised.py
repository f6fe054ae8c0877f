"""Semi-supervised experiment (SHO table 4, SemiHand table 1) on synthetic domains, as one resumable script.

Labelled data is the synthetic ``lab`` domain; the unlabelled data are ``wild`` sequences
written as ROS 2 bags and pseudo-labelled *from the bags* by the supervised model; the
test set is held-out ``wild`` sequences drawn from another seed, scored with ground-truth
boxes. Rows (:data:`ROWS`): supervised only, then lab + pseudo-labels with no filtering,
without the spatial constraints, without the temporal (and shape) constraints, and with
all constraints. One pseudo-labelling job serves every row: the ablations re-filter its
stored predictions offline (:class:`~hoi_training.pseudolabel.dataset.PseudoLabelDataset`).
Pseudo-labelled samples never train the object terms (SHO equation 8, ``object_loss: false``).

A scale with ``semihand_rows: true`` adds SemiHand's components (:data:`SEMIHAND_ROWS`) on
top of "semi, no filtering": label correction and selection (the pseudo-label term of
eq. 6 with the eq. 7 update every round), the consistency losses (view consistency,
eq. 10), both, and both on the pseudo-labels that pass every SHO constraint. They are
fine-tunings by definition (SemiHand's Algorithm 1 starts from the model that made the
pseudo-labels), at a constant learning rate with one round per epoch.

Where each model starts (``initialization`` of the scale):

* ``scratch``: SHO's protocol (section 6.1): the supervised model and the semi-supervised
  ones are trained from scratch, the latter on the union of lab and pseudo-labels;
* ``supervised``: the semi-supervised rows fine-tune the supervised checkpoint;
* ``base_checkpoint``: a trained model (e.g. the released ``hfl_r18_synthetic.pt``) is the
  supervised model: it makes the pseudo-labels, and *every* row, "supervised only"
  included, is fine-tuned from it for the same number of steps (lab only, or lab +
  pseudo-labels), so no row is credited with extra training. This is what a CPU affords.

Stages (:data:`STAGES`), in order; each step is skipped when its output exists, so the
same command resumes an interrupted experiment::

    data         hoi-train synth: lab, wild (with --bag), wild_test
    supervised   hoi-train fit on lab
    pseudolabel  hoi-train pseudolabel --source bag on the wild bags (supervised or base model)
    semi         hoi-train fit on lab + pseudo-labels, one run per semi-supervised row
    evaluate     hoi-train eval of every model on wild_test (ground-truth boxes)
    report       results.json and results.md: the table, counts, seeds, commands, wall times

Output folder::

    OUT/experiment.json        scale and resolved settings (a rerun must match them)
    OUT/base_checkpoint.json   base_checkpoint scales: the base model's path and sha256 (a rerun must match)
    OUT/stages.json            per step: status, wall time, the equivalent hoi-train command
    OUT/data/{lab,wild,wild_test}/   synthetic datasets (wild/bags/: the unlabelled bags)
    OUT/configs/*.yaml         the resolved training and evaluation configs
    OUT/runs/<row>/            training runs (checkpoints/last.pt)
    OUT/pseudo/wild/           the pseudo-label job
    OUT/eval/<row>/metrics.json
    OUT/results.json, OUT/results.md

The report stage also draws ``OUT/results.png`` (each row's hand PA-MPJPE and how many
pseudo-labels it trained on); ``--publish STEM`` writes the three files to STEM.* as well.

    PYTHONPATH=. python benchmarks/semi_supervised.py --config experiments/semi_supervised.yaml \\
        --out runs/semi_supervised_smoke --scale smoke
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from benchmarks.experiment_runs import (
    RESULTS_STEM,
    STAGE_LOG_FILE,
    SplitSize,
    StageError,
    StageLog,
    TrainingLength,
    claim_output_folder,
    command_line,
    commands_section,
    evaluation_step,
    experiment_parser,
    repeated_flag,
    require,
    run_driver,
    run_stages,
    select_scale,
    shown,
    synthetic_data_step,
    synthetic_evaluation_config,
    training_step,
    write_report_files,
    write_resolved_config,
)
from hoi_perception.atomic import atomic_write_json
from hoi_perception.config import ConfigError, load_config, read_yaml, to_dict

log = logging.getLogger("semi_supervised")

STAGES = ("data", "supervised", "pseudolabel", "semi", "evaluate", "report")
BASE_CHECKPOINT_FILE = "base_checkpoint.json"
PSEUDO_SET = "pseudo_wild"
LAB_SET = "lab"


# ----------------------------------------------------------------------------- configuration


@dataclass
class Seeds:
    """Every seed of the experiment: the three synthetic splits and the training runs."""

    lab: int
    wild: int
    wild_test: int
    training: int

    def validate(self) -> None:
        if min(self.lab, self.wild, self.wild_test, self.training) < 0:
            raise ConfigError("seeds must be >= 0")
        if self.wild == self.wild_test:
            raise ConfigError(f"seeds.wild and seeds.wild_test are both {self.wild}: the test sequences would be the "
                              "unlabelled training sequences; give the test split another seed")


Initialization = Literal["scratch", "supervised", "base_checkpoint"]


@dataclass
class ScaleConfig:
    """Sizes and settings of one scale (smoke, cpu, full). Overrides are ``key=value`` strings applied to
    config/synth.yaml, the training config, config/pseudolabel.yaml and the evaluation config.

    initialization: where the models start (module docstring); ``base_checkpoint`` needs the
        ``base_checkpoint`` file (a training or released checkpoint of the training config's model)
        and one length for every row (``semi`` = ``supervised``, ended by ``max_steps``).
    semihand_rows: also train and report :data:`SEMIHAND_ROWS`.
    """

    lab: SplitSize
    wild: SplitSize
    wild_test: SplitSize
    train_config: str
    supervised: TrainingLength
    semi: TrainingLength
    initialization: Initialization = "scratch"
    base_checkpoint: Path | None = None
    semihand_rows: bool = False
    synth_overrides: list[str] = field(default_factory=list)
    train_overrides: list[str] = field(default_factory=list)
    pseudolabel_overrides: list[str] = field(default_factory=list)
    # Runtime (estimator) settings of the labelling job, e.g. detection thresholds for its model.
    pseudolabel_perception_overrides: list[str] = field(default_factory=list)
    evaluation_overrides: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.initialization != "base_checkpoint":
            if self.base_checkpoint is not None:
                raise ConfigError(f"base_checkpoint is only read with initialization: base_checkpoint (this scale "
                                  f"has initialization: {self.initialization}); remove it or change initialization")
            return
        if self.base_checkpoint is None:
            raise ConfigError("initialization: base_checkpoint needs base_checkpoint: the checkpoint every row is "
                              "fine-tuned from (e.g. hoi_training/checkpoints/hfl_r18_synthetic.pt)")
        if self.semi != self.supervised or self.supervised.max_steps == 0:
            raise ConfigError(f"initialization: base_checkpoint fine-tunes every row for the same number of steps: "
                              f"semi ({to_dict(self.semi)}) must equal supervised ({to_dict(self.supervised)}) "
                              "and set max_steps > 0")


@dataclass
class ExperimentConfig:
    """config/experiments/semi_supervised.yaml."""

    seeds: Seeds
    scales: dict[str, ScaleConfig]
    pseudo_dataset_weight: float = 1.0
    pseudo_sample_weight: Literal["one", "confidence"] = "one"

    def validate(self) -> None:
        if not self.scales:
            raise ConfigError("scales: expected at least one scale (e.g. smoke, full)")
        if not (math.isfinite(self.pseudo_dataset_weight) and self.pseudo_dataset_weight > 0):
            raise ConfigError(f"pseudo_dataset_weight must be a finite number > 0, got {self.pseudo_dataset_weight}")


# SemiHand components a row turns on (training-config overrides in Experiment.training_config).
CORRECTION_SELECTION = "correction_selection"  # pseudo-label term (eq. 6) with label correction and selection
CONSISTENCY = "consistency"  # view consistency (eq. 10) on every sample
SEMIHAND_SWITCHES: dict[str, tuple[str, ...]] = {
    CORRECTION_SELECTION: ("semihand.pseudo_labels.enabled=true", "semihand.label_correction.enabled=true",
                           "semihand.selection.enabled=true"),
    # The cross-modal term (eq. 11) needs a hand-mask output, which the released hfl_r18 has not.
    CONSISTENCY: ("semihand.view_consistency.enabled=true",),
}


@dataclass(frozen=True)
class Row:
    """One row of the table: a model, the pseudo-label filter it trains with (None: labelled data only) and
    the SemiHand components it adds (keys of :data:`SEMIHAND_SWITCHES`)."""

    name: str
    label: str
    pseudo_filter: str | None  # PseudoLabelDatasetConfig.filter
    semihand: tuple[str, ...] = ()

    @property
    def rounds(self) -> bool:
        """Whether the row runs SemiHand's pseudo-label rounds (Algorithm 1), one per epoch."""
        return CORRECTION_SELECTION in self.semihand


ROWS = (
    Row("supervised", "supervised only", None),
    Row("semi_no_filter", "semi, no filtering", "none"),
    Row("semi_no_spatial", "semi, w/o spatial constraints", "no_spatial"),
    Row("semi_no_temporal", "semi, w/o temporal constraints", "no_temporal"),
    Row("semi_all_constraints", "semi, all constraints", "all"),
)
SUPERVISED = ROWS[0]
SEMI_ROWS = ROWS[1:]
# SemiHand table 1 on top of "semi, no filtering" (same pseudo-labels), then with SHO's filter.
SEMIHAND_ROWS = (
    Row("semihand_correction_selection", "SemiHand: + label correction and selection", "none",
        (CORRECTION_SELECTION,)),
    Row("semihand_consistency", "SemiHand: + consistency losses", "none", (CONSISTENCY,)),
    Row("semihand_both", "SemiHand: + both", "none", (CORRECTION_SELECTION, CONSISTENCY)),
    Row("semihand_all_constraints", "SemiHand: both + spatial-temporal filter (all constraints)", "all",
        (CORRECTION_SELECTION, CONSISTENCY)),
)
ALL_ROWS = ROWS + SEMIHAND_ROWS
# Every step of the pipeline, in the order it runs (stages.json is written with sorted keys).
STEP_ORDER = ("data/lab", "data/wild", "data/wild_test", f"train/{SUPERVISED.name}", "pseudolabel",
              *(f"train/{row.name}" for row in ALL_ROWS[1:]), *(f"eval/{row.name}" for row in ALL_ROWS))


# ----------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class ExperimentLayout:
    """Where every stage reads and writes inside the output folder."""

    root: Path

    def data(self, split: str) -> Path:
        return self.root / "data" / split

    @property
    def wild_bags(self) -> Path:
        return self.data("wild") / "bags"

    @property
    def pseudo(self) -> Path:
        return self.root / "pseudo" / "wild"

    @property
    def base_checkpoint_record(self) -> Path:
        return self.root / BASE_CHECKPOINT_FILE

    def config_file(self, name: str) -> Path:
        return self.root / "configs" / f"{name}.yaml"

    def run(self, row: Row) -> Path:
        return self.root / "runs" / row.name

    def checkpoint(self, row: Row) -> Path:
        return self.run(row) / "checkpoints" / "last.pt"

    def evaluation(self, row: Row) -> Path:
        return self.root / "eval" / row.name

    def metrics(self, row: Row) -> Path:
        return self.evaluation(row) / "metrics.json"


# ----------------------------------------------------------------------------- the experiment


class Experiment:
    """The stages of one scale of the experiment in one output folder."""

    def __init__(self, config: ExperimentConfig, scale: str, out: str | Path, config_source: str,
                 publish: Path | None = None) -> None:
        self.scale = select_scale(config.scales, scale, config_source)
        self.publish = publish  # the report is also written to publish.json / .md / .png
        self.config = config
        self.scale_name = scale
        self.config_source = config_source
        self.out = Path(out)
        self.layout = ExperimentLayout(self.out.resolve())
        self.rows = ALL_ROWS if self.scale.semihand_rows else ROWS
        self.settings = {"scale": scale, "seeds": to_dict(config.seeds), "scale_config": to_dict(self.scale),
                         "pseudo_dataset_weight": config.pseudo_dataset_weight,
                         "pseudo_sample_weight": config.pseudo_sample_weight}
        claim_output_folder(self.layout.root, self.out, self.settings)
        self.log = StageLog(self.layout.root / STAGE_LOG_FILE, log)
        self._base_digest: str | None = None

    def run(self, stages: Sequence[str] = STAGES) -> dict[str, str]:
        """Run ``stages`` (in pipeline order, whatever order they are given in); returns step -> outcome."""
        run_stages(stages, {"data": self.generate_data, "supervised": self.train_supervised,
                            "pseudolabel": self.pseudolabel, "semi": self.train_semi, "evaluate": self.evaluate,
                            "report": self.write_report})
        return dict(self.log.this_run)

    # -- where the models start

    @property
    def from_base(self) -> bool:
        return self.scale.initialization == "base_checkpoint"

    @property
    def base_checkpoint(self) -> Path | None:
        """The scale's base checkpoint as an absolute path (relative paths: from the working directory)."""
        path = self.scale.base_checkpoint
        return None if path is None else path.expanduser().resolve()

    @property
    def pseudo_label_model(self) -> Path:
        """The checkpoint that makes the pseudo-labels: the base model, else the supervised run's."""
        return self.base_checkpoint if self.from_base else self.layout.checkpoint(SUPERVISED)

    def starts_from(self, row: Row) -> Literal["scratch", "supervised", "base_checkpoint"]:
        """Where ``row``'s training starts: SemiHand rows fine-tune the pseudo-labelling model (Algorithm 1)."""
        if self.from_base:
            return "base_checkpoint"
        if row is not SUPERVISED and (row.semihand or self.scale.initialization == "supervised"):
            return "supervised"
        return "scratch"

    def initial_weights(self, row: Row) -> Path | None:
        return {"scratch": None, "supervised": self.layout.checkpoint(SUPERVISED),
                "base_checkpoint": self.base_checkpoint}[self.starts_from(row)]

    def check_base_checkpoint(self, stage: str) -> Path:
        """The base checkpoint, checked to exist and to be the file that earlier stages in this folder used
        (its sha256 and training step are recorded in ``base_checkpoint.json`` on first use)."""
        path = self.base_checkpoint
        if path is None or not path.is_file():
            raise StageError(f"stage '{stage}' needs the base checkpoint '{path}' (scales.{self.scale_name}."
                             "base_checkpoint), which does not exist; release the model first (hoi-train release) "
                             "or point base_checkpoint at a checkpoint of the training config's model")
        if self._base_digest is None:
            self._base_digest = hashlib.sha256(path.read_bytes()).hexdigest()
        record = self.layout.base_checkpoint_record
        if record.is_file():
            saved = json.loads(record.read_text())
            if saved["sha256"] != self._base_digest:
                raise ConfigError(f"base checkpoint '{path}' (sha256 {self._base_digest[:12]}...) is not the file "
                                  f"that earlier stages in --out '{self.out}' used ('{saved['path']}', sha256 "
                                  f"{saved['sha256'][:12]}...); use another --out for the new base model")
        else:
            from hoi_perception.models.checkpoint import read_training_checkpoint

            step = read_training_checkpoint(path).get("step")
            atomic_write_json(record, {"path": str(path), "sha256": self._base_digest, "step": step})
        return path

    # -- data

    def generate_data(self) -> None:
        seeds = self.config.seeds
        for split, domain, size, seed, bags in (("lab", "lab", self.scale.lab, seeds.lab, False),
                                                ("wild", "wild", self.scale.wild, seeds.wild, True),
                                                ("wild_test", "wild", self.scale.wild_test, seeds.wild_test, False)):
            synthetic_data_step(self.log, f"data/{split}", self.layout.data(split), size, seed, domain,
                                self.scale.synth_overrides, bags=bags)

    # -- training

    def training_config(self, row: Row) -> Path:
        """Write the row's resolved training config (validated) and return its path.

        SemiHand rows with pseudo-label rounds run one round per epoch at the run's constant learning
        rate and batch size; with ``max_steps`` the round count is the number of epochs that ``max_steps``
        spans, so they train as many steps as every other row. At ``base_checkpoint`` scales every row
        must train exactly ``max_steps`` steps; a row whose epochs end earlier is refused.
        """
        from hoi_training.train_config import TrainConfig

        layout, scale = self.layout, self.scale
        datasets: dict[str, Any] = {LAB_SET: {"kind": "synthetic", "config": {"root": str(layout.data("lab"))},
                                              "weight": 1.0, "object_loss": True}}
        overrides = [f"seed={self.config.seeds.training}", f"output_dir={layout.run(row)}"]
        length = scale.supervised if row is SUPERVISED else scale.semi
        if row.pseudo_filter is not None:
            datasets[PSEUDO_SET] = {"kind": "pseudo", "object_loss": False, "weight": self.config.pseudo_dataset_weight,
                                    "config": {"root": str(layout.pseudo), "filter": row.pseudo_filter,
                                               "weight": self.config.pseudo_sample_weight}}
        start = self.initial_weights(row)
        if start is not None:
            overrides.append(f"init_checkpoint={start}")
        overrides += [f"epochs={length.epochs}", f"max_steps={length.max_steps}", *scale.train_overrides]
        data = read_yaml(scale.train_config)
        data["datasets"] = datasets
        plain = load_config(TrainConfig, data, overrides)  # the row without its SemiHand switches
        if scale.semihand_rows and plain.optimizer.lr_decay != 1.0:
            raise ConfigError(f"scale '{self.scale_name}' has semihand_rows, which train at a constant learning rate "
                              f"(one SemiHand round per epoch replaces the step schedule), but its training config "
                              f"decays it (optimizer.lr_decay {plain.optimizer.lr_decay}); add optimizer.lr_decay=1.0 "
                              "to train_overrides so every row shares one schedule")
        switches = [switch for component in row.semihand for switch in SEMIHAND_SWITCHES[component]]
        per_epoch = batches_per_epoch(plain) if row.rounds or self.from_base else None
        if row.rounds:
            rounds = math.ceil(length.max_steps / per_epoch) if length.max_steps else length.epochs
            schedule = {"rounds": rounds, "epochs_per_round": 1, "learning_rate": plain.optimizer.lr,
                        "batch_size": plain.batch_size, "lr_drop_factor": 1.0}
            switches += [f"epochs={rounds}", *(f"semihand.schedule.{key}={value}" for key, value in schedule.items())]
        config = load_config(TrainConfig, data, overrides + switches)
        if self.from_base and per_epoch * config.epochs < length.max_steps:
            raise ConfigError(f"{row.name}: {per_epoch} batches per epoch x {config.epochs} epochs end before "
                              f"max_steps ({length.max_steps}); every row of scale '{self.scale_name}' must train "
                              f"exactly max_steps steps: raise the scale's epochs")
        return write_resolved_config(layout.config_file(f"train_{row.name}"), config,
                                     f"{row.label}: written by benchmarks/semi_supervised.py (scale {self.scale_name})")

    def _train(self, row: Row) -> None:
        training_step(self.log, f"train/{row.name}", self.training_config(row), self.layout.run(row),
                      self.layout.checkpoint(row))

    def _require_initial_weights(self, rows: Iterable[Row], stage: str) -> None:
        kinds = {self.starts_from(row) for row in rows}
        if "base_checkpoint" in kinds:
            self.check_base_checkpoint(stage)
        if "supervised" in kinds:
            require(self.layout.checkpoint(SUPERVISED), stage, "supervised")

    def train_supervised(self) -> None:
        require(self.layout.data("lab") / "manifest.json", "supervised", "data")
        self._require_initial_weights([SUPERVISED], "supervised")
        self._train(SUPERVISED)

    def pseudo_label_counts(self) -> dict[str, int]:
        """Frames each filter setting of the scale's rows keeps from the pseudo-label job (re-filtered offline)."""
        from hoi_training.pseudolabel.dataset import PseudoLabelDataset, PseudoLabelDatasetConfig

        filters = dict.fromkeys(row.pseudo_filter for row in self.rows if row.pseudo_filter is not None)
        return {name: len(PseudoLabelDataset(PseudoLabelDatasetConfig(root=self.layout.pseudo, filter=name)))
                for name in filters}

    def train_semi(self) -> None:
        require(self.layout.pseudo / "manifest.json", "semi", "pseudolabel")
        semi_rows = self.rows[1:]
        self._require_initial_weights(semi_rows, "semi")
        counts = self.pseudo_label_counts()
        for row in semi_rows:
            if counts[row.pseudo_filter] == 0:
                log.warning("%s: filter '%s' keeps no pseudo-label; the row is not trained", row.name,
                            row.pseudo_filter)
                self.log.note(f"train/{row.name}", "not trained",
                              f"filter '{row.pseudo_filter}' keeps no pseudo-label")
                continue
            self._train(row)

    # -- pseudo-labelling

    def pseudolabel(self) -> None:
        from hoi_training.pseudolabel.pipeline import pseudolabel_main

        bags, out = self.layout.wild_bags, self.layout.pseudo
        if self.from_base:
            self.check_base_checkpoint("pseudolabel")
        else:
            require(self.pseudo_label_model, "pseudolabel", "supervised")
        checkpoint = self.pseudo_label_model
        require(bags, "pseudolabel", "data")
        overrides, runtime = self.scale.pseudolabel_overrides, self.scale.pseudolabel_perception_overrides
        command = command_line("hoi-train", "pseudolabel", "--checkpoint", checkpoint, "--source", "bag", "--input",
                               bags, "--out", out, *repeated_flag("--set", overrides),
                               *repeated_flag("--perception-set", runtime))

        def work() -> None:
            if pseudolabel_main(checkpoint, "bag", bags, out, None, overrides, None, runtime) != 0:
                raise StageError(f"pseudolabel: the job in {out} did not finish (its manifest and shard sidecars "
                                 "name the failed shards and why); rerun to retry them")

        def finished() -> bool:
            manifest = out / "manifest.json"
            return manifest.is_file() and bool(json.loads(manifest.read_text())["complete"])

        self.log.run("pseudolabel", command, finished, work)

    # -- evaluation

    def evaluation_config(self) -> Path:
        """Write the resolved evaluation config (wild_test, ground-truth boxes) and return its path."""
        return synthetic_evaluation_config(self.layout.config_file("eval_wild_test"), self.layout.data("wild_test"),
                                           self.scale.evaluation_overrides)

    def evaluate(self) -> None:
        require(self.layout.data("wild_test") / "manifest.json", "evaluate", "data")
        config_path = self.evaluation_config()
        for row in self.rows:
            checkpoint = self.layout.checkpoint(row)
            if not (self.log.done(f"train/{row.name}") and checkpoint.is_file()):
                log.info("eval/%s: no finished model, skipped", row.name)
                continue
            evaluation_step(self.log, f"eval/{row.name}", checkpoint, config_path, self.layout.evaluation(row),
                            self.layout.metrics(row))

    # -- report

    def write_report(self) -> dict[str, Any]:
        """Gather every row's numbers into ``results.json`` and ``results.md``; returns the JSON content."""
        from hoi_training.pseudolabel.dataset import read_manifest

        layout = self.layout
        require(layout.pseudo / "manifest.json", "report", "pseudolabel")
        counts = self.pseudo_label_counts()
        rows = []
        for row in self.rows:
            entry: dict[str, Any] = {"name": row.name, "label": row.label, "pseudo_filter": row.pseudo_filter,
                                     "semihand": list(row.semihand), "starts_from": self.starts_from(row),
                                     "pseudo_labels": 0 if row.pseudo_filter is None else counts[row.pseudo_filter],
                                     "trained": self.log.done(f"train/{row.name}"), "metrics": None}
            entry["rounds"] = self.semihand_rounds(row)
            if layout.metrics(row).is_file():
                entry["metrics"] = table_metrics(json.loads(layout.metrics(row).read_text()))
            rows.append(entry)
        job = read_manifest(layout.pseudo)
        base = (json.loads(layout.base_checkpoint_record.read_text()) if layout.base_checkpoint_record.is_file()
                else None)
        results = {
            "scale": self.scale_name,
            "config": self.config_source,
            "seeds": to_dict(self.config.seeds),
            "initialization": self.scale.initialization,
            "base_checkpoint": base,
            "pseudo_dataset_weight": self.config.pseudo_dataset_weight,
            "pseudo_sample_weight": self.config.pseudo_sample_weight,
            "scale_config": to_dict(self.scale),
            "pseudo_label_job": job["counts"],
            "rows": rows,
            "comparison": compare_rows(rows),
            "steps": self.log.entries,
        }
        written = [layout.root / RESULTS_STEM] + ([] if self.publish is None else [self.publish])
        write_report_files(written, results, lambda image: format_results(results, self.out, image), plot_results)
        log.info("wrote %s", ", ".join(f"{stem}.json, .md and .png" for stem in written))
        self.log.this_run["report"] = "ran"
        return results

    def semihand_rounds(self, row: Row) -> int | None:
        """The pseudo-label rounds of a trained SemiHand row (from its resolved config); None otherwise."""
        path = self.layout.config_file(f"train_{row.name}")
        if not row.rounds or not self.log.done(f"train/{row.name}") or not path.is_file():
            return None
        return int(read_yaml(path)["semihand"]["schedule"]["rounds"])


def batches_per_epoch(config: Any) -> int:
    """Optimiser steps per epoch of a resolved TrainConfig on one process, counted as the trainer's sampler
    counts them (dataset weights, last partial batch dropped)."""
    from hoi_training.data.registry import open_dataset
    from hoi_training.training.distributed import EpochSampler

    sizes = {name: len(open_dataset(entry.kind, entry.dataset_config())) for name, entry in config.datasets.items()}
    empty = [name for name, size in sizes.items() if size == 0]
    if empty:
        raise StageError(f"training datasets {empty} hold no samples")
    return EpochSampler(list(sizes.values()), [entry.weight for entry in config.datasets.values()],
                        config.batch_size).batches_per_epoch()


# ----------------------------------------------------------------------------- results


# Table columns: (key in table_metrics, header, lower is better).
COLUMNS = (
    ("pa_mpjpe_mm", "PA-MPJPE mm", True),
    ("pa_mpvpe_mm", "PA-MPVPE mm", True),
    ("pa_f_score_5mm_pct", "F@5 % (PA)", False),
    ("pa_f_score_15mm_pct", "F@15 % (PA)", False),
    ("f_score_5mm_pct", "F@5 % (camera)", False),
    ("f_score_15mm_pct", "F@15 % (camera)", False),
    ("add_adds_0.1d_pct", "ADD(-S)-0.1D %", False),
)


def table_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one ``hoi-train eval`` summary that the table shows."""
    hand, obj = summary["hand"], summary["object"]
    return {
        "pa_mpjpe_mm": hand.get("pa_mpjpe_mm"),
        "pa_mpvpe_mm": hand.get("pa_mpvpe_mm"),
        "pa_f_score_5mm_pct": hand.get("pa_f_score_5mm_pct"),
        "pa_f_score_15mm_pct": hand.get("pa_f_score_15mm_pct"),
        "f_score_5mm_pct": hand.get("f_score_5mm_pct"),
        "f_score_15mm_pct": hand.get("f_score_15mm_pct"),
        "add_adds_0.1d_pct": obj.get("add_adds_0.1d_pct"),
        "hand_frames_labelled": hand.get("frames_labelled"),
        "hand_frames_evaluated": hand.get("frames_evaluated"),
        "hand_root_relative_frames_evaluated": hand.get("root_relative_frames_evaluated"),
        "object_frames_labelled": obj.get("frames_labelled"),
        "object_missing_predictions": obj.get("missing_predictions"),
    }


def compare_rows(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """SHO's claim on the target domain: all constraints has a lower PA-MPJPE than supervised only and than
    no filtering; and, where SemiHand rows ran, each one's PA-MPJPE minus that of "semi, no filtering" (the
    same pseudo-labels without SemiHand's components). Each comparison is None when one of its rows has no
    number."""
    by_name = {r["name"]: r for r in rows}

    def error(name: str) -> float | None:
        metrics = by_name[name]["metrics"]
        return None if metrics is None else metrics["pa_mpjpe_mm"]

    def minus(name: str, other: str) -> float | None:
        value, reference = error(name), error(other)
        return None if value is None or reference is None else value - reference

    out: dict[str, Any] = {}
    for other in ("supervised", "semi_no_filter"):
        out[f"all_constraints_minus_{other}_pa_mpjpe_mm"] = minus("semi_all_constraints", other)
    deltas = [out[f"all_constraints_minus_{other}_pa_mpjpe_mm"] for other in ("supervised", "semi_no_filter")]
    out["target_met"] = None if any(d is None for d in deltas) else all(d < 0 for d in deltas)
    semihand = [r["name"] for r in rows if r["semihand"]]
    if semihand:
        out["semihand_minus_semi_no_filter_pa_mpjpe_mm"] = {name: minus(name, "semi_no_filter") for name in semihand}
    return out


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _initialization_text(results: dict[str, Any]) -> str:
    kind = results["initialization"]
    if kind == "scratch":
        return "Semi-supervised models: trained from scratch on lab + pseudo-labels (SHO's protocol)"
    if kind == "supervised":
        return "Semi-supervised models: fine-tuned from the supervised checkpoint on lab + pseudo-labels"
    base = results["base_checkpoint"] or {"path": results["scale_config"]["base_checkpoint"], "sha256": "not read"}
    return (f"Every model, supervised only included, is fine-tuned from the base checkpoint "
            f"`{shown(Path(base['path']))}` (sha256 "
            f"{base['sha256'][:12]}), which also made the pseudo-labels, for the same number of steps "
            f"({results['scale_config']['semi']['max_steps']}): supervised only on lab, the others on lab + "
            "pseudo-labels, so no row is credited with extra training")


def plot_results(results: Mapping[str, Any]) -> Any:
    """Figure of the table's key columns: each row's hand PA-MPJPE (dots: the differences are a few mm,
    which bars from zero would hide) beside the pseudo-labels it trained on."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    labels = [row["label"] for row in rows]
    errors = [np.nan if row["metrics"] is None or row["metrics"]["pa_mpjpe_mm"] is None
              else row["metrics"]["pa_mpjpe_mm"] for row in rows]
    y = np.arange(len(rows))
    figure, (error_axis, count_axis) = plt.subplots(1, 2, figsize=(11, 1.6 + 0.42 * len(rows)), sharey=True,
                                                    gridspec_kw={"width_ratios": [3, 2]})
    error_axis.plot(errors, y, "o", color="tab:blue")
    for position, value in zip(y, errors):
        error_axis.annotate("not trained" if np.isnan(value) else f"{value:.2f}",
                            (np.nanmin(errors) if np.isnan(value) else value, position),
                            textcoords="offset points", xytext=(6, -3), fontsize=8)
    supervised = next((e for row, e in zip(rows, errors) if row["name"] == "supervised"), np.nan)
    if not np.isnan(supervised):
        error_axis.axvline(supervised, color="gray", linestyle="--", linewidth=1, label="supervised only")
        error_axis.legend(loc="lower right", fontsize=8)
    error_axis.set_xlabel("hand PA-MPJPE on the wild test set (mm, lower is better)")
    error_axis.set_yticks(y, labels, fontsize=8)
    error_axis.invert_yaxis()
    error_axis.grid(axis="x", alpha=0.3)
    count_axis.barh(y, [row["pseudo_labels"] for row in rows], color="tab:orange")
    count_axis.set_xlabel("pseudo-labels trained on")
    count_axis.grid(axis="x", alpha=0.3)
    figure.suptitle(f"Semi-supervised experiment, {results['scale']} scale")
    figure.tight_layout()
    return figure


def format_results(results: dict[str, Any], out: Path, image: str | None = None) -> str:
    """Markdown: the table (and ``image``, its plot, when given), the pseudo-label job, the comparison,
    seeds, settings, commands, wall times."""
    scale = results["scale"]
    lines = [f"# Semi-supervised experiment ({scale} scale)", ""]
    if scale == "smoke":
        lines += ["**Smoke run**: tiny images and network, tens of training steps. It proves that the stages run and "
                  "connect; the models are far from converged, so the numbers say nothing about the method.", ""]
    lines += ["Labelled: synthetic `lab` domain. Unlabelled: synthetic `wild` bags, pseudo-labelled from the bags by "
              "the supervised model. Test: held-out `wild` sequences (seed "
              f"{results['seeds']['wild_test']}), ground-truth boxes. " + _initialization_text(results)
              + "; object terms masked on pseudo-labelled samples.", ""]
    if any(row["semihand"] for row in results["rows"]):
        lines += ["SemiHand rows add SemiHand's components to \"semi, no filtering\" (the same pseudo-labels): label "
                  "correction and selection (the pseudo-label term of eq. 6, labels updated by eq. 7 and selected by "
                  "confidence, eq. 8, at the start of every round), the consistency losses (view consistency, eq. 10; "
                  "the cross-modal term needs a hand-mask output, which this network has not), both, and both on "
                  "the pseudo-labels that pass every SHO constraint. They fine-tune the model that made the "
                  "pseudo-labels (Algorithm 1), one round per epoch, at the same constant learning rate as the "
                  "other rows (SemiHand's x0.1 drop at the middle round is off so that every row shares one "
                  "schedule).", ""]
    header = ["model", "pseudo-labels"] + [c[1] for c in COLUMNS] + ["hand frames scored"]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in results["rows"]:
        metrics = row["metrics"]
        if metrics is None:
            if row["trained"]:
                reason = "not evaluated"
            elif row["pseudo_filter"] is not None and row["pseudo_labels"] == 0:
                reason = "not trained: no pseudo-label kept"
            else:
                reason = "not trained"
            cells = [reason] + [""] * (len(COLUMNS))
        else:
            cells = [_number(metrics[key]) for key, _, _ in COLUMNS]
            cells.append(f"{metrics['hand_root_relative_frames_evaluated']} / {metrics['hand_frames_evaluated']} / "
                         f"{metrics['hand_frames_labelled']}")
        lines.append(f"| {row['label']} | {row['pseudo_labels']} | " + " | ".join(cells) + " |")
    if image is not None:
        lines += ["", f"![PA-MPJPE and pseudo-labels per row]({image})"]
    lines += ["", "PA: after Procrustes alignment (SHO's table-4 convention, HO-3D's aligned F-scores); camera: "
              "unaligned, camera-frame meshes with the fitted wrist translation. ADD(-S)-0.1D: object model points "
              "within 10% of the diameter (ADD-S for symmetric objects), pose from PnP on the predicted votes. Hand "
              "frames scored: PA / camera / labelled. A frame whose wrist translation fit failed still counts for "
              "the PA metrics (they need only the wrist-relative hand) but not for the camera ones, so the two "
              "kinds of means can average over different frames.", ""]
    comparison = results["comparison"]
    verdict = {True: "met", False: "not met", None: "undecided (a row has no number)"}[comparison["target_met"]]
    lines += ["## Target", "",
              "All constraints should have a lower hand PA-MPJPE than supervised only and than no filtering "
              f"(SHO table 4): **{verdict}**. Differences (all constraints minus the other row, mm): supervised "
              f"{_number(comparison['all_constraints_minus_supervised_pa_mpjpe_mm'])}, no filtering "
              f"{_number(comparison['all_constraints_minus_semi_no_filter_pa_mpjpe_mm'])}.", ""]
    semihand = comparison.get("semihand_minus_semi_no_filter_pa_mpjpe_mm")
    if semihand:
        labels = {row["name"]: row["label"] for row in results["rows"]}
        lines += ["SemiHand rows minus \"semi, no filtering\", PA-MPJPE mm (negative: the components help): "
                  + ", ".join(f"{labels[name].removeprefix('SemiHand: ')} {_number(delta)}"
                              for name, delta in semihand.items()) + ".", ""]
    job = results["pseudo_label_job"]
    lines += ["## Pseudo-label job", "",
              f"{job.get('source_frames', 0)} bag frames, {job.get('frames', 0)} with a hand, "
              f"{job.get('kept', 0)} kept by the job (all constraints). Rejections per constraint (a frame may fail "
              "several): " + ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in sorted(job.items())
                                       if k.startswith("rejected_by.")) + ".", ""]
    seeds = results["seeds"]
    cfg = results["scale_config"]
    lines += ["## Settings", "",
              f"- Config: `{results['config']}`, scale `{scale}`.",
              f"- Seeds: lab {seeds['lab']}, wild {seeds['wild']}, wild_test {seeds['wild_test']}, "
              f"training {seeds['training']}.",
              "- Data (sequences x frames): " + ", ".join(f"{split} {cfg[split]['sequences']} x {cfg[split]['frames']}"
                                                          for split in ("lab", "wild", "wild_test"))
              + (f"; synth overrides {' '.join(cfg['synth_overrides'])}" if cfg["synth_overrides"] else "") + ".",
              f"- Initialization: `{results['initialization']}`"
              + (f" (`{cfg['base_checkpoint']}`, trained for {_count(results['base_checkpoint'].get('step'))} "
                 "steps)" if results["base_checkpoint"] else "") + ".",
              f"- Training: `{cfg['train_config']}` {' '.join(cfg['train_overrides'])}; supervised "
              f"{_length(cfg['supervised'])}, semi-supervised {_length(cfg['semi'])}; pseudo-label set weight "
              f"{results['pseudo_dataset_weight']}, sample weight `{results['pseudo_sample_weight']}`.",
              *(["- SemiHand rounds (one per epoch, within the step budget): " + ", ".join(
                  f"{row['name']} {row['rounds']}" for row in results["rows"] if row["rounds"] is not None) + "."]
                if any(row["rounds"] is not None for row in results["rows"]) else []),
              "- Pseudo-labelling overrides: " + (" ".join(cfg["pseudolabel_overrides"]) or "none") + "; runtime "
              "(estimator) overrides: " + (" ".join(cfg.get("pseudolabel_perception_overrides", [])) or "none") + ".",
              "- Evaluation overrides: " + (" ".join(cfg["evaluation_overrides"]) or "none") + ".", ""]
    lines += commands_section("benchmarks/semi_supervised.py", results, out, STEP_ORDER,
                              "Each step and its equivalent `hoi-train` command (paths relative to the folder the "
                              "script ran from), with its wall time (n/a: finished by an earlier invocation that did "
                              "not record it):",
                              lambda entry: f"`{entry.get('command') or entry.get('reason', '')}`")
    return "\n".join(lines) + "\n"


def _count(value: int | None) -> str:
    return "n/a" if value is None else str(value)


def _length(length: dict[str, int]) -> str:
    if length["max_steps"]:
        return f"{length['max_steps']} steps (epoch cap {length['epochs']})"
    return f"{length['epochs']} epochs"


# ----------------------------------------------------------------------------- command line


def load_experiment_config(path: str | Path) -> ExperimentConfig:
    return load_config(ExperimentConfig, path)


def build_parser() -> argparse.ArgumentParser:
    parser = experiment_parser(__doc__.split("\n\n")[0], "experiments/semi_supervised.yaml",
                               "a scale of the config: smoke (plumbing, minutes), cpu / cpu_r18 (fine-tune a released "
                               "model, ~35 min on 2 cores) or full (GPU)", STAGES)
    parser.add_argument("--training-seed", type=int, default=None,
                        help="seeds.training of every row (default: the config's); one --out per seed, so a "
                             "difference between rows can be told from the spread over seeds")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> dict[str, str]:
        config = load_experiment_config(args.config)
        if args.training_seed is not None:
            config.seeds.training = args.training_seed
        return Experiment(config, args.scale, args.out, str(args.config), args.publish).run(args.stages)

    return run_driver(log, run)


if __name__ == "__main__":
    sys.exit(main())
