import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.typesys.store import Typestore
from scipy.spatial.transform import Rotation

from hoi_perception import ros_messages as ri
from hoi_perception.bag_io import header, open_bag_writer
from hoi_perception.bag_io import typestore as distro_typestore
from hoi_perception.hand_model.joint_orders import HO3D_BONES
from hoi_perception.models.results import HandResult, ObjectResult

ROOT = Path(__file__).resolve().parents[1]
MANO_FACES = 1538
STAMP_NS = 1_700_000_000_123_456_789


def make_hand(seed: int = 0, side: str = "right") -> HandResult:
    rng = np.random.default_rng(seed)
    pose = rng.normal(scale=0.3, size=48)
    wrist = np.array([0.05, -0.02, 0.45])
    joints = wrist + rng.normal(scale=0.04, size=(21, 3))
    joints[0] = wrist
    return HandResult(side=side, pose=pose, betas=rng.normal(size=10), joints_cam=joints,
                      vertices_cam=wrist + rng.normal(scale=0.04, size=(778, 3)),
                      joints2d=rng.uniform(0, 640, size=(21, 2)), box=[100.5, 80.25, 260.75, 240.0],
                      joint_confidence=rng.uniform(size=21), confidence=0.93)


def make_object(success: bool = True) -> ObjectResult:
    rng = np.random.default_rng(1)
    if success:
        rotation, translation = Rotation.from_rotvec([0.3, -1.2, 2.0]).as_matrix(), [0.02, 0.01, 0.5]
    else:
        rotation, translation = np.full((3, 3), np.nan), np.full(3, np.nan)
    return ObjectResult(name="mustard_bottle", rotation=rotation, translation=translation,
                        control_points_2d=rng.uniform(0, 640, size=(21, 2)), box=[300.0, 200.0, 380.5, 330.0],
                        pnp_inliers=17 if success else 3, confidence=0.81, success=success,
                        failure_reason="" if success else "too few PnP inliers (3 < 6)")


@pytest.fixture(scope="module")
def ts():
    return ri.hoi_typestore("humble")


@pytest.fixture
def hdr(ts):
    return header(ts, STAMP_NS, "camera_color_optical_frame")


# --------------------------------------------------------------------------- definitions


def test_source_checkout_finds_repo_msg_and_registers_every_message():
    assert ri.find_msg_dir() == ROOT / "msg"
    definitions = ri.message_definitions()
    assert list(definitions) == [f"hoi_perception/msg/{n}" for n in ri.MESSAGE_NAMES]
    for distro in ri.SUPPORTED_DISTROS:
        store = ri.hoi_typestore(distro)
        assert all(ri.message_type(n) in store.types for n in ri.MESSAGE_NAMES)
        ri.register_messages(store)  # twice: a no-op
    with pytest.raises(ValueError, match="unsupported ROS 2 distribution 'noetic'"):
        ri.hoi_typestore("noetic")
    with pytest.raises(ValueError, match="unknown hoi_perception message 'Hand'"):
        ri.message_type("Hand")


def test_pip_and_ament_locations(tmp_path, monkeypatch):
    site = tmp_path / "site-packages" / "hoi_perception"
    site.mkdir(parents=True)
    monkeypatch.setattr(ri, "_PACKAGE_DIR", site)  # an installed package: no repo, no _msg
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="AMENT_PREFIX_PATH"):
        ri.find_msg_dir()
    share = tmp_path / "install" / "share" / "hoi_perception" / "msg"
    shutil.copytree(ROOT / "msg", share)
    monkeypatch.setenv("AMENT_PREFIX_PATH", f"{tmp_path / 'nothing'}:{tmp_path / 'install'}")
    assert ri.find_msg_dir() == share
    shutil.copytree(ROOT / "msg", site / "_msg")  # pip's copy inside the package wins
    assert ri.find_msg_dir() == site / "_msg"
    (site / "_msg" / "HandEstimate.msg").unlink()  # incomplete copies are skipped ...
    assert ri.find_msg_dir() == share
    with pytest.raises(FileNotFoundError, match="lacks HandEstimate.msg"):  # ... and refused when named
        ri.message_definitions(site / "_msg")


def test_builders_need_the_registered_messages():
    with pytest.raises(KeyError, match="register_messages"):
        ri.hand_estimate_msg(distro_typestore("humble"), make_hand(), 1)
    with pytest.raises(ValueError, match="HandEstimate.joints uses geometry_msgs/msg/Point, which the typestore"):
        ri.register_messages(Typestore())  # a store without the standard messages


# --------------------------------------------------------------------------- bag round trip


@pytest.mark.parametrize("distro,storage", [("humble", "mcap"), ("jazzy", "sqlite3")])
def test_bag_round_trip_with_anyreader(tmp_path, distro, storage):
    hand, left = make_hand(0), make_hand(1, side="left")
    posed, failed = make_object(True), make_object(False)
    faces = np.random.default_rng(2).integers(0, 778, size=(MANO_FACES, 3))
    path = tmp_path / "estimates"
    with open_bag_writer(path, storage=storage, distro=distro) as bag:
        ts = ri.register_messages(bag.typestore)
        hdr = header(ts, STAMP_NS, "camera_color_optical_frame")
        frame = ri.hand_object_estimate_msg(
            ts, hdr,
            [ri.hand_estimate_msg(ts, hand, 7, include_vertices=True), ri.hand_estimate_msg(ts, left, 8)],
            [ri.object_estimate_msg(ts, posed), ri.object_estimate_msg(ts, failed)],
            tracking_state=ri.TrackingState.TRACKING, frames_since_detection=4,
            stage_latencies_ms={"preprocess": 1.25, "network": 11.5, "pnp": 0.75})
        bag.write("/hoi/estimates", frame, STAMP_NS)
        frames = [ri.object_frame(posed, "mustard_bottle"), ri.wrist_frame(hand, "right_hand")]
        bag.write("/tf", ri.tf_message(ts, hdr, frames + ri.joint_frames(hand, "right_hand")), STAMP_NS)
        bag.write("/hoi/hand_mesh", ri.hand_mesh_marker(ts, hdr, hand.vertices_cam, faces), STAMP_NS)
        bag.write("/hoi/markers", ri.scene_markers(ts, hdr, [hand, left], [posed, failed],
                                                   {"mustard_bottle": [[-0.05, -0.04, -0.1], [0.05, 0.04, 0.1]]}),
                  STAMP_NS)
        bag.write("/hoi/joint_states", ri.joint_state_msg(ts, hdr, [hand, left]), STAMP_NS)
        bag.write("/diagnostics", ri.diagnostic_array_msg(ts, hdr, "hoi_perception: pipeline",
                                                          {"rate_hz": 29.97, "engine": "onnxruntime"}), STAMP_NS)

    with AnyReader([path]) as reader:  # no typestore given: the definitions embedded in the bag
        got = {c.topic: reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()}
        types = {c.topic: c.msgtype for c in reader.connections}
    assert types["/hoi/estimates"] == "hoi_perception/msg/HandObjectEstimate"

    frame = got["/hoi/estimates"]
    assert frame.header.stamp.sec == 1_700_000_000 and frame.header.stamp.nanosec == 123_456_789
    assert frame.header.frame_id == "camera_color_optical_frame"
    assert frame.tracking_state == 1 and frame.frames_since_detection == 4
    assert [(s.stage, s.milliseconds) for s in frame.stage_latencies] == [
        ("preprocess", 1.25), ("network", 11.5), ("pnp", 0.75)]
    right_msg, left_msg = frame.hands
    assert (right_msg.side, right_msg.track_id, left_msg.side, left_msg.track_id) == (1, 7, 0, 8)
    np.testing.assert_allclose([[p.x, p.y, p.z] for p in right_msg.joints], hand.joints_cam)
    np.testing.assert_allclose(right_msg.mano_pose, hand.pose, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(right_msg.mano_betas, hand.betas, rtol=1e-6)
    np.testing.assert_allclose(right_msg.vertices.reshape(778, 3), hand.vertices_cam, atol=1e-7)
    assert left_msg.vertices.shape == (0,)
    np.testing.assert_allclose(right_msg.joints_2d.reshape(21, 2), hand.joints2d, rtol=1e-6)
    np.testing.assert_allclose(right_msg.joint_confidence, hand.joint_confidence, rtol=1e-6)
    assert (right_msg.box.x_min, right_msg.box.y_min, right_msg.box.x_max, right_msg.box.y_max) == (
        100.5, 80.25, 260.75, 240.0)
    wrist = right_msg.wrist_pose
    q = [wrist.orientation.x, wrist.orientation.y, wrist.orientation.z, wrist.orientation.w]
    np.testing.assert_allclose(Rotation.from_quat(q).as_rotvec(), hand.pose[:3], atol=1e-9)
    np.testing.assert_allclose([wrist.position.x, wrist.position.y, wrist.position.z], hand.joints_cam[0])

    ok_msg, failed_msg = frame.objects
    assert ok_msg.success and ok_msg.pnp_inliers == 17 and ok_msg.name == "mustard_bottle"
    q = [ok_msg.pose.orientation.x, ok_msg.pose.orientation.y, ok_msg.pose.orientation.z, ok_msg.pose.orientation.w]
    np.testing.assert_allclose(Rotation.from_quat(q).as_matrix(), posed.rotation, atol=1e-12)
    assert ok_msg.pose.orientation.w >= 0
    assert not failed_msg.success and failed_msg.failure_reason == "too few PnP inliers (3 < 6)"
    assert np.isnan(failed_msg.pose.position.x) and np.isnan(failed_msg.pose.orientation.w)

    tf = got["/tf"].transforms
    assert [t.child_frame_id for t in tf[:3]] == ["mustard_bottle", "right_hand", "right_hand_index1"]
    assert tf[0].header.frame_id == "camera_color_optical_frame" and tf[2].header.frame_id == "right_hand"
    assert len(tf) == 2 + 20 and tf[21].child_frame_id == "right_hand_pinky_tip"
    assert all(t.header.stamp.nanosec == 123_456_789 for t in tf)

    mesh = got["/hoi/hand_mesh"]
    assert mesh.type == 11 and len(mesh.points) == 3 * MANO_FACES
    markers = got["/hoi/markers"].markers
    assert [(m.ns, m.type, len(m.points)) for m in markers] == [
        ("", 0, 0), ("hand_skeleton", 5, 40), ("hand_joints", 7, 21), ("hand_skeleton", 5, 40),
        ("hand_joints", 7, 21), ("object_box", 5, 24)]
    assert markers[0].action == 3  # DELETEALL first

    joint_states = got["/hoi/joint_states"]
    assert joint_states.name[0] == "right_index1_x" and joint_states.name[45] == "left_index1_x"
    np.testing.assert_allclose(joint_states.position, np.concatenate([hand.pose[3:], left.pose[3:]]))
    diag = got["/diagnostics"].status[0]
    assert diag.name == "hoi_perception: pipeline" and diag.level == 0
    assert [(kv.key, kv.value) for kv in diag.values] == [("rate_hz", "29.97"), ("engine", "onnxruntime")]


# --------------------------------------------------------------------------- quaternions and TF


def test_quaternion_sign_rules():
    # A full turn about a tilted axis passes w = 0 at the half turn.
    axis = np.array([1.0, 2.0, -0.5]) / np.linalg.norm([1.0, 2.0, -0.5])
    rotations = Rotation.from_rotvec(np.linspace(0, 2 * np.pi, 73)[:, None] * axis).as_matrix()
    canonical = np.array([ri.quaternion_from_matrix(R) for R in rotations])
    assert np.all(canonical[:, 0] >= 0)
    assert np.min(np.sum(canonical[1:] * canonical[:-1], axis=1)) < -0.9  # the per-frame rule flips once
    continuity = ri.QuaternionContinuity()
    continuous = np.array([continuity.quaternion("object/box", R) for R in rotations])
    assert np.min(np.sum(continuous[1:] * continuous[:-1], axis=1)) > 0.99
    assert continuous[-1, 0] == pytest.approx(-1.0)  # a full turn ends at -identity, without a jump
    for q, R in zip(continuous, rotations):  # both are the same rotations
        np.testing.assert_allclose(Rotation.from_quat(q[[1, 2, 3, 0]]).as_matrix(), R, atol=1e-12)
    assert ri.quaternion_from_matrix(np.diag([-1.0, -1.0, 1.0])).tolist() == [0.0, 0.0, 0.0, 1.0]  # w = 0 tie
    continuity.forget("object/box")
    assert continuity.quaternion("object/box", rotations[-1])[0] == pytest.approx(1.0)


def test_tf_continuity_per_child_frame(ts, hdr):
    continuity = ri.QuaternionContinuity()
    w_continuous, w_canonical = [], []
    for angle in np.linspace(2.9, 3.4, 6):  # about z, across the half turn (w = cos(angle / 2) = 0 at pi)
        frames = [ri.FrameTransform("cup", Rotation.from_rotvec([0.0, 0.0, angle]).as_matrix(), [0, 0, 0.4]),
                  ri.FrameTransform("plate", np.eye(3), [0, 0, 0.5])]
        w_continuous.append([t.transform.rotation.w for t in ri.tf_message(ts, hdr, frames, continuity=continuity)
                             .transforms])
        w_canonical.append(ri.tf_message(ts, hdr, frames).transforms[0].transform.rotation.w)
    w_continuous = np.array(w_continuous)
    np.testing.assert_allclose(w_continuous[:, 0], np.cos(np.linspace(2.9, 3.4, 6) / 2))  # no flip: w goes negative
    np.testing.assert_allclose(w_canonical, np.abs(np.cos(np.linspace(2.9, 3.4, 6) / 2)))  # per frame: w >= 0
    assert np.all(w_continuous[:, 1] == 1.0)  # streams are kept per child frame
    with pytest.raises(ValueError, match="unique"):
        ri.tf_message(ts, hdr, [ri.FrameTransform("cup", np.eye(3), [0, 0, 0])] * 2)


def test_joint_frames_rebuild_the_camera_frame_joints():
    hand = make_hand(3)
    wrist = ri.wrist_frame(hand, "right_hand")
    joints = ri.joint_frames(hand, "right_hand")
    assert [j.child_frame_id for j in joints][:2] == ["right_hand_index1", "right_hand_index2"]
    rebuilt = np.array([wrist.rotation @ j.translation + wrist.translation for j in joints])
    np.testing.assert_allclose(rebuilt, hand.joints_cam[1:], atol=1e-12)
    np.testing.assert_allclose(wrist.rotation, Rotation.from_rotvec(hand.pose[:3]).as_matrix())
    with pytest.raises(ValueError, match="joint_frame_ids: expected 20 names"):
        ri.joint_frames(hand, "right_hand", ["a", "b"])
    with pytest.raises(ValueError, match="no pose to publish"):
        ri.object_frame(make_object(False), "mustard_bottle")


# --------------------------------------------------------------------------- markers


def test_mesh_marker_expands_mano_faces(ts, hdr):
    hand = make_hand()
    faces = np.random.default_rng(4).integers(0, 778, size=(MANO_FACES, 3))
    marker = ri.hand_mesh_marker(ts, hdr, hand.vertices_cam, faces, (0.2, 0.4, 0.6, 0.8), marker_id=3)
    assert marker.type == ts.types["visualization_msgs/msg/Marker"].TRIANGLE_LIST
    assert len(marker.points) == 3 * MANO_FACES == 4614 and marker.colors == []
    points = np.array([[p.x, p.y, p.z] for p in marker.points])
    np.testing.assert_array_equal(points.reshape(MANO_FACES, 3, 3), hand.vertices_cam[faces])
    assert (marker.scale.x, marker.scale.y, marker.scale.z) == (1.0, 1.0, 1.0) and marker.pose.orientation.w == 1.0
    assert (marker.color.r, marker.color.a, marker.id, marker.header.frame_id) == (
        0.2, 0.8, 3, "camera_color_optical_frame")
    per_vertex = np.random.default_rng(5).uniform(size=(778, 4))
    coloured = ri.hand_mesh_marker(ts, hdr, hand.vertices_cam, faces, per_vertex)
    assert len(coloured.colors) == 4614
    np.testing.assert_allclose([[c.r, c.g, c.b, c.a] for c in coloured.colors[:3]], per_vertex[faces[0]])


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
@pytest.mark.parametrize("namespace", ["hand_mesh_right", "hand_mesh_left_", "m"])
def test_serialised_mesh_marker_is_byte_identical_to_the_typestore(distro, namespace, hdr):
    store = ri.hoi_typestore(distro)
    hand = make_hand()
    faces = np.random.default_rng(6).integers(0, 778, size=(MANO_FACES, 3))
    for color in ((0.2, 0.4, 0.6, 0.8), np.random.default_rng(7).uniform(size=(778, 4))):
        marker = ri.hand_mesh_marker(store, hdr, hand.vertices_cam, faces, color, namespace=namespace, marker_id=2)
        expected = bytes(store.serialize_cdr(marker, marker.__msgtype__))
        fast = ri.hand_mesh_marker_cdr(store, hdr, hand.vertices_cam, faces, color, namespace=namespace, marker_id=2)
        assert fast.msgtype == "visualization_msgs/msg/Marker" and fast.data == expected
        back = store.deserialize_cdr(fast.data, fast.msgtype)
        np.testing.assert_array_equal(np.array([[p.x, p.y, p.z] for p in back.points]).reshape(MANO_FACES, 3, 3),
                                      hand.vertices_cam[faces])


def test_skeleton_joint_and_box_markers(ts, hdr):
    hand = make_hand()
    skeleton = ri.hand_skeleton_marker(ts, hdr, hand.joints_cam, line_width=0.005)
    ends = np.array([[p.x, p.y, p.z] for p in skeleton.points]).reshape(20, 2, 3)
    np.testing.assert_array_equal(ends, hand.joints_cam[np.array(HO3D_BONES)])
    assert skeleton.scale.x == 0.005
    spheres = ri.hand_joints_marker(ts, hdr, hand.joints_cam, diameter=0.01)
    assert len(spheres.points) == 21 and spheres.scale.z == 0.01

    obj = make_object()
    bounds = np.array([[-0.05, -0.04, -0.1], [0.05, 0.04, 0.1]])
    box = ri.object_box_marker(ts, hdr, obj.rotation, obj.translation, bounds)
    edges = np.array([[p.x, p.y, p.z] for p in box.points]).reshape(12, 2, 3)
    lengths = np.sort(np.linalg.norm(edges[:, 1] - edges[:, 0], axis=1))
    np.testing.assert_allclose(lengths, np.repeat([0.08, 0.1, 0.2], 4))
    assert np.all(np.abs(edges) == np.abs(bounds[1]))  # every end is a corner
    q = box.pose.orientation
    np.testing.assert_allclose(Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix(), obj.rotation, atol=1e-12)
    assert box.pose.position.z == 0.5
    with pytest.raises(ValueError, match="object_bounds: no bounds for object 'mustard_bottle'"):
        ri.scene_markers(ts, hdr, [], [obj], {})


@pytest.mark.parametrize("call,match", [
    (lambda ts, h: ri.hand_mesh_marker(ts, h, np.zeros((778, 2)), np.zeros((1538, 3), int)),
     r"vertices: expected shape \(N, 3\), got \(778, 2\)"),
    (lambda ts, h: ri.hand_mesh_marker(ts, h, np.zeros((778, 3)), np.zeros((1538, 4), int)),
     r"faces: expected shape \(F, 3\), got \(1538, 4\)"),
    (lambda ts, h: ri.hand_mesh_marker(ts, h, np.zeros((778, 3)), np.full((2, 3), 778)),
     r"faces: vertex indices must lie in \[0, 778\)"),
    (lambda ts, h: ri.hand_mesh_marker(ts, h, np.zeros((778, 3)), np.zeros((2, 3)), np.zeros((10, 4))),
     r"faces: expected integer vertex indices"),
    (lambda ts, h: ri.hand_mesh_marker(ts, h, np.zeros((778, 3)), np.zeros((2, 3), int), np.zeros((10, 4))),
     r"color: expected shape \(778, 4\), got \(10, 4\)"),
    (lambda ts, h: ri.hand_skeleton_marker(ts, h, np.zeros((20, 3))), r"joints: expected shape \(21, 3\)"),
    (lambda ts, h: ri.hand_joints_marker(ts, h, np.zeros((21, 3)), (1, 1, 2, 1)), r"color: RGBA values"),
    (lambda ts, h: ri.object_box_marker(ts, h, np.eye(3), [0, 0, 1], np.zeros(6)),
     r"bounds: expected shape \(2, 3\), got \(6,\)"),
    (lambda ts, h: ri.object_box_marker(ts, h, np.eye(3) * 2, [0, 0, 1], np.zeros((2, 3))),
     r"rotation: expected a rotation matrix"),
    (lambda ts, h: ri.FrameTransform("cup", np.diag([1.0, 1.0, -1.0]), [0, 0, 0]),
     r"FrameTransform.rotation: expected a rotation matrix .* det = -1"),
    (lambda ts, h: ri.FrameTransform("cup", np.eye(3), [0, 0, np.nan]),
     r"FrameTransform.translation: contains NaN"),
    (lambda ts, h: ri.hand_estimate_msg(ts, make_hand(), -1), r"track_id: expected an integer in \[0, 2\*\*32\)"),
    (lambda ts, h: ri.hand_estimate_msg(ts, make_hand(), 1.5), r"track_id: expected an integer"),
    (lambda ts, h: ri.hand_estimate_msg(ts, {"side": "right"}, 1), r"hand: expected a HandResult, got dict"),
    (lambda ts, h: ri.hand_skeleton_marker(ts, h, np.zeros((21, 3)), line_width=0.0), r"line_width: expected"),
])
def test_bad_inputs_name_the_argument(ts, hdr, call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(ts, hdr)


def test_bad_hand_box_names_the_field(ts):
    hand = make_hand()
    hand.box = np.array([300.0, 10.0, 200.0, 50.0])
    with pytest.raises(ValueError, match=r"hand.box: expected \(x_min, y_min, x_max, y_max\) with max >= min"):
        ri.hand_estimate_msg(ts, hand, 1)
    hand = make_hand()
    hand.joints_cam[4, 2] = np.nan
    with pytest.raises(ValueError, match="hand.joints_cam: contains NaN"):
        ri.hand_estimate_msg(ts, hand, 1)


# --------------------------------------------------------------------------- frame, joint states, diagnostics


def test_frame_message_rules(ts, hdr):
    cls = ts.types["hoi_perception/msg/HandObjectEstimate"]
    assert [cls.DETECTING, cls.TRACKING, cls.LOST] == [int(s) for s in ri.TrackingState]
    empty = ri.hand_object_estimate_msg(ts, hdr, [], [], tracking_state=ri.TrackingState.DETECTING,
                                        frames_since_detection=0, stage_latencies_ms={})
    raw = ts.serialize_cdr(empty, empty.__msgtype__)
    assert ts.deserialize_cdr(raw, empty.__msgtype__).hands == []
    with pytest.raises(ValueError, match="frames_since_detection: must be 0 while DETECTING, got 2"):
        ri.hand_object_estimate_msg(ts, hdr, [], [], tracking_state=ri.TrackingState.DETECTING,
                                    frames_since_detection=2, stage_latencies_ms={})
    with pytest.raises(ValueError, match=r"stage_latencies_ms\['network'\]: expected a finite value"):
        ri.hand_object_estimate_msg(ts, hdr, [], [], tracking_state=ri.TrackingState.LOST,
                                    frames_since_detection=9, stage_latencies_ms={"network": -1.0})


def test_joint_state_names_and_positions(ts, hdr):
    names = ri.hand_joint_names("left")
    assert len(names) == 45 and names[:4] == ("left_index1_x", "left_index1_y", "left_index1_z", "left_index2_x")
    assert names[-1] == "left_thumb3_z"
    hand = make_hand(6)
    msg = ri.joint_state_msg(ts, hdr, [hand])
    assert list(msg.name) == list(ri.hand_joint_names("right"))
    np.testing.assert_array_equal(msg.position, hand.pose[3:])
    assert msg.velocity.shape == (0,) and msg.effort.shape == (0,)
    with pytest.raises(ValueError, match="at most one hand per side"):
        ri.joint_state_msg(ts, hdr, [hand, make_hand(7)])


def test_diagnostics(ts, hdr):
    msg = ri.diagnostic_array_msg(ts, hdr, "hoi_perception: camera", {"latency_ms": np.float32(12.3456789),
                                  "dropped": np.int64(3), "tensorrt": False}, level="warn", message="slow")
    (status,) = msg.status
    assert status.level == ts.types["diagnostic_msgs/msg/DiagnosticStatus"].WARN == 1
    assert [(kv.key, kv.value) for kv in status.values] == [
        ("latency_ms", "12.3457"), ("dropped", "3"), ("tensorrt", "false")]
    with pytest.raises(TypeError, match=r"values\['shape'\]: expected a bool, number or string, got tuple"):
        ri.diagnostic_array_msg(ts, hdr, "x", {"shape": (1, 2)})
    with pytest.raises(ValueError, match="level: expected"):
        ri.diagnostic_array_msg(ts, hdr, "x", {}, level="fatal")


# --------------------------------------------------------------------------- the rclpy-shaped path


class _PlainTypes:
    """A typestore with only ``types`` (no ``fielddefs``), like an rclpy adapter: classes with defaults."""

    def __init__(self, store):
        self.types = {}
        for name, (consts, _) in store.fielddefs.items():
            attrs = {c: v for c, _, v in consts}
            self.types[name] = type(name.split("/")[-1], (SimpleNamespace,), attrs)


def test_builders_use_only_the_types_mapping(ts):
    plain = _PlainTypes(ts)
    hdr = plain.types["std_msgs/msg/Header"](stamp=SimpleNamespace(sec=1, nanosec=2), frame_id="cam")
    hand, obj = make_hand(), make_object()
    frame = ri.hand_object_estimate_msg(plain, hdr, [ri.hand_estimate_msg(plain, hand, 1)],
                                        [ri.object_estimate_msg(plain, obj)], tracking_state=ri.TrackingState.LOST,
                                        frames_since_detection=3, stage_latencies_ms={"network": 9.0})
    assert frame.hands[0].side == 1 and frame.tracking_state == 2 and frame.objects[0].pnp_inliers == 17
    tf = ri.tf_message(plain, hdr, [ri.wrist_frame(hand, "right_hand")])
    assert tf.transforms[0].header.frame_id == "cam"
    mesh = ri.hand_mesh_marker(plain, hdr, hand.vertices_cam, np.zeros((MANO_FACES, 3), int))
    assert mesh.type == 11 and len(mesh.points) == 4614
    assert len(ri.scene_markers(plain, hdr, [hand], [obj], {obj.name: np.zeros((2, 3))}).markers) == 4
    assert ri.diagnostic_array_msg(plain, hdr, "x", {"a": 1}).status[0].level == 0
