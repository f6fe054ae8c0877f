"""Drive the installed ``hoi_perception_node`` over a real ROS 2 graph (rclpy, Fast DDS on loopback).

Run by test_ros_graph.py in the environment of the colcon install (``source install/setup.bash``),
as its own process, so that this script's rclpy, ``hoi_perception.msg`` and ``tf2_msgs``
are the built ones. It starts the node executable with no parameters, drives it through
every lifecycle transition by service and publishes rendered hand-object frames with
their CameraInfo, and writes what it observed as JSON; the test asserts on that.

    python3 test/ros_graph_driver.py NODE_EXECUTABLE OUT_DIR [--sustained-rates 10 15 20 30] [--size 640x480]

With ``--sustained-rates`` it also publishes frames at each rate (Hz) and records the share
that produced an estimate, the node's diagnostics and the latency (the rate figure of the README).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from hoi_perception.msg import HandObjectEstimate
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, JointState
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import Marker

NODE = "/hoi_perception"
CAMERA_FRAME = "camera_color_optical_frame"
IMAGE_TOPIC = "/camera/color/image_raw"
INFO_TOPIC = "/camera/color/camera_info"
STATUS_NAME = "hoi_perception: hand-object perception"
EPOCH_NS = time.time_ns() // 1_000_000_000 * 1_000_000_000  # stamps near the node's clock, as a camera's
FRAME_PERIOD_NS = 200_000_000  # the frames' stamps advance at 5 Hz, as fast as the lock-step phases send them
SERVICE_TIMEOUT_S = 600.0  # the first configure exports the shipped checkpoint to ONNX


def permissive_config(out: Path) -> Path:
    """The shipped perception.yaml with the gates opened so that the weak shipped model publishes hands.

    Its detector scores hands below the 0.3 threshold, its joints fail the temporal
    filter's plausibility gates (model card) and its poses the estimator's gates (their
    shrunk skeletons do not fit their boxes), so with the shipped settings it never
    publishes a hand: this config lets the test see the wrist TF, mesh and JointState.
    """
    import yaml

    from hoi_perception.config import config_dir

    filter_settings = yaml.safe_load((config_dir() / "filter.yaml").read_text())
    filter_settings["hand"].update(min_confidence=0.0, max_joint2d_jump=100.0, max_pose_jump=100.0,
                                   min_bone_length=0.0, max_joint_angle_deg=180.0)
    (out / "filter.yaml").write_text(yaml.safe_dump(filter_settings))
    perception = yaml.safe_load((config_dir() / "perception.yaml").read_text())
    perception["estimator"]["filter_config"] = str(out / "filter.yaml")
    perception["estimator"]["detection"]["hand_score_threshold"] = 0.1
    perception["estimator"]["tracking"]["min_hand_confidence"] = 0.0
    perception["estimator"]["gates"]["enabled"] = False
    (out / "perception.yaml").write_text(yaml.safe_dump(perception))
    return out / "perception.yaml"


def mediapipe_model_dir() -> Path | None:
    """The folder of MediaPipe Hands' installed models (install-mediapipe-models), or None."""
    from hoi_perception.frontends.mediapipe_models import (
        HAND_LANDMARKS,
        PALM_DETECTOR,
        MediaPipeModelError,
        model_path,
    )

    try:
        model_path(PALM_DETECTOR)
        return model_path(HAND_LANDMARKS).parent
    except MediaPipeModelError:
        return None


def render_frames(out: Path, count: int, seed: int, size: tuple[int, int] = (320, 240)
                  ) -> tuple[list[np.ndarray], np.ndarray]:
    """RGB frames (``size`` = width, height) and K of one synthetic hand-object sequence, unseen in training."""
    import cv2

    from hoi_perception.config import load_config
    from hoi_perception.synth.config import SynthConfig
    from hoi_perception.synth.generator import generate_dataset

    config = load_config(SynthConfig, "synth.yaml", [f"camera.width={size[0]}", f"camera.height={size[1]}"])
    manifest = generate_dataset(config, out, sequences=1, frames=count, seed=seed)
    seq = out / manifest["sequences"][0]["name"]
    K = np.load(seq / "labels.npz")["K"].astype(np.float64)
    frames = [cv2.cvtColor(cv2.imread(str(seq / "rgb" / f"{i:06d}.png")), cv2.COLOR_BGR2RGB) for i in range(count)]
    return frames, K


class Graph:
    """The tester node: lifecycle and parameter clients, input publishers, output recorders."""

    def __init__(self):
        self.node = rclpy.create_node("hoi_perception_graph_tester")
        n = self.node
        self.change_state = n.create_client(ChangeState, f"{NODE}/change_state")
        self.get_state = n.create_client(GetState, f"{NODE}/get_state")
        self.set_parameters = n.create_client(SetParameters, f"{NODE}/set_parameters")
        self.image_pub = n.create_publisher(Image, IMAGE_TOPIC, qos_profile_sensor_data)
        self.info_pub = n.create_publisher(CameraInfo, INFO_TOPIC, qos_profile_sensor_data)
        self.received: dict[str, list[tuple[float, object]]] = {k: [] for k in
                                                               ("estimate", "tf", "hand_mesh", "joint_states",
                                                                "diagnostics")}
        reliable = QoSProfile(depth=100)
        for key, msg_type, topic in (("estimate", HandObjectEstimate, f"{NODE}/estimate"),
                                     ("tf", TFMessage, "/tf"), ("hand_mesh", Marker, f"{NODE}/hand_mesh"),
                                     ("joint_states", JointState, f"{NODE}/joint_states"),
                                     ("diagnostics", DiagnosticArray, "/diagnostics")):
            n.create_subscription(msg_type, topic, lambda msg, key=key: self.received[key].append(
                (time.monotonic(), msg)), reliable)

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(self.node, timeout_sec=min(0.02, max(end - time.monotonic(), 0.0)))

    def call(self, client, request, timeout: float = SERVICE_TIMEOUT_S):
        if not client.wait_for_service(timeout_sec=60.0):
            raise RuntimeError(f"service {client.srv_name} did not appear")
        future = client.call_async(request)
        rclpy.spin_until_future_complete(self.node, future, timeout_sec=timeout)
        if not future.done():
            raise RuntimeError(f"service {client.srv_name} did not answer within {timeout} s")
        return future.result()

    def transition(self, transition_id: int) -> bool:
        request = ChangeState.Request()
        request.transition.id = transition_id
        return bool(self.call(self.change_state, request).success)

    def state(self) -> str:
        return self.call(self.get_state, GetState.Request(), 30.0).current_state.label

    def set_string(self, name: str, value: str) -> bool:
        request = SetParameters.Request()
        request.parameters = [Parameter(name=name, value=ParameterValue(type=ParameterType.PARAMETER_STRING,
                                                                        string_value=value))]
        return all(r.successful for r in self.call(self.set_parameters, request, 30.0).results)

    def publish(self, rgb: np.ndarray, K: np.ndarray, stamp_ns: int, encoding: str = "rgb8") -> None:
        height, width = rgb.shape[:2]
        image = Image()
        image.header.stamp.sec, image.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        image.header.frame_id = CAMERA_FRAME
        image.height, image.width, image.encoding, image.is_bigendian = height, width, encoding, 0
        image.step = width * 3
        image.data = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
        info = CameraInfo()
        info.header = image.header
        info.height, info.width = height, width
        info.distortion_model = "plumb_bob"
        info.d = [0.0] * 5
        info.k = [float(v) for v in K.reshape(-1)]
        info.p = [float(K[0, 0]), 0.0, float(K[0, 2]), 0.0, 0.0, float(K[1, 1]), float(K[1, 2]), 0.0,
                  0.0, 0.0, 1.0, 0.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        self.info_pub.publish(info)
        self.image_pub.publish(image)

    def clear(self) -> None:
        for messages in self.received.values():
            messages.clear()

    def estimate_for(self, stamp_ns: int) -> float | None:
        """Receive time of the estimate stamped ``stamp_ns``, if any."""
        for received_at, msg in self.received["estimate"]:
            if stamp_of(msg) == stamp_ns:
                return received_at
        return None

    def wait_for_estimate(self, stamp_ns: int, timeout: float) -> float | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = self.estimate_for(stamp_ns)
            if found is not None:
                return found
            rclpy.spin_once(self.node, timeout_sec=0.01)
        return None

    def ours(self) -> list[dict[str, str]]:
        """Key/values of every diagnostics status the node published."""
        return [{kv.key: kv.value for kv in status.values} | {"_level": str(int.from_bytes(status.level, "little")
                                                                             if isinstance(status.level, bytes)
                                                                             else status.level),
                                                               "_message": status.message}
                for _, array in self.received["diagnostics"] for status in array.status if status.name == STATUS_NAME]


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def lockstep(graph: Graph, frames: list[np.ndarray], K: np.ndarray, first_stamp: int, min_period_s: float,
             timeout_s: float) -> dict:
    """Publish each frame after the previous one's estimate: a rate the node sustains. Latencies in ms."""
    stamps, latencies = [], []
    for i, rgb in enumerate(frames):
        stamp = first_stamp + i * FRAME_PERIOD_NS
        sent = time.monotonic()
        graph.publish(rgb, K, stamp)
        stamps.append(stamp)
        arrived = graph.wait_for_estimate(stamp, timeout_s)
        latencies.append(None if arrived is None else (arrived - sent) * 1e3)
        graph.spin(max(0.0, min_period_s - (time.monotonic() - sent)))
    return {"stamps": stamps, "latency_ms": latencies}


def at_rate(graph: Graph, frames: list[np.ndarray], K: np.ndarray, first_stamp: int, rate_hz: float,
            count: int) -> dict:
    """Publish ``count`` frames at ``rate_hz`` (stamps at the same rate) and count the estimates."""
    before = graph.ours()
    lost_before = int(before[-1]["frames_lost"]) if before else 0
    graph.clear()
    period = 1.0 / rate_hz
    stamps, sent_at = [], {}
    start = time.monotonic()
    for i in range(count):
        stamp = first_stamp + int(round(i * period * 1e9))
        graph.spin(max(0.0, start + i * period - time.monotonic()))
        sent_at[stamp] = time.monotonic()
        graph.publish(frames[i % len(frames)], K, stamp)
        stamps.append(stamp)
    graph.spin(3.0)
    latencies = [(t - sent_at[stamp_of(m)]) * 1e3 for t, m in graph.received["estimate"] if stamp_of(m) in sent_at]
    diagnostics = graph.ours()
    return {"rate_hz": rate_hz, "sent": count, "estimates": len(latencies),
            "latency_ms_median": float(np.median(latencies)) if latencies else None,
            "latency_ms_p90": float(np.percentile(latencies, 90)) if latencies else None,
            "diagnostics_lost": int(diagnostics[-1]["frames_lost"]) - lost_before if diagnostics else None,
            "diagnostics_warnings": sorted({d["_message"] for d in diagnostics if d["_level"] == "1"})}


def run(node_executable: str, out: Path, sustained_rates: list[float], result: dict,
        size: tuple[int, int] = (320, 240)) -> None:
    """Fills ``result`` as it goes, so a failure still reports what came before it."""
    out.mkdir(parents=True, exist_ok=True)
    frames, K = render_frames(out / "synth", 12, seed=2001, size=size)
    log = open(out / "node.log", "w")  # noqa: SIM115 - closed below
    node = subprocess.Popen([node_executable], stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    result["node_log"] = str(out / "node.log")
    rclpy.init()
    graph = Graph()
    try:
        result["initial_state"] = graph.state()
        # A configure that fails on a bad parameter, then recovers once the parameter is fixed.
        result["set_bad_parameter"] = graph.set_string("qos.input.reliability", "fast")
        result["configure_bad"] = graph.transition(Transition.TRANSITION_CONFIGURE)
        result["state_after_bad_configure"] = graph.state()
        result["set_good_parameter"] = graph.set_string("qos.input.reliability", "best_effort")
        started = time.monotonic()
        result["configure"] = graph.transition(Transition.TRANSITION_CONFIGURE)
        result["configure_s"] = time.monotonic() - started
        result["state_after_configure"] = graph.state()

        # Inactive: inputs arrive, nothing goes out.
        graph.spin(0.5)
        graph.clear()
        for i in range(3):
            graph.publish(frames[i], K, EPOCH_NS + i * FRAME_PERIOD_NS)
            graph.spin(0.3)
        graph.spin(1.5)
        result["inactive_outputs"] = {key: len(v) for key, v in graph.received.items()}

        result["activate"] = graph.transition(Transition.TRANSITION_ACTIVATE)
        graph.spin(1.0)  # subscriptions match
        graph.clear()
        steady = lockstep(graph, frames, K, EPOCH_NS + 10 * FRAME_PERIOD_NS, FRAME_PERIOD_NS * 1e-9, 30.0)
        graph.spin(2.5)  # a diagnostics period or two
        result["steady"] = steady
        result["estimates"] = [{"stamp": stamp_of(m), "frame_id": m.header.frame_id, "hands": len(m.hands),
                                "objects": len(m.objects)} for _, m in graph.received["estimate"]]
        result["diagnostics"] = graph.ours()
        tf_publishers = graph.node.get_publishers_info_by_topic("/tf")
        result["tf_publishers"] = [{"node": info.node_name, "type": info.topic_type,
                                    "hash": str(info.topic_type_hash)} for info in tf_publishers]
        ours = graph.node.get_publishers_info_by_topic(f"{NODE}/estimate")
        result["estimate_publishers"] = [{"node": info.node_name, "type": info.topic_type} for info in ours]
        result["mesh_publishers"] = [info.topic_type for info in
                                     graph.node.get_publishers_info_by_topic(f"{NODE}/hand_mesh")]
        result["joint_state_publishers"] = [info.topic_type for info in
                                            graph.node.get_publishers_info_by_topic(f"{NODE}/joint_states")]
        result["diagnostics_publishers"] = [info.topic_type for info in
                                            graph.node.get_publishers_info_by_topic("/diagnostics")
                                            if info.node_name == NODE.strip("/")]

        # Bad input on the wire: wrong encoding, zero K, a stamp going back; then a good frame.
        graph.clear()
        last = steady["stamps"][-1]
        graph.publish(frames[0], K, last + 1 * FRAME_PERIOD_NS, encoding="yuv422")
        graph.spin(0.5)
        graph.publish(frames[1], np.zeros((3, 3)), last + 2 * FRAME_PERIOD_NS)
        graph.spin(0.5)
        graph.publish(frames[2], K, last - 3 * FRAME_PERIOD_NS)
        graph.spin(0.5)
        good = last + 3 * FRAME_PERIOD_NS  # right after the refused ones: no gap in the stamps
        graph.publish(frames[3], K, good)
        graph.wait_for_estimate(good, 30.0)
        graph.spin(2.5)
        result["bad_input_estimates"] = [stamp_of(m) for _, m in graph.received["estimate"]]
        result["bad_input_good_stamp"] = good
        result["bad_input_diagnostics"] = graph.ours()[-1] if graph.ours() else None
        result["alive_after_bad_input"] = node.poll() is None

        # 5 Hz, like a slow camera: estimates for (nearly) every frame.
        result["rate_5hz"] = at_rate(graph, frames, K, good + FRAME_PERIOD_NS, 5.0, 15)
        next_stamp = good + 30 * FRAME_PERIOD_NS  # a pause of 3 s after the 5 Hz frames: a new stream
        for rate in sustained_rates:
            result.setdefault("sustained", []).append(at_rate(graph, frames, K, next_stamp, rate, int(rate * 6)))
            next_stamp += 8 * 10**9

        result["deactivate"] = graph.transition(Transition.TRANSITION_DEACTIVATE)
        graph.spin(0.5)
        graph.clear()
        for i in range(3):
            graph.publish(frames[i], K, next_stamp + i * FRAME_PERIOD_NS)
            graph.spin(0.3)
        graph.spin(2.0)
        result["deactivated_outputs"] = {key: len(v) for key, v in graph.received.items()}

        result["reactivate"] = graph.transition(Transition.TRANSITION_ACTIVATE)
        graph.spin(1.0)
        graph.clear()
        again = next_stamp + 10 * FRAME_PERIOD_NS
        graph.publish(frames[4], K, again)
        result["reactivated_estimate"] = graph.wait_for_estimate(again, 30.0) is not None
        result["deactivate_again"] = graph.transition(Transition.TRANSITION_DEACTIVATE)
        result["cleanup"] = graph.transition(Transition.TRANSITION_CLEANUP)
        result["state_after_cleanup"] = graph.state()

        # Configured again with the gates opened, so that hands come out: TF, mesh, JointState.
        result["set_config_file"] = graph.set_string("config_file", str(permissive_config(out)))
        result["configure_permissive"] = graph.transition(Transition.TRANSITION_CONFIGURE)
        result["activate_permissive"] = graph.transition(Transition.TRANSITION_ACTIVATE)
        graph.spin(1.0)
        graph.clear()
        hands = lockstep(graph, frames, K, again + 10 * FRAME_PERIOD_NS, FRAME_PERIOD_NS * 1e-9, 30.0)
        graph.spin(1.0)
        result["hands_run"] = hands
        result["hand_estimates"] = [{"stamp": stamp_of(m), "frame_id": m.header.frame_id, "hands": len(m.hands)}
                                    for _, m in graph.received["estimate"]]
        result["tf"] = [{"stamp": stamp_of(t), "parent": t.header.frame_id, "child": t.child_frame_id}
                        for _, m in graph.received["tf"] for t in m.transforms]
        result["hand_mesh"] = [{"stamp": stamp_of(m), "frame_id": m.header.frame_id, "type": m.type,
                                "action": m.action, "points": len(m.points)} for _, m in graph.received["hand_mesh"]]
        result["joint_states"] = [{"stamp": stamp_of(m), "frame_id": m.header.frame_id, "names": len(m.name),
                                   "positions": len(m.position)} for _, m in graph.received["joint_states"]]
        result["deactivate_permissive"] = graph.transition(Transition.TRANSITION_DEACTIVATE)
        result["cleanup_permissive"] = graph.transition(Transition.TRANSITION_CLEANUP)

        # Configured again with the MediaPipe hand front-end, when its models are installed:
        # hands from MediaPipe Hands and the MANO fit, on the same topics.
        model_dir = mediapipe_model_dir()
        result["mediapipe_models"] = model_dir is not None
        if model_dir is not None:
            result["set_hand_frontend"] = graph.set_string("estimator.hand_frontend", "mediapipe")
            result["set_mediapipe_model_dir"] = graph.set_string("estimator.mediapipe_model_dir", str(model_dir))
            result["configure_mediapipe"] = graph.transition(Transition.TRANSITION_CONFIGURE)
            result["activate_mediapipe"] = graph.transition(Transition.TRANSITION_ACTIVATE)
            graph.spin(1.0)
            graph.clear()
            run_mediapipe = lockstep(graph, frames, K, again + 40 * FRAME_PERIOD_NS, FRAME_PERIOD_NS * 1e-9, 30.0)
            graph.spin(1.0)
            result["mediapipe_run"] = run_mediapipe
            result["mediapipe_estimates"] = [{"stamp": stamp_of(m), "hands": [h.side for h in m.hands]}
                                             for _, m in graph.received["estimate"]]
            result["mediapipe_tf"] = [{"stamp": stamp_of(t), "parent": t.header.frame_id, "child": t.child_frame_id}
                                      for _, m in graph.received["tf"] for t in m.transforms]
            result["mediapipe_mesh"] = [{"stamp": stamp_of(m), "action": m.action, "points": len(m.points)}
                                        for _, m in graph.received["hand_mesh"]]
            result["deactivate_mediapipe"] = graph.transition(Transition.TRANSITION_DEACTIVATE)
            result["cleanup_mediapipe"] = graph.transition(Transition.TRANSITION_CLEANUP)
        result["shutdown"] = graph.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        result["state_after_shutdown"] = graph.state()
    finally:
        graph.node.destroy_node()
        rclpy.try_shutdown()
        if node.poll() is None:
            node.send_signal(signal.SIGINT)
            try:
                result["exit_code"] = node.wait(timeout=20)
            except subprocess.TimeoutExpired:
                node.kill()
                result["exit_code"] = "killed after SIGINT timeout"
        else:
            result["exit_code"] = f"died early: {node.returncode}"
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("node_executable")
    parser.add_argument("out", type=Path)
    parser.add_argument("--sustained-rates", type=float, nargs="*", default=[])
    parser.add_argument("--size", default="320x240", help="image WIDTHxHEIGHT")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    result: dict = {}
    try:
        run(args.node_executable, args.out, args.sustained_rates, result, size)
    except Exception:  # noqa: BLE001 - reported to the test with everything observed so far
        result["error"] = traceback.format_exc()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
