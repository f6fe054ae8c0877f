"""Estimator: crop, coordinate round trips (incl. left-hand mirroring), tracking transitions, bad input.

The crop network is replaced by an *ideal network*: it recovers from the crop's own
pixels (the test image encodes each pixel's column and row in its red and green
channels) how the crop was cut, and answers with the ground-truth labels of the
synthetic scene mapped into the crop's units, exactly what a perfect network trained
on ``evaluation_crop`` would output. The estimator must then recover the camera-frame
scene: any error in a coordinate conversion (crop, box units, mirroring, PnP with
the full K, translation) shows as a wrong joint or pose.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import write_tiny_checkpoint
from scenes import (  # test/ is on sys.path under pytest
    CROP_SIZE,
    HEIGHT,
    WIDTH,
    IdealCropNetwork,
    K,
    Scene,
    SceneDetector,
    build_scene,
    check_scene,
    coordinate_image,
    make_estimator,
)

from hoi_perception.engines.base import EngineConfig
from hoi_perception.geometry.camera import project
from hoi_perception.pipeline.config import EstimatorConfig, load_estimator_config
from hoi_perception.pipeline.crops import crop_geometry, extract_crop
from hoi_perception.pipeline.estimator import CROP_OUTPUTS, Estimator
from hoi_perception.pipeline.tracking import TrackingConfig
from hoi_perception.tracking import FrameStatus
from hoi_training.data.augment import AugmentConfig, evaluation_crop, mirror_sample
from hoi_training.data.sample import HandObjectSample


@pytest.fixture(scope="module")
def scene() -> Scene:
    return build_scene()


def test_crop_is_the_training_evaluation_crop(scene):
    image = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    hand_box, object_box = scene.hands["right"].box, scene.object_box
    sample = HandObjectSample(image=image, K=K, dataset="t", sequence="s", frame="0", hand_box=hand_box,
                              object_box=object_box)
    augment = AugmentConfig(output_size=CROP_SIZE)
    for side in ("right", "left"):
        reference, _ = evaluation_crop(mirror_sample(sample) if side == "left" else sample, augment)
        geometry = crop_geometry(hand_box, object_box, WIDTH, CROP_SIZE, side == "left")
        crop = extract_crop(image, geometry)
        differing = np.abs(crop.astype(int) - reference.image.astype(int))
        assert differing.max() <= 1 and np.count_nonzero(differing) <= 0.001 * differing.size, side
        np.testing.assert_allclose(geometry.hand_box, reference.hand_box, atol=1e-9)
        np.testing.assert_allclose(geometry.object_box, reference.object_box, atol=1e-9)
        # Crop pixels map back to the original image (un-mirrored).
        corners = np.array([[hand_box[0], hand_box[1]], [hand_box[2], hand_box[3]]])
        through = corners @ geometry.image_to_crop[:2, :2].T + geometry.image_to_crop[:2, 2]
        np.testing.assert_allclose(geometry.to_image(through), corners, atol=1e-9)


# ----------------------------------------------------------------------------- round trips


def test_ideal_network_gives_back_the_scene_for_both_hands(scene):
    estimator, network, detector = make_estimator(scene)
    result = estimator.process(coordinate_image(), K, 10.0)
    assert result.tracking_state == "detecting" and result.frames_since_detection == 0
    assert sorted(network.mirrored_calls) == [False, True]  # one plain crop, one mirrored (left hand)
    check_scene(result, scene)
    assert all(h.filter_state.status is FrameStatus.RESET for h in result.hands)
    assert {h.track_id for h in result.hands} | {o.track_id for o in result.objects} == {1, 2, 3}
    assert set(result.timings_ms) == {"detect", "crop", "network", "translation", "pnp", "filter", "hand_model"}
    assert all(v >= 0 for v in result.timings_ms.values())
    np.testing.assert_array_equal(estimator.hand_faces("left"), estimator.hand_faces("right")[:, ::-1])


def test_depth_refines_the_hand_translation(scene):
    estimator, _, _ = make_estimator(scene)
    depth = np.zeros((HEIGHT, WIDTH), np.uint16)
    for hand in scene.hands.values():  # the skin a little in front of each joint
        uv = np.rint(project(hand.joints_cam, K)).astype(int)
        depth[uv[:, 1], uv[:, 0]] = np.rint((hand.joints_cam[:, 2] - 0.008) * 1000).astype(np.uint16)
    result = estimator.process(coordinate_image(), K, 1.0, depth=depth)
    check_scene(result, scene, joint_tol_m=2e-3)  # depth is quantised to millimetres


def test_tracking_follows_the_scene_and_redetects_on_schedule(scene):
    estimator, network, detector = make_estimator(scene, tracking=TrackingConfig(redetect_interval=3))
    states, ids, crops = [], [], []
    for frame in range(5):
        result = estimator.process(coordinate_image(), K, 1.0 + frame / 30)
        # Tracked frames crop around the propagated boxes (not the detector's): still exact.
        check_scene(result, scene)
        states.append((result.tracking_state, result.frames_since_detection))
        ids.append(sorted(h.track_id for h in result.hands))
        crops.append(result.hands[0].result.box)
    assert states == [("detecting", 0), ("tracking", 1), ("tracking", 2), ("detecting", 0), ("tracking", 1)]
    assert detector.calls == 2
    assert ids == [[1, 2]] * 5  # re-detection finds the same hands: same tracks
    assert not np.allclose(crops[0], crops[1])  # the tracked box is the projected hand plus margin


def test_tracking_follows_a_moving_scene(scene):
    estimator, network, detector = make_estimator(scene, tracking=TrackingConfig(redetect_interval=0))
    for frame in range(8):
        moved = scene.moved(np.array([0.003 * frame, -0.002 * frame, 0.001 * frame]))  # 11 cm/s
        network.scene = detector.scene = moved
        result = estimator.process(coordinate_image(), K, 1.0 + frame / 30)
        check_scene(result, moved, joint_tol_m=6e-3, pixel_tol=3.0)  # the temporal filters lag a little
    assert detector.calls == 1 and result.tracking_state == "tracking" and result.frames_since_detection == 7


def test_low_confidence_loses_the_track_and_the_next_frame_redetects(scene):
    estimator, network, detector = make_estimator(scene)
    first = estimator.process(coordinate_image(), K, 1.0)
    network.joint_confidence = 0.15
    lost = estimator.process(coordinate_image(), K, 1.1)
    assert lost.tracking_state == "lost" and estimator.tracker.lost_reasons["right"] == "confidence 0.15 < 0.20"
    # The filter refuses the low-confidence frame and holds the last good estimate.
    assert all(h.filter_state.status is FrameStatus.HELD for h in lost.hands) and len(lost.hands) == 2
    network.joint_confidence = 0.9
    again = estimator.process(coordinate_image(), K, 1.2)
    assert again.tracking_state == "detecting" and detector.calls == 2
    old_ids = {h.track_id for h in first.hands}
    assert not old_ids & {h.track_id for h in again.hands}  # lost hands come back with new ids
    check_scene(again, scene)


def test_an_unsolved_object_pose_holds_its_detected_box(scene):
    """PnP fails (here: more correspondences asked for than there are votes): nothing is published
    for the object, but its detected box is held, so the detector does not run again before its time."""
    from hoi_perception.geometry.pnp import PnPConfig

    estimator, network, detector = make_estimator(scene, pnp=PnPConfig(min_correspondences=10_000),
                                                  tracking=TrackingConfig(redetect_interval=0))
    results = [estimator.process(coordinate_image(), K, 1.0 + frame / 30) for frame in range(4)]
    assert [r.tracking_state for r in results] == ["detecting", "tracking", "tracking", "tracking"]
    assert detector.calls == 1
    assert all(not r.objects[0].result.success for r in results)
    held = estimator.tracker.tracks["object"]
    assert held.box_detected and held.frames_tracked == 4  # held after each of the 4 frames
    np.testing.assert_allclose(held.box, scene.object_box, atol=0.5)  # the detection, unchanged
    network.object_confidence = 0.1  # votes nobody trusts: the object's track ends
    lost = estimator.process(coordinate_image(), K, 2.0)
    assert lost.tracking_state == "lost" and "object" not in estimator.tracker.tracks


def test_the_object_depth_comes_from_its_detected_box_and_stays_with_its_track(scene):
    """Votes drawn to 60 % of their spread put PnP's object 1/0.6 as far as it is, which the box-size
    gate refuses; the detected box brings it back, and the tracked frames after (whose boxes come
    from the pose, not the image) keep the factor the box gave."""
    from hoi_perception.geometry.object_depth import ObjectDepthConfig

    pnp_only, network, _ = make_estimator(scene, object_depth=ObjectDepthConfig(from_box=False))
    network.vote_spread = 0.6
    refused = pnp_only.process(coordinate_image(), K, 1.0).objects[0].result
    assert not refused.success and "depth contradicts the box" in refused.failure_reason
    estimator, network, detector = make_estimator(scene, tracking=TrackingConfig(redetect_interval=0))
    network.vote_spread = 0.6
    results = [estimator.process(coordinate_image(), K, 1.0 + frame / 30) for frame in range(3)]
    assert [r.tracking_state for r in results] == ["detecting", "tracking", "tracking"] and detector.calls == 1
    for result in results:
        found = result.objects[0].result
        assert found.success, found.failure_reason
        np.testing.assert_allclose(found.translation, scene.object_translation, atol=0.01)
        assert found.translation[2] == pytest.approx(scene.object_translation[2], abs=0.005)
    assert estimator._object_depth_scales == {results[0].objects[0].track_id: pytest.approx(0.6, abs=0.02)}


def test_only_a_detected_box_places_a_hand_whose_joints_are_not_confident(scene):
    # Joint confidence below hand_translation.min_joint_confidence: the 2D-joint fit fails on every frame.
    estimator, network, detector = make_estimator(scene, tracking=TrackingConfig(min_hand_confidence=0.0))
    network.joint_confidence = 0.05
    first = estimator.process(coordinate_image(), K, 1.0)
    # The detector's box places the hand (the box fallback), so the track is followed ...
    assert first.tracking_state == "detecting" and set(estimator.tracker.tracks) == {"right", "left", "object"}
    assert not estimator.tracker.tracks["right"].box_detected
    # ... but a followed box is only the last estimate plus a margin: it must not place the hand again.
    second = estimator.process(coordinate_image(), K, 1.1)
    assert second.tracking_state == "lost"
    assert estimator.tracker.lost_reasons["right"].startswith("hand translation: too few confident joints")
    third = estimator.process(coordinate_image(), K, 1.2)
    assert third.tracking_state == "detecting" and detector.calls == 2


def test_missing_detections_and_hand_sides(scene):
    estimator, network, detector = make_estimator(scene, hand_sides=["right"])
    detector.visible = {"left", "object"}
    result = estimator.process(coordinate_image(), K, 1.0)
    assert result.hands == [] and len(result.objects) == 1 and result.objects[0].result.success
    assert network.mirrored_calls == [False]  # object only: one plain crop
    assert estimator.process(coordinate_image(), K, 1.1).tracking_state == "tracking"  # the object alone

    estimator, network, detector = make_estimator(scene)
    detector.visible = set()
    for stamp in (1.0, 1.1):
        empty = estimator.process(coordinate_image(), K, stamp)
        assert empty.tracking_state == "detecting" and empty.hands == [] and empty.objects == []
        assert "network" not in empty.timings_ms and "detect" in empty.timings_ms
    assert detector.calls == 2 and network.mirrored_calls == []


@pytest.mark.parametrize("image, camera, stamp, depth, kind, message", [
    (np.zeros((0, 0, 3), np.uint8), K, 1.0, None, "image", "image is empty"),
    (np.zeros((HEIGHT, WIDTH, 3), np.float32), K, 1.0, None, "image", "uint8 RGB, got dtype float32"),
    (np.zeros((HEIGHT, WIDTH), np.uint8), K, 1.0, None, "image", r"\(H, W, 3\) RGB, got shape"),
    ("not an image", K, 1.0, None, "image", "numpy array, got str"),
    (None, np.zeros((3, 3)), 1.0, None, "camera_matrix", "all zeros"),
    (None, np.full((3, 3), np.nan), 1.0, None, "camera_matrix", "NaN"),
    (None, np.diag([-1.0, 300.0, 1.0]), 1.0, None, "camera_matrix", "positive focal lengths"),
    (None, K, float("nan"), None, "stamp", "finite number of seconds"),
    (None, K, 1.0, np.zeros((HEIGHT, WIDTH), np.int32), "depth", "uint16 millimetres or float32 metres"),
    (None, K, 1.0, np.zeros((10, 10), np.uint16), "depth", "not aligned"),
])
def test_bad_input_is_skipped_counted_and_processing_continues(scene, image, camera, stamp, depth, kind, message):
    estimator, _, detector = make_estimator(scene)
    image = coordinate_image() if image is None else image
    result = estimator.process(image, camera, stamp, depth)
    assert result.skipped is not None and result.hands == [] and result.objects == []
    assert re.search(message, result.skipped)
    assert estimator.skipped == {kind: 1} and detector.calls == 0
    check_scene(estimator.process(coordinate_image(), K, 2.0), scene)


def test_nan_network_outputs_skip_the_frame_and_drop_the_tracks(scene):
    estimator, network, detector = make_estimator(scene)
    estimator.process(coordinate_image(), K, 1.0)
    network.produce_nan = True
    result = estimator.process(coordinate_image(), K, 1.1)
    assert result.skipped.startswith("the network produced NaN or infinity in ['hand_joints3d']")
    assert estimator.skipped["network_output"] == 1 and estimator.tracker.tracks == {}
    network.produce_nan = False
    after = estimator.process(coordinate_image(), K, 1.2)
    assert after.tracking_state == "detecting" and detector.calls == 2
    check_scene(after, scene)


def test_time_going_backwards_starts_a_new_stream(scene):
    estimator, _, detector = make_estimator(scene)
    first = estimator.process(coordinate_image(), K, 5.0)
    assert estimator.process(coordinate_image(), K, 5.1).tracking_state == "tracking"
    repeated = estimator.process(coordinate_image(), K, 5.1)
    assert "repeats the previous frame" in repeated.skipped and estimator.skipped["stamp"] == 1
    looped = estimator.process(coordinate_image(), K, 0.5)  # a bag played again from its start
    assert looped.tracking_state == "detecting" and detector.calls == 2
    assert not {h.track_id for h in first.hands} & {h.track_id for h in looped.hands}
    assert all(h.filter_state.status is FrameStatus.RESET for h in looped.hands)
    check_scene(looped, scene)


def test_engine_without_the_needed_outputs_is_refused(scene):
    network = IdealCropNetwork(scene)
    network.outputs = network.outputs[:-1]
    with pytest.raises(ValueError, match=r"crop network engine ideal \(cpu, fp32\) lacks .* \['object_confidence'\]"):
        Estimator(EstimatorConfig(), crop_engine=network, detector_engine=SceneDetector(scene))


# ----------------------------------------------------------------------------- configuration and a real network


def test_shipped_config_loads_and_names_missing_model_files(scene):
    config = load_estimator_config()
    assert config.engine.kind == "onnxruntime" and config.hand_sides == ["right", "left"]
    with pytest.raises(ValueError, match=r"needs \['crop_model', 'detector_model'\]"):
        Estimator(config)
    with pytest.raises(ValueError, match="hand_sides: each side at most once"):
        load_estimator_config(None, ["hand_sides=[right, right]"])
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['tracker'\]"):
        load_estimator_config({"tracker": {}})
    with pytest.raises(ValueError, match="object_name 'teapot' is not in the object library"):
        Estimator(load_estimator_config(None, ["object_name=teapot"]), crop_engine=IdealCropNetwork(scene),
                  detector_engine=SceneDetector(scene))


def test_a_real_network_runs_through_the_torch_engine(tmp_path):
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pt")
    config = load_estimator_config(None, [f"checkpoint={checkpoint}", "object_name=sugar_box",
                                          "detection.hand_score_threshold=0.0", "detection.object_score_threshold=0.0"])
    config.engine = EngineConfig(kind="torch")
    estimator = Estimator(config)
    assert estimator.crop_size == 64 and estimator.detector_size == 64
    assert set(CROP_OUTPUTS) <= set(estimator.crop_engine.output_names)
    image = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    result = estimator.process(image, np.array([[150.0, 0, 80], [0, 150.0, 60], [0, 0, 1]]), 3.0)
    # Random weights: the plumbing runs end to end; the geometry rightly refuses the garbage.
    assert result.skipped is None and result.tracking_state == "detecting"
    assert {"detect", "crop", "network", "translation", "pnp", "filter"} <= set(result.timings_ms)
    assert estimator.frames_processed == 1 and not estimator.skipped
    for tracked in result.hands:
        assert tracked.result.vertices_cam.shape == (778, 3)
    for tracked in result.objects:
        assert tracked.result.control_points_2d.shape == (21, 2)
