"""A synthetic two-hand scene and stub engines that answer for it: an *ideal* crop network
that reads from the crop's own pixels how it was cut and returns the scene's labels in the
crop's units, and a detector that returns the scene's boxes. Shared by the estimator,
gates, messages, bag and video tests."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from hoi_perception.engines.base import InferenceEngine, TensorSpec
from hoi_perception.geometry.camera import box_from_points, project
from hoi_perception.geometry.mirror import mirror_axis_angle, mirror_points_3d, mirrored_crop_point_order
from hoi_perception.hand_model.mano import HandModel
from hoi_perception.models.detection_head import LEFT_HAND, OBJECT, RIGHT_HAND, Letterbox
from hoi_perception.objects.models import load_object_model
from hoi_perception.pipeline.config import EstimatorConfig
from hoi_perception.pipeline.estimator import Estimator

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
    mirror_axis: int | None  # the object's mirror plane (ObjectModel.mirror_axis)

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
    model = load_object_model(OBJECT_NAME, None)
    return Scene({"right": right, "left": left}, rotation, np.array([0.0, -0.01, 0.58]), model.control_points,
                 model.mirror_axis)


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
        self.object_confidence: float | None = None  # None: 0.9, and 0.95 for mirrored crops
        self.produce_nan = False
        # Votes drawn towards the control points' centroid by this factor, as a trained object
        # head's are (geometry/object_depth.py); 1 votes exactly.
        self.vote_spread = 1.0
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
            # In a mirrored crop vote j lies on the model point across the object's mirror plane
            # (augment.mirror_sample); that crop is also the more confident, so PnP takes it.
            points_2d = self.scene.control_points_2d
            points_2d = points_2d.mean(0) + self.vote_spread * (points_2d - points_2d.mean(0))
            if mirrored:
                points_2d = points_2d[mirrored_crop_point_order(self.scene.control_points, self.scene.mirror_axis)]
            votes = crop_units(points_2d, inputs["object_box"][b])
            out["object_votes"][b] = votes[:, :, None, None]
            out["object_confidence"][b] = (self.object_confidence if self.object_confidence is not None
                                           else 0.95 if mirrored else 0.9)
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
    """The estimator on the scene's ideal networks. The scene's detector knows each hand's side and
    the ideal crop network is equally sure of any crop, so the side comes from the detector
    (test_hand_side.py tests the crop network's side vote)."""
    config_changes.setdefault("hand_side_from", "detector")
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
