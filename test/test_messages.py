"""One frame-to-messages builder: process-bag writes what the node publishes (issue 15, "one output path")."""

from __future__ import annotations

import numpy as np
import pytest
from bag_fixtures import FRAME_ID, read_back, write_input_bag
from scenes import OBJECT_NAME, K, build_scene, coordinate_image, make_estimator

from hoi_perception import ros_messages as rm
from hoi_perception.bag_io import camera_info_msg, image_msg
from hoi_perception.cli import node_output_settings
from hoi_perception.geometry.camera import project
from hoi_perception.pipeline.bag_processing import process_bag
from hoi_perception.pipeline.messages import (
    DEFAULT_NODE_NAME,
    HAND_MESH_IDS,
    HAND_MESH_NAMESPACE,
    TF_TOPIC,
    OutputSettings,
    draw_frame,
)
from hoi_perception.ros import node_logic as nl
from hoi_perception.ros import params as rp

CUSTOM_NODE = """node:
  topics: {estimate: /robot/hoi_estimate, markers: viz/hoi_markers, debug_image: ~/overlay}
  frames: {right_wrist: r_wrist, left_wrist: l_wrist, object_prefix: "obj_"}
  publish: {joint_states: false}
"""


@pytest.fixture(scope="module")
def scene():
    return build_scene()


def node_topics(params: rp.NodeParams, node_name: str = DEFAULT_NODE_NAME) -> set[str]:
    """What the node publishes (its publisher plans, resolved) plus TF; /diagnostics is the node's own health."""
    return {nl.resolve_topic(plan.topic, node_name) for plan in nl.publisher_plans(params)
            if plan.output != nl.DIAGNOSTICS_OUTPUT} | {TF_TOPIC}


def test_default_settings_are_the_shipped_node_parameters():
    assert OutputSettings() == nl.output_settings(rp.load_node_params(), DEFAULT_NODE_NAME)
    assert OutputSettings() == node_output_settings(None)


@pytest.mark.parametrize("custom", [False, True])
def test_process_bag_writes_the_node_publishers_topics_and_frames(scene, tmp_path, custom):
    config = None
    if custom:
        config = tmp_path / "perception.yaml"
        config.write_text(CUSTOM_NODE)
    params = rp.load_node_params(config)
    in_bag = write_input_bag(tmp_path / "input", frames=3)
    estimator, _, _ = make_estimator(scene)
    process_bag(estimator, in_bag, tmp_path / "out", progress=False, outputs=node_output_settings(config))
    out = read_back(tmp_path / "out")
    assert set(out) == node_topics(params)
    children = {t.child_frame_id for m in out[TF_TOPIC] for t in m.transforms}
    assert children == {params.frames.right_wrist, params.frames.left_wrist, params.frames.object(OBJECT_NAME)}
    assert {t.header.frame_id for m in out[TF_TOPIC] for t in m.transforms} == {FRAME_ID}
    if custom:
        assert "/robot/hoi_estimate" in out and "/viz/hoi_markers" in out and "/hoi_perception/overlay" in out
        assert "/hoi_perception/joint_states" not in out
    else:
        assert "/hoi_perception/joint_states" in out


def test_node_and_process_bag_build_the_same_messages(scene, tmp_path):
    """The same frame through the node's logic and through process-bag: same TF frames, mesh ids, states."""
    ts = rm.hoi_typestore("humble")
    in_bag = write_input_bag(tmp_path / "input", frames=2)
    estimator, _, _ = make_estimator(scene)
    process_bag(estimator, in_bag, tmp_path / "out", progress=False, outputs=node_output_settings(None),
                depth_topic=None, use_depth=False)
    bag = read_back(tmp_path / "out")
    node_estimator, _, _ = make_estimator(scene)
    loaded = nl.LoadedEstimator(node_estimator, {s: node_estimator.hand_faces(s) for s in ("right", "left")},
                                {OBJECT_NAME: node_estimator.object_model.control_points}, "ideal")
    published = []
    logic = nl.PerceptionNodeLogic(rp.NodeParams(), loaded, ts, sink=published.append)
    for i in range(2):
        stamp = 1_700_000_000_000_000_000 + i * 33_333_333
        info = camera_info_msg(ts, K, coordinate_image().shape[1], coordinate_image().shape[0], stamp, FRAME_ID)
        assert logic.on_frame(image_msg(ts, coordinate_image(), stamp, FRAME_ID), info) is None
    settings = OutputSettings()
    for i, outputs in enumerate(published):
        assert [t.child_frame_id for t in outputs.transforms] == \
            [t.child_frame_id for t in bag[TF_TOPIC][i].transforms]
        node_estimate, bag_estimate = outputs.messages["estimate"][0], bag[settings.topics["estimate"]][i]
        assert node_estimate.tracking_state == bag_estimate.tracking_state == (0 if i == 0 else 1)
        node_mesh = [(m.ns, m.id) for m in outputs.messages["hand_mesh"]]
        bag_mesh = [(m.ns, m.id) for m in bag[settings.topics["hand_mesh"]][2 * i:2 * i + 2]]
        assert node_mesh == bag_mesh == [(HAND_MESH_NAMESPACE, HAND_MESH_IDS[s]) for s in ("right", "left")]
        node_ids = [(m.ns, m.id) for m in outputs.messages["markers"][0].markers]
        assert node_ids == [(m.ns, m.id) for m in bag[settings.topics["markers"]][i].markers]
        np.testing.assert_allclose(node_estimate.objects[0].pose.position.z, bag_estimate.objects[0].pose.position.z)


def test_overlay_legend_ground_truth_and_text_that_never_overlaps(scene):
    estimator, _, _ = make_estimator(scene)
    result = estimator.process(coordinate_image(), K, 1.0)
    points = {OBJECT_NAME: estimator.object_model.control_points}
    plain = draw_frame(coordinate_image(), result, K, points)
    truth = [project(scene.hands["right"].joints_cam, K) + 6.0]
    with_truth = draw_frame(coordinate_image(), result, K, points, ground_truth_joints=truth)
    changed = np.any(with_truth != plain, axis=-1)
    magenta = np.all(with_truth == (255, 0, 255), axis=-1)
    assert (changed & magenta).sum() > 20  # ground truth in its own colour, drawn only when given

    from hoi_perception.pipeline.messages import _overlap, _TextLayout

    layout = _TextLayout(*coordinate_image().shape[1::-1])
    image = coordinate_image().copy()
    for _ in range(6):  # six labels asked for the same spot, as boxes near the top edge and the status line do
        layout.put(image, "right #3 0.95", 2, 12, (255, 255, 255))
    rects = layout.placed
    assert all(not _overlap(a, b) for i, a in enumerate(rects) for b in rects[i + 1:])
    assert all(0 <= r[1] and r[3] <= image.shape[0] for r in rects)


def test_a_refused_hand_is_named_in_the_estimate_and_not_published(scene):
    """A hand a plausibility gate kept out: no wrist TF, no hand in the estimate, its side and reason in
    refused_hands; the message round-trips through CDR with the package's definition."""
    import dataclasses

    from hoi_perception.bag_io import header
    from hoi_perception.pipeline.messages import FrameMessageBuilder

    ts = rm.hoi_typestore("humble")
    estimator, _, _ = make_estimator(scene)
    image = coordinate_image()
    result = estimator.process(image, K, 1.0)
    right = [t for t in result.hands if t.result.side == "right"]
    refused = dataclasses.replace(result, hands=[t for t in result.hands if t.result.side != "right"],
                                  hand_failures={"right": "projected mesh 2.4x its box"})
    builder = FrameMessageBuilder(OutputSettings(), ts, {s: estimator.hand_faces(s) for s in ("right", "left")},
                                  {OBJECT_NAME: estimator.object_model.control_points})
    outputs = builder.build(header(ts, 1_000_000_000, FRAME_ID), refused, image, K)
    (estimate,) = outputs.messages["estimate"]
    assert right and [h.side for h in estimate.hands] == [0]  # only the left hand (LEFT = 0) is published
    assert list(estimate.refused_hands) == ["right: projected mesh 2.4x its box"]
    assert not any("right" in t.child_frame_id for t in outputs.transforms)
    msgtype = "hoi_perception/msg/HandObjectEstimate"
    decoded = ts.deserialize_cdr(ts.serialize_cdr(estimate, msgtype), msgtype)
    assert list(decoded.refused_hands) == ["right: projected mesh 2.4x its box"]
