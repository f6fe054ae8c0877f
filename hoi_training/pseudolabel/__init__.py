"""Semi-supervised pseudo-labels (Semi-Hand-Object section 5.1).

The trained model runs on unlabelled video with a test-time augmentation ensemble
(:mod:`.tta`); each sequence's predictions are checked against SHO's spatial and
temporal consistency constraints (:mod:`.constraints`, with the weak-perspective
camera of :mod:`.weak_perspective`), and optionally against a real-image teacher's 2D
joints (:mod:`.teacher`, MediaPipe Hands); a sharded, resumable runner (:mod:`.shards`)
spreads the work over torchrun ranks and writes the labels with a manifest.
"""

from hoi_training.pseudolabel.config import (
    DEFAULT_PSEUDOLABEL_CONFIG,
    PseudoLabelConfig,
    ShardingConfig,
    SourceConfig,
    load_pseudolabel_config,
)
from hoi_training.pseudolabel.constraints import (
    CONSTRAINTS,
    Constraint,
    ConstraintConfig,
    ConstraintScores,
    FilterResult,
    SequencePredictions,
    filter_sequence,
    sum_counts,
)
from hoi_training.pseudolabel.shards import (
    JobIdentity,
    JobReport,
    ManifestIncompleteError,
    RankInfo,
    Shard,
    UnitResult,
    WorkUnit,
    finalize_job,
    load_shard,
    plan_shards,
    rank_from_environment,
    run_pseudolabel_job,
    units_from_sequences,
)
from hoi_training.pseudolabel.teacher import TeacherConfig
from hoi_training.pseudolabel.tta import (
    HAND_OUTPUT_KINDS,
    Augmentation,
    OutputKind,
    TTAConfig,
    average_predictions,
    chordal_mean_rotations,
    predict_with_tta,
)
from hoi_training.pseudolabel.weak_perspective import WeakPerspectiveCamera, fit_weak_perspective

__all__ = [
    "CONSTRAINTS", "DEFAULT_PSEUDOLABEL_CONFIG", "HAND_OUTPUT_KINDS", "Augmentation", "Constraint",
    "ConstraintConfig", "ConstraintScores", "FilterResult", "JobIdentity", "JobReport", "ManifestIncompleteError",
    "OutputKind", "PseudoLabelConfig", "RankInfo", "SequencePredictions", "Shard", "ShardingConfig", "SourceConfig",
    "TTAConfig", "TeacherConfig", "UnitResult", "WeakPerspectiveCamera", "WorkUnit", "average_predictions",
    "chordal_mean_rotations",
    "filter_sequence", "finalize_job", "fit_weak_perspective", "load_pseudolabel_config", "load_shard",
    "plan_shards", "predict_with_tta", "rank_from_environment", "run_pseudolabel_job", "sum_counts",
    "units_from_sequences",
]
