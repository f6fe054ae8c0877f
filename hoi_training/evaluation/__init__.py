"""Evaluation: benchmark metrics for hands, objects and their interaction, reports and submissions.

* :mod:`.metrics` - hand (MPJPE, PA-MPJPE/MPVPE, F-score, PCK/AUC, acceleration) and
  object (ADD, ADD-S, ADD(-S)-0.1D, YCB-Video AUC, corner, rotation, translation,
  box IoU) metrics, as the official benchmark code computes them;
* :mod:`.interaction` - penetration depth and contact percentage;
* :mod:`.report` - typed per-frame records, :class:`EvaluationAccumulator` and
  :func:`write_report` (JSON + Markdown);
* :mod:`.ho3d_submission` - the HO-3D CodaLab ``pred.zip`` writer and reader.
"""

from hoi_training.evaluation.ho3d_submission import read_ho3d_submission, write_ho3d_submission
from hoi_training.evaluation.interaction import TriangleMesh, evaluate_interaction, summarize_interaction
from hoi_training.evaluation.report import (
    EvaluationAccumulator,
    EvaluationConfig,
    EvaluationFrame,
    FrameAnnotation,
    Hand3D,
    ObjectModel,
    ObjectPose,
    format_markdown,
    write_report,
)

__all__ = [
    "EvaluationAccumulator",
    "EvaluationConfig",
    "EvaluationFrame",
    "FrameAnnotation",
    "Hand3D",
    "ObjectModel",
    "ObjectPose",
    "TriangleMesh",
    "evaluate_interaction",
    "format_markdown",
    "read_ho3d_submission",
    "summarize_interaction",
    "write_ho3d_submission",
    "write_report",
]
