"""Per-track object pose filter: reject implausibly fast pose jumps, smooth the rest on SE(3).

PnP on predicted control points fails in recognisable ways: a flip to a wrong
symmetric-looking pose or a depth error, both far faster than a hand can move an
object. A frame whose rotation or translation, measured against the last accepted
frame, implies a speed above the configured limits is held; after
``reset_after_rejections`` rejections in a row the filter restarts from the current
frame, so a genuinely moved object is picked up again within a few frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from hoi_perception.config import ConfigError
from hoi_perception.tracking.hand_filter import FrameStatus, RejectionReason
from hoi_perception.tracking.one_euro import OneEuroConfig
from hoi_perception.tracking.rotation_filter import (
    SE3OneEuroFilter,
    rotation_angle_between,
    rotation_matrix_to_quaternion,
)


@dataclass
class ObjectFilterConfig:
    """Thresholds of the object track filter. The papers give none (SHO does not filter objects).

    nominal_rate_hz: frame period used as the shortest interval when turning jumps into
        speeds, so timestamp jitter between two close frames cannot inflate a speed.
    min_confidence: frames below are rejected (SHO keeps control-point votes above 0.5).
    max_rotation_speed_deg_s: fastest plausible rotation of a hand-held object (720 deg/s
        = 24 deg per frame at 30 Hz; a PnP flip is typically 90-180 deg in one frame).
    max_translation_speed_m_s: fastest plausible translation (3 m/s = 10 cm per frame at 30 Hz).
    reset_after_rejections: consecutive rejections after which the filter restarts.
    rotation / translation: SO(3) One Euro (beta in s/rad) and One Euro (m) filters.
    """

    nominal_rate_hz: float = 30.0
    min_confidence: float = 0.5
    max_rotation_speed_deg_s: float = 720.0
    max_translation_speed_m_s: float = 3.0
    reset_after_rejections: int = 5
    rotation: OneEuroConfig = field(default_factory=lambda: OneEuroConfig(1.0, 5.0, 1.0))
    translation: OneEuroConfig = field(default_factory=lambda: OneEuroConfig(1.0, 20.0, 1.0))

    def validate(self) -> None:
        for name in ("nominal_rate_hz", "max_rotation_speed_deg_s", "max_translation_speed_m_s"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number, got {value}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError(f"min_confidence must be in [0, 1], got {self.min_confidence}")
        if self.reset_after_rejections < 1:
            raise ConfigError(f"reset_after_rejections must be >= 1, got {self.reset_after_rejections}")
        for name in ("rotation", "translation"):
            try:
                getattr(self, name).validate()
            except ConfigError as exc:
                raise ConfigError(f"{name}: {exc}") from None


@dataclass(frozen=True)
class ObjectFrame:
    """One object pose of one frame: stamp (s), rotation (3, 3) and translation (3,) m in the camera frame."""

    stamp: float
    rotation: np.ndarray
    translation: np.ndarray
    confidence: float
    # The rotation's unit quaternion (w, x, y, z), computed (and the matrix validated) once.
    quaternion: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rotation = np.asarray(self.rotation, dtype=np.float64)
        object.__setattr__(self, "quaternion", rotation_matrix_to_quaternion(rotation, "ObjectFrame.rotation"))
        translation = np.asarray(self.translation, dtype=np.float64)
        if translation.shape != (3,) or not np.all(np.isfinite(translation)):
            raise ValueError(f"ObjectFrame.translation: expected 3 finite metres, got {translation!r}")
        if not math.isfinite(float(self.stamp)):
            raise ValueError(f"ObjectFrame.stamp: expected a finite time in seconds, got {self.stamp}")
        object.__setattr__(self, "rotation", rotation)
        object.__setattr__(self, "translation", translation)
        object.__setattr__(self, "stamp", float(self.stamp))
        object.__setattr__(self, "confidence", float(self.confidence))


@dataclass(frozen=True)
class ObjectFilterState:
    """What happened to one frame; speeds are measured against the last accepted frame (None without one)."""

    status: FrameStatus
    reasons: tuple[RejectionReason, ...] = ()
    consecutive_rejections: int = 0
    rotation_speed_deg_s: float | None = None
    translation_speed_m_s: float | None = None


@dataclass(frozen=True)
class FilteredObject:
    """Filter output: the smoothed pose (None when DROPPED) and what the filter did."""

    pose: ObjectFrame | None
    state: ObjectFilterState


class ObjectTrackFilter:
    """Jump gate and SE(3) smoother for one tracked object; feed it every frame in time order."""

    def __init__(self, config: ObjectFilterConfig | None = None) -> None:
        self.config = config if config is not None else ObjectFilterConfig()
        self.config.validate()
        self._last_stamp: float | None = None
        self._init_motion_state()

    def _init_motion_state(self) -> None:
        self._pose_filter = SE3OneEuroFilter(self.config.rotation, self.config.translation)
        self._last_accepted: ObjectFrame | None = None
        self._estimate: ObjectFrame | None = None
        self._rejections = 0

    @property
    def estimate(self) -> ObjectFrame | None:
        return self._estimate

    def reset(self) -> None:
        self._last_stamp = None
        self._init_motion_state()

    def update(self, frame: ObjectFrame) -> FilteredObject:
        """Gate and smooth one frame; returns the pose to publish and what was done."""
        c = self.config
        if self._last_stamp is not None and frame.stamp <= self._last_stamp:
            self.reset()  # time went backwards or stood still: a new stream
        self._last_stamp = frame.stamp
        reasons = []
        if frame.confidence < c.min_confidence:
            reasons.append(RejectionReason.LOW_CONFIDENCE)
        frame_plausible = not reasons
        rotation_speed = translation_speed = None
        if self._last_accepted is not None:
            dt = max(frame.stamp - self._last_accepted.stamp, 1.0 / c.nominal_rate_hz)
            angle = rotation_angle_between(self._last_accepted.quaternion, frame.quaternion)
            rotation_speed = math.degrees(float(angle)) / dt
            translation_speed = float(np.linalg.norm(frame.translation - self._last_accepted.translation)) / dt
            if rotation_speed > c.max_rotation_speed_deg_s:
                reasons.append(RejectionReason.ROTATION_JUMP)
            if translation_speed > c.max_translation_speed_m_s:
                reasons.append(RejectionReason.TRANSLATION_JUMP)

        def state(status: FrameStatus, why=()) -> ObjectFilterState:
            return ObjectFilterState(status, tuple(why), self._rejections, rotation_speed, translation_speed)

        if not reasons:
            status = FrameStatus.ACCEPTED if self._last_accepted is not None else FrameStatus.RESET
            return FilteredObject(self._accept(frame), state(status))
        self._rejections += 1
        if self._estimate is not None and self._rejections < c.reset_after_rejections:
            return FilteredObject(replace(self._estimate, stamp=frame.stamp), state(FrameStatus.HELD, reasons))
        rejections = self._rejections
        self._init_motion_state()
        if frame_plausible:
            return FilteredObject(self._accept(frame), state(FrameStatus.RESET, reasons))
        self._rejections = rejections
        return FilteredObject(None, state(FrameStatus.DROPPED, reasons))

    def _accept(self, frame: ObjectFrame) -> ObjectFrame:
        rotation, translation = self._pose_filter(frame.rotation, frame.translation, frame.stamp)
        self._estimate = ObjectFrame(frame.stamp, rotation, translation, frame.confidence)
        self._last_accepted = frame
        self._rejections = 0
        return self._estimate
