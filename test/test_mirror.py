import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from hoi_perception.geometry.camera import project
from hoi_perception.geometry.mirror import (
    mirror_axis_angle,
    mirror_boxes,
    mirror_camera_matrix,
    mirror_image,
    mirror_points_2d,
    mirror_points_3d,
    mirror_rotation_matrix,
    mirrored_crop_point_order,
    model_points_in_crop,
    reflection,
)
from hoi_perception.geometry.rotations import axis_angle_to_matrix_np
from hoi_perception.hand_model.mano import HandModel

W = 640
K = np.array([[600.0, 0.0, 300.5], [0.0, 601.0, 250.0], [0.0, 0.0, 1.0]])


def test_mirroring_twice_is_the_identity():
    rng = np.random.default_rng(0)
    pts2 = rng.uniform(0, W, (21, 2))
    boxes = np.array([[10.0, 20.0, 110.0, 200.0]])
    pose = rng.normal(size=48)
    pts3 = rng.normal(size=(778, 3))
    image = rng.integers(0, 255, (4, 6, 3))
    np.testing.assert_allclose(mirror_points_2d(mirror_points_2d(pts2, W), W), pts2)
    np.testing.assert_allclose(mirror_boxes(mirror_boxes(boxes, W), W), boxes)
    np.testing.assert_allclose(mirror_camera_matrix(mirror_camera_matrix(K, W), W), K)
    np.testing.assert_allclose(mirror_axis_angle(mirror_axis_angle(pose)), pose)
    np.testing.assert_allclose(mirror_points_3d(mirror_points_3d(pts3)), pts3)
    np.testing.assert_array_equal(mirror_image(mirror_image(image)), image)


def test_image_and_point_conventions_agree():
    image = np.zeros((3, 8), np.uint8)
    image[1, 2] = 255  # pixel centre (u=2, v=1)
    flipped = mirror_image(image)
    v, u = np.argwhere(flipped)[0]
    np.testing.assert_allclose(mirror_points_2d([[2.0, 1.0]], 8), [[u, v]])
    np.testing.assert_allclose(mirror_boxes([1.0, 0.0, 3.0, 2.0], 8), [4.0, 0.0, 6.0, 2.0])


def test_left_hand_projection_matches_after_round_trip():
    """A left hand, mirrored into a right hand for the network and back, projects onto the same pixels."""
    rng = np.random.default_rng(1)
    joints_left = rng.uniform([-0.05, -0.05, 0.45], [0.05, 0.05, 0.55], (21, 3))
    uv_left = project(joints_left, K)
    # What the network sees: the mirrored image, its K and the mirrored (right) hand.
    K_m = mirror_camera_matrix(K, W)
    joints_right = mirror_points_3d(joints_left)
    uv_right = project(joints_right, K_m)
    np.testing.assert_allclose(uv_right, mirror_points_2d(uv_left, W), atol=1e-9)
    # Un-mirroring the network's outputs gives back the left hand's pixels and 3D points.
    np.testing.assert_allclose(mirror_points_2d(uv_right, W), uv_left, atol=1e-9)
    np.testing.assert_allclose(project(mirror_points_3d(joints_right), K), uv_left, atol=1e-9)


def test_axis_angle_mirror_is_m_r_m():
    aa = Rotation.random(16, random_state=2).as_rotvec()
    M = np.diag([-1.0, 1.0, 1.0])
    expected = M @ axis_angle_to_matrix_np(aa) @ M
    mirrored = mirror_axis_angle(aa.reshape(48)).reshape(16, 3)
    np.testing.assert_allclose(axis_angle_to_matrix_np(mirrored), expected, atol=1e-12)
    np.testing.assert_allclose(mirror_rotation_matrix(axis_angle_to_matrix_np(aa)), expected, atol=1e-12)
    # Rotating a point then mirroring equals mirroring then applying the mirrored rotation.
    x = np.array([0.1, -0.2, 0.3])
    r = axis_angle_to_matrix_np(aa[0])
    np.testing.assert_allclose(mirror_points_3d(r @ x), axis_angle_to_matrix_np(mirrored[0]) @ mirror_points_3d(x))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="width"):
        mirror_points_2d(np.zeros((2, 2)), 0)
    with pytest.raises(ValueError, match="boxes"):
        mirror_boxes(np.zeros(3), W)
    with pytest.raises(ValueError, match="axis_angle"):
        mirror_axis_angle(np.zeros(47))
    with pytest.raises(ValueError, match="image"):
        mirror_image(np.zeros(5))


def test_left_mano_equals_the_mirrored_right_hand():
    """The network's right-hand output, un-mirrored, is the left hand model's mesh.

    Exact for the shipped stand-in, whose left model is built as the mirror of the right.
    """
    rng = np.random.default_rng(3)
    pose_left = rng.normal(0.0, 0.3, (2, 48))
    betas = rng.normal(0.0, 1.0, (2, 10))
    pose_right = mirror_axis_angle(pose_left)

    def run(side, pose):
        t = torch.tensor(pose, dtype=torch.float32)
        with torch.no_grad():
            out = HandModel(side)(t[:, :3], t[:, 3:], torch.tensor(betas, dtype=torch.float32))
        return out.vertices.numpy(), out.joints.numpy()

    left_vertices, left_joints = run("left", pose_left)
    right_vertices, right_joints = run("right", pose_right)
    np.testing.assert_allclose(mirror_points_3d(right_vertices), left_vertices, atol=1e-5)
    np.testing.assert_allclose(mirror_points_3d(right_joints), left_joints, atol=1e-5)


def test_mirrored_crop_point_order_swaps_points_across_the_mirror_plane():
    from hoi_perception.objects.models import bbox_control_points

    points = bbox_control_points(np.array([-0.03, -0.02, -0.04]), np.array([0.03, 0.02, 0.04]))
    for axis in range(3):
        order = mirrored_crop_point_order(points, axis)
        np.testing.assert_allclose(points[order], points @ reflection(axis))
        np.testing.assert_array_equal(order[order], np.arange(21))  # its own inverse
        assert order[20] == 20  # the centre stays
    np.testing.assert_array_equal(mirrored_crop_point_order(points, None), np.arange(21))
    with pytest.raises(ValueError, match="mirror plane"):
        mirrored_crop_point_order(points + [0.01, 0, 0], 0)


def test_model_points_in_a_mirrored_crop_are_mirrored_unless_the_object_has_a_mirror_plane():
    points = np.array([[0.01, 0.02, 0.03], [-0.04, 0.05, 0.06]])
    np.testing.assert_array_equal(model_points_in_crop(points, None, True), points * [-1.0, 1.0, 1.0])
    assert model_points_in_crop(points, 0, True) is points and model_points_in_crop(points, None, False) is points
