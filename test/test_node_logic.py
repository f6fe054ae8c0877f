"""The node's logic without ROS: parameters, plans, message conversion, callbacks, diagnostics."""

import array
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import write_tiny_checkpoint  # test/ is on sys.path under pytest
from scipy.spatial.transform import Rotation

from hoi_perception import ros_messages as ri
from hoi_perception.bag_io import camera_info_msg, image_msg
from hoi_perception.config import ConfigError
from hoi_perception.models.results import HandResult, ObjectResult
from hoi_perception.pipeline.config import load_estimator_config
from hoi_perception.pipeline.results import FrameResult, TrackedHand, TrackedObject
from hoi_perception.ros import node_logic as nl
from hoi_perception.ros import params as rp
from hoi_perception.tracking import FilterState, FrameStatus, ObjectFilterState

STAMP_NS = 1_700_000_123_250_000_000
K = np.array([[500.0, 0.0, 32.0], [0.0, 500.0, 24.0], [0.0, 0.0, 1.0]])
WIDTH, HEIGHT = 64, 48
CAMERA_FRAME = "camera_color_optical_frame"
FACES = np.array([[0, 1, 2], [2, 3, 4], [5, 6, 7]], dtype=np.int64)
CONTROL_POINTS = np.array([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)] + [[0.5, 0.5, 0.5]] * 13,
                          dtype=np.float64) * [0.06, 0.08, 0.19] - [0.03, 0.04, 0.095]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ts():
    return ri.hoi_typestore("humble")


def make_hand(side="right", seed=0):
    rng = np.random.default_rng(seed)
    wrist = np.array([0.02, 0.01, 0.5])
    joints = wrist + rng.normal(scale=0.03, size=(21, 3))
    joints[0] = wrist
    return HandResult(side=side, pose=rng.normal(scale=0.2, size=48), betas=np.zeros(10), joints_cam=joints,
                      vertices_cam=wrist + rng.normal(scale=0.03, size=(778, 3)),
                      joints2d=rng.uniform(5, 40, size=(21, 2)), box=[5.0, 6.0, 40.0, 42.0],
                      joint_confidence=np.full(21, 0.9), confidence=0.95)


def make_object(success=True):
    rotation = Rotation.from_rotvec([0.2, -0.4, 1.0]).as_matrix() if success else np.full((3, 3), np.nan)
    translation = np.array([0.05, 0.0, 0.6]) if success else np.full(3, np.nan)
    return ObjectResult(name="mustard_bottle", rotation=rotation, translation=translation,
                        control_points_2d=np.full((21, 2), 20.0), box=[10.0, 10.0, 30.0, 40.0], pnp_inliers=15,
                        confidence=0.8, success=success, failure_reason="" if success else "too few inliers")


def frame_result(stamp, hands=("right",), with_object=True, state="detecting", skipped=None):
    hand_state = FilterState(FrameStatus.ACCEPTED)
    return FrameResult(
        stamp=stamp,
        hands=[TrackedHand(make_hand(side, i), 3 + i, hand_state) for i, side in enumerate(hands)],
        objects=[TrackedObject(make_object(), 1, ObjectFilterState(FrameStatus.ACCEPTED))] if with_object else [],
        tracking_state=state, frames_since_detection=0 if state == "detecting" else 2,
        timings_ms={"detect": 4.0, "network": 20.0, "pnp": 1.5}, skipped=skipped)


class FakeEstimator:
    """Records its inputs and returns scripted results (or raises)."""

    def __init__(self, script=None):
        self.calls = []
        self.script = script or (lambda call: frame_result(call["stamp"]))

    def process(self, image, K, stamp, depth=None):  # noqa: N803
        call = {"image": image, "K": K, "stamp": stamp, "depth": depth}
        self.calls.append(call)
        return self.script(call)


class FakeClock:
    def __init__(self, start=100.0):
        self.now = start

    def __call__(self):
        return self.now


def loaded(estimator):
    return nl.LoadedEstimator(estimator, {"right": np.repeat(FACES, 2, axis=0), "left": FACES},
                              {"mustard_bottle": CONTROL_POINTS}, "fake engine")


def make_logic(ts, estimator=None, params=None, clock=None, subscribed=lambda _: True):
    published, warnings = [], []
    logic = nl.PerceptionNodeLogic(params or rp.NodeParams(), loaded(estimator or FakeEstimator()), ts,
                                   sink=published.append, has_subscribers=subscribed, clock=clock or FakeClock(),
                                   warn=warnings.append, node_name="hoi_test")
    return logic, published, warnings


def inputs(ts, stamp_ns=STAMP_NS, encoding=None, info_frame=CAMERA_FRAME, image_frame="some_other_frame", k=K,
           info_size=(WIDTH, HEIGHT)):
    image = np.random.default_rng(0).integers(0, 255, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    msg = image_msg(ts, image, stamp_ns, image_frame)
    if encoding is not None:
        msg.encoding = encoding
    info = camera_info_msg(ts, k, info_size[0], info_size[1], stamp_ns, info_frame)
    return msg, info


def all_headers(outputs):
    headers = [t.header for t in outputs.transforms]
    for name, messages in outputs.messages.items():
        for message in messages:
            if name == "markers":
                headers.extend(m.header for m in message.markers)
            else:
                headers.append(message.header)
    return headers


# --------------------------------------------------------------------------- parameters


def test_default_params_are_valid_and_round_trip_through_ros_parameter_values():
    params = rp.NodeParams()
    specs = {spec.name: spec for spec in rp.parameter_specs(params)}
    assert specs["topics.image"].value == "/camera/color/image_raw"
    assert specs["qos.input.reliability"].value == "best_effort" and specs["qos.input.depth"].value == 5
    assert specs["qos.input.depth"].kind == "integer"
    assert specs["max_rate_hz"].kind == "double" and specs["publish.joint_tf"].kind == "bool"
    assert specs["estimator.hand_sides"].kind == "string_array" and specs["estimator.hand_sides"].value == []
    assert specs["qos.input.reliability"].kind == "string"
    assert all(spec.description for spec in specs.values())
    assert rp.params_from_values(rp.parameter_values(params)) == params
    # ROS hands integers for doubles when a YAML says 15; tuples for arrays
    changed = rp.params_from_values({"max_rate_hz": 15, "estimator.hand_sides": ("left",)})
    assert changed.max_rate_hz == 15.0 and isinstance(changed.max_rate_hz, float)
    assert changed.estimator.hand_sides == ["left"]


@pytest.mark.parametrize("values, message", [
    ({"qos.input.reliability": "fast"}, "qos.input.reliability: 'fast' is not one of"),
    ({"qos.input.depth": 0}, "depth: expected a keep-last history depth in [1, 1000], got 0"),
    ({"max_rate_hz": -1.0}, "max_rate_hz: expected >= 0"),
    ({"max_rate_hz": "fast"}, "max_rate_hz: expected a number, got 'fast'"),
    ({"frames.left_wrist": "right_hand"}, "right_wrist and left_wrist must differ"),
    ({"frames.right_wrist": "/right"}, "right_wrist: expected a TF frame name"),
    ({"topics.image": " "}, "image: a topic name is required"),
    ({"topics.markers": "~/estimate"}, "output topics must be distinct"),
    ({"estimator.hand_sides": ["right", "middle"]}, "hand_sides: expected distinct values"),
    ({"estimator.engine": "openvino"}, "engine: expected torch, onnxruntime or tensorrt"),
    ({"sync.slop_s": 2.0}, "slop_s: expected seconds in [0, 1]"),
    ({"topics.imgae": "/x"}, "unknown key(s) ['imgae']"),
])
def test_bad_parameter_values_name_the_parameter(values, message):
    with pytest.raises(ConfigError) as info:
        rp.params_from_values(values)
    assert message in str(info.value)


def test_node_section_loads_from_a_perception_file(tmp_path):
    path = tmp_path / "perception.yaml"
    path.write_text("estimator: {}\nnode:\n  max_rate_hz: 12\n  topics: {image: /cam/image, compressed: true}\n"
                    "  qos: {input: {reliability: reliable, depth: 2}}\n")
    params = rp.load_node_params(path)
    assert params.max_rate_hz == 12.0 and params.topics.image == "/cam/image" and params.topics.compressed
    assert params.qos.input == rp.QosParams("reliable", 2, "volatile")
    assert params.qos.output.reliability == "reliable"
    path.write_text("node:\n  qos: {input: {depth: -3}}\n")
    with pytest.raises(ConfigError, match=r"perception.yaml: node: qos.input: depth: expected"):
        rp.load_node_params(path)
    path.write_text("node: [1, 2]\n")
    with pytest.raises(ConfigError, match="'node' must be a mapping"):
        rp.load_node_params(path)


def test_estimator_selection_becomes_estimator_overrides():
    selection = rp.EstimatorSelection(engine="torch", checkpoint="/models/on.pt", hand_sides=["left"],
                                      object_name="mug", filter_config="1e3.yaml")
    overrides = rp.estimator_overrides(selection)
    assert overrides == ["engine.kind='torch'", "checkpoint='/models/on.pt'", "object_name='mug'",
                         "hand_sides=['left']", "filter_config='1e3.yaml'"]
    config = load_estimator_config({"engine": {"kind": "onnxruntime"}, "crop_model": None}, overrides)
    assert config.engine.kind == "torch" and str(config.checkpoint) == "/models/on.pt"
    assert config.hand_sides == ["left"] and config.object_name == "mug" and str(config.filter_config) == "1e3.yaml"
    assert rp.estimator_overrides(rp.EstimatorSelection()) == []


def test_missing_model_files_fail_before_any_network_loads(tmp_path):
    path = tmp_path / "perception.yaml"
    path.write_text(f"estimator:\n  engine: {{kind: onnxruntime}}\n  crop_model: {tmp_path}/crop.onnx\n"
                    f"  detector_model: {tmp_path}/det.onnx\nnode: {{}}\n")
    with pytest.raises(FileNotFoundError) as info:
        nl.load_estimator(rp.NodeParams(), path)
    assert f"estimator.crop_model '{tmp_path}/crop.onnx'" in str(info.value)
    assert f"estimator.detector_model '{tmp_path}/det.onnx'" in str(info.value)
    params = rp.params_from_values({"estimator.engine": "torch", "estimator.checkpoint": str(tmp_path / "x.pt")})
    path.write_text("estimator: {}\n")
    with pytest.raises(FileNotFoundError, match=r"estimator.checkpoint '.*x.pt'"):
        nl.load_estimator(params, path)


# --------------------------------------------------------------------------- plans


def test_subscription_and_publisher_plans():
    params = rp.params_from_values({"topics.image": "/cam/color/image_raw/", "topics.compressed": True,
                                    "topics.depth": "/cam/depth", "publish.debug_image": False})
    plan = nl.subscription_plan(params)
    assert plan.image_topic == "/cam/color/image_raw/compressed" and plan.image_type == nl.COMPRESSED_IMAGE_TYPE
    assert plan.depth_topic == "/cam/depth" and plan.qos.reliability == "best_effort" and plan.qos.depth == 5
    assert nl.subscription_plan(rp.NodeParams()).depth_topic is None
    publishers = {p.output: p for p in nl.publisher_plans(params)}
    assert set(publishers) == {"estimate", "hand_mesh", "markers", "joint_states", "diagnostics"}
    assert publishers["estimate"].msgtype == "hoi_perception/msg/HandObjectEstimate"
    assert publishers["estimate"].topic == "~/estimate" and publishers["estimate"].qos.reliability == "reliable"
    assert publishers["diagnostics"].topic == "/diagnostics"


# --------------------------------------------------------------------------- rate limiting


def test_rate_limiter_keeps_the_requested_rate_under_jitter():
    rng = np.random.default_rng(1)
    times = np.arange(300) / 30.0 + rng.uniform(-0.004, 0.004, size=300)  # 10 s of a jittery 30 Hz camera
    for limit, expected in ((15.0, 150), (10.0, 100), (0.0, 300), (60.0, 300)):
        limiter = nl.RateLimiter(limit)
        admitted = sum(limiter.admit(t) for t in times)
        assert abs(admitted - expected) <= 1, (limit, admitted)
    limiter = nl.RateLimiter(10.0)
    assert limiter.admit(0.0) and not limiter.admit(0.05) and limiter.admit(0.1)
    assert limiter.admit(5.0) and not limiter.admit(5.05)  # after a pause the schedule restarts
    with pytest.raises(ValueError, match="max_rate_hz"):
        nl.RateLimiter(-1)


# --------------------------------------------------------------------------- callbacks


def test_outputs_carry_the_input_stamp_and_the_camera_info_frame(ts):
    estimator = FakeEstimator()
    params = rp.params_from_values({"publish.joint_tf": True, "publish.estimate_vertices": True})
    logic, published, warnings = make_logic(ts, estimator, params)
    image, info = inputs(ts)
    assert logic.on_frame(image, info, now_ns=STAMP_NS + 40_000_000) is None
    call = estimator.calls[0]
    np.testing.assert_array_equal(call["K"], K)
    assert call["stamp"] == pytest.approx(STAMP_NS * 1e-9) and call["depth"] is None
    np.testing.assert_array_equal(call["image"], image.data.reshape(HEIGHT, WIDTH, 3))
    (outputs,) = published
    assert set(outputs.messages) == {"estimate", "hand_mesh", "markers", "joint_states", "debug_image"}
    headers = all_headers(outputs)
    assert len(headers) > 10
    for header in headers:
        assert (header.stamp.sec, header.stamp.nanosec) == (1_700_000_123, 250_000_000)
    assert {h.frame_id for h in headers} == {CAMERA_FRAME, "right_hand"}  # joints are children of the wrist
    children = [t.child_frame_id for t in outputs.transforms]
    assert children[0] == "right_hand" and children[-1] == "mustard_bottle" and len(children) == 22
    assert "right_hand_thumb_tip" in children
    estimate = outputs.messages["estimate"][0]
    assert [s.stage for s in estimate.stage_latencies] == ["decode", "detect", "network", "pnp"]
    assert estimate.hands[0].track_id == 3 and estimate.hands[0].vertices.size == 778 * 3
    assert estimate.tracking_state == ri.TrackingState.DETECTING
    for name, messages in outputs.messages.items():  # every message round-trips through the real definitions
        for message in messages:
            back = ts.deserialize_cdr(ts.serialize_cdr(message, message.__msgtype__), message.__msgtype__)
            header = back.markers[0].header if name == "markers" else back.header
            assert header.frame_id == CAMERA_FRAME, name
    debug = outputs.messages["debug_image"][0]
    assert (debug.width, debug.height, debug.encoding, debug.step) == (WIDTH, HEIGHT, "rgb8", WIDTH * 3)
    assert not np.array_equal(debug.data, image.data)  # the overlay was drawn
    assert not warnings
    stats = logic.statistics
    assert (stats.received, stats.published, stats.dropped_total) == (1, 1, 0)
    report = logic.diagnostics_report()
    assert report.values["stamp_age_ms_mean"] == pytest.approx(40.0)


def test_image_frame_is_used_when_camera_info_has_none_and_a_frame_is_required(ts):
    logic, published, warnings = make_logic(ts)
    image, info = inputs(ts, info_frame="", image_frame="cam_from_image")
    assert logic.on_frame(image, info) is None
    assert published[0].header.frame_id == "cam_from_image"
    image, info = inputs(ts, info_frame="", image_frame="")
    assert logic.on_frame(image, info) is nl.DropReason.REFUSED
    assert "frame_id" in warnings[-1]


def test_unsupported_encoding_is_refused_with_a_diagnostic_not_a_crash(ts, tmp_path):
    estimator = FakeEstimator()
    clock = FakeClock()
    logic, published, warnings = make_logic(ts, estimator, clock=clock)
    for i in range(3):
        image, info = inputs(ts, STAMP_NS + i, encoding="yuv422")
        assert logic.on_frame(image, info) is nl.DropReason.REFUSED
    assert not estimator.calls and not published
    assert len(warnings) == 1 and "image encoding 'yuv422' is not supported" in warnings[0]
    clock.now += 1.0
    message = logic.diagnostics_msg(STAMP_NS, "/camera/image")
    status = message.status[0]
    assert status.level == status.ERROR and status.name == "hoi_test: hand-object perception"
    assert "yuv422" in status.message and status.hardware_id == "fake engine"
    values = {kv.key: kv.value for kv in status.values}
    assert values["dropped_refused"] == "3" and values["frames_published"] == "0" and values["engine"] == "fake engine"
    assert values["input_rate_hz"] == "3"
    assert len(ts.serialize_cdr(message, message.__msgtype__)) > 0
    clock.now += 1.0
    stale = logic.diagnostics_report("/camera/image")
    assert stale.level == "stale" and "/camera/image" in stale.message


@pytest.mark.parametrize("change, expected", [
    ({"k": np.zeros((3, 3))}, "all zeros"),
    ({"k": np.array([[500.0, 0, 32], [0, -1, 24], [0, 0, 1]])}, "positive focal lengths"),
    ({"info_size": (640, 480)}, "image is 64x48 but its CameraInfo is for 640x480"),
])
def test_bad_camera_info_is_refused(ts, change, expected):
    estimator = FakeEstimator()
    logic, published, warnings = make_logic(ts, estimator)
    image, info = inputs(ts, **change)
    assert logic.on_frame(image, info) is nl.DropReason.REFUSED
    assert not estimator.calls and expected in warnings[0]


def test_depth_is_decoded_and_must_be_aligned(ts):
    estimator = FakeEstimator()
    logic, _, warnings = make_logic(ts, estimator)
    image, info = inputs(ts)
    depth = image_msg(ts, np.full((HEIGHT, WIDTH), 650, np.uint16), STAMP_NS, CAMERA_FRAME)
    assert logic.on_frame(image, info, depth) is None
    assert estimator.calls[0]["depth"].dtype == np.uint16 and estimator.calls[0]["depth"][3, 4] == 650
    small = image_msg(ts, np.full((10, 10), 650, np.uint16), STAMP_NS, CAMERA_FRAME)
    assert logic.on_frame(image, info, small) is nl.DropReason.REFUSED
    assert "depth is 10x10 but the image is 64x48" in warnings[-1]


def advance(image, ms=1):
    """The next frame of a stream: the node refuses stamps that do not move forward."""
    image.header.stamp.nanosec += ms * 1_000_000
    return image


def test_exceptions_are_contained_counted_and_processing_continues(ts):
    def script(call):
        if len(estimator.calls) == 1:
            raise RuntimeError("engine exploded")
        return frame_result(call["stamp"])

    estimator = FakeEstimator(script)
    logic, published, warnings = make_logic(ts, estimator)
    image, info = inputs(ts)
    assert logic.on_frame(image, info) is nl.DropReason.FAILED
    assert "RuntimeError: engine exploded" in warnings[0]
    assert logic.on_frame(advance(image), info) is None and len(published) == 1

    def failing_sink(outputs):
        raise TypeError("publisher rejected a field")

    logic._sink = failing_sink
    assert logic.on_frame(advance(image), info) is nl.DropReason.FAILED
    assert logic.statistics.dropped["failed"] == 2 and logic.statistics.published == 1
    broken = SimpleNamespace(header=SimpleNamespace(frame_id="x"))  # no stamp, no encoding
    assert logic.on_frame(broken, info) is nl.DropReason.FAILED
    assert logic.statistics.dropped["failed"] == 3


def test_stamps_must_move_forward_unless_the_stream_restarts(ts):
    logic, published, warnings = make_logic(ts)
    image, info = inputs(ts)
    assert logic.on_frame(image, info) is None
    assert logic.on_frame(image, info) is nl.DropReason.REFUSED  # repeated
    assert logic.on_frame(advance(image, -500), info) is nl.DropReason.REFUSED  # half a second back
    assert "is not after the last processed 1700000123.250000000 s (out of order)" in warnings[0]
    assert logic.on_frame(advance(image, 533), info) is None
    image.header.stamp.sec -= 5  # five seconds back: a replayed bag looping, a new stream
    assert logic.on_frame(image, info) is None
    assert len(published) == 3 and logic.statistics.dropped["refused"] == 2
    logic.reset()
    image.header.stamp.sec -= 5
    assert logic.on_frame(image, info) is None  # activation forgets the last stamp


def test_skipped_frames_publish_nothing_and_are_reported(ts):
    estimator = FakeEstimator(lambda call: frame_result(call["stamp"], skipped="image is empty"))
    clock = FakeClock()
    logic, published, warnings = make_logic(ts, estimator, clock=clock)
    image, info = inputs(ts)
    assert logic.on_frame(image, info) is nl.DropReason.SKIPPED
    assert not published and "image is empty" in warnings[0]
    clock.now += 1
    assert logic.diagnostics_report().values["last_drop_reason"] == "skipped: image is empty"


def test_rate_limit_drops_are_counted_but_not_a_fault(ts):
    clock = FakeClock()
    logic, published, _ = make_logic(ts, params=rp.params_from_values({"max_rate_hz": 10.0}), clock=clock)
    image, info = inputs(ts)
    for i in range(30):
        clock.now = 100.0 + i / 30.0
        logic.on_frame(advance(image, 33), info)
    clock.now = 101.0
    report = logic.diagnostics_report()
    assert len(published) == 10 and report.values["dropped_rate_limited"] == 20
    assert report.level == "ok" and report.values["output_rate_hz"] == pytest.approx(10.0)
    assert report.values["input_rate_hz"] == pytest.approx(30.0)


def test_repeated_warnings_are_throttled_with_a_count(ts):
    clock = FakeClock()
    params = rp.params_from_values({"log_throttle_s": 5.0})
    logic, _, warnings = make_logic(ts, params=params, clock=clock)
    image, info = inputs(ts, encoding="yuv422")
    for _ in range(4):
        logic.on_frame(image, info)
    clock.now += 6.0
    logic.on_frame(image, info)
    assert len(warnings) == 2 and "(3 more like this since the last report)" in warnings[1]


def test_mesh_markers_follow_the_visible_hands(ts):
    sides = [("right", "left"), ("right",), ()]
    estimator = FakeEstimator(lambda call: frame_result(call["stamp"], hands=sides[len(estimator.calls) - 1]))
    logic, published, _ = make_logic(ts, estimator)
    image, info = inputs(ts)
    for _ in sides:
        assert logic.on_frame(advance(image), info) is None
    first, second, third = (p.messages["hand_mesh"] for p in published)
    Marker = ts.types["visualization_msgs/msg/Marker"]
    assert [(m.id, m.type, len(m.points)) for m in first] == [(0, Marker.TRIANGLE_LIST, 18),
                                                             (1, Marker.TRIANGLE_LIST, 9)]
    assert [(m.id, m.action) for m in second] == [(0, Marker.ADD), (1, Marker.DELETE)]
    assert [(m.id, m.action, m.ns) for m in third] == [(0, Marker.DELETE, "hand_mesh")]
    assert "joint_states" not in published[2].messages  # no hands, no joint states
    names = list(published[0].messages["joint_states"][0].name)
    assert names[0] == "right_index1_x" and names[45] == "left_index1_x" and len(names) == 90


def test_outputs_without_subscribers_are_not_built(ts):
    logic, published, _ = make_logic(ts, subscribed=lambda output: output == "estimate")
    image, info = inputs(ts)
    logic.on_frame(image, info)
    assert set(published[0].messages) == {"estimate"} and published[0].transforms  # TF is always sent
    params = rp.params_from_values({"publish.only_when_subscribed": False, "publish.tf": False})
    logic, published, _ = make_logic(ts, params=params, subscribed=lambda output: False)
    logic.on_frame(image, info)
    assert len(published[0].messages) == 5 and not published[0].transforms


def test_lost_tracking_warns_and_reset_clears_state(ts):
    estimator = FakeEstimator(lambda call: frame_result(call["stamp"], state="lost"))
    clock = FakeClock()
    logic, published, _ = make_logic(ts, estimator, clock=clock)
    image, info = inputs(ts)
    logic.on_frame(image, info)
    assert published[0].messages["estimate"][0].tracking_state == ri.TrackingState.LOST
    clock.now += 1
    report = logic.diagnostics_report()
    assert report.level == "warn" and report.values["tracking_state"] == "lost"
    logic.reset()
    assert logic.statistics.received == 0 and logic.statistics.tracking_state == "none"


def test_distortion_warning_is_given_once(ts):
    logic, _, warnings = make_logic(ts)
    image, info = inputs(ts)
    info.d = np.array([0.1, -0.05, 0.0, 0.0, 0.0])
    logic.on_frame(image, info)
    logic.on_frame(advance(image), info)
    assert len(warnings) == 1 and "non-zero distortion" in warnings[0]


# --------------------------------------------------------------------------- rclpy message classes


class FakeGeneratedClass:
    """Mimics rclpy's generated setters: sequences must be array.array or a list, never NumPy."""

    ADD = 0
    _fields = {"position": "sequence<double>", "data": "sequence<uint8>", "pose": "float[48]", "name": "string"}

    @classmethod
    def get_fields_and_field_types(cls):
        return dict(cls._fields)

    def __init__(self, **fields):
        for name, value in fields.items():
            if self._fields[name].startswith("sequence<") and isinstance(value, np.ndarray):
                raise AssertionError(f"The '{name}' field must be a set or sequence")
            setattr(self, name, value)


def test_generated_message_types_adapt_numpy_sequences_for_rclpy():
    def importer(module):
        if module != "sensor_msgs.msg":
            raise ImportError(f"No module named '{module}'")
        return SimpleNamespace(JointState=FakeGeneratedClass)

    types = nl.GeneratedMessageTypes(importer)
    JointState = types.types["sensor_msgs/msg/JointState"]
    assert JointState.ADD == 0 and types.message_class("sensor_msgs/msg/JointState") is FakeGeneratedClass
    msg = JointState(position=np.array([1.5, -2.0]), data=np.arange(3, dtype=np.uint8),
                     pose=np.zeros(48, np.float32), name="x")
    assert isinstance(msg.position, array.array) and msg.position.typecode == "d" and list(msg.position) == [1.5, -2]
    assert msg.data.typecode == "B" and list(msg.data) == [0, 1, 2]
    assert isinstance(msg.pose, np.ndarray)  # fixed-size arrays stay NumPy, which rclpy accepts
    assert types.types["sensor_msgs/msg/JointState"] is JointState  # built once
    with pytest.raises(KeyError, match="is its package built and the workspace sourced"):
        types.types["nav_msgs/msg/Odometry"]
    with pytest.raises(KeyError, match="expected a message type name like"):
        types.message_class("Image")


# --------------------------------------------------------------------------- the real estimator, end to end


def test_a_recorded_bag_runs_through_the_real_estimator(ts, tmp_path):
    from rosbags.highlevel import AnyReader

    from hoi_perception.config import load_config
    from hoi_perception.synth.config import SynthConfig
    from hoi_perception.synth.generator import (
        CAMERA_FRAME_ID,
        CAMERA_INFO_TOPIC,
        DEPTH_TOPIC,
        IMAGE_TOPIC,
        generate_dataset,
    )

    synth = load_config(SynthConfig, "synth.yaml", ["camera.width=96", "camera.height=96"])
    generate_dataset(synth, tmp_path / "synth", 1, 3, 0, write_bags=True)
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pt")
    config = tmp_path / "perception.yaml"
    config.write_text("estimator:\n  engine: {kind: onnxruntime}\n  object_name: mustard_bottle\n"
                      "  detection: {hand_score_threshold: 0.0, object_score_threshold: 0.0}\n")
    params = rp.params_from_values({"estimator.engine": "torch", "estimator.checkpoint": str(checkpoint)})
    loaded_estimator = nl.load_estimator(params, config)
    assert loaded_estimator.description == "torch (cpu, fp32): tiny.pt"
    assert loaded_estimator.hand_faces["right"].shape == (1538, 3)
    np.testing.assert_array_equal(loaded_estimator.hand_faces["left"], loaded_estimator.hand_faces["right"][:, ::-1])
    published, warnings = [], []
    logic = nl.PerceptionNodeLogic(params, loaded_estimator, ts, sink=published.append, warn=warnings.append)

    messages = {}
    with AnyReader([tmp_path / "synth" / "bags" / "seq_0000"]) as reader:
        for connection, _, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
            key = {IMAGE_TOPIC: "image", DEPTH_TOPIC: "depth", CAMERA_INFO_TOPIC: "info"}[connection.topic]
            messages.setdefault(stamp, {})[key] = msg
    assert len(messages) == 3
    for stamp, frame in sorted(messages.items()):
        assert logic.on_frame(frame["image"], frame["info"], frame["depth"]) is None, warnings
        estimate = published[-1].messages["estimate"][0]
        assert (estimate.header.stamp.sec, estimate.header.stamp.nanosec) == stamp
        assert estimate.header.frame_id == CAMERA_FRAME_ID
        for marker in published[-1].messages["hand_mesh"]:
            assert marker.action == marker.DELETE or len(marker.points) == 3 * 1538
        assert {"decode", "network"} <= {s.stage for s in estimate.stage_latencies}
    assert logic.statistics.published == 3 and not warnings
