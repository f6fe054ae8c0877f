"""Per-track hand filter built from Semi-Hand-Object's consistency constraints (SHO section 5.1).

SHO selects pseudo-labels by keeping only frames that look like a real hand and that
move smoothly; the same tests make a runtime gate. Each frame of a tracked hand is

1. checked on its own (SHO 5.1.1, "biomedical"): confidence, minimal normalised bone
   length, finger joint bend angles within (0, 90) degrees;
2. checked against the last accepted frame (SHO 5.1.2, smoothness): the jump of the
   2D joints in hand-box units and of the MANO pose, plus the wrist's translation speed;
3. if it passes, smoothed: 3D joints, 2D joints and translation with One Euro filters,
   the global rotation and the 15 finger rotations on SO(3); the hand shape is the
   track's running mean of betas with SHO's 2-sigma outlier rule, frozen once enough
   frames have been seen (one person, one shape).

A rejected frame is held (the previous estimate is repeated). After
``reset_after_rejections`` rejections in a row the motion state is dropped and the
filter restarts from the next frame that passes the per-frame checks, so a wrong
estimate can never lock the track out of recovering.

Joint order is HO-3D's: MANO's 16 joints (0 wrist; 1-3 index; 4-6 middle; 7-9 pinky;
10-12 ring; 13-15 thumb), then the tips of thumb, index, middle, ring, pinky (16-20).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.spatial.transform import Rotation

from hoi_perception.config import ConfigError
from hoi_perception.hand_model.kinematics import finger_joint_angles, normalized_bone_lengths
from hoi_perception.tracking.one_euro import OneEuroConfig, OneEuroFilter
from hoi_perception.tracking.rotation_filter import SO3OneEuroFilter, quaternion_exp, quaternion_log

NUM_JOINTS = 21
NUM_POSE_PARAMS = 48  # 16 axis-angle rotations: global, then the 15 finger joints


class FrameStatus(str, enum.Enum):
    """What the filter did with a frame."""

    ACCEPTED = "accepted"  # passed every check; the estimate was updated
    HELD = "held"  # rejected; the previous estimate is repeated
    RESET = "reset"  # the filter (re)started from this frame: first frame, time jumped back, or too many rejections
    DROPPED = "dropped"  # rejected with nothing to hold; no estimate


class RejectionReason(str, enum.Enum):
    """A consistency constraint that a frame broke."""

    LOW_CONFIDENCE = "low_confidence"
    SHORT_BONE = "short_bone"  # SHO 5.1.1: a normalised bone length below the minimum
    JOINT_ANGLE = "joint_angle"  # SHO 5.1.1: a finger joint bent outside (0, max) degrees
    JOINT2D_JUMP = "joint2d_jump"  # SHO 5.1.2: 2D joints moved too far since the last accepted frame
    POSE_JUMP = "pose_jump"  # SHO 5.1.2: MANO pose changed too much since the last accepted frame
    ROTATION_JUMP = "rotation_jump"  # rotation faster than allowed (objects)
    TRANSLATION_JUMP = "translation_jump"  # translation faster than allowed


@dataclass
class HandFilterConfig:
    """Thresholds of the hand track filter; defaults are SHO's where SHO gives a value.

    nominal_rate_hz: frame rate the per-frame jump thresholds refer to; a gap of k frame
        periods allows k times the 2D jump and k^2 times the (squared) pose jump.
    min_confidence: frames whose mean joint (heatmap) confidence is below are rejected (not from SHO).
    max_joint2d_jump: SHO t_j = 0.5. Mean over the 21 joints of each joint's 2D displacement,
        in pixels divided by the hand-box side (the larger side of the box around the previous
        accepted 2D joints), as SHO's joints are normalised to the hand box. SHO writes
        |J_t - J_t-1|_2 without saying over what; the norm of all 42 numbers at 0.5 rejected
        40% of clean frames of a hand moving at 0.3 m/s in benchmarks/filter_quality.py, so the
        per-joint mean is used (0.5 = half a hand box per frame: a misdetection or track swap).
    max_pose_jump: SHO t_theta = 0.01. Mean over the 48 MANO pose parameters of the
        squared change (rad^2), the change of each of the 16 rotations taken as the
        rotation vector of the relative rotation. SHO writes an L2 norm; read literally,
        0.01 rad over 48 numbers would reject a regressor's own jitter on a still hand,
        so the mean squared error reading is used (0.01 = 0.1 rad RMS per parameter).
    max_translation_speed_m_s: the wrist's fastest plausible camera-frame speed; catches a
        wrong depth that leaves 2D joints and pose untouched. Not from SHO (it filters no translation).
    min_bone_length: SHO 0.1. Each bone's length divided by the wrist-to-middle-MCP length.
    max_joint_angle_deg: SHO 90. Bend angle at each finger joint (0 = straight).
    shape_outlier_sigmas: SHO 2. Betas further than this many sigma_C from the track mean
        are left out of the mean, sigma_C = sqrt(mean |beta - mean|^2) as in SHO.
    shape_rejection_min_samples: accepted frames needed before the outlier rule applies
        (sigma_C of fewer frames is meaningless). Not from SHO.
    shape_freeze_after: accepted frames after which the track's shape stops changing. Not from SHO.
    reset_after_rejections: consecutive rejections after which the motion state is dropped. Not from SHO.
    joints_3d / joints_2d / translation: One Euro filters (units m, px, m).
    global_rotation / articulation: SO(3) One Euro filters (beta in s/rad).
    """

    nominal_rate_hz: float = 30.0
    min_confidence: float = 0.5
    max_joint2d_jump: float = 0.5
    max_pose_jump: float = 0.01
    max_translation_speed_m_s: float = 3.0
    min_bone_length: float = 0.1
    max_joint_angle_deg: float = 90.0
    shape_outlier_sigmas: float = 2.0
    shape_rejection_min_samples: int = 5
    shape_freeze_after: int = 30
    reset_after_rejections: int = 5
    joints_3d: OneEuroConfig = field(default_factory=lambda: OneEuroConfig(1.0, 30.0, 1.0))
    joints_2d: OneEuroConfig = field(default_factory=lambda: OneEuroConfig(1.0, 0.05, 1.0))
    translation: OneEuroConfig = field(default_factory=lambda: OneEuroConfig(1.0, 40.0, 1.0))
    global_rotation: OneEuroConfig = field(default_factory=lambda: OneEuroConfig(1.0, 5.0, 1.0))
    articulation: OneEuroConfig = field(default_factory=lambda: OneEuroConfig(1.0, 5.0, 1.0))

    def validate(self) -> None:
        positive = ("nominal_rate_hz", "max_joint2d_jump", "max_pose_jump", "max_translation_speed_m_s",
                    "shape_outlier_sigmas")
        for name in positive:
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number, got {value}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError(f"min_confidence must be in [0, 1], got {self.min_confidence}")
        if not 0.0 <= self.min_bone_length < 1.0:
            raise ConfigError(f"min_bone_length must be in [0, 1) palm lengths, got {self.min_bone_length}")
        if not 0.0 < self.max_joint_angle_deg <= 180.0:
            raise ConfigError(f"max_joint_angle_deg must be in (0, 180], got {self.max_joint_angle_deg}")
        for name in ("shape_rejection_min_samples", "shape_freeze_after", "reset_after_rejections"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("joints_3d", "joints_2d", "translation", "global_rotation", "articulation"):
            try:
                getattr(self, name).validate()
            except ConfigError as exc:
                raise ConfigError(f"{name}: {exc}") from None


@dataclass(frozen=True)
class HandFrame:
    """One hand of one frame: the runtime's estimate going in, the filtered estimate coming out.

    stamp: s. joints_2d: (21, 2) px. joints_3d: (21, 3) m, relative to the wrist.
    translation: (3,) m, wrist in the camera frame. mano_pose: (48,) axis-angle, global
    rotation first. betas: (10,) MANO shape. confidence: in [0, 1].
    """

    stamp: float
    joints_2d: np.ndarray
    joints_3d: np.ndarray
    translation: np.ndarray
    mano_pose: np.ndarray
    betas: np.ndarray
    confidence: float

    def __post_init__(self) -> None:
        expected = {"joints_2d": (NUM_JOINTS, 2), "joints_3d": (NUM_JOINTS, 3), "translation": (3,),
                    "mano_pose": (NUM_POSE_PARAMS,)}
        for name, shape in expected.items():
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.shape != shape:
                raise ValueError(f"HandFrame.{name}: expected shape {shape}, got {value.shape}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"HandFrame.{name}: contains NaN or infinity")
            object.__setattr__(self, name, value)
        betas = np.asarray(self.betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size == 0 or not np.all(np.isfinite(betas)):
            raise ValueError(f"HandFrame.betas: expected a finite vector such as (10,), got shape {betas.shape}")
        object.__setattr__(self, "betas", betas)
        if not math.isfinite(float(self.stamp)):
            raise ValueError(f"HandFrame.stamp: expected a finite time in seconds, got {self.stamp}")
        object.__setattr__(self, "stamp", float(self.stamp))
        object.__setattr__(self, "confidence", float(self.confidence))


@dataclass(frozen=True)
class FilterState:
    """What happened to one frame, for logging, diagnostics and downstream gating.

    reasons: every constraint the frame broke (empty when accepted; set on RESET when
    the restart was forced by rejections). joint2d_jump / pose_jump: the measured jumps
    (None without a previous accepted frame). shape_outlier: the frame's betas were left
    out of the shape mean.
    """

    status: FrameStatus
    reasons: tuple[RejectionReason, ...] = ()
    consecutive_rejections: int = 0
    joint2d_jump: float | None = None
    pose_jump: float | None = None
    shape_outlier: bool = False
    shape_frozen: bool = False
    shape_samples: int = 0


@dataclass(frozen=True)
class FilteredHand:
    """Filter output: the smoothed hand (None when DROPPED) and what the filter did."""

    hand: HandFrame | None
    state: FilterState


def joint2d_jump(previous: np.ndarray, current: np.ndarray) -> float:
    """SHO's 2D smoothness measure: mean per-joint displacement, in sides of the previous hand box."""
    previous = np.asarray(previous, dtype=np.float64)
    side = float(np.max(previous.max(axis=0) - previous.min(axis=0)))
    displacement = np.linalg.norm(np.asarray(current, dtype=np.float64) - previous, axis=-1)
    return float(displacement.mean() / max(side, 1.0))


def mano_pose_jump(previous: np.ndarray, current: np.ndarray) -> float:
    """Mean squared change (rad^2) of the 48 MANO pose parameters, per rotation via the relative rotation.

    Differencing axis-angle vectors directly would report a jump where the angle wraps
    at pi although the rotation barely moved.
    """
    prev = Rotation.from_rotvec(np.asarray(previous, dtype=np.float64).reshape(-1, 3))
    cur = Rotation.from_rotvec(np.asarray(current, dtype=np.float64).reshape(-1, 3))
    angles = (cur * prev.inv()).magnitude()
    return float(np.sum(angles ** 2) / NUM_POSE_PARAMS)


class _ShapeTracker:
    """Running mean of a track's betas with SHO's 2-sigma outlier rule, frozen after enough frames."""

    def __init__(self, sigmas: float, min_samples: int, freeze_after: int) -> None:
        self._sigmas = sigmas
        self._min_samples = min_samples
        self._freeze_after = freeze_after
        self.count = 0
        self.mean: np.ndarray | None = None
        self._sum_sq = 0.0  # Welford accumulator of |beta - mean|^2

    @property
    def frozen(self) -> bool:
        return self.count >= self._freeze_after

    @property
    def sigma(self) -> float:
        return math.sqrt(self._sum_sq / self.count) if self.count else 0.0

    def add(self, betas: np.ndarray) -> bool:
        """Offer the betas of an accepted frame; returns True when they were an outlier (left out)."""
        if self.mean is not None and betas.shape != self.mean.shape:
            raise ValueError(f"HandFrame.betas: shape {betas.shape} differs from the track's {self.mean.shape}")
        if self.mean is None:
            self.mean = betas.copy()
            self.count = 1
            return False
        outlier = (self.count >= self._min_samples
                   and float(np.linalg.norm(betas - self.mean)) > self._sigmas * self.sigma + 1e-12)
        if outlier or self.frozen:
            return outlier
        self.count += 1
        delta = betas - self.mean
        self.mean = self.mean + delta / self.count
        self._sum_sq += float(np.dot(delta, betas - self.mean))
        return False


class HandTrackFilter:
    """Consistency gate and smoother for one tracked hand; feed it every frame of the track in time order."""

    def __init__(self, config: HandFilterConfig | None = None) -> None:
        self.config = config if config is not None else HandFilterConfig()
        self.config.validate()
        self._shape = self._new_shape()
        self._last_stamp: float | None = None
        self._init_motion_state()

    def _new_shape(self) -> _ShapeTracker:
        c = self.config
        return _ShapeTracker(c.shape_outlier_sigmas, c.shape_rejection_min_samples, c.shape_freeze_after)

    def _init_motion_state(self) -> None:
        c = self.config
        self._joints_3d = OneEuroFilter(c.joints_3d)
        self._joints_2d = OneEuroFilter(c.joints_2d)
        self._translation = OneEuroFilter(c.translation)
        self._global_rotation = SO3OneEuroFilter(c.global_rotation)
        self._articulation = SO3OneEuroFilter(c.articulation)
        self._last_accepted: HandFrame | None = None
        self._estimate: HandFrame | None = None
        self._rejections = 0

    @property
    def estimate(self) -> HandFrame | None:
        """The current filtered hand, or None when the filter holds nothing."""
        return self._estimate

    def reset(self) -> None:
        """Forget everything about the track, shape included."""
        self._shape = self._new_shape()
        self._last_stamp = None
        self._init_motion_state()

    def update(self, frame: HandFrame) -> FilteredHand:
        """Gate and smooth one frame; returns the estimate to publish and what was done."""
        if self._last_stamp is not None and frame.stamp <= self._last_stamp:
            self.reset()  # time went backwards or stood still (bag loop, restarted clock): a new stream
        self._last_stamp = frame.stamp
        reasons = self._frame_violations(frame)
        frame_plausible = not reasons
        joint_jump = pose_jump = None
        if self._last_accepted is not None:
            joint_jump, pose_jump, jump_reasons = self._smoothness_violations(frame)
            reasons += jump_reasons

        if not reasons:
            status = FrameStatus.ACCEPTED if self._last_accepted is not None else FrameStatus.RESET
            return self._accept(frame, status, (), joint_jump, pose_jump)

        self._rejections += 1
        if self._estimate is not None and self._rejections < self.config.reset_after_rejections:
            held = replace(self._estimate, stamp=frame.stamp)
            return FilteredHand(held, self._state(FrameStatus.HELD, reasons, joint_jump, pose_jump))
        # Too many rejections in a row (or nothing to hold): restart the motion state.
        rejections = self._rejections
        self._init_motion_state()
        if frame_plausible:
            return self._accept(frame, FrameStatus.RESET, tuple(reasons), joint_jump, pose_jump)
        self._rejections = rejections
        return FilteredHand(None, self._state(FrameStatus.DROPPED, reasons, joint_jump, pose_jump))

    def _frame_violations(self, frame: HandFrame) -> list[RejectionReason]:
        """SHO 5.1.1 checks that need no history."""
        c = self.config
        reasons = []
        if frame.confidence < c.min_confidence:
            reasons.append(RejectionReason.LOW_CONFIDENCE)
        if np.min(normalized_bone_lengths(frame.joints_3d)) < c.min_bone_length:
            reasons.append(RejectionReason.SHORT_BONE)
        if np.max(finger_joint_angles(frame.joints_3d)) > c.max_joint_angle_deg:
            reasons.append(RejectionReason.JOINT_ANGLE)
        return reasons

    def _smoothness_violations(self, frame: HandFrame) -> tuple[float, float, list[RejectionReason]]:
        """SHO 5.1.2 checks against the last accepted frame, scaled by the frames elapsed since it."""
        c = self.config
        previous = self._last_accepted
        assert previous is not None, "smoothness is checked only after an accepted frame"
        frames_elapsed = max(1.0, (frame.stamp - previous.stamp) * c.nominal_rate_hz)
        joint_jump = joint2d_jump(previous.joints_2d, frame.joints_2d)
        pose_jump = mano_pose_jump(previous.mano_pose, frame.mano_pose)
        reasons = []
        if joint_jump > c.max_joint2d_jump * frames_elapsed:
            reasons.append(RejectionReason.JOINT2D_JUMP)
        if pose_jump > c.max_pose_jump * frames_elapsed ** 2:
            reasons.append(RejectionReason.POSE_JUMP)
        moved = np.linalg.norm(frame.translation - previous.translation)
        translation_speed = moved * c.nominal_rate_hz / frames_elapsed
        if translation_speed > c.max_translation_speed_m_s:
            reasons.append(RejectionReason.TRANSLATION_JUMP)
        return joint_jump, pose_jump, reasons

    def _accept(self, frame: HandFrame, status: FrameStatus, reasons: tuple[RejectionReason, ...],
                joint_jump: float | None, pose_jump: float | None) -> FilteredHand:
        t = frame.stamp
        shape_outlier = self._shape.add(frame.betas)
        assert self._shape.mean is not None  # add() starts the mean
        rotations = frame.mano_pose.reshape(16, 3)
        global_q = self._global_rotation(quaternion_exp(rotations[0]), t)
        articulation_q = self._articulation(quaternion_exp(rotations[1:]), t)
        mano_pose = np.concatenate([quaternion_log(global_q), quaternion_log(articulation_q).reshape(-1)])
        joints_3d = self._joints_3d(frame.joints_3d, t)
        joints_3d = joints_3d - joints_3d[0]  # keep the output root-relative
        self._estimate = HandFrame(stamp=t, joints_2d=self._joints_2d(frame.joints_2d, t), joints_3d=joints_3d,
                                   translation=self._translation(frame.translation, t), mano_pose=mano_pose,
                                   betas=self._shape.mean.copy(), confidence=frame.confidence)
        self._last_accepted = frame
        self._rejections = 0
        return FilteredHand(self._estimate, self._state(status, reasons, joint_jump, pose_jump, shape_outlier))

    def _state(self, status: FrameStatus, reasons, joint_jump, pose_jump, shape_outlier: bool = False) -> FilterState:
        return FilterState(status=status, reasons=tuple(reasons), consecutive_rejections=self._rejections,
                           joint2d_jump=joint_jump, pose_jump=pose_jump, shape_outlier=shape_outlier,
                           shape_frozen=self._shape.frozen, shape_samples=self._shape.count)
