"""The installed node on a real ROS 2 graph: colcon build, rclpy, Fast DDS on loopback, lifecycle, TF.

Needs the colcon workspace that ``tools/ros2_jazzy/build_workspace.sh`` builds against
ROS 2 Jazzy's PyPI wheels (the README's test command runs it first). The driver
(``ros_graph_driver.py``) runs in that workspace's environment as its own process,
starts ``install/hoi_perception/lib/hoi_perception/hoi_perception_node`` with no
parameters and drives it by lifecycle service; these tests check what it saw.
Without the workspace the module is skipped, except under CI, where it fails.
"""

import filecmp
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "install"
NODE = INSTALL / "hoi_perception" / "lib" / "hoi_perception" / "hoi_perception_node"
SITE = INSTALL / "hoi_perception" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
CAMERA_FRAME = "camera_color_optical_frame"
JAZZY_TF_HASH = "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087"
BUILD_HINT = "build it with `bash tools/ros2_jazzy/build_workspace.sh` (the README's test command does)"

if not NODE.is_file():
    if os.environ.get("CI"):
        raise RuntimeError(f"{NODE} is missing: {BUILD_HINT}")
    pytest.skip(f"no colcon workspace ({NODE} is missing): {BUILD_HINT}", allow_module_level=True)


def stale_installed_files() -> list[str]:
    """Source files whose installed copy differs: the node would run old code."""
    pairs = [(path, SITE / path.relative_to(ROOT)) for path in (ROOT / "hoi_perception").rglob("*.py")]
    pairs += [(path, INSTALL / "hoi_perception" / "share" / "hoi_perception" / path.relative_to(ROOT))
              for path in (ROOT / "config").rglob("*.yaml")]
    return [str(src.relative_to(ROOT)) for src, dst in pairs
            if not dst.is_file() or not filecmp.cmp(src, dst, shallow=False)]


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    stale = stale_installed_files()
    assert not stale, f"the colcon install is older than the sources ({stale[:5]}): {BUILD_HINT}"
    out = tmp_path_factory.mktemp("ros_graph")
    env = {**os.environ, "ROS_DOMAIN_ID": str(random.randint(1, 100)), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "PYTHONUNBUFFERED": "1"}
    command = (f'source "{INSTALL}/setup.bash" && export LD_LIBRARY_PATH="{sys.prefix}/lib:$LD_LIBRARY_PATH" && '
               f'exec "{sys.executable}" "{ROOT}/test/ros_graph_driver.py" "{NODE}" "{out}"')
    run = subprocess.run(["bash", "-c", command], cwd=out, env=env, capture_output=True, text=True, timeout=900)
    result_file = out / "result.json"
    assert result_file.is_file(), f"the driver wrote no result (exit {run.returncode}):\n{run.stderr[-3000:]}"
    result = json.loads(result_file.read_text())
    log = Path(result.get("node_log", out / "node.log"))
    result["node_log_text"] = log.read_text() if log.is_file() else ""
    assert "error" not in result, f"{result['error']}\nnode log:\n{result['node_log_text'][-3000:]}"
    return result


def test_every_lifecycle_transition_by_service_with_a_failed_configure_that_recovers(graph):
    assert graph["initial_state"] == "unconfigured"
    assert graph["set_bad_parameter"] and graph["configure_bad"] is False
    assert graph["state_after_bad_configure"] == "unconfigured"
    assert "qos.input.reliability: 'fast' is not one of" in graph["node_log_text"]
    assert graph["set_good_parameter"] and graph["configure"] and graph["state_after_configure"] == "inactive"
    for step in ("activate", "deactivate", "reactivate", "deactivate_again", "cleanup", "configure_permissive",
                 "activate_permissive", "deactivate_permissive", "cleanup_permissive", "shutdown"):
        assert graph[step] is True, step
    assert graph["state_after_cleanup"] == "unconfigured" and graph["state_after_shutdown"] == "finalized"


def test_shipped_model_with_no_parameters_estimates_every_frame_stamped_in_the_optical_frame(graph):
    assert "configured: onnxruntime (cpu, fp32): cpu_r18_crop.onnx, cpu_r18_detector.onnx" in graph["node_log_text"]
    steady = graph["steady"]
    assert None not in steady["latency_ms"], steady["latency_ms"]  # an estimate for each frame
    assert [e["stamp"] for e in graph["estimates"]] == steady["stamps"]
    assert {e["frame_id"] for e in graph["estimates"]} == {CAMERA_FRAME}
    rate = graph["rate_5hz"]
    assert rate["sent"] == 15 and rate["estimates"] >= 12, rate
    assert rate["diagnostics_lost"] == rate["sent"] - rate["estimates"], rate  # what went missing is counted


def test_tf_mesh_joint_states_and_diagnostics_on_their_topics_with_their_types(graph):
    assert graph["tf_publishers"] == [{"node": "hoi_perception", "type": "tf2_msgs/msg/TFMessage",
                                       "hash": JAZZY_TF_HASH}]
    assert graph["estimate_publishers"] == [{"node": "hoi_perception", "type": "hoi_perception/msg/HandObjectEstimate"}]
    assert graph["mesh_publishers"] == ["visualization_msgs/msg/Marker"]
    assert graph["joint_state_publishers"] == ["sensor_msgs/msg/JointState"]
    assert graph["diagnostics_publishers"] == ["diagnostic_msgs/msg/DiagnosticArray"]

    sent = set(graph["hands_run"]["stamps"])
    with_hands = {e["stamp"] for e in graph["hand_estimates"] if e["hands"]}
    assert len(with_hands) >= 3, graph["hand_estimates"]
    assert {t["stamp"] for t in graph["tf"] if t["child"] == "right_hand"} == with_hands
    assert all(t["parent"] == CAMERA_FRAME and t["stamp"] in sent for t in graph["tf"])
    meshes = [m for m in graph["hand_mesh"] if m["action"] == 0]
    assert {m["stamp"] for m in meshes} == with_hands
    assert all(m["type"] == 11 and m["points"] == 4614 and m["frame_id"] == CAMERA_FRAME for m in meshes)  # 1538 faces
    assert {j["stamp"] for j in graph["joint_states"]} == with_hands
    assert all(j["names"] == j["positions"] == 45 for j in graph["joint_states"])

    active = [d for d in graph["diagnostics"] if int(d["frames_received"]) > 0]
    assert active, graph["diagnostics"]
    for key in ("frames_lost", "lost_stamp_gap", "lost_unmatched", "dropped_rate_limited",
                "processing_latency_ms_mean"):
        assert key in active[-1], key


def test_mediapipe_front_end_publishes_hands_on_the_same_topics(graph):
    if not graph["mediapipe_models"]:
        hint = "install them with `hoi-perception install-mediapipe-models` (the README's test command does)"
        if os.environ.get("CI"):
            pytest.fail(f"MediaPipe Hands' models are not installed: {hint}")
        pytest.skip(f"MediaPipe Hands' models are not installed: {hint}")
    assert graph["set_hand_frontend"] and graph["set_mediapipe_model_dir"]
    assert graph["configure_mediapipe"] and graph["activate_mediapipe"]
    assert None not in graph["mediapipe_run"]["latency_ms"]  # an estimate for each frame
    with_hands = {e["stamp"] for e in graph["mediapipe_estimates"] if e["hands"]}
    assert len(with_hands) >= 3, graph["mediapipe_estimates"]
    hand_tfs = [t for t in graph["mediapipe_tf"] if t["child"] in ("right_hand", "left_hand")]
    assert {t["stamp"] for t in hand_tfs} == with_hands
    assert all(t["parent"] == CAMERA_FRAME for t in hand_tfs)
    meshes = [m for m in graph["mediapipe_mesh"] if m["action"] == 0]
    assert {m["stamp"] for m in meshes} == with_hands and all(m["points"] == 4614 for m in meshes)
    assert graph["deactivate_mediapipe"] and graph["cleanup_mediapipe"]


def test_nothing_is_published_while_inactive(graph):
    silent = {"estimate": 0, "tf": 0, "hand_mesh": 0, "joint_states": 0, "diagnostics": 0}
    assert graph["inactive_outputs"] == silent
    assert graph["deactivated_outputs"] == silent
    assert graph["reactivated_estimate"] is True


def test_bad_input_on_the_wire_is_logged_and_skipped(graph):
    assert graph["alive_after_bad_input"]
    assert graph["bad_input_estimates"] == [graph["bad_input_good_stamp"]]
    log = graph["node_log_text"]
    assert "image encoding 'yuv422' is not supported" in log
    assert "camera matrix K is all zeros" in log
    assert "(out of order)" in log
    assert int(graph["bad_input_diagnostics"]["dropped_refused"]) == 3


def test_clean_exit_on_sigint(graph):
    assert graph["exit_code"] == 0
    assert "Traceback" not in graph["node_log_text"]
