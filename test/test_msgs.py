"""The .msg files, checked with the real ROS 2 IDL tools and against the rosbags parser.

rosidl_adapter (.msg -> .idl) and rosidl_parser come from Debian's python3-rosidl,
installed for the system interpreter /usr/bin/python3 rather than the one running
pytest; these tests call it in a subprocess and skip when it is missing
(install: ``apt-get install -y python3-rosidl python3-empy``).
"""

import json
import re
import subprocess
from pathlib import Path

import pytest
from catkin_pkg.package import parse_package

from hoi_perception.ros_messages import MESSAGE_NAMES, PACKAGE_NAME, TrackingState, hoi_typestore, message_type

ROOT = Path(__file__).resolve().parents[1]
MSG_DIR = ROOT / "msg"
SYSTEM_PYTHON = Path("/usr/bin/python3")

# Runs under /usr/bin/python3: translate every .msg to .idl with rosidl_adapter, parse
# the .idl with rosidl_parser and print each message's members and constants as JSON.
_ROSIDL_SCRIPT = r"""
import json, pathlib, sys, tempfile
from rosidl_adapter.msg import convert_msg_to_idl
from rosidl_parser import definition as d
from rosidl_parser.parser import parse_idl_file

def render(t):
    if isinstance(t, d.Array):
        return f"{render(t.value_type)}[{t.size}]"
    if isinstance(t, d.UnboundedSequence):
        return f"sequence<{render(t.value_type)}>"
    if isinstance(t, d.BoundedSequence):
        return f"sequence<{render(t.value_type)}, {t.maximum_size}>"
    if isinstance(t, d.NamespacedType):
        return "::".join(list(t.namespaces) + [t.name])
    if isinstance(t, d.UnboundedString):
        return "string"
    if isinstance(t, d.BasicType):
        return t.typename
    raise TypeError(type(t).__name__)

pkg_dir = pathlib.Path(sys.argv[1])
result = {}
with tempfile.TemporaryDirectory() as out:
    for msg_file in sorted((pkg_dir / "msg").glob("*.msg")):
        idl = convert_msg_to_idl(pkg_dir, sys.argv[2], pathlib.Path("msg") / msg_file.name, pathlib.Path(out))
        idl_file = parse_idl_file(d.IdlLocator(pathlib.Path(out), idl.name))
        (message,) = idl_file.content.get_elements_of_type(d.Message)
        result[msg_file.stem] = {
            "members": [[m.name, render(m.type)] for m in message.structure.members],
            "constants": {c.name: [render(c.type), c.value] for c in message.constants},
        }
print("JSON:" + json.dumps(result))
"""


def _rosidl_missing() -> str | None:
    if not SYSTEM_PYTHON.is_file():
        return f"{SYSTEM_PYTHON} not found"
    probe = subprocess.run([str(SYSTEM_PYTHON), "-c", "import rosidl_adapter.msg, rosidl_parser.parser"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return (f"{SYSTEM_PYTHON} cannot import the ROS 2 IDL tools ({last}); "
                "install them with: apt-get install -y python3-rosidl python3-empy")
    return None


@pytest.fixture(scope="module")
def rosidl_messages() -> dict:
    missing = _rosidl_missing()
    if missing:
        pytest.skip(missing)
    run = subprocess.run([str(SYSTEM_PYTHON), "-c", _ROSIDL_SCRIPT, str(ROOT), PACKAGE_NAME],
                         capture_output=True, text=True)
    assert run.returncode == 0, f"rosidl rejected the messages:\n{run.stdout}\n{run.stderr}"
    (line,) = [x for x in run.stdout.splitlines() if x.startswith("JSON:")]
    return json.loads(line[len("JSON:"):])


def test_every_msg_file_is_known_to_the_interfaces_module():
    assert sorted(p.stem for p in MSG_DIR.glob("*.msg")) == sorted(MESSAGE_NAMES)


def test_rosidl_translates_and_parses_every_message(rosidl_messages):
    assert sorted(rosidl_messages) == sorted(MESSAGE_NAMES)
    hand = dict(rosidl_messages["HandEstimate"]["members"])
    assert hand["side"] == "uint8" and hand["track_id"] == "uint32"
    assert hand["mano_pose"] == "float[48]" and hand["mano_betas"] == "float[10]"
    assert hand["joints"] == "geometry_msgs::msg::Point[21]"
    assert hand["joint_confidence"] == "float[21]" and hand["joints_2d"] == "float[42]"
    assert hand["vertices"] == "sequence<float>"
    assert hand["wrist_pose"] == "geometry_msgs::msg::Pose"
    assert hand["box"] == "hoi_perception::msg::BoundingBox2D"
    assert rosidl_messages["HandEstimate"]["constants"] == {"LEFT": ["uint8", 0], "RIGHT": ["uint8", 1]}

    obj = dict(rosidl_messages["ObjectEstimate"]["members"])
    assert obj == {"name": "string", "success": "boolean", "failure_reason": "string", "confidence": "float",
                   "pnp_inliers": "uint32", "pose": "geometry_msgs::msg::Pose", "control_points_2d": "float[42]",
                   "box": "hoi_perception::msg::BoundingBox2D"}

    frame = rosidl_messages["HandObjectEstimate"]
    assert dict(frame["members"]) == {
        "header": "std_msgs::msg::Header",
        "hands": "sequence<hoi_perception::msg::HandEstimate>",
        "objects": "sequence<hoi_perception::msg::ObjectEstimate>",
        "refused_hands": "sequence<string>",
        "tracking_state": "uint8",
        "frames_since_detection": "uint32",
        "stage_latencies": "sequence<hoi_perception::msg::StageLatency>",
    }
    assert {k: v for k, (_, v) in frame["constants"].items()} == {s.name: s.value for s in TrackingState}
    assert rosidl_messages["BoundingBox2D"]["members"] == [
        ["x_min", "float"], ["y_min", "float"], ["x_max", "float"], ["y_max", "float"]]


def test_messages_only_use_declared_interface_packages(rosidl_messages):
    cmake = (ROOT / "CMakeLists.txt").read_text()
    declared = set(re.search(r"DEPENDENCIES([^)]*)\)", cmake).group(1).split())
    package_depends = {d.name for d in parse_package(ROOT / "package.xml").build_depends}
    used = {t.split("::")[0] for msg in rosidl_messages.values() for _, t in msg["members"] if "::" in t}
    used = {re.sub(r"^sequence<", "", u) for u in used} - {PACKAGE_NAME}
    assert used == {"std_msgs", "geometry_msgs"}
    assert used <= declared and used <= package_depends


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_rosbags_reads_the_same_fields_as_rosidl(rosidl_messages, distro):
    ts = hoi_typestore(distro)
    for name in MESSAGE_NAMES:
        consts, fields = ts.fielddefs[message_type(name)]
        assert [f for f, _ in fields] == [m for m, _ in rosidl_messages[name]["members"]], name
        assert {c: v for c, _, v in consts} == {c: v for c, (_, v) in rosidl_messages[name]["constants"].items()}
