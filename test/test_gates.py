"""Plausibility gates (issue 15, item 4): crafted poses that contradict the image are refused with a reason."""

from __future__ import annotations

import numpy as np
import pytest
from scenes import OBJECT_NAME, K, SceneDetector, build_scene, coordinate_image, make_estimator

from hoi_perception.config import ConfigError
from hoi_perception.geometry.camera import box_from_points, project
from hoi_perception.pipeline.config import load_estimator_config
from hoi_perception.pipeline.estimator import load_object_model
from hoi_perception.pipeline.gates import (
    GateLimits,
    GateMeasures,
    gate_of,
    gate_problem,
    hand_measures,
    object_measures,
)


@pytest.fixture(scope="module")
def scene():
    return build_scene()


@pytest.fixture(scope="module")
def model():
    return load_object_model(OBJECT_NAME, None)


def _silhouette_box(model, rotation, translation):
    uv = project(model.vertices @ rotation.T + translation, K)
    return np.concatenate([uv.min(0), uv.max(0)])


def test_the_true_pose_passes_and_wrong_depth_shift_or_votes_fail(scene, model):
    R, t = scene.object_rotation, scene.object_translation
    box = _silhouette_box(model, R, t)
    votes = project(model.control_points @ R.T + t, K)
    limits = GateLimits()
    true = object_measures(model.vertices, model.control_points, R, t, box, votes, K)
    assert true.centre_offset < 1e-9 and true.size_ratio == pytest.approx(1.0) and true.reprojection < 1e-9
    assert gate_problem(true, limits) is None
    # The case: the same box and direction, but 5x farther (PnP on degenerate votes).
    far = object_measures(model.vertices, model.control_points, R, t * 5, box, votes, K)
    assert far.size_ratio == pytest.approx(0.2, abs=0.03)
    assert "depth contradicts the box" in gate_problem(far, limits)
    shifted = object_measures(model.vertices, model.control_points, R, t + [0.08, 0, 0], box, votes, K)
    assert shifted.size_ratio == pytest.approx(1.0, abs=0.1) and shifted.centre_offset > 0.5
    assert "projected centre" in gate_problem(shifted, limits)
    size = np.sqrt(np.prod(box[2:] - box[:2]))
    noisy = object_measures(model.vertices, model.control_points, R, t, box, votes + [0.4 * size, 0], K)
    assert noisy.reprojection == pytest.approx(0.4) and "reprojection error 0.40" in gate_problem(noisy, limits)
    behind = object_measures(model.vertices, model.control_points, R, -t, box, votes, K)
    assert gate_problem(behind, limits) is not None


def test_hand_measures_weight_joints_by_confidence(scene):
    hand = scene.hands["right"]
    joints2d = project(hand.joints_cam, K)
    measures = hand_measures(hand.vertices_cam, hand.joints_cam, hand.box, joints2d, np.ones(21), K)
    assert measures.reprojection < 1e-9 and gate_problem(measures, GateLimits()) is None
    wrong = joints2d.copy()
    wrong[5] += 1000.0  # one wild joint the network itself did not trust
    confidence = np.ones(21)
    confidence[5] = 0.0
    assert hand_measures(hand.vertices_cam, hand.joints_cam, hand.box, wrong, confidence, K).reprojection < 1e-9
    back = np.array([0.0, 0.0, 1.0])  # the same hand a metre farther, against the same box
    farther = hand_measures(hand.vertices_cam + back, hand.joints_cam + back, hand.box, joints2d, np.ones(21), K)
    assert "depth contradicts" in gate_problem(farther, GateLimits())


def test_a_hand_partly_out_of_view_is_compared_with_what_the_camera_sees(scene):
    """A detected box stops at the image border; the projected mesh is cut there too, so a
    correct hand half out of the frame is not refused for its depth."""
    hand = scene.hands["right"]
    joints2d = project(hand.joints_cam, K)
    uv = project(hand.vertices_cam, K)
    width = int(np.round((uv[:, 0].min() + uv[:, 0].max()) / 2))  # the frame ends mid-hand
    height = int(np.ceil(uv[:, 1].max())) + 10
    cut = np.array([hand.box[0], hand.box[1], min(hand.box[2], width), hand.box[3]])
    uncut = hand_measures(hand.vertices_cam, hand.joints_cam, cut, joints2d, np.ones(21), K)
    assert uncut.size_ratio > 1.3 and "depth contradicts" in gate_problem(uncut, GateLimits())
    seen = hand_measures(hand.vertices_cam, hand.joints_cam, cut, joints2d, np.ones(21), K,
                         image_size=(width, height))
    in_view = hand_measures(hand.vertices_cam, hand.joints_cam, hand.box, joints2d, np.ones(21), K)
    assert seen.size_ratio == pytest.approx(in_view.size_ratio, abs=0.08) and gate_problem(seen, GateLimits()) is None
    # A wrong depth still fails against the cut box.
    back = np.array([0.0, 0.0, 1.0])
    farther = hand_measures(hand.vertices_cam + back, hand.joints_cam + back, cut, joints2d, np.ones(21), K,
                            image_size=(width, height))
    assert "depth contradicts" in gate_problem(farther, GateLimits())


class ShrunkObjectDetector(SceneDetector):
    """The object's box a third of its true size: a pose at the true depth now contradicts it."""

    def _run(self, inputs):
        out = super()._run(inputs)
        box = out["boxes"][0, 2]
        centre, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 6
        out["boxes"][0, 2] = np.concatenate([centre - half, centre + half])
        return out


def test_the_estimator_reports_a_gated_object_and_does_not_publish_it(scene):
    from scenes import IdealCropNetwork

    from hoi_perception.pipeline.estimator import Estimator
    from hoi_perception.pipeline.messages import frame_transforms

    estimator, _, _ = make_estimator(scene)
    good = estimator.process(coordinate_image(), K, 1.0)
    assert good.objects[0].result.success and good.gate_measures["object"].size_ratio < 2.0
    config = load_estimator_config(None, [f"object_name={OBJECT_NAME}"])
    gated = Estimator(config, crop_engine=IdealCropNetwork(scene), detector_engine=ShrunkObjectDetector(scene))
    result = gated.process(coordinate_image(), K, 1.0)
    obj = result.objects[0].result
    assert not obj.success and "depth contradicts the box" in obj.failure_reason
    assert result.gate_measures["object"].size_ratio > 2.0
    children = {f.child_frame_id for f in frame_transforms(result)}
    assert OBJECT_NAME not in children and {"right_hand", "left_hand"} <= children


def test_gate_settings_are_validated():
    with pytest.raises(ConfigError, match="max_size_ratio: expected a factor > 1"):
        load_estimator_config(None, ["gates.object.max_size_ratio=0.5"])
    config = load_estimator_config(None, ["gates.hand.max_reprojection=0.1"])
    assert config.gates.hand.max_reprojection == 0.1 and config.gates.enabled


def test_a_tracked_box_is_compared_as_tracking_made_it(scene, model):
    """A tracked box is the previous pose's silhouette box plus the margin: the same pose fits it
    exactly, a pose that jumped away does not."""
    from hoi_perception.pipeline.tracking import enlarge_box

    R, t = scene.object_rotation, scene.object_translation
    votes = project(model.control_points @ R.T + t, K)
    silhouette = project(model.vertices @ R.T + t, K)
    tracked = enlarge_box(np.concatenate([silhouette.min(0), silhouette.max(0)]), 0.15)
    same = object_measures(model.vertices, model.control_points, R, t, tracked, votes, K, box_detected=False,
                           margin=0.15)
    assert same.size_ratio == pytest.approx(1.0) and same.centre_offset < 1e-9 and gate_problem(same, GateLimits()) \
        is None
    far_votes = project(model.control_points @ R.T + t * 3, K)  # votes that agree with a pose 3x farther
    far = object_measures(model.vertices, model.control_points, R, t * 3, tracked, far_votes, K, box_detected=False,
                          margin=0.15)
    assert far.size_ratio == pytest.approx(1 / 3, abs=0.03)
    assert "the tracked box size" in gate_problem(far, GateLimits())


def test_votes_are_compared_with_the_pose_pnp_fitted_before_the_box_moved_it(scene, model):
    """Votes drawn to 60 % of their spread agree with the pose 1/0.6 as far; the box brought the pose to
    the true depth (depth_scale 0.6). The box gates see the moved pose, the reprojection gate the fitted one."""
    R, t = scene.object_rotation, scene.object_translation
    truth = project(model.control_points @ R.T + t, K)
    drawn_in = truth.mean(0) + 0.6 * (truth - truth.mean(0))
    box = box_from_points(project(model.vertices @ R.T + t, K))
    as_fitted = object_measures(model.vertices, model.control_points, R, t, box, drawn_in, K, depth_scale=0.6)
    assert as_fitted.size_ratio == pytest.approx(1.0) and gate_problem(as_fitted, GateLimits()) is None
    against_the_moved_pose = object_measures(model.vertices, model.control_points, R, t, box, drawn_in, K)
    assert against_the_moved_pose.reprojection > as_fitted.reprojection + 0.05


def test_each_refusal_names_its_gate():
    limits = GateLimits()
    assert gate_of(gate_problem(GateMeasures(0.0, 2.0, 0.0, True), limits)) == "box size"
    assert gate_of(gate_problem(GateMeasures(0.0, 0.5, 0.0, False), limits)) == "box size"
    assert gate_of(gate_problem(GateMeasures(0.9, 1.0, 0.0, True), limits)) == "box centre"
    assert gate_of(gate_problem(GateMeasures(0.0, 1.0, 0.9, True), limits)) == "reprojection"
    assert gate_of("no translation fit") == "other"
