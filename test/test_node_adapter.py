"""The rclpy adapter over an in-process stand-in of exactly the rclpy calls it makes.

The stand-in records what the node declares, creates, publishes and destroys, and the
message classes are rosbags' (the same builders serve both), so every published message
is checked against the real ROS 2 definitions.
"""

import dataclasses
import gc
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hoi_perception import ros_messages as ri
from hoi_perception.bag_io import camera_info_msg, image_msg
from hoi_perception.models.results import HandResult, ObjectResult
from hoi_perception.pipeline.results import FrameResult, TrackedHand, TrackedObject
from hoi_perception.ros import node as rn
from hoi_perception.ros import node_logic as nl
from hoi_perception.ros import params as rp
from hoi_perception.tracking import FilterState, FrameStatus, ObjectFilterState

SUCCESS, FAILURE, ERROR = "SUCCESS", "FAILURE", "ERROR"
STAMP_NS = 1_700_000_123_250_000_000
K = np.array([[500.0, 0.0, 32.0], [0.0, 500.0, 24.0], [0.0, 0.0, 1.0]])
WIDTH, HEIGHT = 64, 48
CAMERA_FRAME = "camera_color_optical_frame"
FACES = np.array([[0, 1, 2], [2, 3, 4]], dtype=np.int64)
CORNERS = np.array([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)], dtype=np.float64) * 0.1 - 0.05
CONTROL_POINTS = np.concatenate([CORNERS, np.zeros((13, 3))])


class FakeEstimator:
    """One right hand and one posed object per frame."""

    def process(self, image, K, stamp, depth=None):  # noqa: N803
        rng = np.random.default_rng(0)
        joints = np.array([0.0, 0.0, 0.5]) + rng.normal(scale=0.03, size=(21, 3))
        hand = HandResult(side="right", pose=rng.normal(scale=0.2, size=48), betas=np.zeros(10), joints_cam=joints,
                          vertices_cam=joints[0] + rng.normal(scale=0.03, size=(778, 3)),
                          joints2d=rng.uniform(5, 40, size=(21, 2)), box=[5.0, 6.0, 40.0, 42.0],
                          joint_confidence=np.full(21, 0.9), confidence=0.95)
        obj = ObjectResult(name="mustard_bottle", rotation=Rotation.from_rotvec([0.2, -0.4, 1.0]).as_matrix(),
                           translation=[0.05, 0.0, 0.6], control_points_2d=np.full((21, 2), 20.0),
                           box=[10.0, 10.0, 30.0, 40.0], pnp_inliers=15, confidence=0.8, success=True)
        return FrameResult(stamp=stamp, hands=[TrackedHand(hand, 1, FilterState(FrameStatus.ACCEPTED))],
                           objects=[TrackedObject(obj, 1, ObjectFilterState(FrameStatus.ACCEPTED))],
                           timings_ms={"network": 20.0})


# --------------------------------------------------------------------------- the stand-in


class FakeLogger:
    def __init__(self):
        self.records = []

    def info(self, text):
        self.records.append(("info", text))

    def warning(self, text):
        self.records.append(("warning", text))

    def error(self, text):
        self.records.append(("error", text))

    def texts(self, level):
        return [text for lvl, text in self.records if lvl == level]


class FakePublisher:
    def __init__(self, msg_class, topic, qos):
        self.msg_class, self.topic, self.qos = msg_class, topic, qos
        self.messages = []
        self.subscribers = 1
        self.active = False
        self.fail_with = None

    def publish(self, message):
        assert self.active, f"{self.topic}: published while inactive"
        if self.fail_with is not None:
            raise self.fail_with
        assert type(message) is self.msg_class, (self.topic, type(message), self.msg_class)
        self.messages.append(message)

    def get_subscription_count(self):
        return self.subscribers


class FakeTimer:
    def __init__(self, period, callback):
        self.period, self.callback = period, callback


class FakeClock:
    def __init__(self):
        self.nanoseconds = STAMP_NS + 50_000_000

    def now(self):
        return SimpleNamespace(nanoseconds=self.nanoseconds)


class FakeLifecycleNode:
    """rclpy.lifecycle.LifecycleNode as far as the adapter uses it."""

    overrides: dict = {}

    def __init__(self, node_name, **kwargs):
        self.node_name = node_name
        self.parameters, self.descriptors = {}, {}
        self.logger = FakeLogger()
        self.clock = FakeClock()
        self.publishers, self.timers, self.subscriptions = [], [], []
        self.plain_publishers = []
        self.destroyed = []
        self.state = "unconfigured"

    # parameters
    def declare_parameter(self, name, value, descriptor):
        assert name not in self.parameters, f"{name} declared twice"
        self.parameters[name] = self.overrides.get(name, value)
        self.descriptors[name] = descriptor
        return SimpleNamespace(value=self.parameters[name])

    def get_parameter(self, name):
        return SimpleNamespace(value=self.parameters[name])

    # basics
    def get_logger(self):
        return self.logger

    def get_name(self):
        return self.node_name

    def get_clock(self):
        return self.clock

    def create_lifecycle_publisher(self, msg_class, topic, qos):
        publisher = FakePublisher(msg_class, topic, qos)
        self.publishers.append(publisher)
        return publisher

    def create_publisher(self, msg_class, topic, qos):
        publisher = FakePublisher(msg_class, topic, qos)
        publisher.active = True  # not a lifecycle publisher
        self.plain_publishers.append(publisher)
        return publisher

    def create_subscription(self, msg_class, topic, callback, qos):
        subscription = FakeSubscription(msg_class, topic, callback, qos)
        self.subscriptions.append(subscription)
        return subscription

    def destroy_lifecycle_publisher(self, publisher):
        self.publishers.remove(publisher)
        self.destroyed.append(publisher)

    def create_timer(self, period, callback):
        timer = FakeTimer(period, callback)
        self.timers.append(timer)
        return timer

    def destroy_timer(self, timer):
        self.timers.remove(timer)

    def destroy_subscription(self, handle):
        self.subscriptions.remove(handle)

    def destroy_node(self):
        self.state = "destroyed"

    # lifecycle: default transitions and the triggers that call the node's callbacks
    def on_activate(self, state):
        for publisher in self.publishers:
            publisher.active = True
        return SUCCESS

    def on_deactivate(self, state):
        for publisher in self.publishers:
            publisher.active = False
        return SUCCESS

    def on_cleanup(self, state):
        return SUCCESS

    def on_shutdown(self, state):
        return SUCCESS

    def _trigger(self, callback, success_state):
        result = callback(self.state)
        if result == SUCCESS:
            self.state = success_state
        return result

    def trigger_configure(self):
        return self._trigger(self.on_configure, "inactive")

    def trigger_activate(self):
        return self._trigger(self.on_activate, "active")

    def trigger_deactivate(self):
        return self._trigger(self.on_deactivate, "inactive")

    def trigger_cleanup(self):
        return self._trigger(self.on_cleanup, "unconfigured")


class FakeSubscription:
    def __init__(self, msg_class, topic, callback, qos):
        self.msg_class, self.topic, self.callback, self.qos = msg_class, topic, callback, qos


def deliver(node, *messages):
    """Each message to the subscription of its position (image, CameraInfo[, depth]), as the executor would."""
    for subscription, message in zip(node.subscriptions, messages):
        subscription.callback(message)


def tf_publisher(node):
    (found,) = [p for p in node.plain_publishers if p.topic == "/tf"]
    return found


def fake_loader(params, config_file):
    return nl.LoadedEstimator(FakeEstimator(), {"right": FACES, "left": FACES}, {"mustard_bottle": CONTROL_POINTS},
                              "fake (cpu, fp32): crop.onnx, detector.onnx")


def make_api(ts, loader=fake_loader, spin=None):
    policies = SimpleNamespace(BEST_EFFORT="best_effort", RELIABLE="reliable", KEEP_LAST="keep_last",
                               VOLATILE="volatile", TRANSIENT_LOCAL="transient_local")
    calls = []
    return rn.RosApi(
        init=lambda args=None: calls.append(("init", args)),
        spin=spin or (lambda node: calls.append(("spin", node.state))),
        try_shutdown=lambda: calls.append(("shutdown",)),
        shutdown_exceptions=(KeyboardInterrupt,),
        LifecycleNode=FakeLifecycleNode,
        TransitionCallbackReturn=SimpleNamespace(SUCCESS=SUCCESS, FAILURE=FAILURE, ERROR=ERROR),
        QoSProfile=lambda **kw: SimpleNamespace(**kw),
        ReliabilityPolicy=policies, HistoryPolicy=policies, DurabilityPolicy=policies,
        ParameterDescriptor=lambda **kw: SimpleNamespace(**kw),
        message_types=ts, message_class=lambda name: ts.types[name],
        load_estimator=loader,
    ), calls


@pytest.fixture(scope="module")
def ts():
    return ri.hoi_typestore("humble")


@pytest.fixture(autouse=True)
def clean_stand_in():
    FakeLifecycleNode.overrides = {}
    yield
    gc.unfreeze()


def make_node(ts, overrides=None, loader=fake_loader):
    FakeLifecycleNode.overrides = dict(overrides or {})
    api, calls = make_api(ts, loader)
    return rn.build_node_class(api)(), api


def frame(ts, stamp_ns=STAMP_NS):
    image = np.random.default_rng(0).integers(0, 255, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    return image_msg(ts, image, stamp_ns, "ignored"), camera_info_msg(ts, K, WIDTH, HEIGHT, stamp_ns, CAMERA_FRAME)


def publisher(node, topic):
    (found,) = [p for p in node.publishers if p.topic == topic]
    return found


# --------------------------------------------------------------------------- tests


def test_construction_declares_every_parameter(ts):
    node, _ = make_node(ts, {"max_rate_hz": 15, "topics.image": "/cam/image_raw"})
    expected = {spec.name for spec in rp.parameter_specs(rp.NodeParams())} | {"config_file"}
    assert set(node.parameters) == expected
    assert node.descriptors["qos.input.reliability"].dynamic_typing is True
    assert "best_effort or reliable" in node.descriptors["qos.input.reliability"].description
    assert node.descriptors["max_rate_hz"].additional_constraints.startswith("type: double")
    params = node.read_params()
    assert params.max_rate_hz == 15.0 and params.topics.image == "/cam/image_raw"
    assert node.node_name == "hoi_perception" and not node.plain_publishers and not node.publishers


def test_configure_fails_with_a_clear_log_when_a_model_file_is_missing(ts, tmp_path):
    config = tmp_path / "perception.yaml"
    config.write_text(f"estimator:\n  crop_model: {tmp_path}/hfl_crop.onnx\n  detector_model: {tmp_path}/hfl_det.onnx\n"
                      "node:\n  max_rate_hz: 20\n")
    node, _ = make_node(ts, {"config_file": str(config)}, loader=nl.load_estimator)
    assert node.parameters["max_rate_hz"] == 20  # defaults come from the file's node section
    assert node.trigger_configure() == FAILURE and node.state == "unconfigured"
    (error,) = node.logger.texts("error")
    assert error.startswith("configure failed: FileNotFoundError") and f"'{tmp_path}/hfl_crop.onnx'" in error
    assert not node.publishers


def test_configure_fails_on_a_bad_parameter_naming_it(ts):
    node, _ = make_node(ts, {"qos.input.reliability": "fast"})
    assert node.trigger_configure() == FAILURE
    assert "qos.input.reliability: 'fast' is not one of ['best_effort', 'reliable']" in node.logger.texts("error")[0]


def test_full_lifecycle_publishes_stamped_outputs_from_synchronised_inputs(ts):
    node, _ = make_node(ts)
    assert node.trigger_configure() == SUCCESS
    assert gc.get_freeze_count() > 0  # models frozen out of the collector's scans
    topics = {p.topic: p for p in node.publishers}
    assert set(topics) == {"~/estimate", "~/hand_mesh", "~/markers", "~/debug_image", "~/joint_states",
                           "/diagnostics"}
    assert topics["~/estimate"].qos.reliability == "reliable" and topics["~/estimate"].qos.depth == 10
    assert topics["~/hand_mesh"].msg_class is ts.types["visualization_msgs/msg/Marker"]
    topics["~/debug_image"].subscribers = 0  # nobody watches the overlay: it is not built

    tf = tf_publisher(node)  # tf2_ros's broadcaster QoS
    assert tf.msg_class is ts.types["tf2_msgs/msg/TFMessage"]
    assert (tf.qos.reliability, tf.qos.depth, tf.qos.durability) == ("reliable", 100, "volatile")

    assert node.trigger_activate() == SUCCESS
    subscriptions = node.subscriptions
    assert [s.topic for s in subscriptions] == ["/camera/color/image_raw", "/camera/color/camera_info"]
    assert subscriptions[0].msg_class is ts.types["sensor_msgs/msg/Image"]
    assert subscriptions[0].qos.reliability == "best_effort" and subscriptions[0].qos.depth == 5
    assert (node._synchronizer.queue_size, node._synchronizer.slop_ns) == (10, 20_000_000)
    (timer,) = node.timers
    assert timer.period == 1.0

    image, info = frame(ts)
    subscriptions[0].callback(image)
    assert not tf.messages  # waiting for its CameraInfo
    subscriptions[1].callback(info)
    (tf_message,) = tf.messages
    transforms = tf_message.transforms
    assert [t.child_frame_id for t in transforms] == ["right_hand", "mustard_bottle"]
    assert all(t.header.frame_id == CAMERA_FRAME for t in transforms)
    estimate = topics["~/estimate"].messages[0]
    assert (estimate.header.stamp.sec, estimate.header.stamp.nanosec) == divmod(STAMP_NS, 1_000_000_000)
    assert estimate.header.frame_id == CAMERA_FRAME and len(estimate.hands) == 1
    assert len(topics["~/hand_mesh"].messages) == 1 and len(topics["~/markers"].messages) == 1
    assert len(topics["~/joint_states"].messages) == 1 and not topics["~/debug_image"].messages

    timer.callback()
    (diagnostics,) = topics["/diagnostics"].messages
    status = diagnostics.status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == status.OK and values["frames_published"] == "1"
    assert values["stamp_age_ms_mean"] == "50" and values["engine"].startswith("fake (cpu, fp32)")
    assert diagnostics.header.stamp.sec == (STAMP_NS + 50_000_000) // 1_000_000_000

    assert node.trigger_deactivate() == SUCCESS
    assert not node.subscriptions and not node.timers
    assert node.trigger_cleanup() == SUCCESS
    assert not node.publishers and len(node.destroyed) == 6
    assert gc.get_freeze_count() == 0
    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS  # again, same /tf publisher
    assert len(node.plain_publishers) == 1


def test_compressed_image_with_depth_subscribes_three_synchronised_topics(ts):
    node, _ = make_node(ts, {"topics.compressed": True, "topics.depth": "/camera/aligned_depth/image_raw",
                             "qos.input.reliability": "reliable", "sync.slop_s": 0.05})
    node.trigger_configure()
    node.trigger_activate()
    assert [(s.topic, s.msg_class.__msgtype__) for s in node.subscriptions] == [
        ("/camera/color/image_raw/compressed", "sensor_msgs/msg/CompressedImage"),
        ("/camera/color/camera_info", "sensor_msgs/msg/CameraInfo"),
        ("/camera/aligned_depth/image_raw", "sensor_msgs/msg/Image")]
    assert node.subscriptions[0].qos.reliability == "reliable" and node._synchronizer.slop_ns == 50_000_000
    assert node._synchronizer.pending() == [0, 0, 0]


def test_bad_frames_and_publish_failures_never_escape_the_callback(ts):
    node, _ = make_node(ts)
    node.trigger_configure()
    node.trigger_activate()
    image, info = frame(ts)
    image.encoding = "bayer_rggb8"
    deliver(node, image, info)
    estimate_publisher = publisher(node, "~/estimate")
    estimate_publisher.fail_with = RuntimeError("middleware refused the message")
    deliver(node, *frame(ts, STAMP_NS + 33_000_000))
    warnings = node.logger.texts("warning")
    assert "image encoding 'bayer_rggb8' is not supported" in warnings[0]
    assert "RuntimeError: middleware refused the message" in warnings[1]
    node.timers[0].callback()
    status = publisher(node, "/diagnostics").messages[0].status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == status.ERROR and values["dropped_refused"] == "1" and values["dropped_failed"] == "1"


def test_main_waits_unconfigured_or_autostarts_and_exits_nonzero_when_configure_fails(ts, tmp_path):
    api, calls = make_api(ts)
    assert rn.main(["--ros-args"], api=api) == 0
    assert calls == [("init", ["--ros-args"]), ("spin", "unconfigured"), ("shutdown",)]  # for lifecycle services

    FakeLifecycleNode.overrides = {"autostart": True}
    api, calls = make_api(ts)
    assert rn.main([], api=api) == 0
    assert calls[1] == ("spin", "active")

    def missing(params, config_file):
        raise FileNotFoundError("model file(s) not found: estimator.crop_model 'x.onnx'")

    api, calls = make_api(ts, loader=missing)
    assert rn.main([], api=api) == 1
    assert [c[0] for c in calls] == ["init", "shutdown"]

    FakeLifecycleNode.overrides = {}
    api, calls = make_api(ts, spin=lambda node: (_ for _ in ()).throw(KeyboardInterrupt))
    assert rn.main([], api=api) == 0 and calls[-1] == ("shutdown",)

    FakeLifecycleNode.overrides = {"autostart": "yes"}
    api, calls = make_api(ts)
    assert rn.main([], api=api) == 1


def test_load_ros_api_explains_a_missing_ros_installation():
    try:
        import rclpy  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="source install/setup.bash"):
            rn.load_ros_api()
    else:
        assert rn.load_ros_api().LifecycleNode.__name__ == "LifecycleNode"


def test_frames_lost_before_the_estimator_are_counted_apart_from_dropped_ones(ts):
    node, _ = make_node(ts)
    node.trigger_configure()
    node.trigger_activate()
    period = 33_333_333
    for i in (0, 1, 2, 3, 7):  # frames 4-6 never arrive: overwritten in a busy node's queue
        deliver(node, *frame(ts, STAMP_NS + i * period))
    image, _ = frame(ts, STAMP_NS + 8 * period)
    node.subscriptions[0].callback(image)  # its CameraInfo never comes
    deliver(node, *frame(ts, STAMP_NS + 9 * period))
    deliver(node, *frame(ts, STAMP_NS + 5 * period))  # going back: refused, not lost
    node.timers[0].callback()
    status = publisher(node, "/diagnostics").messages[0].status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert (values["frames_lost"], values["lost_stamp_gap"], values["lost_unmatched"]) == ("4", "3", "1")
    assert (values["frames_published"], values["dropped_refused"], values["dropped_rate_limited"]) == ("6", "1", "0")
    assert status.level == status.WARN
    assert "out of order" in node.logger.texts("warning")[0]


def test_configure_fails_clearly_without_tf2_msgs_unless_tf_is_off(ts):
    def without_tf2_msgs(name):
        if name.startswith("tf2_msgs/"):
            raise KeyError(f"message type {name!r} is not available")
        return ts.types[name]

    api, _ = make_api(ts)
    api = dataclasses.replace(api, message_class=without_tf2_msgs)
    node = rn.build_node_class(api)()
    assert node.trigger_configure() == FAILURE
    (error,) = node.logger.texts("error")
    assert "'tf2_msgs/msg/TFMessage' is not available" in error and "or set publish.tf false" in error
    FakeLifecycleNode.overrides = {"publish.tf": False}
    node = rn.build_node_class(api)()
    assert node.trigger_configure() == SUCCESS and not node.plain_publishers
