"""Tests for overlay drawing: pixels change where the drawn geometry is, and nowhere else."""

import os

import cv2
import numpy as np
import pytest

from hoi_perception.hand_model.joint_orders import HO3D_PARENTS
from hoi_perception.objects.models import bbox_control_points
from hoi_perception.render.overlay import (
    AXIS_COLORS,
    FINGER_COLORS,
    HO3D_JOINT_COLORS,
    draw_axes,
    draw_box_2d,
    draw_box_3d,
    draw_hand_skeleton,
    draw_mesh,
    draw_object_pose,
    save_png,
)

SIZE = 128
K = np.array([[200.0, 0.0, 64.0], [0.0, 200.0, 64.0], [0.0, 0.0, 1.0]])


def blank():
    return np.zeros((SIZE, SIZE, 3), dtype=np.uint8)


def changed(a, b):
    return np.any(a != b, axis=2)


def assert_drawn_in(pixel, colour):
    """An anti-aliased 1-px line reaches most, not all, of its colour's intensity."""
    pixel, colour = np.asarray(pixel, dtype=float), np.asarray(colour, dtype=float)
    np.testing.assert_allclose(pixel, colour, atol=0.15 * 255)


def hand_joints():
    """A flat 2D hand: wrist at the bottom, five fingers fanning upwards."""
    joints = np.zeros((21, 2))
    joints[0] = (64, 110)
    chains = {13: 16, 1: 17, 4: 18, 10: 19, 7: 20}  # first joint of each finger -> its tip
    for f, (first, tip) in enumerate(chains.items()):
        x = 24 + 20 * f
        for k, j in enumerate((first, first + 1, first + 2, tip)):
            joints[j] = (x, 80 - 18 * k)
    return joints


def test_joint_colours_follow_fingers():
    assert HO3D_JOINT_COLORS[0] == (255, 255, 255)
    for joint in (13, 14, 15, 16):
        assert HO3D_JOINT_COLORS[joint] == FINGER_COLORS[0]  # thumb
    for joint in (1, 2, 3, 17):
        assert HO3D_JOINT_COLORS[joint] == FINGER_COLORS[1]  # index
    for joint in (7, 8, 9, 20):
        assert HO3D_JOINT_COLORS[joint] == FINGER_COLORS[4]  # pinky


def test_skeleton_draws_bones_in_finger_colours():
    image = blank()
    joints = hand_joints()
    out = draw_hand_skeleton(image, joints, thickness=2, radius=2)
    assert not image.any()  # input untouched
    # Midpoint of the index bone 1 -> 2 carries the index colour.
    mid = ((joints[1] + joints[2]) / 2).round().astype(int)
    np.testing.assert_array_equal(out[mid[1], mid[0]], FINGER_COLORS[1])
    # Midpoint of the thumb tip bone 15 -> 16 carries the thumb colour.
    mid = ((joints[15] + joints[16]) / 2).round().astype(int)
    np.testing.assert_array_equal(out[mid[1], mid[0]], FINGER_COLORS[0])
    # The wrist dot is white; a far corner stays black.
    np.testing.assert_array_equal(out[110, 64], (255, 255, 255))
    assert not out[5, 120].any() and not out[120, 5].any()


def test_skeleton_skips_missing_joints_and_checks_shapes():
    joints = hand_joints()
    joints[2] = np.nan
    out = draw_hand_skeleton(blank(), joints)
    mid = ((joints[1] + joints[3]) / 2).round().astype(int)  # bones 1-2 and 2-3 are gone
    assert not out[mid[1], mid[0]].any()
    with pytest.raises(ValueError, match="joints_2d"):
        draw_hand_skeleton(blank(), np.zeros((21, 3)))
    with pytest.raises(ValueError, match="parents"):
        draw_hand_skeleton(blank(), np.zeros((20, 2)))
    with pytest.raises(ValueError, match="joint_colors"):
        draw_hand_skeleton(blank(), np.zeros((2, 2)), parents=[-1, 0])
    out = draw_hand_skeleton(blank(), np.array([[10.0, 10.0], [50.0, 10.0]]), parents=[-1, 0],
                             joint_colors=[(9, 9, 9), (0, 0, 200)])
    np.testing.assert_array_equal(out[10, 30], (0, 0, 200))
    assert len(HO3D_PARENTS) == 21


def test_mesh_overlay_blends_only_inside_the_silhouette():
    image = np.full((SIZE, SIZE, 3), 100, dtype=np.uint8)
    v = np.array([[-0.1, -0.1, 1.0], [0.1, -0.1, 1.0], [0.1, 0.1, 1.0], [-0.1, 0.1, 1.0]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    out = draw_mesh(image, v, faces, K, color=(255, 0, 0), alpha=0.5)
    mask = changed(out, image)
    # u = 200 x + 64 -> [44, 84]: inside pixels change, outside ones do not.
    assert mask[50:79, 50:79].all() and not mask[:40].any() and not mask[:, 90:].any()
    assert out[64, 64, 0] > 100 and out[64, 64, 1] < 100  # towards red
    np.testing.assert_array_equal(draw_mesh(image, v, faces, K, alpha=0.0), image)


def test_object_box_and_axes():
    control = bbox_control_points([-0.05, -0.05, -0.05], [0.05, 0.05, 0.05])
    t = np.array([0.0, 0.0, 1.0])
    out = draw_object_pose(blank(), control, np.eye(3), t, K, color=(0, 255, 255), thickness=1, axes=False)
    # Front face (z = 0.95): corners at 64 +- 200 * 0.05 / 0.95 = 64 +- 10.5; back face at 64 +- 9.5.
    front = 200 * 0.05 / 0.95
    assert out[64, round(64 + front)].any() and out[64, round(64 - front)].any()
    assert not out[64, 64].any()  # box centre: no edge there
    assert not out[5, 5].any()
    with_axes = draw_object_pose(blank(), control, np.eye(3), t, K, thickness=1)
    # The x axis (red) runs right from the centre for 0.05 m -> 10 px.
    assert_drawn_in(with_axes[64, 69], AXIS_COLORS[0])
    out = draw_axes(blank(), np.eye(3), t, K, length=0.1)
    assert np.all(out[66:80, 64] == AXIS_COLORS[1])  # y axis points down in the image


def test_box_behind_camera_draws_nothing_and_crossing_box_is_clipped():
    control = bbox_control_points([-0.05, -0.05, -0.05], [0.05, 0.05, 0.05])
    assert not draw_object_pose(blank(), control, np.eye(3), [0, 0, -1.0], K).any()
    # A long box from z = -0.5 to 0.5 straddles the camera plane: its back face (z = 0.5)
    # is drawn at 64 +- 20 px, and the edges along z up to where they leave the image.
    long_box = bbox_control_points([-0.05, -0.05, -0.5], [0.05, 0.05, 0.5])[:8]
    out = draw_box_3d(blank(), long_box, K, thickness=1)
    assert_drawn_in(out[64, 84], (0, 255, 255))
    assert_drawn_in(out[114, 114], (0, 255, 255))  # z edge at depth 0.2: u = v = 64 + 200 * 0.05 / 0.2
    assert not out[64, 64].any()
    with pytest.raises(ValueError, match="corners_cam"):
        draw_box_3d(blank(), np.zeros((4, 3)), K)


def test_box_2d_with_label():
    out = draw_box_2d(blank(), (30, 40, 90, 100), label="mug 0.93", color=(0, 255, 0), thickness=1)
    assert_drawn_in(out[70, 30], (0, 255, 0))  # left edge
    assert not out[70, 60].any()  # inside stays clear
    tab = out[26:40, 31:80]  # label tab above the box: green with dark text
    green = np.all(tab == (0, 255, 0), axis=2).mean()
    assert 0.5 < green < 0.97 and np.all(tab[:, :, 0] == 0)
    top = draw_box_2d(blank(), (30, 0, 90, 60), label="x")  # tab moves inside at the top edge
    assert top[5, 32].any()
    with pytest.raises(ValueError, match="box"):
        draw_box_2d(blank(), (90, 0, 30, 60))


def test_save_png_round_trip_and_atomicity(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    path = tmp_path / "sub" / "frame.png"
    save_png(path, image)
    loaded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    np.testing.assert_array_equal(loaded, image)  # RGB order preserved
    assert os.listdir(path.parent) == ["frame.png"]  # no temporary files left behind
    with pytest.raises(ValueError, match="png"):
        save_png(tmp_path / "frame.jpg", image)
    with pytest.raises(ValueError, match="image"):
        save_png(tmp_path / "f.png", image.astype(np.float32))


def test_bad_image_rejected():
    with pytest.raises(ValueError, match="image"):
        draw_hand_skeleton(np.zeros((4, 4)), hand_joints())
