"""Everything the perception node does except calling rclpy.

The rclpy adapter (:mod:`hoi_perception.ros.node`) only creates subscriptions,
publishers and timers and forwards messages here; this module decides what to
subscribe and publish (:func:`subscription_plan`, :func:`publisher_plans`), turns
synchronised input messages into the estimator's arrays, runs it, has every output
message built by the builder ``process-bag`` shares
(:class:`~hoi_perception.pipeline.messages.FrameMessageBuilder`), limits the rate,
contains failures and keeps the bookkeeping behind ``/diagnostics``. It imports no ROS
package, so it runs and is tested anywhere: messages are built through a
*typestore*-like object (a rosbags ``Typestore`` here, :class:`GeneratedMessageTypes`
over rclpy's generated classes on a robot).

Per frame, in order: rate limit (wall clock) -> CameraInfo and image checks
(K, size, frame id, encoding) -> estimator -> messages -> the adapter's sink. A frame
that fails any step is dropped with a reason, counted, logged (throttled per kind)
and reported in the next diagnostics message; the callback itself never raises.
"""

from __future__ import annotations

import array
import enum
import importlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hoi_perception import ros_messages as ri
from hoi_perception.pipeline.image_decoding import (
    COMPRESSED_IMAGE_TYPE,
    IMAGE_TYPE,
    ImageDecodeError,
    camera_matrix_problem,
    decode_color_image,
    decode_depth_image,
    stamp_to_ns,
)
from hoi_perception.pipeline.messages import (
    OUTPUT_TYPES,
    FrameMessageBuilder,
    FrameOutputs,
    OutputSettings,
)
from hoi_perception.ros.params import NodeParams, QosParams, estimator_overrides, read_sections

DIAGNOSTICS_OUTPUT = "diagnostics"
DIAGNOSTICS_TYPE = "diagnostic_msgs/msg/DiagnosticArray"


# --------------------------------------------------------------------------- plans (plain data for the adapter)


@dataclass(frozen=True)
class SubscriptionPlan:
    """What the adapter subscribes to: synchronised image + CameraInfo (+ depth)."""

    image_topic: str
    image_type: str
    camera_info_topic: str
    depth_topic: str | None
    qos: QosParams
    queue_size: int
    slop_s: float


def subscription_plan(params: NodeParams) -> SubscriptionPlan:
    topics = params.topics
    image_topic = f"{topics.image.rstrip('/')}/compressed" if topics.compressed else topics.image
    return SubscriptionPlan(image_topic=image_topic,
                            image_type=COMPRESSED_IMAGE_TYPE if topics.compressed else IMAGE_TYPE,
                            camera_info_topic=topics.camera_info, depth_topic=topics.depth or None,
                            qos=params.qos.input, queue_size=params.sync.queue_size, slop_s=params.sync.slop_s)


@dataclass(frozen=True)
class PublisherPlan:
    """One publisher the adapter creates: output name, topic, message type, QoS."""

    output: str
    topic: str
    msgtype: str
    qos: QosParams


def publisher_plans(params: NodeParams) -> list[PublisherPlan]:
    """Publishers for the enabled outputs, then /diagnostics (always: it is how failures are seen)."""
    plans = [PublisherPlan(name, getattr(params.topics, name), msgtype, params.qos.output)
             for name, msgtype in OUTPUT_TYPES.items() if getattr(params.publish, name)]
    plans.append(PublisherPlan(DIAGNOSTICS_OUTPUT, params.topics.diagnostics, DIAGNOSTICS_TYPE,
                               QosParams(reliability="reliable", depth=10, durability="volatile")))
    return plans


def output_settings(params: NodeParams, node_name: str) -> OutputSettings:
    """The message builder's settings from the node's ``topics``, ``frames`` and ``publish`` parameters:
    what the node publishes and what ``process-bag`` writes for a node of that name."""
    topics = {name: resolve_topic(getattr(params.topics, name), node_name) for name in OUTPUT_TYPES
              if getattr(params.publish, name)}
    frames, publish = params.frames, params.publish
    return OutputSettings(topics=topics, right_wrist=frames.right_wrist, left_wrist=frames.left_wrist,
                          object_prefix=frames.object_prefix, tf=publish.tf, joint_tf=publish.joint_tf,
                          estimate_vertices=publish.estimate_vertices)


def resolve_topic(topic: str, node_name: str) -> str:
    """Absolute name of a topic of a node in the root namespace (``~/x`` -> ``/<node>/x``, ``x`` -> ``/x``)."""
    if topic.startswith("~/"):
        return f"/{node_name.strip('/')}/{topic[2:]}"
    return topic if topic.startswith("/") else f"/{topic}"


def recording_topics(params: NodeParams, node_name: str, *, debug_image: bool = False) -> list[str]:
    """Topics worth recording for offline work: the synchronised inputs, TF, the enabled outputs, diagnostics.

    The overlay image is left out unless ``debug_image``: it is large and can be redrawn offline.
    """
    inputs = subscription_plan(params)
    topics = [inputs.image_topic, inputs.camera_info_topic] + ([inputs.depth_topic] if inputs.depth_topic else [])
    topics += ["/tf", "/tf_static"]
    topics += [plan.topic for plan in publisher_plans(params) if plan.output != "debug_image" or debug_image]
    return [resolve_topic(topic, node_name) for topic in topics]


# --------------------------------------------------------------------------- rclpy message classes as a typestore


_ARRAY_CODES = {  # rosidl element type -> (array.array typecode, numpy dtype)
    "double": ("d", np.float64), "float": ("f", np.float32), "float64": ("d", np.float64),
    "float32": ("f", np.float32), "uint8": ("B", np.uint8), "octet": ("B", np.uint8), "char": ("B", np.uint8),
    "int8": ("b", np.int8), "uint16": ("H", np.uint16), "int16": ("h", np.int16), "uint32": ("I", np.uint32),
    "int32": ("i", np.int32), "uint64": ("Q", np.uint64), "int64": ("q", np.int64),
}


def _sequence_element(field_type: str) -> str | None:
    """Element type of an unbounded or bounded sequence type string (``sequence<double>``), else None."""
    if not field_type.startswith("sequence<"):
        return None
    return field_type[len("sequence<"):-1].split(",")[0].strip()


class _MessageFactory:
    """Calls an rclpy message class, passing NumPy arrays for sequence fields as ``array.array``.

    rclpy's generated setters accept NumPy arrays for fixed-size arrays but not for
    sequences (``float64[]``, ``uint8[]``), which the shared builders pass as NumPy;
    ``array.array`` is the form they store and accept without an element-wise check.
    Constants (``Marker.TRIANGLE_LIST``) are read through to the class.
    """

    def __init__(self, cls: Any):  # rclpy's generated classes carry no type information
        self._cls = cls
        self._sequence_codes: dict[str, tuple[str, Any]] = {}
        for name, field_type in cls.get_fields_and_field_types().items():
            element = _sequence_element(field_type)
            if element in _ARRAY_CODES:
                self._sequence_codes[name] = _ARRAY_CODES[element]

    def __call__(self, **fields: Any) -> Any:
        for name, (code, dtype) in self._sequence_codes.items():
            value = fields.get(name)
            if isinstance(value, np.ndarray):
                fields[name] = array.array(code, np.ascontiguousarray(value, dtype=dtype).tobytes())
        return self._cls(**fields)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cls, name)


class GeneratedMessageTypes:
    """A typestore over ROS 2's generated Python message classes (``sensor_msgs.msg.Image``...).

    ``types["sensor_msgs/msg/Image"]`` imports ``sensor_msgs.msg`` on first use, so the
    builders of :mod:`hoi_perception.ros_messages` serve rclpy unchanged.
    """

    def __init__(self, importer: Callable[[str], Any] = importlib.import_module):
        self._importer = importer
        self.types = _LazyTypes(lambda typename: _MessageFactory(self.message_class(typename)))

    def message_class(self, typename: str) -> type:
        """The generated class itself (what ``create_publisher`` and ``create_subscription`` take)."""
        parts = typename.split("/")
        if len(parts) != 3 or parts[1] != "msg" or not all(parts):
            raise KeyError(f"expected a message type name like 'sensor_msgs/msg/Image', got {typename!r}")
        package, _, name = parts
        try:
            module = self._importer(f"{package}.msg")
            cls = getattr(module, name)
        except (ImportError, AttributeError) as exc:
            raise KeyError(f"message type {typename!r} is not available ({exc}); is its package built and "
                           "the workspace sourced?") from None
        return cls


class _LazyTypes(Mapping):
    def __init__(self, load: Callable[[str], Any]):
        self._load = load
        self._cache: dict[str, Any] = {}

    def __getitem__(self, typename: str) -> Any:
        if typename not in self._cache:
            self._cache[typename] = self._load(typename)
        return self._cache[typename]

    def __iter__(self):
        return iter(self._cache)

    def __len__(self) -> int:
        return len(self._cache)


# --------------------------------------------------------------------------- the estimator as the node sees it


class EstimatorLike(Protocol):
    """What the node calls: :meth:`hoi_perception.pipeline.estimator.Estimator.process`."""

    def process(self, image: np.ndarray, K: np.ndarray, stamp: float,  # noqa: N803
                depth: np.ndarray | None = None) -> Any: ...


@dataclass
class LoadedEstimator:
    """A configured estimator plus the static geometry the outputs need.

    ``hand_faces``: MANO faces (F, 3) per side, for the mesh marker; ``object_control_points``:
    the 21 model-frame control points (21, 3) per object name (the first 8 are the box
    corners), for the box markers and the overlay; ``description``: engine and model,
    shown in diagnostics.
    """

    estimator: EstimatorLike
    hand_faces: Mapping[str, np.ndarray]
    object_control_points: Mapping[str, np.ndarray]
    description: str


def missing_model_files(config: Any) -> list[str]:
    """``setting 'path'`` for each network file the estimator config needs that does not exist."""
    names = ("checkpoint",) if config.engine.kind == "torch" else ("crop_model", "detector_model")
    return [f"estimator.{name} '{getattr(config, name)}'" for name in names
            if getattr(config, name) is not None and not Path(getattr(config, name)).expanduser().is_file()]


def load_estimator(params: NodeParams, config_path: str | Path | None = None) -> LoadedEstimator:
    """The estimator of ``config_path``'s ``estimator:`` section with the node's selection applied
    (the shipped checkpoint when neither names a model).

    Raises ConfigError for invalid settings and FileNotFoundError naming each missing
    model file, before any network is loaded.
    """
    from hoi_perception.pipeline.config import load_estimator_config
    from hoi_perception.pipeline.shipped_model import with_shipped_model

    path, _, _ = read_sections(config_path)
    config = load_estimator_config(path, estimator_overrides(params.estimator))
    if config.needs_network:  # MediaPipe hands alone need none
        config = with_shipped_model(config)  # no model named: the shipped checkpoint, as the demo runs it
    if config.has_network:
        config.check_model_files()
    missing = missing_model_files(config)
    if missing:
        raise FileNotFoundError(f"model file(s) not found: {', '.join(missing)}; export them with "
                                "`hoi-perception export` or point the node parameters estimator.* at existing files")
    from hoi_perception.pipeline.estimator import Estimator

    estimator = Estimator(config)
    faces: dict[str, np.ndarray] = {side: estimator.hand_faces(side) for side in config.hand_sides}
    control_points: dict[str, np.ndarray] = {}
    if estimator.object_model is not None:
        control_points[estimator.object_model.name] = estimator.object_model.control_points
    models = [config.checkpoint] if config.engine.kind == "torch" else [config.crop_model, config.detector_model]
    if estimator.crop_engine is None:
        description = "MediaPipe Hands (LiteRT), hands only"
    else:
        description = f"{estimator.crop_engine.describe()}: {', '.join(Path(str(m)).name for m in models)}"
        if config.hand_frontend == "mediapipe":
            description = f"MediaPipe Hands (LiteRT) + object from {description}"
    return LoadedEstimator(estimator, faces, control_points, description)


class UnusableInputError(ValueError):
    """An input frame the node cannot use (bad CameraInfo, size mismatch, unsupported encoding).

    ``kind`` groups refusals for log throttling.
    """

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


# --------------------------------------------------------------------------- bookkeeping


class RateLimiter:
    """Admits at most ``max_rate_hz`` frames per second on average, tolerant of input jitter.

    Frames are admitted on a schedule advancing by one period per admission, so a 30 Hz
    camera limited to 15 Hz keeps every other frame even when arrival times wobble
    (a plain "time since last >= period" test would drop to 10 Hz).
    """

    def __init__(self, max_rate_hz: float):
        if not (math.isfinite(max_rate_hz) and max_rate_hz >= 0):
            raise ValueError(f"max_rate_hz: expected >= 0, got {max_rate_hz}")
        self.period = 1.0 / max_rate_hz if max_rate_hz > 0 else 0.0
        self._next_due: float | None = None

    def admit(self, now: float) -> bool:
        if self.period == 0.0:
            return True
        if self._next_due is not None and now < self._next_due:
            return False
        if self._next_due is None or now - self._next_due >= self.period:
            self._next_due = now + self.period  # idle or far behind: restart the schedule
        else:
            self._next_due += self.period
        return True

    def reset(self) -> None:
        self._next_due = None


class DropReason(str, enum.Enum):
    """Why a received frame produced no outputs."""

    RATE_LIMITED = "rate_limited"  # on purpose (max_rate_hz); not a fault
    REFUSED = "refused"            # unusable input: CameraInfo, size, frame id, encoding
    SKIPPED = "skipped"            # the estimator skipped it and said why
    FAILED = "failed"              # an exception while processing or publishing


# Input frames that never reached the node logic: missing from the received image stamps
# (lost in transport or overwritten in the keep-last subscription queue while the node was
# busy), or received but evicted from the synchroniser without a CameraInfo (depth) partner.
LOST_KINDS = ("stamp_gap", "unmatched")
# An image stamp earlier than the last processed one by more than this starts a new stream
# (a replayed bag looping); a smaller step back, or a repeat, is refused as out of order.
STREAM_RESTART_S = 1.0


class ThrottledLog:
    """Logs the first warning of each kind, then at most one per ``period_s`` with a count of the rest."""

    def __init__(self, emit: Callable[[str], None], period_s: float, clock: Callable[[], float]):
        self._emit = emit
        self._period = period_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, kind: str, text: str) -> bool:
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._period:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return False
        suppressed = self._suppressed.pop(kind, 0)
        self._last[kind] = now
        self._emit(text + (f" ({suppressed} more like this since the last report)" if suppressed else ""))
        return True


@dataclass
class _Period:
    """Counts since the last diagnostics message."""

    started: float
    received: int = 0
    published: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    processing_ms: list[float] = field(default_factory=list)
    stamp_age_ms: list[float] = field(default_factory=list)
    last_reason: str = ""
    lost: int = 0


class FrameStatistics:
    """Totals since activation and per-diagnostics-period windows of rates and latencies."""

    def __init__(self, clock: Callable[[], float]):
        self._clock = clock
        self.received = 0
        self.published = 0
        self.dropped: dict[str, int] = {reason.value: 0 for reason in DropReason}
        self.lost: dict[str, int] = {kind: 0 for kind in LOST_KINDS}
        self.last_reason = ""
        self.tracking_state = "none"
        self.frames_since_detection = 0
        self._period = _Period(clock())

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def record_received(self) -> None:
        self.received += 1
        self._period.received += 1

    def record_lost(self, kind: str, count: int) -> None:
        """``count`` input frames that never reached this logic (``kind`` in LOST_KINDS)."""
        self.lost[kind] += count
        self._period.lost += count

    @property
    def lost_total(self) -> int:
        return sum(self.lost.values())

    def record_drop(self, reason: DropReason, detail: str) -> None:
        self.dropped[reason.value] += 1
        self._period.dropped[reason.value] = self._period.dropped.get(reason.value, 0) + 1
        if reason is not DropReason.RATE_LIMITED:
            self.last_reason = self._period.last_reason = f"{reason.value}: {detail}"

    def record_published(self, processing_ms: float, stamp_age_ms: float, tracking_state: str,
                         frames_since_detection: int) -> None:
        self.published += 1
        self._period.published += 1
        self._period.processing_ms.append(processing_ms)
        self._period.stamp_age_ms.append(stamp_age_ms)
        self.tracking_state = tracking_state
        self.frames_since_detection = frames_since_detection

    def close_period(self) -> tuple[_Period, float]:
        """The finished period and its length in seconds; a new period starts now."""
        now = self._clock()
        period, self._period = self._period, _Period(now)
        return period, max(now - period.started, 1e-9)

    def reset(self) -> None:
        FrameStatistics.__init__(self, self._clock)


@dataclass
class DiagnosticsReport:
    """One diagnostics status as plain data (the message is built from it)."""

    level: ri.DiagnosticLevel
    message: str
    values: dict[str, Any]


# --------------------------------------------------------------------------- the per-frame logic


Logger = Callable[[str], None]


class PerceptionNodeLogic:
    """Per-frame processing and diagnostics of an active node.

    ``sink`` receives each frame's :class:`FrameOutputs` (the adapter publishes them;
    an exception there is counted like any other failure). ``has_subscribers(output)``
    lets the node skip outputs nobody listens to when ``publish.only_when_subscribed``.
    ``clock`` is a monotonic clock in seconds (rate limit, latency, throttling).
    """

    def __init__(self, params: NodeParams, loaded: LoadedEstimator, types: ri.MessageTypes, *,
                 sink: Callable[[FrameOutputs], None], has_subscribers: Callable[[str], bool] = lambda _: True,
                 clock: Callable[[], float] = time.monotonic, warn: Logger = print, node_name: str = "hoi_perception"):
        self.params = params
        self.loaded = loaded
        self.types = types
        self._sink = sink
        self._has_subscribers = has_subscribers
        self._clock = clock
        self._warn = ThrottledLog(warn, params.log_throttle_s, clock)
        self._status_name = f"{node_name}: hand-object perception"
        self.rate_limiter = RateLimiter(params.max_rate_hz)
        self.statistics = FrameStatistics(clock)
        self.messages = FrameMessageBuilder(output_settings(params, node_name), types, loaded.hand_faces,
                                            loaded.object_control_points)
        self._distortion_warned = False
        self._last_stamp_ns: int | None = None

    # ----------------------------------------------------------------- lifecycle

    def reset(self) -> None:
        """Forget everything time-dependent (on activation): schedule, counters, quaternion signs, markers."""
        self.rate_limiter.reset()
        self.statistics.reset()
        self.messages.reset()
        self._last_stamp_ns = None

    def record_lost_inputs(self, kind: str, count: int) -> None:
        """Input frames the adapter saw go missing before they could reach :meth:`on_frame`."""
        if count:
            self.statistics.record_lost(kind, count)

    # ----------------------------------------------------------------- frames

    def on_frame(self, image_msg: Any, camera_info_msg: Any, depth_msg: Any = None, *,
                 image_type: str = IMAGE_TYPE, now_ns: int | None = None) -> DropReason | None:
        """Process one synchronised input; returns why it was dropped, or None when published.

        ``now_ns`` is the node clock (ROS time, simulated under ``use_sim_time``) used to
        report how old the input stamp is when its outputs leave; None skips that figure.
        """
        started = self._clock()
        self.statistics.record_received()
        if not self.rate_limiter.admit(started):
            self.statistics.record_drop(DropReason.RATE_LIMITED, "max_rate_hz")
            return DropReason.RATE_LIMITED
        try:
            header, rgb, K, depth = self._inputs(image_msg, camera_info_msg, depth_msg, image_type)
        except UnusableInputError as exc:
            return self._drop(DropReason.REFUSED, exc.kind, str(exc))
        except Exception as exc:  # noqa: BLE001 - a malformed message must not kill the node
            return self._drop(DropReason.FAILED, type(exc).__name__,
                              f"reading the input messages: {type(exc).__name__}: {exc}")
        decoded = self._clock()
        try:
            stamp_ns = self._last_stamp_ns = stamp_to_ns(header.stamp)
            result = self.loaded.estimator.process(rgb, K, stamp_ns * 1e-9, depth)
            if result.skipped:
                return self._drop(DropReason.SKIPPED, "estimator", str(result.skipped))
            outputs = self.messages.build(header, result, rgb, K, wanted=self._wanted,
                                          extra_latencies_ms={"decode": (decoded - started) * 1e3})
            self._sink(outputs)
        except Exception as exc:  # noqa: BLE001 - contained, counted and reported
            return self._drop(DropReason.FAILED, type(exc).__name__, f"{type(exc).__name__}: {exc}")
        stamp_age_ms = (now_ns - stamp_ns) * 1e-6 if now_ns is not None else math.nan
        self.statistics.record_published((self._clock() - started) * 1e3, stamp_age_ms, result.tracking_state,
                                         int(result.frames_since_detection))
        return None

    def _drop(self, reason: DropReason, kind: str, detail: str) -> DropReason:
        self.statistics.record_drop(reason, detail)
        self._warn(f"{reason.value}:{kind}", f"frame dropped ({reason.value}): {detail}")
        return reason

    def _inputs(self, image_msg: Any, info: Any, depth_msg: Any,
                image_type: str) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray | None]:
        frame_id = info.header.frame_id or image_msg.header.frame_id
        if not frame_id:
            raise UnusableInputError("frame_id", "neither the CameraInfo nor the image names a frame_id; outputs "
                                                 "need the camera optical frame")
        K: np.ndarray = np.asarray(info.k, dtype=np.float64).reshape(-1)
        problem = f"CameraInfo.k has {K.size} values, expected 9" if K.size != 9 else camera_matrix_problem(
            K.reshape(3, 3))
        if problem:
            raise UnusableInputError("camera_info", f"CameraInfo: {problem}")
        K = K.reshape(3, 3)
        self._check_distortion(info)
        try:
            rgb = decode_color_image(image_msg, image_type)
        except ImageDecodeError as exc:
            raise UnusableInputError("encoding", str(exc)) from None
        height, width = rgb.shape[:2]
        if (info.width, info.height) != (0, 0) and (info.width, info.height) != (width, height):
            raise UnusableInputError("size", f"image is {width}x{height} but its CameraInfo is for "
                                             f"{info.width}x{info.height}; check that the image and camera_info "
                                             "topics belong to the same stream")
        depth = None
        if depth_msg is not None:
            try:
                depth = decode_depth_image(depth_msg)
            except ImageDecodeError as exc:
                raise UnusableInputError("depth_encoding", str(exc)) from None
            if depth.shape != (height, width):
                raise UnusableInputError("depth_size", f"depth is {depth.shape[1]}x{depth.shape[0]} but the image "
                                                       f"is {width}x{height}; subscribe to depth aligned to the "
                                                       "colour image")
        stamp_ns, last = stamp_to_ns(image_msg.header.stamp), self._last_stamp_ns
        if last is not None and last - STREAM_RESTART_S * 1e9 <= stamp_ns <= last:
            raise UnusableInputError("stamp", f"image stamp {stamp_ns * 1e-9:.9f} s is not after the last processed "
                                              f"{last * 1e-9:.9f} s (out of order)")
        header = self.types.types["std_msgs/msg/Header"](stamp=image_msg.header.stamp, frame_id=frame_id)
        return header, rgb, K, depth

    def _check_distortion(self, info: Any) -> None:
        if self._distortion_warned:
            return
        coefficients = np.asarray(info.d, dtype=np.float64)
        if coefficients.size and np.abs(coefficients).max() > 1e-6:
            self._distortion_warned = True
            self._warn("distortion", f"CameraInfo has non-zero distortion ({info.distortion_model}); the estimator "
                                     "assumes an undistorted image with intrinsics K: use a camera with negligible "
                                     "distortion or a rectified stream whose CameraInfo K describes it")

    # ----------------------------------------------------------------- outputs

    def _wanted(self, output: str) -> bool:
        """Build an enabled output only when someone listens (``publish.only_when_subscribed``)."""
        return not self.params.publish.only_when_subscribed or self._has_subscribers(output)

    # ----------------------------------------------------------------- diagnostics

    def diagnostics_report(self, input_topic: str = "") -> DiagnosticsReport:
        """Rates and latencies of the period since the last report, totals, tracking state; starts a new period."""
        stats = self.statistics
        period, seconds = stats.close_period()
        faults = sum(n for reason, n in period.dropped.items() if reason != DropReason.RATE_LIMITED.value)
        values: dict[str, Any] = {
            "engine": self.loaded.description,
            "input_rate_hz": period.received / seconds,
            "output_rate_hz": period.published / seconds,
            "processing_latency_ms_mean": _mean(period.processing_ms),
            "processing_latency_ms_max": max(period.processing_ms, default=math.nan),
            "stamp_age_ms_mean": _mean(period.stamp_age_ms),
            "tracking_state": stats.tracking_state,
            "frames_since_detection": stats.frames_since_detection,
            "frames_received": stats.received,
            "frames_published": stats.published,
            "frames_dropped": stats.dropped_total,
            **{f"dropped_{reason}": count for reason, count in stats.dropped.items()},
            "frames_lost": stats.lost_total,  # never reached the node logic, unlike the dropped ones
            **{f"lost_{kind}": count for kind, count in stats.lost.items()},
            "max_rate_hz": self.params.max_rate_hz,
            "last_drop_reason": stats.last_reason or "none",
        }
        if period.received == 0:
            where = f" on {input_topic}" if input_topic else ""
            return DiagnosticsReport("stale", f"no synchronised image and CameraInfo{where} for {seconds:.1f} s",
                                     values)
        if period.published == 0 and faults:
            return DiagnosticsReport("error", f"no frame processed: {period.last_reason}", values)
        if faults:
            message = f"{faults} of {period.received} frames dropped; last: {period.last_reason}"
            return DiagnosticsReport("warn", message, values)
        if period.lost:
            message = (f"{period.lost} input frames lost before processing (received {period.received}); "
                       "see the README on input queue depth, QoS and Fast DDS shared memory")
            return DiagnosticsReport("warn", message, values)
        if stats.tracking_state == "lost":
            return DiagnosticsReport("warn", "tracking lost; re-detecting", values)
        return DiagnosticsReport("ok", f"processing at {period.published / seconds:.1f} Hz", values)

    def diagnostics_msg(self, now_ns: int, input_topic: str = "") -> ri.RosMessage:
        """``diagnostic_msgs/DiagnosticArray`` of :meth:`diagnostics_report`, stamped ``now_ns``."""
        report = self.diagnostics_report(input_topic)
        stamp = self.types.types["builtin_interfaces/msg/Time"](sec=int(now_ns // 1_000_000_000),
                                                                 nanosec=int(now_ns % 1_000_000_000))
        header = self.types.types["std_msgs/msg/Header"](stamp=stamp, frame_id="")
        return ri.diagnostic_array_msg(self.types, header, self._status_name, report.values, level=report.level,
                                       message=report.message, hardware_id=self.loaded.description)


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan
