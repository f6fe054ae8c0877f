"""Where to crop next: detector boxes, boxes carried over from the last frame, and when to re-detect.

Running the detector on every frame costs a full backbone pass on the whole image, so
after a detection the regions *follow the estimates*: the next frame's hand box is the
box around this frame's hand (2D joints and projected mesh), the object box the box
around its posed mesh (its silhouette, as the detector boxes it), each enlarged by a margin
for the motion between frames. The detector runs again

* when there is nothing to track (start, or nothing was found),
* on the frame after a track was lost: its confidence dropped below the threshold, its
  geometry failed (hand translation, object PnP), or its box left the image,
* every ``redetect_interval`` frames, so a new hand or a drifting box is corrected.

Track ids are stable while a hand or object is followed, including across periodic
re-detections that find it again (box overlap), and new after it was lost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from hoi_perception.config import ConfigError
from hoi_perception.geometry.camera import box_iou
from hoi_perception.models.detection_head import FrameDetections

TrackKey = Literal["right", "left", "object"]
TrackingStateName = Literal["detecting", "tracking", "lost"]


@dataclass
class TrackingConfig:
    """When the detector runs and how boxes are carried from frame to frame."""

    # Frames between detector runs while every track is healthy; 0 runs it only when needed.
    redetect_interval: int = 30
    # Each side of a carried-over box grows by this fraction of the box's larger side
    # (room for the motion until the next frame).
    box_margin: float = 0.15
    # A hand whose mean joint confidence (heatmap mass near its peak) falls below this is lost.
    min_hand_confidence: float = 0.2
    # An object whose control-point vote confidence falls below this is lost.
    min_object_confidence: float = 0.3
    # A track whose next box lies less than this fraction inside the image is lost.
    min_visible_fraction: float = 0.5
    # Boxes smaller than this (pixels, larger side) are lost as well: nothing left to crop.
    min_box_size_px: float = 8.0
    # A re-detection keeps a track's id when its box overlaps the tracked box at least this much.
    match_iou: float = 0.3

    def validate(self) -> None:
        if self.redetect_interval < 0:
            raise ConfigError(f"redetect_interval must be >= 0 frames (0: only when needed), got "
                              f"{self.redetect_interval}")
        if not (0.0 <= self.box_margin <= 2.0 and math.isfinite(self.box_margin)):
            raise ConfigError(f"box_margin must be in [0, 2] box sides, got {self.box_margin}")
        for name in ("min_hand_confidence", "min_object_confidence", "min_visible_fraction", "match_iou"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value}")
        if self.min_box_size_px < 1.0:
            raise ConfigError(f"min_box_size_px must be >= 1 pixel, got {self.min_box_size_px}")


@dataclass
class Track:
    """One followed hand or object: its id, the box to crop in the next frame (full-image pixels),
    the detector score it was last detected with, and the frames it has been followed.
    ``box_detected`` says whether ``box`` is the detector's (this frame's) or was carried from the
    previous frame's estimate, which is no evidence of where the object is now."""

    key: TrackKey
    track_id: int
    box: np.ndarray
    detection_score: float
    frames_tracked: int = 0
    box_detected: bool = True


def enlarge_box(box: np.ndarray, margin: float) -> np.ndarray:
    """Grow every side of ``box`` by ``margin`` times its larger side."""
    box = np.asarray(box, dtype=np.float64)
    grow = margin * float(max(box[2] - box[0], box[3] - box[1]))
    return box + np.array([-grow, -grow, grow, grow])


def visible_fraction(box: np.ndarray, width: int, height: int) -> float:
    """Fraction of the box's area that lies inside a ``width`` x ``height`` image."""
    area = float((box[2] - box[0]) * (box[3] - box[1]))
    if not area > 0:
        return 0.0
    inside_w = max(0.0, min(box[2], width) - max(box[0], 0.0))
    inside_h = max(0.0, min(box[3], height) - max(box[1], 0.0))
    return inside_w * inside_h / area


class BoxTracker:
    """Decides per frame whether to detect, and carries hand and object boxes between frames.

    Per frame: :meth:`needs_detection`; if so :meth:`update_from_detections`; then, for
    each track the estimator processed, :meth:`follow` (or :meth:`lose`); finally
    :meth:`end_frame`, which returns the frame's tracking state.
    """

    def __init__(self, config: TrackingConfig, hand_sides: tuple[str, ...], track_object: bool) -> None:
        config.validate()
        self.config = config
        self.hand_sides = tuple(hand_sides)
        self.track_object = track_object
        self.tracks: dict[str, Track] = {}
        self.frames_since_detection = 0
        self.lost_reasons: dict[str, str] = {}
        self._next_id = 1
        self._detected_this_frame = False
        self._track_lost = False

    def reset(self) -> None:
        """Forget every track (a new stream): the next frame runs the detector and issues new ids."""
        self.tracks.clear()
        self.lost_reasons.clear()
        self.frames_since_detection = 0
        self._track_lost = False
        self._detected_this_frame = False

    def needs_detection(self) -> bool:
        """True when this frame must run the detector: nothing tracked, a track was lost, or it is time."""
        if not self.tracks or self._track_lost:
            return True
        interval = self.config.redetect_interval
        return interval > 0 and self.frames_since_detection + 1 >= interval

    def update_from_detections(self, detections: FrameDetections) -> list[int]:
        """Replace the tracks by this frame's detections; returns the ids of tracks that ended.

        A detection that overlaps the track of the same kind keeps that track's id; an
        undetected track ends. Detections smaller than ``min_box_size_px`` are ignored.
        """
        candidates = {side: detections.right_hand if side == "right" else detections.left_hand
                      for side in self.hand_sides}
        if self.track_object:
            candidates["object"] = detections.object
        found: dict[str, tuple[np.ndarray, float]] = {}
        for key, detection in candidates.items():
            if detection is None:
                continue
            box = np.asarray(detection.box, dtype=np.float64)
            if np.all(np.isfinite(box)) and max(box[2] - box[0], box[3] - box[1]) >= self.config.min_box_size_px:
                found[key] = (box, detection.score)
        ended = []
        tracks: dict[str, Track] = {}
        for key, (box, score) in found.items():
            previous = self.tracks.get(key)
            if previous is not None and box_iou(previous.box, box) >= self.config.match_iou:
                tracks[key] = Track(key, previous.track_id, box, score, previous.frames_tracked)  # type: ignore[arg-type]
            else:
                if previous is not None:
                    ended.append(previous.track_id)
                tracks[key] = Track(key, self._new_id(), box, score)  # type: ignore[arg-type]
        ended += [t.track_id for key, t in self.tracks.items() if key not in tracks]
        self.tracks = tracks
        self.frames_since_detection = 0
        self._detected_this_frame = True
        self._track_lost = False
        self.lost_reasons.clear()
        return ended

    def follow(self, key: str, points_2d: np.ndarray, confidence: float, width: int, height: int) -> bool:
        """Carry track ``key`` to the next frame: box around ``points_2d`` (N, 2) full-image pixels,
        enlarged by the margin. Returns False (and loses the track) when the confidence is too
        low or the box leaves the image."""
        track = self.tracks[key]
        if not self._confident(key, confidence):
            return False
        points = np.asarray(points_2d, dtype=np.float64).reshape(-1, 2)
        points = points[np.all(np.isfinite(points), axis=1)]
        if len(points) == 0:
            self.lose(key, "no finite 2D points to follow")
            return False
        box = enlarge_box(np.concatenate([points.min(0), points.max(0)]), self.config.box_margin)
        visible = visible_fraction(box, width, height)
        if visible < self.config.min_visible_fraction:
            self.lose(key, f"box left the image ({visible:.0%} visible)")
            return False
        box = np.clip(box, 0.0, [width, height, width, height])
        if max(box[2] - box[0], box[3] - box[1]) < self.config.min_box_size_px:
            self.lose(key, f"box shrank below {self.config.min_box_size_px:g} px")
            return False
        track.box = box
        track.box_detected = False
        track.frames_tracked += 1
        return True

    def hold(self, key: str, confidence: float) -> bool:
        """Keep track ``key``'s box (and whether it was detected) for the next frame, as when its
        estimate gave nothing to follow; False (and the track lost) when the confidence is too low."""
        if not self._confident(key, confidence):
            return False
        self.tracks[key].frames_tracked += 1
        return True

    def _confident(self, key: str, confidence: float) -> bool:
        """Whether track ``key`` may go on at this confidence; loses it otherwise."""
        minimum = self.config.min_object_confidence if key == "object" else self.config.min_hand_confidence
        if not confidence >= minimum:
            self.lose(key, f"confidence {confidence:.2f} < {minimum:.2f}")
            return False
        return True

    def lose(self, key: str, reason: str) -> int | None:
        """End track ``key`` (the detector runs on the next frame); returns its id."""
        track = self.tracks.pop(key, None)
        if track is None:
            return None
        self.lost_reasons[key] = reason
        self._track_lost = True
        return track.track_id

    def lose_all(self, reason: str) -> list[int]:
        """End every track; returns their ids."""
        return [i for i in (self.lose(key, reason) for key in list(self.tracks)) if i is not None]

    def end_frame(self) -> tuple[TrackingStateName, int]:
        """Close the frame: its tracking state and frames since the detector last ran."""
        if self._detected_this_frame:
            state: TrackingStateName = "detecting"
            frames = 0
        else:
            self.frames_since_detection += 1
            frames = self.frames_since_detection
            state = "lost" if self._track_lost else "tracking"
        self._detected_this_frame = False
        return state, frames

    def new_track_id(self) -> int:
        """A track id no other track of this tracker has had (for hands a front-end tracks itself)."""
        return self._new_id()

    def _new_id(self) -> int:
        track_id = self._next_id
        self._next_id += 1
        return track_id
