"""Typed parameters of the ROS 2 node, from the ``node:`` section of ``config/perception.yaml``.

The YAML section is the single source of defaults. The node declares every leaf of
:class:`NodeParams` as a ROS parameter under its dotted path (``topics.image``,
``qos.input.reliability``, ``max_rate_hz``...) seeded with the file's value, so the
usual ROS ways of overriding (launch ``parameters=[...]``, ``--ros-args -p``) work
and ``ros2 param describe`` explains each one. At configure time the current ROS
values are folded back into a :class:`NodeParams` and validated here, so a bad value
fails configure with a message naming the parameter instead of surfacing later in a
callback.

ROS parameters cannot be null or mappings, so "not set" is an empty string or empty
list, and the schema holds only scalars and lists of strings.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hoi_perception.config import ConfigError, from_dict, read_yaml, resolve_config_path
from hoi_perception.pipeline.config import DEFAULT_PERCEPTION_CONFIG, ESTIMATOR_SECTION

NODE_SECTION = "node"

Reliability = Literal["best_effort", "reliable"]
Durability = Literal["volatile", "transient_local"]
HandSideName = Literal["right", "left"]


def _doc(text: str) -> dict[str, str]:
    """Field metadata: the description ``ros2 param describe`` shows."""
    return {"description": text}


@dataclass
class TopicParams:
    """Input and output topic names (relative names resolve in the node's namespace; ``~/`` is private)."""

    image: str = field(default="/camera/color/image_raw", metadata=_doc(
        "Colour image topic (sensor_msgs/Image); with compressed=true the node subscribes to <image>/compressed"))
    compressed: bool = field(default=False, metadata=_doc(
        "Subscribe to sensor_msgs/CompressedImage on <image>/compressed instead of the raw image"))
    camera_info: str = field(default="/camera/color/camera_info", metadata=_doc(
        "sensor_msgs/CameraInfo of the colour image; its K and frame_id are used for every output"))
    depth: str = field(default="", metadata=_doc(
        "Optional depth image aligned to the colour image (16UC1 mm or 32FC1 m); empty = no depth"))
    estimate: str = field(default="~/estimate", metadata=_doc("hoi_perception/HandObjectEstimate output"))
    hand_mesh: str = field(default="~/hand_mesh", metadata=_doc(
        "visualization_msgs/Marker TRIANGLE_LIST of each hand's MANO mesh"))
    markers: str = field(default="~/markers", metadata=_doc(
        "visualization_msgs/MarkerArray: hand skeletons, joints, object boxes"))
    debug_image: str = field(default="~/debug_image", metadata=_doc("sensor_msgs/Image rgb8 with the overlay"))
    joint_states: str = field(default="~/joint_states", metadata=_doc(
        "sensor_msgs/JointState with each hand's 45 finger joint rotations"))
    diagnostics: str = field(default="/diagnostics", metadata=_doc("diagnostic_msgs/DiagnosticArray output"))

    def validate(self) -> None:
        for name in ("image", "camera_info", "estimate", "hand_mesh", "markers", "debug_image", "joint_states",
                     "diagnostics"):
            if not getattr(self, name).strip():
                raise ConfigError(f"{name}: a topic name is required")
        if self.depth and self.depth == self.image:
            raise ConfigError(f"depth: must differ from image ('{self.image}')")


@dataclass
class QosParams:
    """One QoS profile as plain data; the adapter turns it into an rclpy QoSProfile."""

    reliability: Reliability = field(default="best_effort", metadata=_doc(
        "best_effort or reliable; a reliable subscriber does not match a best-effort publisher"))
    depth: int = field(default=5, metadata=_doc("History depth (keep-last)"))
    durability: Durability = field(default="volatile", metadata=_doc("volatile or transient_local"))

    def validate(self) -> None:
        if not 1 <= self.depth <= 1000:
            raise ConfigError(f"depth: expected a keep-last history depth in [1, 1000], got {self.depth}")


def _reliable_output_qos() -> QosParams:
    return QosParams(reliability="reliable", depth=10, durability="volatile")


@dataclass
class QosSection:
    """Inputs default to the sensor-data profile camera drivers publish with (best effort, keep last 5);
    outputs are reliable, which both reliable and best-effort subscribers (RViz, rosbag2) accept."""

    input: QosParams = field(default_factory=QosParams)
    output: QosParams = field(default_factory=_reliable_output_qos)


@dataclass
class SyncParams:
    """Approximate-time pairing of image, CameraInfo (and depth); see hoi_perception.ros.input_sync."""

    queue_size: int = field(default=10, metadata=_doc("Messages per input kept while looking for a match"))
    slop_s: float = field(default=0.02, metadata=_doc("Largest stamp difference (s) between matched messages"))

    def validate(self) -> None:
        if not 1 <= self.queue_size <= 1000:
            raise ConfigError(f"queue_size: expected [1, 1000], got {self.queue_size}")
        if not (math.isfinite(self.slop_s) and 0.0 <= self.slop_s <= 1.0):
            raise ConfigError(f"slop_s: expected seconds in [0, 1], got {self.slop_s}")


@dataclass
class FrameParams:
    """TF child frame names; the parent is always the CameraInfo's optical frame."""

    right_wrist: str = field(default="right_hand", metadata=_doc("TF frame of the right wrist"))
    left_wrist: str = field(default="left_hand", metadata=_doc("TF frame of the left wrist"))
    object_prefix: str = field(default="", metadata=_doc(
        "TF frame of an object = this prefix + the object's name in the library"))

    def validate(self) -> None:
        for name in ("right_wrist", "left_wrist"):
            value = getattr(self, name)
            if not value or value.startswith("/") or " " in value:
                raise ConfigError(f"{name}: expected a TF frame name without spaces or leading '/', got {value!r}")
        if self.right_wrist == self.left_wrist:
            raise ConfigError(f"right_wrist and left_wrist must differ, both are {self.right_wrist!r}")
        if self.object_prefix.startswith("/") or " " in self.object_prefix:
            raise ConfigError(f"object_prefix: no spaces or leading '/', got {self.object_prefix!r}")

    def wrist(self, side: str) -> str:
        return self.right_wrist if side == "right" else self.left_wrist

    def object(self, name: str) -> str:
        return f"{self.object_prefix}{name}"


@dataclass
class PublishParams:
    """Which outputs are produced. Building the mesh marker and the overlay image costs time per frame."""

    tf: bool = field(default=True, metadata=_doc("Broadcast TF for the wrists and posed objects"))
    joint_tf: bool = field(default=False, metadata=_doc(
        "Also broadcast a TF frame per hand joint (<wrist>_<joint>, child of the wrist frame)"))
    estimate: bool = field(default=True, metadata=_doc("Publish HandObjectEstimate"))
    estimate_vertices: bool = field(default=False, metadata=_doc(
        "Include the 778 mesh vertices per hand in HandObjectEstimate"))
    hand_mesh: bool = field(default=True, metadata=_doc("Publish the hand mesh Marker"))
    markers: bool = field(default=True, metadata=_doc("Publish the skeleton/object-box MarkerArray"))
    debug_image: bool = field(default=True, metadata=_doc("Publish the overlay image"))
    joint_states: bool = field(default=True, metadata=_doc("Publish JointState"))
    only_when_subscribed: bool = field(default=True, metadata=_doc(
        "Skip building topic outputs that have no subscriber (TF is always sent)"))


@dataclass
class EstimatorSelection:
    """Node-level choices handed to the ``estimator:`` section; empty means "as that section says".

    Each field overrides the estimator setting of :data:`ESTIMATOR_KEYS`, so a launch
    file can switch engine or model without a second YAML file.
    """

    engine: str = field(default="", metadata=_doc("Inference engine: torch, onnxruntime or tensorrt"))
    device: str = field(default="", metadata=_doc("cpu, cuda or cuda:N"))
    checkpoint: str = field(default="", metadata=_doc("Training checkpoint run by engine torch"))
    crop_model: str = field(default="", metadata=_doc("Crop network .onnx (engines onnxruntime, tensorrt)"))
    detector_model: str = field(default="", metadata=_doc("Detector .onnx (engines onnxruntime, tensorrt)"))
    object_library: str = field(default="", metadata=_doc("Object library YAML (like objects.yaml)"))
    object_name: str = field(default="", metadata=_doc("Library name of the object the network estimates"))
    hand_sides: list[str] = field(default_factory=list, metadata=_doc("Hands to track: right, left"))
    filter_config: str = field(default="", metadata=_doc("Temporal filter settings file (like filter.yaml)"))
    hand_frontend: str = field(default="", metadata=_doc(
        "Where the hands come from: network, or mediapipe (MediaPipe Hands + MANO fit)"))
    mediapipe_model_dir: str = field(default="", metadata=_doc(
        "Folder of MediaPipe Hands' models (hoi-perception install-mediapipe-models)"))

    def validate(self) -> None:
        if self.engine and self.engine not in ("torch", "onnxruntime", "tensorrt"):
            raise ConfigError(f"engine: expected torch, onnxruntime or tensorrt (or empty), got {self.engine!r}")
        if self.hand_frontend and self.hand_frontend not in ("network", "mediapipe"):
            raise ConfigError(f"hand_frontend: expected network or mediapipe (or empty), got {self.hand_frontend!r}")
        bad_sides = [s for s in self.hand_sides if s not in ("right", "left")]
        if bad_sides or len(set(self.hand_sides)) != len(self.hand_sides):
            raise ConfigError(f"hand_sides: expected distinct values among 'right', 'left', got {self.hand_sides}")


# EstimatorSelection field -> dotted key in the estimator section (hoi_perception.pipeline.config.EstimatorConfig).
ESTIMATOR_KEYS: dict[str, str] = {
    "engine": "engine.kind", "device": "engine.device", "checkpoint": "checkpoint", "crop_model": "crop_model",
    "detector_model": "detector_model", "object_library": "objects", "object_name": "object_name",
    "hand_sides": "hand_sides", "filter_config": "filter_config", "hand_frontend": "hand_frontend",
    "mediapipe_model_dir": "mediapipe.model_dir",
}


@dataclass
class NodeParams:
    """Everything the node reads at configure time (see config/perception.yaml, ``node:``)."""

    topics: TopicParams = field(default_factory=TopicParams)
    qos: QosSection = field(default_factory=QosSection)
    sync: SyncParams = field(default_factory=SyncParams)
    frames: FrameParams = field(default_factory=FrameParams)
    publish: PublishParams = field(default_factory=PublishParams)
    estimator: EstimatorSelection = field(default_factory=EstimatorSelection)
    max_rate_hz: float = field(default=0.0, metadata=_doc(
        "Most frames processed per second (wall clock); extra frames are dropped and counted; 0 = no limit"))
    diagnostics_period_s: float = field(default=1.0, metadata=_doc("Seconds between /diagnostics messages"))
    log_throttle_s: float = field(default=5.0, metadata=_doc(
        "Repeated per-frame warnings of one kind are logged at most this often"))
    autostart: bool = field(default=False, metadata=_doc(
        "Configure and activate on start; false: start unconfigured and wait for lifecycle transitions "
        "(`ros2 lifecycle set`, a lifecycle manager), as lifecycle nodes do"))

    def validate(self) -> None:
        if not (math.isfinite(self.max_rate_hz) and self.max_rate_hz >= 0.0):
            raise ConfigError(f"max_rate_hz: expected >= 0 (0 = no limit), got {self.max_rate_hz}")
        if not (math.isfinite(self.diagnostics_period_s) and 0.05 <= self.diagnostics_period_s <= 60.0):
            raise ConfigError(f"diagnostics_period_s: expected seconds in [0.05, 60], got {self.diagnostics_period_s}")
        if not (math.isfinite(self.log_throttle_s) and self.log_throttle_s >= 0.0):
            raise ConfigError(f"log_throttle_s: expected seconds >= 0, got {self.log_throttle_s}")
        outputs = [self.topics.estimate, self.topics.hand_mesh, self.topics.markers, self.topics.debug_image,
                   self.topics.joint_states, self.topics.diagnostics]
        if len(set(outputs)) != len(outputs):
            raise ConfigError(f"topics: output topics must be distinct, got {outputs}")


# --------------------------------------------------------------------------- loading


def read_sections(path: str | Path | None = None) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """The resolved file and its ``node`` and ``estimator`` sections (empty mappings when absent)."""
    resolved = resolve_config_path(path if path is not None else DEFAULT_PERCEPTION_CONFIG)
    data = read_yaml(resolved)
    sections = []
    for key in (NODE_SECTION, ESTIMATOR_SECTION):
        section = data.get(key) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{resolved}: '{key}' must be a mapping, got {type(section).__name__}")
        sections.append(section)
    return resolved, sections[0], sections[1]


def load_node_params(path: str | Path | None = None) -> NodeParams:
    """NodeParams from a perception config file's ``node:`` section (default: the shipped perception.yaml)."""
    resolved, node, _ = read_sections(path)
    return from_dict(NodeParams, node, f"{resolved}: {NODE_SECTION}:")


def launch_params(config_file: str | Path, camera: str = "") -> tuple[NodeParams, dict[str, Any]]:
    """What a launch file passes the node: the effective NodeParams and the ROS parameter overrides.

    ``camera`` is a camera topic namespace: when given, the node subscribes to
    ``<camera>/image_raw`` and ``<camera>/camera_info`` instead of the file's topics.
    """
    overrides: dict[str, Any] = {"config_file": str(config_file)}
    params = load_node_params(config_file)
    camera = camera.strip().rstrip("/")
    if camera:
        topics = {"topics.image": f"{camera}/image_raw", "topics.camera_info": f"{camera}/camera_info"}
        params = params_from_values({**parameter_values(params), **topics})
        overrides.update(topics)
    return params, overrides


# --------------------------------------------------------------------------- ROS parameter view

ParameterKind = Literal["bool", "integer", "double", "string", "string_array"]
_KINDS: dict[Any, ParameterKind] = {bool: "bool", int: "integer", float: "double", str: "string",
                                    list[str]: "string_array"}


@dataclass(frozen=True)
class ParameterSpec:
    """One ROS parameter: dotted name, value, type (declared explicitly, so 30 stays a double) and description."""

    name: str
    value: Any
    kind: ParameterKind
    description: str


def parameter_specs(params: NodeParams) -> list[ParameterSpec]:
    """Every leaf of ``params`` as a ROS parameter, in declaration order."""
    specs: list[ParameterSpec] = []
    _collect(params, "", specs)
    return specs


def _collect(obj: Any, prefix: str, out: list[ParameterSpec]) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        name = f"{prefix}{f.name}"
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _collect(value, f"{name}.", out)
            continue
        hint = hints[f.name]
        kind = _KINDS.get(hint) or ("string" if typing.get_origin(hint) is Literal else None)
        if kind is None:
            raise TypeError(f"NodeParams.{name}: type {hint} has no ROS parameter equivalent")
        out.append(ParameterSpec(name, list(value) if kind == "string_array" else value, kind,
                                 f.metadata.get("description", "")))


def params_from_values(values: Mapping[str, Any], where: str = "node parameters:") -> NodeParams:
    """NodeParams from dotted ROS parameter values (as :func:`parameter_specs` names them), validated.

    Names missing from ``values`` keep their defaults; unknown names are an error.
    """
    nested: dict[str, Any] = {}
    for name, value in values.items():
        parts = name.split(".")
        node = nested
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{where} '{name}' nests under a parameter that is not a section")
            node = child
        if isinstance(value, tuple):
            value = list(value)
        node[parts[-1]] = value
    return from_dict(NodeParams, nested, where)


def parameter_values(params: NodeParams) -> dict[str, Any]:
    """Dotted name -> value of every parameter (the inverse of :func:`params_from_values`)."""
    return {spec.name: spec.value for spec in parameter_specs(params)}


def estimator_overrides(selection: EstimatorSelection) -> list[str]:
    """``key=value`` overrides (see ``load_estimator_config``) for the selection's non-empty fields."""
    overrides: list[str] = []
    for f in dataclasses.fields(selection):
        value = getattr(selection, f.name)
        if value in ("", []):
            continue
        if isinstance(value, list):
            rendered = "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
        else:
            rendered = _yaml_scalar(value)
        overrides.append(f"{ESTIMATOR_KEYS[f.name]}={rendered}")
    return overrides


def _yaml_scalar(value: str) -> str:
    """A string as a quoted YAML scalar, so a path like ``on`` or ``1e3`` stays a string."""
    return "'" + str(value).replace("'", "''") + "'"

