"""What the estimator returns for one camera frame: tracked, filtered hands and objects.

:class:`FrameResult` is the typed boundary between the estimator and everything that
publishes or records (the ROS node, ``process-bag``, ``run``). Its hands and objects
are the temporal filters' outputs in the camera's optical frame; ``skipped`` says why a
frame produced nothing (bad input), in which case nothing from it may be published.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hoi_perception.models.results import HandResult, ObjectResult
from hoi_perception.pipeline.gates import GateMeasures
from hoi_perception.pipeline.tracking import Track, TrackingStateName
from hoi_perception.tracking import FilterState, ObjectFilterState

# Stage names of FrameResult.timings_ms, in processing order. "hand_model" is the MANO
# layer that turns the filtered pose and shape back into a mesh (the network's own MANO
# layer runs inside the network and is part of "network"). "palm_detection", "landmarks"
# and "mano_fit" are the MediaPipe front-end's (hand_frontend: mediapipe).
STAGES: tuple[str, ...] = ("palm_detection", "landmarks", "mano_fit", "detect", "crop", "network", "translation",
                           "pnp", "refine", "filter", "hand_model")


@dataclass
class HandEstimate:
    """One hand's per-frame estimate before gates and filter (camera frame, un-mirrored), from the
    network's crop or the MediaPipe front-end."""

    track: Track
    box: np.ndarray
    joints2d: np.ndarray
    joints_rel: np.ndarray
    vertices_rel: np.ndarray
    pose: np.ndarray
    betas: np.ndarray
    joint_confidence: np.ndarray
    translation: np.ndarray | None
    failure: str
    crop_index: int = -1
    # Refined minus coarse root-relative mesh (778, 3), added to the filtered hand's mesh.
    vertex_offsets: np.ndarray | None = None


@dataclass
class TrackedHand:
    """One hand after the temporal filter; ``filter_state`` says whether it was accepted, held or reset."""

    result: HandResult
    track_id: int
    filter_state: FilterState


@dataclass
class TrackedObject:
    """One object. ``filter_state`` is None when there was no pose to filter (PnP failed;
    ``result.success`` is then False with the reason)."""

    result: ObjectResult
    track_id: int
    filter_state: ObjectFilterState | None


@dataclass
class FrameResult:
    """Everything estimated from one frame.

    stamp: the input's stamp (s). tracking_state: "detecting" (the detector ran),
    "tracking" (boxes followed the previous frame) or "lost" (a track was lost; the
    detector runs next frame). frames_since_detection: 0 when detecting.
    timings_ms: milliseconds per stage that ran (see :data:`STAGES`). skipped: why the
    frame was not processed (bad input); hands and objects are then empty.
    """

    stamp: float
    hands: list[TrackedHand] = field(default_factory=list)
    objects: list[TrackedObject] = field(default_factory=list)
    tracking_state: TrackingStateName = "detecting"
    frames_since_detection: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    skipped: str | None = None
    # Hands estimated but refused by a plausibility gate: side -> reason (not in ``hands``).
    hand_failures: dict[str, str] = field(default_factory=dict)
    # What the gates measured per pose ("right", "left", "object"), for reports and threshold choice.
    gate_measures: dict[str, GateMeasures] = field(default_factory=dict)

    @property
    def total_ms(self) -> float:
        """Sum of the stage timings."""
        return float(sum(self.timings_ms.values()))
