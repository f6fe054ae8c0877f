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

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from hoi_perception.config import to_dict
from hoi_perception.engines.base import EngineConfig, InferenceEngine, TensorSpec
from hoi_perception.geometry.camera import box_from_points, project
from hoi_perception.geometry.mirror import mirror_axis_angle, mirror_points_3d
from hoi_perception.hand_model.mano import HandModel
from hoi_perception.models.config import load_model_config
from hoi_perception.models.detection_head import LEFT_HAND, OBJECT, RIGHT_HAND, Letterbox
from hoi_perception.models.network import HOINet
from hoi_perception.objects.models import load_object_model
from hoi_perception.pipeline.config import EstimatorConfig, load_estimator_config
from hoi_perception.pipeline.estimator import CROP_OUTPUTS, Estimator, crop_geometry, extract_crop
from hoi_perception.pipeline.tracking import TrackingConfig
from hoi_perception.tracking import FrameStatus
from hoi_training.data.augment import AugmentConfig, evaluation_crop, mirror_sample
from hoi_training.data.sample import HandObjectSample

WIDTH, HEIGHT = 256, 192  # the coordinate image needs columns and rows < 256
K = np.array([[300.0, 0.0, 127.5], [0.0, 300.0, 95.5], [0.0, 0.0, 1.0]])
CROP_SIZE, ROI_SIZE, DETECTOR_SIZE = 96, 8, 64
OBJECT_NAME = "sugar_box"


# ----------------------------------------------------------------------------- the synthetic scene


@dataclasses.dataclass
class SceneHand:
    side: str
    pose: np.ndarray  # MANO pose of a `side` hand
    betas: np.ndarray
    joints_rel: np.ndarray
    vertices_rel: np.ndarray
    translation: np.ndarray

    @property
    def joints_cam(self) -> np.ndarray:
        return self.joints_rel + self.translation

    @property
    def vertices_cam(self) -> np.ndarray:
        return self.vertices_rel + self.translation

    @property
    def box(self) -> np.ndarray:
        return box_from_points(project(self.vertices_cam, K))


@dataclasses.dataclass
class Scene:
    hands: dict[str, SceneHand]
    object_rotation: np.ndarray
    object_translation: np.ndarray
    control_points: np.ndarray  # model frame (21, 3)

    @property
    def control_points_2d(self) -> np.ndarray:
        return project(self.control_points @ self.object_rotation.T + self.object_translation, K)

    @property
    def object_box(self) -> np.ndarray:
        return box_from_points(self.control_points_2d[:8])

    def moved(self, shift: np.ndarray) -> Scene:
        hands = {s: dataclasses.replace(h, translation=h.translation + shift) for s, h in self.hands.items()}
        return dataclasses.replace(self, hands=hands, object_translation=self.object_translation + shift)


def make_hand(model: HandModel, side: str, global_rotvec, seed: int, translation) -> SceneHand:
    """A right hand from the MANO layer; a left hand is the mirror of one (as the network sees it)."""
    rng = np.random.default_rng(seed)
    right_pose = np.concatenate([global_rotvec, rng.normal(0.0, 0.15, 45)])
    betas = rng.normal(0.0, 0.5, 10)
    with torch.inference_mode():
        out = model(global_orient=torch.tensor(right_pose[None, :3], dtype=torch.float32),
                    hand_pose=torch.tensor(right_pose[None, 3:], dtype=torch.float32),
                    betas=torch.tensor(betas[None], dtype=torch.float32))
    joints = (out.joints - out.joints[:, :1])[0].double().numpy()
    vertices = (out.vertices - out.joints[:, :1])[0].double().numpy()
    pose = right_pose
    if side == "left":
        pose, joints, vertices = mirror_axis_angle(right_pose), mirror_points_3d(joints), mirror_points_3d(vertices)
    return SceneHand(side, pose, betas, joints, vertices, np.asarray(translation, dtype=np.float64))


def build_scene() -> Scene:
    """Two hands (a right one and a mirrored one) around a sugar box, half a metre from the camera."""
    model = HandModel("right")
    palm_to_camera = [np.pi / 2, 0.0, 0.0]
    right = make_hand(model, "right", palm_to_camera, 1, [-0.07, 0.02, 0.55])
    left = make_hand(model, "left", mirror_axis_angle(np.array(palm_to_camera)), 2, [0.07, 0.03, 0.60])
    rotation = Rotation.from_rotvec([0.3, -0.5, 0.2]).as_matrix()
    control_points = load_object_model(OBJECT_NAME, None).control_points
    return Scene({"right": right, "left": left}, rotation, np.array([0.0, -0.01, 0.58]), control_points)


@pytest.fixture(scope="module")
def scene() -> Scene:
    return build_scene()


def coordinate_image() -> np.ndarray:
    """Red = column, green = row, blue = 255 inside the image (the crop's black border has 0)."""
    u, v = np.meshgrid(np.arange(WIDTH), np.arange(HEIGHT))
    return np.stack([u, v, np.full_like(u, 255)], axis=-1).astype(np.uint8)


# ----------------------------------------------------------------------------- stub engines


def _specs(shapes: dict[str, tuple], dtype: str = "float32") -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(name, ("batch", *shape), dtype) for name, shape in shapes.items())


class IdealCropNetwork(InferenceEngine):
    """The crop network a perfect training would give, for the scene it is told about."""

    def __init__(self, scene: Scene) -> None:
        self.name, self.device, self.precision, self.metadata = "ideal", "cpu", "fp32", {}
        self.inputs = _specs({"crop": (3, CROP_SIZE, CROP_SIZE), "hand_box": (4,), "object_box": (4,)})
        self.outputs = _specs({"hand_joints2d": (21, 2), "hand_joint_confidence": (21,), "hand_pose": (48,),
                               "hand_betas": (10,), "hand_vertices": (778, 3), "hand_joints3d": (21, 3),
                               "object_votes": (21, 2, ROI_SIZE, ROI_SIZE),
                               "object_confidence": (21, ROI_SIZE, ROI_SIZE)})
        self.scene = scene
        self.joint_confidence = 0.9
        self.produce_nan = False
        self.mirrored_calls: list[bool] = []

    @staticmethod
    def image_to_crop(crop: np.ndarray) -> np.ndarray:
        """Affine (3, 3) full image -> crop, fitted to the coordinates the crop's pixels show."""
        pixels = np.rint(crop * 255.0)
        valid = pixels[2] == 255
        ys, xs = np.nonzero(valid)
        design = np.column_stack([xs, ys, np.ones(len(xs))])
        crop_to_image = np.linalg.lstsq(design, np.column_stack([pixels[0][valid], pixels[1][valid]]), rcond=None)[0]
        matrix = np.eye(3)
        matrix[:2] = crop_to_image.T
        return np.linalg.inv(matrix)

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = inputs["crop"].shape[0]
        out = {name: np.zeros((batch, *spec.shape[1:]), np.float32) for name, spec in
               zip(self.output_names, self.outputs)}
        for b in range(batch):
            to_crop = self.image_to_crop(inputs["crop"][b])
            mirrored = bool(to_crop[0, 0] < 0)
            self.mirrored_calls.append(mirrored)

            def crop_units(points_2d: np.ndarray, box: np.ndarray, matrix=to_crop) -> np.ndarray:
                crop_px = points_2d @ matrix[:2, :2].T + matrix[:2, 2]
                return (crop_px - box[:2]) / (box[2:] - box[:2])

            hand = self.scene.hands.get("left" if mirrored else "right")
            if hand is not None:
                joints_rel, vertices_rel, pose = hand.joints_rel, hand.vertices_rel, hand.pose
                if mirrored:  # the network sees the mirrored (right) hand
                    joints_rel, vertices_rel = mirror_points_3d(joints_rel), mirror_points_3d(vertices_rel)
                    pose = mirror_axis_angle(pose)
                out["hand_joints2d"][b] = crop_units(project(hand.joints_cam, K), inputs["hand_box"][b])
                out["hand_joints3d"][b] = joints_rel
                out["hand_vertices"][b] = vertices_rel
                out["hand_pose"][b] = pose
                out["hand_betas"][b] = hand.betas
                out["hand_joint_confidence"][b] = self.joint_confidence
            votes = crop_units(self.scene.control_points_2d, inputs["object_box"][b])
            out["object_votes"][b] = votes[:, :, None, None]
            out["object_confidence"][b] = 0.9
        if self.produce_nan:
            out["hand_joints3d"][:] = np.nan
        return out


class SceneDetector(InferenceEngine):
    """A detector that finds the scene's hands and object (those listed in ``visible``)."""

    def __init__(self, scene: Scene) -> None:
        self.name, self.device, self.precision, self.metadata = "scene-detector", "cpu", "fp32", {}
        self.inputs = _specs({"frame": (3, DETECTOR_SIZE, DETECTOR_SIZE)})
        self.outputs = _specs({"boxes": (6, 4), "scores": (6,)}) + _specs({"classes": (6,)}, "int64")
        self.scene = scene
        self.visible = {"right", "left", "object"}
        self.calls = 0

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        letterbox = Letterbox.fit(WIDTH, HEIGHT, DETECTOR_SIZE, DETECTOR_SIZE)
        boxes, scores, classes = np.zeros((1, 6, 4), np.float32), np.zeros((1, 6), np.float32), np.zeros((1, 6))
        entries = [(s, self.scene.hands[s].box, RIGHT_HAND if s == "right" else LEFT_HAND)
                   for s in ("right", "left") if s in self.scene.hands]
        entries.append(("object", self.scene.object_box, OBJECT))
        for i, (key, box, class_id) in enumerate(entries):
            if key in self.visible:
                boxes[0, i] = letterbox.boxes_to_input(box)
                scores[0, i] = 0.9
                classes[0, i] = class_id
        return {"boxes": boxes, "scores": scores, "classes": classes.astype(np.int64)}


def make_estimator(scene: Scene, **config_changes) -> tuple[Estimator, IdealCropNetwork, SceneDetector]:
    config = EstimatorConfig(object_name=OBJECT_NAME, **config_changes)
    network, detector = IdealCropNetwork(scene), SceneDetector(scene)
    return Estimator(config, crop_engine=network, detector_engine=detector), network, detector


def check_scene(result, scene: Scene, joint_tol_m: float = 1e-3, pixel_tol: float = 0.1) -> None:
    """The result reproduces the scene's hands and object in the camera frame."""
    assert result.skipped is None
    assert sorted(h.result.side for h in result.hands) == sorted(scene.hands)
    for tracked in result.hands:
        truth = scene.hands[tracked.result.side]
        hand = tracked.result
        np.testing.assert_allclose(hand.joints_cam, truth.joints_cam, atol=joint_tol_m)
        np.testing.assert_allclose(hand.vertices_cam, truth.vertices_cam, atol=joint_tol_m)
        np.testing.assert_allclose(hand.joints2d, project(truth.joints_cam, K), atol=pixel_tol)
        np.testing.assert_allclose(hand.pose, truth.pose, atol=1e-4)
        np.testing.assert_allclose(hand.betas, truth.betas, atol=1e-5)
    (tracked_object,) = result.objects
    obj = tracked_object.result
    assert obj.success and obj.name == OBJECT_NAME and obj.pnp_inliers == 21
    angle = np.degrees(Rotation.from_matrix(obj.rotation @ scene.object_rotation.T).magnitude())
    assert angle < 0.1
    np.testing.assert_allclose(obj.translation, scene.object_translation, atol=joint_tol_m)
    np.testing.assert_allclose(obj.control_points_2d, scene.control_points_2d, atol=0.05)


# ----------------------------------------------------------------------------- crop


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


TINY_MODEL = ["input_size=64", "backbone.fpn_channels=16", "roi.output_size=8", "hand_head.hourglass_depth=2",
              "hand_head.encoder_rounds=2", "hand_head.regressor_hidden=32", "object_head.num_blocks=1",
              "detection_head.head_channels=8"]


def write_tiny_checkpoint(path: Path) -> Path:
    """A randomly initialised tiny HOINet saved as a training checkpoint."""
    torch.manual_seed(0)
    model_config = load_model_config("models/hfl_r18.yaml", TINY_MODEL)
    network = HOINet(model_config)
    with torch.no_grad():  # untrained boxes would have no size: make them 6 cells (24 px) wide
        network.detection_head.size[-1].bias.fill_(6.0)
    torch.save({"model_config": to_dict(model_config), "model": network.state_dict()}, path)
    return path


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
