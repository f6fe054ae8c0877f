"""The package's ROS 2 messages without ROS, and builders for every message it publishes.

Two halves:

* **Definitions.** The ``msg/*.msg`` files are registered into a rosbags typestore
  from their text (as ``hoi_perception/msg/<Name>``) on top of a distribution's
  standard messages, so bags recorded here carry the exact definitions a ROS 2
  build generates. The files are found next to the code in a source checkout
  (``<repo>/msg``), inside a pip-installed package (``hoi_perception/_msg``), or in
  an installed ROS package (``<prefix>/share/hoi_perception/msg`` for each prefix
  on ``AMENT_PREFIX_PATH``).

* **Builders.** Functions that turn the pipeline's results
  (:class:`~hoi_perception.models.results.HandResult`,
  :class:`~hoi_perception.models.results.ObjectResult`) and plain NumPy arrays
  into messages: the package's ``HandObjectEstimate`` and the standard
  ``tf2_msgs/TFMessage``, ``visualization_msgs/Marker(Array)``,
  ``sensor_msgs/JointState`` and ``diagnostic_msgs/DiagnosticArray``.

Every builder takes a *typestore* first: any object whose ``types`` mapping gives
the message class for a name such as ``"geometry_msgs/msg/Point"``, the class
taking its fields as keyword arguments and carrying the message's constants as
class attributes. A rosbags ``Typestore`` is one (its classes have no defaults,
so fields a builder leaves out are filled with zeros from its ``fielddefs``); an
adapter around rclpy's generated classes is the other, which is why nothing here
imports rclpy. Numeric arrays are passed as NumPy arrays of the field's exact
dtype. Headers are passed in, so outputs carry the input image's stamp and frame.

Quaternions follow one rule: a rotation's quaternion has ``w >= 0`` (ties broken
by scipy's canonical form), unless a :class:`QuaternionContinuity` is given, which
instead keeps each stream's consecutive quaternions in the same hemisphere so that
consumers interpolating or filtering components never see a sign flip.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from rosbags.typesys import get_types_from_msg
from rosbags.typesys.store import Typestore
from scipy.spatial.transform import Rotation

from hoi_perception.bag_io import DEFAULT_DISTRO, SerializedMessage
from hoi_perception.bag_io import typestore as distro_typestore
from hoi_perception.geometry.rotations import matrix_to_quaternion_np
from hoi_perception.hand_model.joint_orders import HO3D_BONES, HO3D_JOINT_NAMES, MANO_JOINT_NAMES, NUM_HAND_JOINTS
from hoi_perception.models.results import HandResult, ObjectResult

PACKAGE_NAME = "hoi_perception"
# Every message of msg/, dependencies first (the order only matters for readers).
MESSAGE_NAMES: tuple[str, ...] = (
    "BoundingBox2D",
    "StageLatency",
    "HandEstimate",
    "ObjectEstimate",
    "HandObjectEstimate",
)
SUPPORTED_DISTROS: tuple[str, ...] = ("humble", "jazzy")
NUM_MANO_VERTICES = 778

_PACKAGE_DIR = Path(__file__).resolve().parent


class RosMessage(Protocol):
    """A ROS 2 message object (a rosbags message dataclass or an rclpy generated message):
    its fields are attributes, read and set by name."""

    def __getattr__(self, name: str) -> Any: ...

    def __setattr__(self, name: str, value: Any) -> None: ...


class MessageClass(Protocol):
    """A message class: called with the message's fields as keywords; its constants
    (``Marker.ADD``) are class attributes."""

    def __call__(self, **fields: Any) -> RosMessage: ...

    def __getattr__(self, name: str) -> Any: ...


class MessageTypes(Protocol):
    """What the builders need of a typestore: the message class of each full type name. A
    rosbags ``Typestore`` is one, :class:`hoi_perception.ros.node_logic.GeneratedMessageTypes`
    (rclpy's generated classes) the other."""

    @property
    def types(self) -> Mapping[str, Any]: ...


def message_type(name: str) -> str:
    """Full type name of one of the package's messages, e.g. ``hoi_perception/msg/HandEstimate``."""
    if name not in MESSAGE_NAMES:
        raise ValueError(f"unknown {PACKAGE_NAME} message {name!r}; expected one of {list(MESSAGE_NAMES)}")
    return f"{PACKAGE_NAME}/msg/{name}"


# --------------------------------------------------------------------------- definitions


def msg_dir_candidates() -> list[Path]:
    """Where the .msg files may live, most specific first.

    The copies next to the imported code come first so that definitions and
    builders always belong to the same version of the package.
    """
    candidates = [_PACKAGE_DIR / "_msg"]
    if (_PACKAGE_DIR.parent / "package.xml").is_file():
        candidates.append(_PACKAGE_DIR.parent / "msg")
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / PACKAGE_NAME / "msg")
    return candidates


def _missing_messages(directory: Path) -> list[str]:
    return [name for name in MESSAGE_NAMES if not (directory / f"{name}.msg").is_file()]


def find_msg_dir() -> Path:
    """The first candidate directory that holds every one of the package's .msg files."""
    candidates = msg_dir_candidates()
    for candidate in candidates:
        if candidate.is_dir() and not _missing_messages(candidate):
            return candidate
    raise FileNotFoundError(
        f"the {PACKAGE_NAME} message definitions ({', '.join(n + '.msg' for n in MESSAGE_NAMES)}) were not found; "
        f"looked in {[str(c) for c in candidates]}. In a ROS 2 workspace, source its install/setup.bash "
        "(sets AMENT_PREFIX_PATH); otherwise pass msg_dir explicitly"
    )


def message_definitions(msg_dir: str | Path | None = None) -> dict[str, str]:
    """Full type name -> .msg text for every message of the package."""
    directory = Path(msg_dir) if msg_dir is not None else find_msg_dir()
    missing = _missing_messages(directory)
    if missing:
        raise FileNotFoundError(f"msg_dir '{directory}' lacks {', '.join(n + '.msg' for n in missing)}")
    return {message_type(name): (directory / f"{name}.msg").read_text(encoding="utf-8") for name in MESSAGE_NAMES}


def register_messages(ts: Typestore, msg_dir: str | Path | None = None) -> Typestore:
    """Register the package's messages into ``ts`` (in place) and return it.

    The standard messages they use (std_msgs, geometry_msgs) must already be in
    ``ts``, as they are in every distribution's store. Registering twice is harmless;
    a store holding different definitions under the same names raises
    ``rosbags.typesys.TypesysError``.
    """
    types: dict[str, Any] = {}
    for typename, text in message_definitions(msg_dir).items():
        types.update(get_types_from_msg(text, typename))
    for typename, (_, fields) in types.items():
        for field_name, desc in fields:
            for dependency in _referenced_types(desc):
                if dependency not in ts.fielddefs and dependency not in types:
                    raise ValueError(f"{typename}.{field_name} uses {dependency}, which the typestore does not know")
    ts.register(types)
    return ts


def _referenced_types(desc: tuple) -> list[str]:
    nodetype, detail = desc
    if nodetype.name == "NAME":
        return [detail]
    if nodetype.name in ("ARRAY", "SEQUENCE"):
        return _referenced_types(detail[0])
    return []


def hoi_typestore(distro: str = DEFAULT_DISTRO, msg_dir: str | Path | None = None) -> Typestore:
    """A fresh typestore of one ROS 2 distribution with the package's messages registered."""
    if distro not in SUPPORTED_DISTROS:
        raise ValueError(f"unsupported ROS 2 distribution {distro!r}; expected one of {list(SUPPORTED_DISTROS)}")
    return register_messages(distro_typestore(distro), msg_dir)


# --------------------------------------------------------------------------- generic helpers

_NUMPY_DTYPES = {
    "bool": np.bool_, "byte": np.uint8, "octet": np.uint8, "char": np.uint8,
    "int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16,
    "int32": np.int32, "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64,
    "float32": np.float32, "float64": np.float64,
}


def _default_value(ts: MessageTypes, desc: tuple) -> Any:
    """Zero value of a rosbags field description (rosbags classes have no defaults)."""
    nodetype, detail = desc
    kind = nodetype.name
    if kind == "BASE":
        base = detail[0]
        if base == "string":
            return ""
        if base == "bool":
            return False
        return 0.0 if base.startswith("float") else 0
    if kind == "NAME":
        return _new(ts, detail)
    element, size = detail
    if element[0].name == "BASE" and element[1][0] in _NUMPY_DTYPES:
        return np.zeros(size if kind == "ARRAY" else 0, dtype=_NUMPY_DTYPES[element[1][0]])
    if kind == "ARRAY":
        return [_default_value(ts, element) for _ in range(size)]
    return []


def _message_class(ts: MessageTypes, typename: str) -> MessageClass:
    try:
        return ts.types[typename]
    except KeyError:
        ours = typename.startswith(f"{PACKAGE_NAME}/")
        hint = " (register the package's messages first: register_messages)" if ours else ""
        raise KeyError(f"the typestore has no message type {typename!r}{hint}") from None


def _new(ts: MessageTypes, typename: str, **fields: Any) -> RosMessage:
    """Instantiate ``typename`` from ``ts`` with ``fields``; other fields get zero values."""
    cls = _message_class(ts, typename)
    fielddefs = getattr(ts, "fielddefs", None)
    if fielddefs is not None:  # rosbags: fill what the caller left out
        for name, desc in fielddefs[typename][1]:
            if name not in fields:
                fields[name] = _default_value(ts, desc)
    return cls(**fields)


def _array(value: Any, shape: tuple[int, ...], name: str, finite: bool = True) -> np.ndarray:
    """``value`` as float64 of ``shape`` (-1 = any length), with an error that names it."""
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != len(shape) or any(want not in (-1, got) for want, got in zip(shape, array.shape)):
        expected = "(" + ", ".join("N" if s == -1 else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise ValueError(f"{name}: expected shape {expected}, got {array.shape}")
    if finite and not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return array


def _time(ts: MessageTypes, nanoseconds: int, name: str) -> RosMessage:
    if nanoseconds < 0:
        raise ValueError(f"{name}: expected a non-negative duration in nanoseconds, got {nanoseconds}")
    return _new(ts, "builtin_interfaces/msg/Duration", sec=int(nanoseconds // 1_000_000_000),
                nanosec=int(nanoseconds % 1_000_000_000))


def _uint32(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < 2**32:
        raise ValueError(f"{name}: expected an integer in [0, 2**32), got {value!r}")
    return int(value)


def _point(ts: MessageTypes, xyz: np.ndarray) -> RosMessage:
    return _new(ts, "geometry_msgs/msg/Point", x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))


def _points(ts: MessageTypes, xyz: np.ndarray) -> list[RosMessage]:
    Point = _message_class(ts, "geometry_msgs/msg/Point")
    return [Point(x=x, y=y, z=z) for x, y, z in xyz.tolist()]


def _vector3(ts: MessageTypes, xyz: Sequence[float] | np.ndarray) -> RosMessage:
    return _new(ts, "geometry_msgs/msg/Vector3", x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))


def _quaternion(ts: MessageTypes, wxyz: np.ndarray) -> RosMessage:
    return _new(ts, "geometry_msgs/msg/Quaternion", x=float(wxyz[1]), y=float(wxyz[2]), z=float(wxyz[3]),
                w=float(wxyz[0]))


def _pose(ts: MessageTypes, position: np.ndarray, wxyz: np.ndarray) -> RosMessage:
    return _new(ts, "geometry_msgs/msg/Pose", position=_point(ts, position), orientation=_quaternion(ts, wxyz))


_IDENTITY_WXYZ = np.array([1.0, 0.0, 0.0, 0.0])


def _box(ts: MessageTypes, box: np.ndarray, name: str) -> RosMessage:
    x0, y0, x1, y1 = _array(box, (4,), name).tolist()
    if x1 < x0 or y1 < y0:
        raise ValueError(f"{name}: expected (x_min, y_min, x_max, y_max) with max >= min, got {[x0, y0, x1, y1]}")
    return _new(ts, message_type("BoundingBox2D"), x_min=x0, y_min=y0, x_max=x1, y_max=y1)


# --------------------------------------------------------------------------- rotations


def check_rotation(rotation: Any, name: str = "rotation", tolerance: float = 1e-3) -> np.ndarray:
    """``rotation`` as a float64 (3, 3) proper rotation matrix, or a ValueError naming it."""
    R = _array(rotation, (3, 3), name)
    error = float(np.abs(R.T @ R - np.eye(3)).max())
    det = float(np.linalg.det(R))
    if error > tolerance or det <= 0:
        raise ValueError(f"{name}: expected a rotation matrix (orthonormal, det +1), "
                         f"got max |R^T R - I| = {error:.2g} and det = {det:.3g}")
    return R


def quaternion_from_matrix(rotation: Any, name: str = "rotation") -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a rotation matrix, with w >= 0 (scipy's canonical form at w = 0)."""
    return matrix_to_quaternion_np(check_rotation(rotation, name))


class QuaternionContinuity:
    """Keeps each stream's quaternions sign-consistent over time.

    q and -q are the same rotation, so a per-frame rule such as w >= 0 flips the
    sign whenever a rotation passes through w = 0 (a half turn), and anything that
    interpolates or low-passes quaternion components then jumps. This remembers the
    last quaternion of each stream (a TF child frame, a hand track, an object) and
    returns the sign with a non-negative dot product with it. Streams start at w >= 0.
    """

    def __init__(self) -> None:
        self._last: dict[str, np.ndarray] = {}

    def quaternion(self, stream: str, rotation: Any, name: str = "rotation") -> np.ndarray:
        """Quaternion (w, x, y, z) of ``rotation`` in the hemisphere of the stream's previous one."""
        q = quaternion_from_matrix(rotation, name)
        last = self._last.get(stream)
        if last is not None and float(np.dot(q, last)) < 0.0:
            q = -q
        self._last[stream] = q
        return q

    def forget(self, stream: str) -> None:
        """Drop a stream's memory, e.g. when its track ends."""
        self._last.pop(stream, None)

    def reset(self) -> None:
        """Drop every stream's memory."""
        self._last.clear()


def _oriented(rotation: Any, stream: str, continuity: QuaternionContinuity | None, name: str) -> np.ndarray:
    if continuity is None:
        return quaternion_from_matrix(rotation, name)
    return continuity.quaternion(stream, rotation, name)


def hand_stream(hand: HandResult, track_id: int) -> str:
    """Continuity stream name of a hand track's wrist orientation."""
    return f"hand/{hand.side}/{track_id}"


def object_stream(name: str) -> str:
    """Continuity stream name of an object's orientation."""
    return f"object/{name}"


def wrist_rotation(hand: HandResult) -> np.ndarray:
    """Rotation (3, 3) of the wrist frame in the camera frame: MANO's global orientation."""
    return Rotation.from_rotvec(_array(hand.pose[:3], (3,), "hand.pose[0:3]")).as_matrix()


# --------------------------------------------------------------------------- hoi_perception messages


class TrackingState(enum.IntEnum):
    """Per-frame tracking state; the values are HandObjectEstimate's constants."""

    DETECTING = 0
    TRACKING = 1
    LOST = 2


def hand_estimate_msg(ts: MessageTypes, hand: HandResult, track_id: int, *, include_vertices: bool = False,
                      continuity: QuaternionContinuity | None = None) -> RosMessage:
    """``hoi_perception/msg/HandEstimate`` of one hand.

    ``include_vertices`` adds the 778 mesh vertices (9.3 kB per hand); leave it off
    when nobody subscribes to the mesh. The wrist orientation's quaternion stream is
    :func:`hand_stream`.
    """
    if not isinstance(hand, HandResult):
        raise TypeError(f"hand: expected a HandResult, got {type(hand).__name__}")
    track_id = _uint32(track_id, "track_id")
    cls = _message_class(ts, message_type("HandEstimate"))
    joints = _array(hand.joints_cam, (NUM_HAND_JOINTS, 3), "hand.joints_cam")
    rotation = wrist_rotation(hand)
    if include_vertices:
        vertices = _array(hand.vertices_cam, (NUM_MANO_VERTICES, 3), "hand.vertices_cam").astype(np.float32).ravel()
    else:
        vertices = np.zeros(0, np.float32)
    return _new(
        ts, message_type("HandEstimate"),
        side=cls.LEFT if hand.side == "left" else cls.RIGHT,
        track_id=track_id,
        confidence=float(hand.confidence),
        mano_pose=_array(hand.pose, (48,), "hand.pose").astype(np.float32),
        mano_betas=_array(hand.betas, (10,), "hand.betas").astype(np.float32),
        joints=_points(ts, joints),
        joint_confidence=_array(hand.joint_confidence, (NUM_HAND_JOINTS,), "hand.joint_confidence").astype(np.float32),
        joints_2d=_array(hand.joints2d, (NUM_HAND_JOINTS, 2), "hand.joints2d").astype(np.float32).ravel(),
        vertices=vertices,
        wrist_pose=_pose(ts, joints[0], _oriented(rotation, hand_stream(hand, track_id), continuity, "wrist")),
        box=_box(ts, hand.box, "hand.box"),
    )


def object_estimate_msg(ts: MessageTypes, obj: ObjectResult, *,
                        continuity: QuaternionContinuity | None = None) -> RosMessage:
    """``hoi_perception/msg/ObjectEstimate`` of one object; a failed pose is sent as NaN, never as identity.

    The orientation's quaternion stream is :func:`object_stream` of the object's name.
    """
    if not isinstance(obj, ObjectResult):
        raise TypeError(f"obj: expected an ObjectResult, got {type(obj).__name__}")
    if obj.success:
        translation = _array(obj.translation, (3,), "obj.translation")
        wxyz = _oriented(obj.rotation, object_stream(obj.name), continuity, "obj.rotation")
    else:
        translation = np.full(3, np.nan)
        wxyz = np.full(4, np.nan)
    return _new(
        ts, message_type("ObjectEstimate"),
        name=obj.name,
        success=obj.success,
        failure_reason=obj.failure_reason,
        confidence=float(obj.confidence),
        pnp_inliers=_uint32(obj.pnp_inliers, "obj.pnp_inliers"),
        pose=_pose(ts, translation, wxyz),
        control_points_2d=_array(obj.control_points_2d, (21, 2), "obj.control_points_2d").astype(np.float32).ravel(),
        box=_box(ts, obj.box, "obj.box"),
    )


def hand_object_estimate_msg(ts: MessageTypes, header: RosMessage, hands: Sequence[RosMessage],
                             objects: Sequence[RosMessage], *,
                             tracking_state: TrackingState, frames_since_detection: int,
                             stage_latencies_ms: Mapping[str, float], refused_hands: Sequence[str] = ()) -> RosMessage:
    """``hoi_perception/msg/HandObjectEstimate`` of one frame.

    ``header`` is the input image's header (its stamp and optical frame);
    ``hands``/``objects`` are messages from :func:`hand_estimate_msg` and
    :func:`object_estimate_msg`; ``stage_latencies_ms`` maps stage names to
    milliseconds, in processing order; ``refused_hands`` names the hands a plausibility
    gate kept out of ``hands`` ("<side>: <reason>").
    """
    state = TrackingState(tracking_state)
    frames = _uint32(frames_since_detection, "frames_since_detection")
    if state is TrackingState.DETECTING and frames != 0:
        raise ValueError(f"frames_since_detection: must be 0 while DETECTING, got {frames}")
    latencies = []
    for stage, milliseconds in stage_latencies_ms.items():
        if not isinstance(stage, str) or not stage:
            raise ValueError(f"stage_latencies_ms: stage names must be non-empty strings, got {stage!r}")
        if not (math.isfinite(milliseconds) and milliseconds >= 0):
            raise ValueError(f"stage_latencies_ms[{stage!r}]: expected a finite value >= 0 ms, got {milliseconds}")
        latencies.append(_new(ts, message_type("StageLatency"), stage=stage, milliseconds=float(milliseconds)))
    return _new(ts, message_type("HandObjectEstimate"), header=header, hands=list(hands), objects=list(objects),
                refused_hands=[str(text) for text in refused_hands], tracking_state=int(state),
                frames_since_detection=frames, stage_latencies=latencies)


# --------------------------------------------------------------------------- TF


@dataclass(frozen=True)
class FrameTransform:
    """A child frame's pose in its parent frame, one TF edge.

    ``rotation`` and ``translation`` map child coordinates to parent coordinates
    (metres). An empty ``parent_frame_id`` means the header's frame (the camera
    optical frame).
    """

    child_frame_id: str
    rotation: np.ndarray
    translation: np.ndarray
    parent_frame_id: str = ""

    def __post_init__(self) -> None:
        if not self.child_frame_id:
            raise ValueError("FrameTransform.child_frame_id: must not be empty")
        object.__setattr__(self, "rotation", check_rotation(self.rotation, "FrameTransform.rotation"))
        object.__setattr__(self, "translation", _array(self.translation, (3,), "FrameTransform.translation"))


def object_frame(obj: ObjectResult, child_frame_id: str) -> FrameTransform:
    """TF edge camera -> object model frame; only for a successful pose."""
    if not obj.success:
        raise ValueError(f"object '{obj.name}' has no pose to publish ({obj.failure_reason})")
    return FrameTransform(child_frame_id, obj.rotation, obj.translation)


def wrist_frame(hand: HandResult, child_frame_id: str) -> FrameTransform:
    """TF edge camera -> wrist: at joint 0, oriented by MANO's global orientation."""
    return FrameTransform(child_frame_id, wrist_rotation(hand), hand.joints_cam[0])


def default_joint_frame_ids(wrist_frame_id: str) -> tuple[str, ...]:
    """``<wrist>_<joint>`` for HO-3D joints 1-20, e.g. ``right_hand_index1``, ``right_hand_thumb_tip``."""
    return tuple(f"{wrist_frame_id}_{name}" for name in HO3D_JOINT_NAMES[1:])


def joint_frames(hand: HandResult, wrist_frame_id: str,
                 joint_frame_ids: Sequence[str] | None = None) -> list[FrameTransform]:
    """TF edges wrist -> each of HO-3D joints 1-20 (joint 0 is the wrist frame itself).

    Joints carry positions only, so their frames keep the wrist's orientation; a
    teleoperation consumer looking up ``wrist -> joint`` gets the keypoints in the
    wrist frame directly.
    """
    ids = default_joint_frame_ids(wrist_frame_id) if joint_frame_ids is None else tuple(joint_frame_ids)
    if len(ids) != NUM_HAND_JOINTS - 1:
        raise ValueError(f"joint_frame_ids: expected {NUM_HAND_JOINTS - 1} names (HO-3D joints 1-20), got {len(ids)}")
    rotation = wrist_rotation(hand)
    joints = _array(hand.joints_cam, (NUM_HAND_JOINTS, 3), "hand.joints_cam")
    in_wrist = (joints[1:] - joints[0]) @ rotation  # R^T (p - p_wrist), row-wise
    return [FrameTransform(child, np.eye(3), offset, parent_frame_id=wrist_frame_id)
            for child, offset in zip(ids, in_wrist)]


def tf_message(ts: MessageTypes, header: RosMessage, frames: Sequence[FrameTransform], *,
               continuity: QuaternionContinuity | None = None) -> RosMessage:
    """``tf2_msgs/TFMessage`` with one TransformStamped per frame, stamped with ``header``.

    With ``continuity`` the quaternion streams are the child frame ids.
    """
    transforms = []
    for frame in frames:
        if not isinstance(frame, FrameTransform):
            raise TypeError(f"frames: expected FrameTransform items, got {type(frame).__name__}")
        frame_header = _new(ts, "std_msgs/msg/Header", stamp=header.stamp,
                            frame_id=frame.parent_frame_id or header.frame_id)
        wxyz = _oriented(frame.rotation, frame.child_frame_id, continuity, f"{frame.child_frame_id} rotation")
        transform = _new(ts, "geometry_msgs/msg/Transform", translation=_vector3(ts, frame.translation),
                         rotation=_quaternion(ts, wxyz))
        transforms.append(_new(ts, "geometry_msgs/msg/TransformStamped", header=frame_header,
                               child_frame_id=frame.child_frame_id, transform=transform))
    ids = [t.child_frame_id for t in transforms]
    if len(set(ids)) != len(ids):
        raise ValueError(f"frames: child frame ids must be unique, got {ids}")
    return _new(ts, "tf2_msgs/msg/TFMessage", transforms=transforms)


# --------------------------------------------------------------------------- markers

MARKER_TYPE = "visualization_msgs/msg/Marker"
RIGHT_HAND_COLOR = (0.95, 0.55, 0.35, 1.0)
LEFT_HAND_COLOR = (0.35, 0.60, 0.95, 1.0)
OBJECT_BOX_COLOR = (0.30, 0.85, 0.40, 1.0)


def _color(ts: MessageTypes, rgba: Any, name: str) -> RosMessage:
    r, g, b, a = _check_colors(rgba, (4,), name).tolist()
    return _new(ts, "std_msgs/msg/ColorRGBA", r=r, g=g, b=b, a=a)


def _check_colors(rgba: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    colors = _array(rgba, shape, name)
    if colors.min(initial=0.0) < 0.0 or colors.max(initial=0.0) > 1.0:
        raise ValueError(f"{name}: RGBA values must lie in [0, 1]")
    return colors


def _marker(ts: MessageTypes, header: RosMessage, marker_type: str, namespace: str, marker_id: int, *,
            points: list[RosMessage], scale: Sequence[float], color: Any, lifetime_ns: int,
            wxyz: np.ndarray = _IDENTITY_WXYZ, position: np.ndarray | None = None,
            colors: list[RosMessage] | None = None) -> RosMessage:
    Marker = _message_class(ts, "visualization_msgs/msg/Marker")
    return _new(
        ts, "visualization_msgs/msg/Marker",
        header=header, ns=namespace, id=int(marker_id), type=getattr(Marker, marker_type), action=Marker.ADD,
        pose=_pose(ts, np.zeros(3) if position is None else position, wxyz),
        scale=_vector3(ts, scale), color=color, lifetime=_time(ts, lifetime_ns, "lifetime_ns"),
        frame_locked=False, points=points, colors=colors if colors is not None else [],
    )


def _mesh_marker_parts(ts: MessageTypes, header: RosMessage, vertices: Any, faces: Any, color: Any, namespace: str,
                       marker_id: int, lifetime_ns: int) -> tuple[RosMessage, np.ndarray, np.ndarray]:
    """The mesh marker without its points, the checked vertices (V, 3) and the face corners (3F,)."""
    verts = _array(vertices, (-1, 3), "vertices")
    face_array = np.asarray(faces)
    if face_array.ndim != 2 or face_array.shape[1] != 3:
        raise ValueError(f"faces: expected shape (F, 3), got {face_array.shape}")
    if not np.issubdtype(face_array.dtype, np.integer):
        raise ValueError(f"faces: expected integer vertex indices, got dtype {face_array.dtype}")
    if face_array.size and (face_array.min() < 0 or face_array.max() >= len(verts)):
        raise ValueError(f"faces: vertex indices must lie in [0, {len(verts)}), "
                         f"got [{face_array.min()}, {face_array.max()}]")
    corners = face_array.reshape(-1)
    color_array = np.asarray(color, dtype=np.float64)
    if color_array.ndim == 2:
        per_vertex = _check_colors(color_array, (len(verts), 4), "color")
        ColorRGBA = _message_class(ts, "std_msgs/msg/ColorRGBA")
        vertex_colors = [ColorRGBA(r=r, g=g, b=b, a=a) for r, g, b, a in per_vertex.tolist()]
        colors = [vertex_colors[i] for i in corners.tolist()]
        single = _color(ts, (1.0, 1.0, 1.0, 1.0), "color")  # neutral: the per-point colours apply
    else:
        colors = None
        single = _color(ts, color_array, "color")
    marker = _marker(ts, header, "TRIANGLE_LIST", namespace, marker_id, points=[], scale=(1.0, 1.0, 1.0),
                     color=single, colors=colors, lifetime_ns=lifetime_ns)
    return marker, verts, corners


def hand_mesh_marker(ts: MessageTypes, header: RosMessage, vertices: Any, faces: Any, color: Any = RIGHT_HAND_COLOR, *,
                     namespace: str = "hand_mesh", marker_id: int = 0, lifetime_ns: int = 0) -> RosMessage:
    """TRIANGLE_LIST marker of a deforming mesh: every face expanded to its three corner points.

    ``vertices`` (V, 3) in the header's frame, metres; ``faces`` (F, 3) vertex
    indices (MANO: 1538 faces -> 4614 points). ``color`` is one RGBA (4,) for the
    whole mesh or one per vertex (V, 4), values in [0, 1]. Scale is 1 (points are
    in metres) and the pose is the identity.
    """
    marker, verts, corners = _mesh_marker_parts(ts, header, vertices, faces, color, namespace, marker_id,
                                                 lifetime_ns)
    # One Point per vertex, shared by the faces that use it: 778 objects instead of 4614
    # (messages are read-only once built; serialisation writes each corner's values).
    vertex_points = _points(ts, verts)
    marker.points = [vertex_points[i] for i in corners.tolist()]
    return marker


def hand_mesh_marker_cdr(ts: MessageTypes, header: RosMessage, vertices: Any, faces: Any,
                         color: Any = RIGHT_HAND_COLOR, *,
                         namespace: str = "hand_mesh", marker_id: int = 0, lifetime_ns: int = 0) -> SerializedMessage:
    """:func:`hand_mesh_marker` already serialised (CDR, little-endian) for a rosbags ``ts``.

    Byte for byte what ``ts.serialize_cdr`` writes for that marker, but the 4614 corner
    points are packed by NumPy instead of one Python object each: serialising the mesh
    was most of a frame's message-building time when writing bags.
    """
    if not isinstance(ts, Typestore):
        raise TypeError(f"hand_mesh_marker_cdr: serialises with a rosbags Typestore, got {type(ts).__name__}")
    marker, verts, corners = _mesh_marker_parts(ts, header, vertices, faces, color, namespace, marker_id,
                                                 lifetime_ns)
    return SerializedMessage(MARKER_TYPE, marker_cdr_with_points(ts, marker, verts[corners]))


def marker_cdr_with_points(ts: Typestore, marker: RosMessage, points: np.ndarray) -> bytes:
    """CDR bytes of ``marker`` (built with ``points=[]``) with ``points`` (N, 3) as its points.

    The marker is serialised with no point and with one, which locates the sequence's
    length field and the alignment padding before its first float64; the packed points
    go there. Every field after ``points`` is at most 4-byte aligned (colours, strings,
    bytes) and N points add 24 N bytes plus that padding, a multiple of 4, so the rest of
    the message is unchanged; this is checked, not assumed.
    """
    if marker.points:
        raise ValueError("marker_cdr_with_points: build the marker with points=[]")
    xyz = np.ascontiguousarray(points, dtype="<f8")
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"points: expected shape (N, 3), got {xyz.shape}")
    empty = bytes(ts.serialize_cdr(marker, MARKER_TYPE))
    Point = _message_class(ts, "geometry_msgs/msg/Point")
    marker.points = [Point(x=0.0, y=0.0, z=0.0)]
    try:
        one = bytes(ts.serialize_cdr(marker, MARKER_TYPE))
    finally:
        marker.points = []
    count_at = next(i for i, (a, b) in enumerate(zip(empty, one)) if a != b)
    padding = len(one) - len(empty) - 24
    rest = empty[count_at + 4:]
    if padding not in (0, 4) or one[count_at + 4 + padding + 24:] != rest:
        raise RuntimeError("the Marker definition of this typestore cannot take spliced points")
    return b"".join((empty[:count_at], np.uint32(len(xyz)).astype("<u4").tobytes(), bytes(padding), xyz.tobytes(),
                     rest))


def hand_skeleton_marker(ts: MessageTypes, header: RosMessage, joints: Any, color: Any = RIGHT_HAND_COLOR, *,
                         line_width: float = 0.004, namespace: str = "hand_skeleton", marker_id: int = 0,
                         lifetime_ns: int = 0) -> RosMessage:
    """LINE_LIST marker of the 20 bones of 21 HO-3D-ordered joints (N, 3) in metres."""
    points = _array(joints, (NUM_HAND_JOINTS, 3), "joints")
    _check_size(line_width, "line_width")
    ends = points[np.asarray(HO3D_BONES).reshape(-1)]
    return _marker(ts, header, "LINE_LIST", namespace, marker_id, points=_points(ts, ends),
                   scale=(line_width, 0.0, 0.0), color=_color(ts, color, "color"), lifetime_ns=lifetime_ns)


def hand_joints_marker(ts: MessageTypes, header: RosMessage, joints: Any, color: Any = RIGHT_HAND_COLOR, *,
                       diameter: float = 0.008, namespace: str = "hand_joints", marker_id: int = 0,
                       lifetime_ns: int = 0) -> RosMessage:
    """SPHERE_LIST marker with one sphere per joint (21, 3), metres."""
    points = _array(joints, (NUM_HAND_JOINTS, 3), "joints")
    _check_size(diameter, "diameter")
    return _marker(ts, header, "SPHERE_LIST", namespace, marker_id, points=_points(ts, points),
                   scale=(diameter, diameter, diameter), color=_color(ts, color, "color"), lifetime_ns=lifetime_ns)


# Corner i of a box has coordinate bits (x, y, z) = ((i >> 2) & 1, (i >> 1) & 1, i & 1), 1 = max;
# its 12 edges join corners that differ in exactly one bit.
_BOX_CORNER_BITS = np.array([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)])
_BOX_EDGES = np.array([(a, a | bit) for a in range(8) for bit in (1, 2, 4) if not a & bit])


def box_corners(bounds: Any, name: str = "bounds") -> np.ndarray:
    """The 8 corners (8, 3) of an axis-aligned box ``bounds`` = [[x, y, z]_min, [x, y, z]_max]."""
    b = _array(bounds, (2, 3), name)
    if np.any(b[1] < b[0]):
        raise ValueError(f"{name}: expected rows [min, max] with max >= min, got {b.tolist()}")
    return np.where(_BOX_CORNER_BITS == 1, b[1], b[0])


def object_box_marker(ts: MessageTypes, header: RosMessage, rotation: Any, translation: Any, bounds: Any,
                      color: Any = OBJECT_BOX_COLOR, *, line_width: float = 0.003, namespace: str = "object_box",
                      marker_id: int = 0, lifetime_ns: int = 0) -> RosMessage:
    """LINE_LIST marker of the 12 edges of an object's model-frame bounding box.

    The marker's pose is the object pose (model -> header frame) and its points
    are the box edges in model coordinates, so RViz moves the box with the pose.
    """
    wxyz = quaternion_from_matrix(rotation, "rotation")
    position = _array(translation, (3,), "translation")
    _check_size(line_width, "line_width")
    ends = box_corners(bounds)[_BOX_EDGES.reshape(-1)]
    return _marker(ts, header, "LINE_LIST", namespace, marker_id, points=_points(ts, ends),
                   scale=(line_width, 0.0, 0.0), color=_color(ts, color, "color"), lifetime_ns=lifetime_ns,
                   wxyz=wxyz, position=position)


def _check_size(value: float, name: str) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a positive size in metres, got {value}")


def delete_all_marker(ts: MessageTypes, header: RosMessage) -> RosMessage:
    """A DELETEALL marker: clears the previous frame's markers when sent first in a MarkerArray."""
    Marker = _message_class(ts, "visualization_msgs/msg/Marker")
    return _new(ts, "visualization_msgs/msg/Marker", header=header, action=Marker.DELETEALL,
                pose=_pose(ts, np.zeros(3), _IDENTITY_WXYZ))


def scene_markers(ts: MessageTypes, header: RosMessage, hands: Sequence[HandResult], objects: Sequence[ObjectResult],
                  object_bounds: Mapping[str, Any], *, line_width: float = 0.004, joint_diameter: float = 0.008,
                  lifetime_ns: int = 0) -> RosMessage:
    """MarkerArray of one frame: DELETEALL, then per hand its skeleton and joints, per posed object its box.

    Hands are coloured by side; hand ``i`` has marker id ``i`` in the
    ``hand_skeleton`` and ``hand_joints`` namespaces, object ``j`` id ``j`` in
    ``object_box``. ``object_bounds`` maps object names to their model-frame
    bounds [[min xyz], [max xyz]]. Objects without a pose are left out.
    """
    markers = [delete_all_marker(ts, header)]
    for index, hand in enumerate(hands):
        color = LEFT_HAND_COLOR if hand.side == "left" else RIGHT_HAND_COLOR
        markers.append(hand_skeleton_marker(ts, header, hand.joints_cam, color, line_width=line_width,
                                            marker_id=index, lifetime_ns=lifetime_ns))
        markers.append(hand_joints_marker(ts, header, hand.joints_cam, color, diameter=joint_diameter,
                                          marker_id=index, lifetime_ns=lifetime_ns))
    for index, obj in enumerate(objects):
        if not obj.success:
            continue
        if obj.name not in object_bounds:
            raise ValueError(f"object_bounds: no bounds for object '{obj.name}'; have {sorted(object_bounds)}")
        markers.append(object_box_marker(ts, header, obj.rotation, obj.translation, object_bounds[obj.name],
                                         line_width=line_width, marker_id=index, lifetime_ns=lifetime_ns))
    return _new(ts, "visualization_msgs/msg/MarkerArray", markers=markers)


# --------------------------------------------------------------------------- joint states and diagnostics

JOINT_AXES: tuple[str, ...] = ("x", "y", "z")


def hand_joint_names(side: Literal["right", "left"]) -> tuple[str, ...]:
    """The 45 JointState names of one hand: ``<side>_<joint>_<axis>``, e.g. ``right_index1_x``.

    Joints are MANO's 15 finger joints in kinematic order (index1-3, middle1-3,
    pinky1-3, ring1-3, thumb1-3); the axis is a component of the joint's
    axis-angle rotation relative to its parent (MANO pose[3:48], flat hand = 0).
    """
    if side not in ("right", "left"):
        raise ValueError(f"side: expected 'right' or 'left', got {side!r}")
    return tuple(f"{side}_{joint}_{axis}" for joint in MANO_JOINT_NAMES[1:] for axis in JOINT_AXES)


def joint_state_msg(ts: MessageTypes, header: RosMessage, hands: Sequence[HandResult]) -> RosMessage:
    """``sensor_msgs/JointState`` with the finger joint rotations of each hand, radians.

    Positions are the components of MANO's local axis-angle vectors (see
    :func:`hand_joint_names`); they equal joint angles for rotations about one
    axis. Velocities and efforts are left empty. At most one hand per side.
    """
    sides = [hand.side for hand in hands]
    if len(set(sides)) != len(sides):
        raise ValueError(f"hands: at most one hand per side, got sides {sides}")
    names: list[str] = []
    positions: list[np.ndarray] = []
    for hand in hands:
        names.extend(hand_joint_names(hand.side))
        positions.append(_array(hand.pose[3:], (45,), "hand.pose[3:48]"))
    position = np.concatenate(positions) if positions else np.zeros(0)
    return _new(ts, "sensor_msgs/msg/JointState", header=header, name=names, position=position,
                velocity=np.zeros(0), effort=np.zeros(0))


DiagnosticLevel = Literal["ok", "warn", "error", "stale"]


def _diagnostic_value(key: str, value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    if isinstance(value, str):
        return value
    raise TypeError(f"values[{key!r}]: expected a bool, number or string, got {type(value).__name__}")


def diagnostic_array_msg(ts: MessageTypes, header: RosMessage, name: str, values: Mapping[str, Any], *,
                         level: DiagnosticLevel = "ok", message: str = "", hardware_id: str = "") -> RosMessage:
    """``diagnostic_msgs/DiagnosticArray`` with one status whose key-values come from ``values``.

    Floats are written with 6 significant digits, booleans as true/false.
    """
    Status = _message_class(ts, "diagnostic_msgs/msg/DiagnosticStatus")
    if level not in ("ok", "warn", "error", "stale"):
        raise ValueError(f"level: expected 'ok', 'warn', 'error' or 'stale', got {level!r}")
    if not name:
        raise ValueError("name: the diagnostic status needs a name")
    key_values = [_new(ts, "diagnostic_msgs/msg/KeyValue", key=str(key), value=_diagnostic_value(key, value))
                  for key, value in values.items()]
    status = _new(ts, "diagnostic_msgs/msg/DiagnosticStatus", level=getattr(Status, level.upper()), name=name,
                  message=message, hardware_id=hardware_id, values=key_values)
    return _new(ts, "diagnostic_msgs/msg/DiagnosticArray", header=header, status=[status])
