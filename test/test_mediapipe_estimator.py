"""The estimator with ``hand_frontend: mediapipe``: an ideal front-end that reports the test scene's
exact landmarks stands in for MediaPipe, so the MANO fit, translation, gates, filter and the
object from the network are checked without the model files."""

from __future__ import annotations

import numpy as np
import pytest
from scenes import OBJECT_NAME, IdealCropNetwork, K, SceneDetector, build_scene, coordinate_image
from scipy.spatial.transform import Rotation

from hoi_perception.config import ConfigError
from hoi_perception.frontends.mediapipe_hands import FrontendResult, HandLandmarks, RotatedRect
from hoi_perception.geometry.camera import project
from hoi_perception.geometry.metrics import procrustes_align
from hoi_perception.hand_model.joint_orders import ho3d_to_simple
from hoi_perception.pipeline.config import EstimatorConfig, load_estimator_config
from hoi_perception.pipeline.estimator import Estimator


class IdealLandmarks:
    """Answers like MediaPipeHands.process with the scene's hands: exact image and world landmarks
    (world landmarks centred between the knuckles, as MediaPipe's are)."""

    def __init__(self, scene, sides=("right", "left")) -> None:
        self.scene = scene
        self.sides = list(sides)
        self.tracking = False
        self.resets = 0

    def reset(self) -> None:
        self.tracking = False
        self.resets += 1

    def process(self, rgb: np.ndarray) -> FrontendResult:
        hands = []
        for side in self.sides:
            truth = self.scene.hands[side]
            image = ho3d_to_simple(np.concatenate([project(truth.joints_cam, K), np.zeros((21, 1))], axis=1))
            world = ho3d_to_simple(truth.joints_rel)
            world = world - world[[5, 9, 13, 17]].mean(0)
            hands.append(HandLandmarks(image, world, 0.97, side, 0.99, RotatedRect((0.0, 0.0), 1.0, 1.0, 0.0),
                                       from_palm=not self.tracking))
        self.tracking = bool(hands)
        return FrontendResult(hands, [])


def pa_mpjpe(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(np.linalg.norm(procrustes_align(pred, gt)[0] - gt, axis=1).mean())


@pytest.fixture(scope="module")
def scene():
    return build_scene()


def test_hands_only_with_no_network(scene):
    frontend = IdealLandmarks(scene)
    estimator = Estimator(EstimatorConfig(hand_frontend="mediapipe"), hand_frontend=frontend)
    assert estimator.crop_engine is None and estimator.detector_engine is None
    result = estimator.process(coordinate_image(), K, 0.0)
    assert result.skipped is None and result.objects == []
    assert sorted(h.result.side for h in result.hands) == ["left", "right"]
    for tracked in result.hands:
        hand, truth = tracked.result, scene.hands[tracked.result.side]
        # Perfect landmarks: the fitted hand is the scene's hand, in the right place.
        assert pa_mpjpe(hand.joints_cam, truth.joints_cam) < 0.0015
        # The depth follows the fitted hand's size, which the shape prior pulls ~1 % towards the mean
        # hand: measured up to 5.3 mm at 0.55-0.6 m.
        np.testing.assert_allclose(hand.joints_cam, truth.joints_cam, atol=0.007)
        np.testing.assert_allclose(hand.joints2d, project(truth.joints_cam, K), atol=1e-6)
        assert hand.vertices_cam.shape == (778, 3)
        mesh_error = np.linalg.norm(hand.vertices_cam - truth.vertices_cam, axis=1).mean()
        assert mesh_error < 0.005
    assert {"landmarks", "mano_fit", "translation", "filter", "hand_model"} <= set(result.timings_ms)
    assert "network" not in result.timings_ms and "detect" not in result.timings_ms


def test_track_ids_last_while_the_front_end_tracks_and_end_when_a_hand_goes(scene):
    frontend = IdealLandmarks(scene)
    estimator = Estimator(EstimatorConfig(hand_frontend="mediapipe"), hand_frontend=frontend)
    first = {h.result.side: h.track_id for h in estimator.process(coordinate_image(), K, 0.0).hands}
    second = {h.result.side: h.track_id for h in estimator.process(coordinate_image(), K, 0.033).hands}
    assert first == second and len(set(first.values())) == 2
    # The fit of the tracked hand was warm-started.
    assert estimator.hand_stage is not None
    assert estimator.hand_stage._tracks["right"].shape.previous.iterations <= estimator.config.mano_fit.warm_iterations
    frontend.sides = ["left"]
    third = estimator.process(coordinate_image(), K, 0.066)
    assert [h.result.side for h in third.hands] == ["left"] and third.hands[0].track_id == first["left"]
    frontend.sides = ["right", "left"]
    frontend.tracking = False  # the right hand comes back through the palm detector: a new track
    fourth = {h.result.side: h.track_id for h in estimator.process(coordinate_image(), K, 0.1).hands}
    assert fourth["right"] not in first.values()
    estimator.reset()
    assert frontend.resets == 1


def test_hand_sides_limit_the_front_ends_hands(scene):
    estimator = Estimator(EstimatorConfig(hand_frontend="mediapipe", hand_sides=["left"]),
                          hand_frontend=IdealLandmarks(scene))
    assert [h.result.side for h in estimator.process(coordinate_image(), K, 0.0).hands] == ["left"]


def test_the_network_still_estimates_the_object_on_crops_around_the_front_ends_hands(scene):
    config = EstimatorConfig(object_name=OBJECT_NAME, hand_frontend="mediapipe")
    network, detector = IdealCropNetwork(scene), SceneDetector(scene)
    estimator = Estimator(config, crop_engine=network, detector_engine=detector, hand_frontend=IdealLandmarks(scene))
    result = estimator.process(coordinate_image(), K, 0.0)
    assert result.skipped is None
    (tracked_object,) = result.objects
    obj = tracked_object.result
    assert obj.success and obj.name == OBJECT_NAME
    angle = np.degrees(Rotation.from_matrix(obj.rotation @ scene.object_rotation.T).magnitude())
    assert angle < 0.1
    np.testing.assert_allclose(obj.translation, scene.object_translation, atol=1e-3)
    # The hands are the front-end's (fitted), not the network's exact ones, in the same places.
    for tracked in result.hands:
        np.testing.assert_allclose(tracked.result.joints_cam, scene.hands[tracked.result.side].joints_cam, atol=0.007)
    assert {"detect", "crop", "network", "pnp", "landmarks", "mano_fit"} <= set(result.timings_ms)
    # Track ids of the hands and the object never collide (their filters are kept by id).
    ids = [h.track_id for h in result.hands] + [tracked_object.track_id]
    assert len(set(ids)) == len(ids)


def test_an_object_without_a_network_is_refused(scene):
    with pytest.raises(ConfigError, match="object still comes from the network"):
        Estimator(EstimatorConfig(object_name=OBJECT_NAME, hand_frontend="mediapipe"),
                  hand_frontend=IdealLandmarks(scene))


def test_the_setting_is_read_from_the_yaml_and_checked():
    config = load_estimator_config("perception.yaml", ["hand_frontend=mediapipe", "mediapipe.num_hands=1"])
    assert config.hand_frontend == "mediapipe" and config.mediapipe.num_hands == 1
    assert not config.needs_network
    assert load_estimator_config("perception.yaml").hand_frontend == "network"
    with pytest.raises(ConfigError, match="hand_frontend"):
        load_estimator_config("perception.yaml", ["hand_frontend=openpose"])
    with pytest.raises(ConfigError, match="num_hands"):
        EstimatorConfig(hand_frontend="mediapipe", mediapipe=type(config.mediapipe)(num_hands=0)).validate()


def test_the_cli_passes_hand_frontend_as_a_setting():
    from hoi_perception.cli import build_parser, estimator_overrides

    parser = build_parser()
    for command in (["run", "--video", "v.mp4"], ["process-bag", "in", "out"], ["demo"]):
        args = parser.parse_args([*command, "--hand-frontend", "mediapipe", "--set", "object_name=mug"])
        assert estimator_overrides(args) == ["object_name=mug", "hand_frontend=mediapipe"]
        assert estimator_overrides(parser.parse_args(command)) == []


def test_the_node_parameters_select_the_front_end_and_name_the_install_step(tmp_path):
    from hoi_perception.frontends.mediapipe_models import MediaPipeModelError
    from hoi_perception.ros import node_logic as nl
    from hoi_perception.ros import params as rp

    params = rp.params_from_values({"estimator.hand_frontend": "mediapipe",
                                    "estimator.mediapipe_model_dir": str(tmp_path)})
    assert rp.estimator_overrides(params.estimator) == ["hand_frontend='mediapipe'",
                                                        f"mediapipe.model_dir='{tmp_path}'"]
    path = tmp_path / "perception.yaml"
    path.write_text("estimator: {}\nnode: {}\n")
    # No network is loaded for hands only (not even the shipped one); the missing models are named.
    with pytest.raises(MediaPipeModelError, match="install-mediapipe-models --dest"):
        nl.load_estimator(params, path)
    with pytest.raises(ConfigError, match="hand_frontend"):
        rp.params_from_values({"estimator.hand_frontend": "openpose"})


@pytest.mark.parametrize("object_name", [None, OBJECT_NAME])
def test_the_network_can_estimate_the_hands_on_the_front_ends_boxes(scene, object_name):
    config = EstimatorConfig(object_name=object_name, hand_frontend="mediapipe", mediapipe_hands_from="network")
    estimator = Estimator(config, crop_engine=IdealCropNetwork(scene), detector_engine=SceneDetector(scene),
                          hand_frontend=IdealLandmarks(scene))
    result = estimator.process(coordinate_image(), K, 0.0)
    assert sorted(h.result.side for h in result.hands) == ["left", "right"]
    for tracked in result.hands:
        truth = scene.hands[tracked.result.side]
        # The ideal network's exact hands, not a fit: sub-millimetre.
        np.testing.assert_allclose(tracked.result.joints_cam, truth.joints_cam, atol=1e-3)
        np.testing.assert_allclose(tracked.result.pose, truth.pose, atol=1e-4)
    assert "network" in result.timings_ms and "mano_fit" not in result.timings_ms
    assert len(result.objects) == (object_name is not None)
    with pytest.raises(ConfigError, match="mediapipe_hands_from network"):
        Estimator(EstimatorConfig(hand_frontend="mediapipe", mediapipe_hands_from="network"),
                  hand_frontend=IdealLandmarks(scene))
