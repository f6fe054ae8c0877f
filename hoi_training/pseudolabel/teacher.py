"""A real-image teacher for pseudo-labels: MediaPipe Hands' 2D landmarks on the full frame.

SHO's constraints ask a prediction to agree with itself, with its box, with anatomy and
with its neighbours in time; a network that is consistently wrong on real hands passes
them. The teacher is a second opinion from models trained on real hands: the runtime's
MediaPipe front-end (:mod:`hoi_perception.frontends.mediapipe_hands`, settings from
``estimator.mediapipe`` of perception.yaml) runs on each labelled frame, the hand whose
landmark box overlaps the pseudo-label's hand box most (IoU >= ``min_box_iou``) is the
match, and its 21 image landmarks, put into the project's HO-3D joint order, are stored
with the row (:data:`TEACHER_ARRAYS`) for the ``teacher_2d`` constraint
(:mod:`hoi_training.pseudolabel.constraints`) to score the pseudo-label's 2D joints against.

Every frame is judged on its own: the front-end's tracking is reset before each frame
(MediaPipe's static-image mode), so the teacher's answer does not depend on the frames
before it, on the source's stride or on where a sequence was cut into work units.

What it cannot do: it checks the 2D joints only (depth, the 3D pose, the MANO shape and the
object are left to the other constraints); a frame whose hand MediaPipe's palm detector
does not find (or finds only away from the hand box) has no teacher hand and cannot be
confirmed, so ``teacher_2d`` rejects it; the match is by box, not by side (MediaPipe's side
is the less reliable output); and the teacher's own landmark error sets how tight its
threshold can be.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from hoi_perception.config import ConfigError
from hoi_perception.frontends.mediapipe_hands import (
    HandLandmarks,
    MediaPipeHands,
    MediaPipeHandsConfig,
    create_mediapipe_hands,
)
from hoi_perception.geometry.camera import box_iou
from hoi_perception.hand_model.joint_orders import NUM_HAND_JOINTS, simple_to_ho3d

TEACHER_KINDS: tuple[str, ...] = ("none", "mediapipe")
TEACHER_JOINTS = "teacher_joints_2d"
# The shard arrays a job with a teacher adds to every row.
TEACHER_ARRAYS: dict[str, str] = {
    TEACHER_JOINTS: "(21, 2) the teacher's image landmarks, HO-3D order, image pixels (NaN: no matching hand)",
    "teacher_box_iou": "IoU of the best-overlapping teacher hand's landmark box with hand_boxes (NaN: no hand found)",
}


@dataclass
class TeacherConfig:
    """The real-image teacher of a pseudo-labelling job (``teacher:`` in pseudolabel.yaml).

    kind: ``none`` or ``mediapipe`` (``hoi-train pseudolabel --teacher mediapipe``). The
        front-end's own settings (model folder, palm score, presence) are the runtime's:
        ``estimator.mediapipe`` of perception.yaml. The threshold on the distance is
        ``constraints.max_teacher_2d_distance``.
    min_box_iou: the teacher's hand whose landmark box overlaps the pseudo-label's hand box
        most is its match when that IoU is at least this. The landmark box is tighter than a
        detector's hand box, so the IoU of a correct match stays well below 1 (0.5-0.7 on the
        synthetic check, benchmarks/results/pseudolabel_teacher.md; boxes that missed the
        hand: 0.1-0.2).
    """

    kind: Literal["none", "mediapipe"] = "none"
    min_box_iou: float = 0.3

    def validate(self) -> None:
        if self.kind not in TEACHER_KINDS:
            raise ConfigError(f"teacher.kind: expected one of {list(TEACHER_KINDS)}, got {self.kind!r}")
        if not (0.0 < self.min_box_iou <= 1.0):
            raise ConfigError(f"teacher.min_box_iou: expected a value in (0, 1], got {self.min_box_iou}")

    @property
    def enabled(self) -> bool:
        return self.kind != "none"


def match_hand(hands: Sequence[HandLandmarks], hand_box: np.ndarray,
               min_box_iou: float) -> tuple[HandLandmarks | None, float]:
    """The hand whose landmark box overlaps ``hand_box`` most, if that IoU >= ``min_box_iou``
    (else None), and that best IoU (NaN when there is no hand)."""
    if not hands:
        return None, math.nan
    overlaps = [box_iou(hand.box, hand_box) for hand in hands]
    best = int(np.argmax(overlaps))
    return (hands[best] if overlaps[best] >= min_box_iou else None), float(overlaps[best])


class MediaPipeTeacher:
    """MediaPipe Hands as the pseudo-labels' teacher, one frame at a time."""

    def __init__(self, frontend: MediaPipeHands, config: TeacherConfig) -> None:
        config.validate()
        self.frontend = frontend
        self.min_box_iou = config.min_box_iou

    def joints_for(self, image: np.ndarray, hand_box: np.ndarray) -> tuple[np.ndarray, float]:
        """The matching hand's (21, 2) image landmarks in HO-3D order (NaN when none matches) in an
        RGB uint8 frame, and the best IoU (see :func:`match_hand`)."""
        self.frontend.reset()  # static-image mode: no track carried from the previous frame
        hand, iou = match_hand(self.frontend.process(image).hands, np.asarray(hand_box, dtype=np.float64),
                               self.min_box_iou)
        if hand is None:
            return np.full((NUM_HAND_JOINTS, 2), np.nan), iou
        return simple_to_ho3d(hand.image_landmarks[:, :2]), iou


def teacher_arrays(rows: Sequence[tuple[np.ndarray, float]]) -> dict[str, np.ndarray]:
    """:data:`TEACHER_ARRAYS` of a unit from its :meth:`MediaPipeTeacher.joints_for` answers (float32,
    as stored and filtered)."""
    joints = np.array([r[0] for r in rows], dtype=np.float32).reshape(len(rows), NUM_HAND_JOINTS, 2)
    return {TEACHER_JOINTS: joints, "teacher_box_iou": np.array([r[1] for r in rows], dtype=np.float32)}


def create_teacher(config: TeacherConfig, frontend: MediaPipeHandsConfig) -> MediaPipeTeacher | None:
    """The configured teacher (None for ``kind: none``); missing model files raise the front-end's
    error naming ``hoi-perception install-mediapipe-models``."""
    config.validate()
    if not config.enabled:
        return None
    return MediaPipeTeacher(create_mediapipe_hands(frontend), config)
