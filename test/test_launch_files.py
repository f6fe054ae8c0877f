"""Launch files, the RViz config and the recording plan: checked without ROS where possible.

The launch files are parsed as Python (their arguments, documented and declared, must
agree); where the ``launch`` package is installed they are also built for real.
"""

import ast
import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from hoi_perception.ros import node_logic as nl
from hoi_perception.ros import params as rp

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
ARGUMENTS = {
    "perception.launch.py": ["camera", "params_file", "rviz", "record", "bag", "use_sim_time", "autostart"],
    "replay.launch.py": ["bag", "rate", "loop", "start_delay", "camera", "params_file", "rviz", "record", "out_bag"],
    "record.launch.py": ["camera", "params_file", "node_name", "bag", "debug_image"],
}


def declared_arguments(tree):
    """(name, keyword names) of every DeclareLaunchArgument call, in order."""
    calls = [node for node in ast.walk(tree)
             if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DeclareLaunchArgument"]
    return [(call.args[0].value, {k.arg: k.value for k in call.keywords})
            for call in sorted(calls, key=lambda call: (call.lineno, call.col_offset))]


def documented_arguments(docstring):
    section = docstring.split("Arguments:", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^    (\w+)\s{2,}", section, flags=re.MULTILINE)


def string_constants(tree):
    return {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}


@pytest.mark.parametrize("name", sorted(ARGUMENTS))
def test_launch_file_declares_and_documents_its_arguments(name):
    source = (LAUNCH / name).read_text()
    tree = ast.parse(source, filename=name)
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    declared = declared_arguments(tree)
    assert [arg for arg, _ in declared] == ARGUMENTS[name]
    for arg, keywords in declared:
        assert isinstance(keywords.get("description"), ast.Constant) and keywords["description"].value, arg
    assert documented_arguments(ast.get_docstring(tree)) == ARGUMENTS[name]
    assert "map" not in string_constants(tree)


def test_launch_files_wire_the_documented_behaviour():
    perception = string_constants(ast.parse((LAUNCH / "perception.launch.py").read_text()))
    assert {"hoi_perception_node", "rviz2", "perception.rviz", "record.launch.py", "use_sim_time",
            "autostart"} <= perception
    replay = string_constants(ast.parse((LAUNCH / "replay.launch.py").read_text()))
    assert {"play", "--clock", "--rate", "--loop", "perception.launch.py"} <= replay
    record = string_constants(ast.parse((LAUNCH / "record.launch.py").read_text()))
    assert {"record", "--storage", "mcap", "--output"} <= record


def test_the_node_executable_is_installed_by_cmake():
    assert "hoi_perception_node=hoi_perception.ros.node:main" in (ROOT / "CMakeLists.txt").read_text()


def test_shipped_node_section_matches_the_defaults():
    assert rp.load_node_params() == rp.NodeParams()


def test_launch_params_point_the_node_at_a_camera_namespace(tmp_path):
    config = tmp_path / "perception.yaml"
    config.write_text("node:\n  topics: {compressed: true, depth: /cam/depth}\n")
    params, overrides = rp.launch_params(config, "/cam/color/")
    assert overrides == {"config_file": str(config), "topics.image": "/cam/color/image_raw",
                         "topics.camera_info": "/cam/color/camera_info"}
    assert params.topics.image == "/cam/color/image_raw" and params.topics.compressed
    params, overrides = rp.launch_params(config, "")
    assert overrides == {"config_file": str(config)} and params.topics.image == "/camera/color/image_raw"


def test_recording_topics_cover_inputs_tf_outputs_and_diagnostics():
    topics = nl.recording_topics(rp.NodeParams(), "hoi_perception")
    assert topics == ["/camera/color/image_raw", "/camera/color/camera_info", "/tf", "/tf_static",
                      "/hoi_perception/estimate", "/hoi_perception/hand_mesh", "/hoi_perception/markers",
                      "/hoi_perception/joint_states", "/diagnostics"]
    params = rp.params_from_values({"topics.compressed": True, "topics.depth": "depth/image_raw",
                                    "publish.hand_mesh": False})
    topics = nl.recording_topics(params, "/perception", debug_image=True)
    assert topics[:3] == ["/camera/color/image_raw/compressed", "/camera/color/camera_info", "/depth/image_raw"]
    assert "/perception/hand_mesh" not in topics and "/perception/debug_image" in topics
    assert topics[-1] == "/diagnostics"
    assert nl.resolve_topic("~/x", "n") == "/n/x" and nl.resolve_topic("x", "n") == "/x"


def test_rviz_config_shows_the_node_outputs_in_the_camera_optical_frame():
    config = yaml.safe_load((ROOT / "config" / "perception.rviz").read_text())
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "camera_color_optical_frame"
    displays = {d["Class"].split("/")[-1] + ":" + d.get("Topic", {}).get("Value", ""): d for d in manager["Displays"]}
    defaults = rp.NodeParams()
    node = "hoi_perception"
    assert f"Marker:{nl.resolve_topic(defaults.topics.hand_mesh, node)}" in displays
    assert f"MarkerArray:{nl.resolve_topic(defaults.topics.markers, node)}" in displays
    assert f"Image:{nl.resolve_topic(defaults.topics.debug_image, node)}" in displays
    camera = displays[f"Image:{defaults.topics.image}"]
    assert camera["Topic"]["Reliability Policy"] == "Best Effort"  # matches a sensor-data camera driver
    assert "TF:" in displays and displays["TF:"]["Frames"]["All Enabled"] is True
    assert manager["Views"]["Current"]["Target Frame"] == "<Fixed Frame>"


@pytest.mark.parametrize("name", sorted(ARGUMENTS))
def test_launch_description_builds_where_launch_is_installed(name):
    pytest.importorskip("launch", reason="the ROS 2 launch package is not installed here")
    pytest.importorskip("launch_ros", reason="launch_ros is not installed here")
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), LAUNCH / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from launch.actions import DeclareLaunchArgument

    description = module.generate_launch_description()
    names = [e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    assert names == ARGUMENTS[name]
