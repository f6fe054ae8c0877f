"""One frame's result -> every message published for it, for the ROS node and the offline tools alike.

``process-bag`` exists to reproduce offline what the robot publishes, so the node
(:mod:`hoi_perception.ros.node_logic`), ``process-bag``, ``run --bag`` and the demo all
build their outputs here, from one :class:`OutputSettings` (the node's ``topics``,
``frames`` and ``publish`` parameters): the same topic names, TF frame names, marker
namespaces and ids, tracking-state values and overlay. Messages are built through a
*typestore* (:mod:`hoi_perception.ros_messages`), so no ROS import is needed.

Per frame (:meth:`FrameMessageBuilder.build`): TF (wrists, optional joints, objects
whose pose passed every check: a failed or gated pose is in the estimate with its
reason, never in TF) -> ``HandObjectEstimate`` -> the hand mesh markers (and a DELETE
for a hand that disappeared) -> the scene MarkerArray -> ``JointState`` -> the debug
image (:func:`draw_frame`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from hoi_perception import ros_messages as rm
from hoi_perception.models.results import HandResult, ObjectResult
from hoi_perception.pipeline.image_decoding import IMAGE_TYPE
from hoi_perception.pipeline.results import FrameResult

TF_TOPIC = "/tf"
TF_TYPE = "tf2_msgs/msg/TFMessage"
MARKER_TYPE = rm.MARKER_TYPE
# Topic outputs by the name used in the node's topics/publish parameters; TF goes through the broadcaster.
OUTPUT_TYPES: dict[str, str] = {
    "estimate": rm.message_type("HandObjectEstimate"),
    "hand_mesh": MARKER_TYPE,
    "markers": "visualization_msgs/msg/MarkerArray",
    "debug_image": IMAGE_TYPE,
    "joint_states": "sensor_msgs/msg/JointState",
}
HAND_MESH_NAMESPACE = "hand_mesh"
HAND_MESH_IDS = {"right": 0, "left": 1}
TRACKING_STATES = {"detecting": rm.TrackingState.DETECTING, "tracking": rm.TrackingState.TRACKING,
                   "lost": rm.TrackingState.LOST}
DEFAULT_NODE_NAME = "hoi_perception"


@dataclass(frozen=True)
class OutputSettings:
    """Names and switches of the outputs (from the node's parameters: ``output_settings`` in node_logic).

    ``topics``: absolute topic per enabled output of :data:`OUTPUT_TYPES`. The defaults are the
    shipped ``config/perception.yaml`` node section for a node named ``hoi_perception``
    (a test keeps them equal).
    """

    topics: Mapping[str, str] = field(default_factory=lambda: {
        name: f"/{DEFAULT_NODE_NAME}/{name}" for name in OUTPUT_TYPES})
    right_wrist: str = "right_hand"
    left_wrist: str = "left_hand"
    object_prefix: str = ""
    tf: bool = True
    joint_tf: bool = False
    estimate_vertices: bool = False

    def wrist(self, side: str) -> str:
        return self.right_wrist if side == "right" else self.left_wrist

    def object(self, name: str) -> str:
        return f"{self.object_prefix}{name}"


@dataclass
class FrameOutputs:
    """The messages of one processed frame: TF transforms and topic messages by output name."""

    header: rm.RosMessage
    transforms: list[rm.RosMessage] = field(default_factory=list)  # geometry_msgs/TransformStamped
    messages: dict[str, list[Any]] = field(default_factory=dict)


def frame_transforms(result: FrameResult, settings: OutputSettings | None = None) -> list[rm.FrameTransform]:
    """The TF frames of a result: every published hand's wrist (and joints) and each object whose pose succeeded."""
    settings = settings or OutputSettings()
    frames = []
    for tracked in result.hands:
        wrist = settings.wrist(tracked.result.side)
        frames.append(rm.wrist_frame(tracked.result, wrist))
        if settings.joint_tf:
            frames.extend(rm.joint_frames(tracked.result, wrist))
    frames.extend(rm.object_frame(t.result, settings.object(t.result.name)) for t in result.objects
                  if t.result.success)
    return frames


class FrameMessageBuilder:
    """Builds a frame's :class:`FrameOutputs`; keeps what spans frames (quaternion signs, shown meshes).

    ``hand_faces``: mesh faces per side; ``object_control_points``: the 21 model-frame control
    points per object name. ``serialized_mesh`` builds the mesh marker directly as CDR bytes
    (rosbags typestores only; much faster for bags).
    """

    def __init__(self, settings: OutputSettings, types: rm.MessageTypes, hand_faces: Mapping[str, np.ndarray],
                 object_control_points: Mapping[str, np.ndarray], *, serialized_mesh: bool = False) -> None:
        self.settings = settings
        self.types = types
        self.hand_faces = hand_faces
        self.object_control_points = dict(object_control_points)
        self.object_bounds = {name: np.stack([points[:8].min(axis=0), points[:8].max(axis=0)])
                              for name, points in self.object_control_points.items()}
        self.serialized_mesh = serialized_mesh
        self.continuity = rm.QuaternionContinuity()
        self._meshes_shown: set[str] = set()
        self._hand_streams: set[str] = set()

    def reset(self) -> None:
        """Forget quaternion signs and shown meshes (a new stream)."""
        self.continuity.reset()
        self._meshes_shown.clear()
        self._hand_streams.clear()

    def build(self, header: rm.RosMessage, result: FrameResult, rgb: np.ndarray, K: np.ndarray, *,  # noqa: N803
              wanted: Callable[[str], bool] | None = None,
              extra_latencies_ms: Mapping[str, float] | None = None) -> FrameOutputs:
        """Every enabled output of ``settings`` for which ``wanted(output)`` (default: all) holds."""
        ts = self.types

        def enabled(name: str) -> bool:
            return name in self.settings.topics and (wanted is None or wanted(name))

        hands: list[HandResult] = [tracked.result for tracked in result.hands]
        objects: list[ObjectResult] = [tracked.result for tracked in result.objects]
        outputs = FrameOutputs(header=header)
        self._forget_ended_tracks(result)
        if self.settings.tf:
            frames = frame_transforms(result, self.settings)
            if frames:
                outputs.transforms = list(rm.tf_message(ts, header, frames, continuity=self.continuity).transforms)
        if enabled("estimate"):
            hand_msgs = [rm.hand_estimate_msg(ts, t.result, t.track_id, continuity=self.continuity,
                                              include_vertices=self.settings.estimate_vertices)
                         for t in result.hands]
            object_msgs = [rm.object_estimate_msg(ts, t.result, continuity=self.continuity) for t in result.objects]
            latencies = {**dict(extra_latencies_ms or {}), **{k: float(v) for k, v in result.timings_ms.items()}}
            outputs.messages["estimate"] = [rm.hand_object_estimate_msg(
                ts, header, hand_msgs, object_msgs, tracking_state=TRACKING_STATES[result.tracking_state],
                frames_since_detection=result.frames_since_detection, stage_latencies_ms=latencies,
                refused_hands=[f"{side}: {reason}" for side, reason in sorted(result.hand_failures.items())])]
        if enabled("hand_mesh"):
            outputs.messages["hand_mesh"] = self._mesh_markers(header, hands)
        if enabled("markers"):
            outputs.messages["markers"] = [rm.scene_markers(ts, header, hands, objects, self.object_bounds)]
        if enabled("joint_states") and hands:
            outputs.messages["joint_states"] = [rm.joint_state_msg(ts, header, hands)]
        if enabled("debug_image"):
            drawn = draw_frame(rgb, result, K, self.object_control_points)
            height, width = drawn.shape[:2]
            outputs.messages["debug_image"] = [ts.types[IMAGE_TYPE](
                header=header, height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3,
                data=np.ascontiguousarray(drawn, dtype=np.uint8).reshape(-1))]
        return outputs

    def tf_message(self, outputs: FrameOutputs) -> rm.RosMessage:
        """The frame's transforms as one ``tf2_msgs/TFMessage`` (what a broadcaster sends on /tf)."""
        return self.types.types[TF_TYPE](transforms=list(outputs.transforms))

    def _forget_ended_tracks(self, result: FrameResult) -> None:
        """Drop the quaternion memory of hand tracks that ended (track ids are not reused)."""
        live = {rm.hand_stream(t.result, t.track_id) for t in result.hands}
        for stream in self._hand_streams - live:
            self.continuity.forget(stream)
        self._hand_streams = live

    def _mesh_markers(self, header: rm.RosMessage, hands: Sequence[HandResult]) -> list[Any]:
        """One TRIANGLE_LIST per visible hand (id by side), and a DELETE for a side that disappeared."""
        markers = []
        shown: set[str] = set()
        mesh = rm.hand_mesh_marker_cdr if self.serialized_mesh else rm.hand_mesh_marker
        for hand in hands:
            color = rm.LEFT_HAND_COLOR if hand.side == "left" else rm.RIGHT_HAND_COLOR
            markers.append(mesh(self.types, header, hand.vertices_cam, self.hand_faces[hand.side], color,
                                namespace=HAND_MESH_NAMESPACE, marker_id=HAND_MESH_IDS[hand.side]))
            shown.add(hand.side)
        Marker = self.types.types[MARKER_TYPE]
        for side in sorted(self._meshes_shown - shown):
            marker = rm.delete_all_marker(self.types, header)
            marker.action = Marker.DELETE
            marker.ns = HAND_MESH_NAMESPACE
            marker.id = HAND_MESH_IDS[side]
            markers.append(marker)
        self._meshes_shown = shown
        return markers


# ----------------------------------------------------------------------------- the debug overlay

HAND_BOX_COLORS = {"right": (240, 140, 90), "left": (90, 150, 240)}
OBJECT_BOX_COLOR = (80, 220, 100)
GROUND_TRUTH_COLOR = (255, 0, 255)  # magenta: never an estimate colour
REJECTED_COLOR = (160, 160, 160)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_SCALE = 0.4
_LINE_PX = 14


class _TextLayout:
    """Places labels so that no text covers other text: a label that would overlap one already
    placed moves down a line (and stays inside the image)."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.placed: list[tuple[int, int, int, int]] = []

    def put(self, image: np.ndarray, text: str, x: float, y: float, color: tuple[int, int, int]) -> None:
        (w, h), base = cv2.getTextSize(text, _FONT, _SCALE, 1)
        x0 = int(min(max(x, 0), max(self.width - w - 2, 0)))
        y0 = int(min(max(y, h + 2), self.height - base - 2))
        for _ in range(self.height // _LINE_PX + 1):
            rect = (x0 - 1, y0 - h - 2, x0 + w + 1, y0 + base + 1)
            if not any(_overlap(rect, other) for other in self.placed):
                break
            y0 += _LINE_PX
            if y0 > self.height - base - 2:
                y0 = h + 2
                x0 = min(x0 + 8, max(self.width - w - 2, 0))
        rect = (x0 - 1, y0 - h - 2, x0 + w + 1, y0 + base + 1)
        self.placed.append(rect)
        cv2.rectangle(image, rect[:2], rect[2:], (0, 0, 0), -1)
        cv2.putText(image, text, (x0, y0), _FONT, _SCALE, color, 1, cv2.LINE_AA)


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def draw_frame(image: np.ndarray, result: FrameResult, K: np.ndarray,  # noqa: N803
               object_control_points: Mapping[str, np.ndarray], *,
               ground_truth_joints: Sequence[np.ndarray] = ()) -> np.ndarray:
    """The debug overlay: estimated hand skeletons (coloured per finger) and boxes, posed object boxes
    and axes, optional ground-truth skeletons (thin, magenta), a legend and the tracking state; labels
    never overlap (:class:`_TextLayout`)."""
    from hoi_perception.render.overlay import draw_hand_skeleton, draw_object_pose

    out = np.ascontiguousarray(image).copy()
    for joints in ground_truth_joints:
        out = draw_hand_skeleton(out, joints, joint_colors=[GROUND_TRUTH_COLOR] * len(joints), thickness=1,
                                 radius=1)
    labels: list[tuple[str, np.ndarray, tuple[int, int, int]]] = []
    for tracked in result.objects:
        obj = tracked.result
        color = OBJECT_BOX_COLOR if obj.success else REJECTED_COLOR
        if obj.success and obj.name in object_control_points:
            out = draw_object_pose(out, object_control_points[obj.name], obj.rotation, obj.translation, K)
        _rectangle(out, obj.box, color)
        labels.append((f"{obj.name} #{tracked.track_id}" + ("" if obj.success else " (no pose)"), obj.box, color))
    for tracked_hand in result.hands:
        hand = tracked_hand.result
        out = draw_hand_skeleton(out, hand.joints2d)
        _rectangle(out, hand.box, HAND_BOX_COLORS[hand.side])
        labels.append((f"{hand.side} #{tracked_hand.track_id} {hand.confidence:.2f}", hand.box,
                       HAND_BOX_COLORS[hand.side]))
    height, width = out.shape[:2]
    layout = _TextLayout(width, height)
    layout.put(out, f"{result.tracking_state} {result.total_ms:.0f} ms", 2, 12, (255, 255, 0))
    for side, reason in sorted(result.hand_failures.items()):
        layout.put(out, f"{side} hand not published: {reason.split(':')[0]}", 2, 12, REJECTED_COLOR)
    for text, box, color in labels:
        layout.put(out, text, box[0], box[1] - 3, color)
    legend = [("estimate: finger-coloured skeleton, boxes", (255, 255, 255))]
    if len(ground_truth_joints):
        legend.append(("ground truth: thin magenta skeleton", GROUND_TRUTH_COLOR))
    for i, (text, color) in enumerate(reversed(legend)):
        layout.put(out, text, 2, height - 4 - i * _LINE_PX, color)
    return out


def _rectangle(image: np.ndarray, box: np.ndarray, color: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    cv2.rectangle(image, (x0, y0), (x1, y1), color, 1, cv2.LINE_AA)
