"""Proof of life on a ROS 2 machine: launch the node, play recorded camera frames at it, expect outputs.

Needs a built and sourced workspace (rclpy, launch_testing, the hoi_perception_node
executable); everywhere else the module is skipped at import. Run it with
``launch_test test/test_ros_launch_smoke.py`` or through pytest with launch_testing's plugin
(``colcon test --packages-select hoi_perception``).

The inputs are a short synthetic recording (a MCAP bag written by the project's generator),
read back with rosbags and published as rclpy messages with their recorded stamps; the
network is a tiny randomly initialised one, so the test checks plumbing, stamps and frames,
not accuracy.
"""

import tempfile
import time
import unittest
from pathlib import Path

import pytest

for _module in ("rclpy", "launch", "launch_ros", "launch_testing", "tf2_msgs", "hoi_perception.msg"):
    pytest.importorskip(_module, reason=f"{_module} is not available: needs a built and sourced ROS 2 workspace")

import launch  # noqa: E402
import launch_ros.actions  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from hoi_perception.msg import HandObjectEstimate  # noqa: E402
from rclpy.qos import QoSProfile, qos_profile_sensor_data  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

WORKDIR = Path(tempfile.mkdtemp(prefix="hoi_perception_smoke_"))
NODE_NAME = "hoi_perception"
FRAMES = 6
TIMEOUT_S = 90.0
TINY_MODEL = ["input_size=64", "backbone.fpn_channels=16", "roi.output_size=8", "hand_head.hourglass_depth=2",
              "hand_head.encoder_rounds=2", "hand_head.regressor_hidden=32", "object_head.num_blocks=1",
              "detection_head.head_channels=8"]


def write_inputs(workdir: Path) -> tuple[Path, Path]:
    """A synthetic recording and a node config running a tiny random network (torch engine)."""
    import torch

    from hoi_perception.config import load_config, to_dict
    from hoi_perception.models.config import load_model_config
    from hoi_perception.models.network import HOINet
    from hoi_perception.synth.config import SynthConfig
    from hoi_perception.synth.generator import generate_dataset

    synth = load_config(SynthConfig, "synth.yaml", ["camera.width=128", "camera.height=128"])
    generate_dataset(synth, workdir / "synth", 1, FRAMES, 0, write_bags=True)
    torch.manual_seed(0)
    model_config = load_model_config("models/hfl_r18.yaml", TINY_MODEL)
    torch.save({"model_config": to_dict(model_config), "model": HOINet(model_config).state_dict()},
               workdir / "tiny.pt")
    config = workdir / "perception.yaml"
    config.write_text(f"estimator:\n  engine: {{kind: torch}}\n  checkpoint: {workdir / 'tiny.pt'}\n"
                      "  object_name: mustard_bottle\nnode:\n  autostart: true\n"
                      "  publish: {only_when_subscribed: false}\n"
                      "  diagnostics_period_s: 0.5\n")
    return workdir / "synth" / "bags" / "seq_0000", config


def recorded_frames(bag: Path) -> list[tuple[Image, CameraInfo]]:
    """(image, camera info) pairs of the bag as rclpy messages, in recorded order."""
    from rosbags.highlevel import AnyReader

    classes = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CameraInfo": CameraInfo}
    by_stamp: dict[tuple[int, int], dict[str, object]] = {}
    with AnyReader([bag]) as reader:
        connections = [c for c in reader.connections if c.topic.startswith("/camera/color/")]
        for connection, _, raw in reader.messages(connections=connections):
            msg = deserialize_message(bytes(raw), classes[connection.msgtype])
            by_stamp.setdefault((msg.header.stamp.sec, msg.header.stamp.nanosec), {})[connection.msgtype] = msg
    return [(pair["sensor_msgs/msg/Image"], pair["sensor_msgs/msg/CameraInfo"])
            for _, pair in sorted(by_stamp.items()) if len(pair) == 2]


@pytest.mark.launch_test
def generate_test_description():
    bag, config = write_inputs(WORKDIR)
    node = launch_ros.actions.Node(package="hoi_perception", executable="hoi_perception_node", name=NODE_NAME,
                                   output="screen", parameters=[{"config_file": str(config)}])
    return launch.LaunchDescription([node, launch_testing.actions.ReadyToTest()]), {"perception": node, "bag": bag}


class TestProofOfLife(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.tester = rclpy.create_node("hoi_perception_smoke_tester")

    @classmethod
    def tearDownClass(cls):
        cls.tester.destroy_node()
        rclpy.shutdown()

    def test_outputs_arrive_stamped_and_framed_like_the_inputs(self, bag):
        frames = recorded_frames(bag)
        self.assertEqual(len(frames), FRAMES)
        estimates, transforms, diagnostics = [], [], []
        reliable = QoSProfile(depth=10)
        self.tester.create_subscription(HandObjectEstimate, f"/{NODE_NAME}/estimate", estimates.append, reliable)
        self.tester.create_subscription(TFMessage, "/tf", transforms.append, reliable)
        self.tester.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, reliable)
        image_pub = self.tester.create_publisher(Image, "/camera/color/image_raw", qos_profile_sensor_data)
        info_pub = self.tester.create_publisher(CameraInfo, "/camera/color/camera_info", qos_profile_sensor_data)

        deadline = time.monotonic() + TIMEOUT_S
        index = 0
        while time.monotonic() < deadline and not (len(estimates) >= 3 and diagnostics):
            image, info = frames[index % len(frames)]  # the node may still be loading: keep playing
            image_pub.publish(image)
            info_pub.publish(info)
            index += 1
            end = time.monotonic() + 0.1
            while time.monotonic() < end:
                rclpy.spin_once(self.tester, timeout_sec=0.02)

        self.assertGreaterEqual(len(estimates), 3, f"no estimates within {TIMEOUT_S} s ({index} frames sent)")
        sent = {(i.header.stamp.sec, i.header.stamp.nanosec) for i, _ in frames}
        camera_frame = frames[0][1].header.frame_id
        for estimate in estimates:
            self.assertIn((estimate.header.stamp.sec, estimate.header.stamp.nanosec), sent)
            self.assertEqual(estimate.header.frame_id, camera_frame)
        for message in transforms:
            for transform in message.transforms:
                self.assertIn(transform.header.frame_id, (camera_frame, "right_hand", "left_hand"))
        ours = [s for d in diagnostics for s in d.status if s.name == f"{NODE_NAME}: hand-object perception"]
        self.assertTrue(ours, "no diagnostics from the node")


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):

    def test_node_exits_cleanly(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
