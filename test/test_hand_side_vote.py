"""benchmarks/hand_side_vote.py: which side of a hand faces the camera."""

from __future__ import annotations

import numpy as np
from helpers import load_benchmark  # test/ is on sys.path under pytest

script = load_benchmark("hand_side_vote")


def upright_right_palm(depth: float = 0.4) -> np.ndarray:
    """A right hand 0.4 m ahead, fingers up (image -y), palm towards the camera: seen so, its thumb
    and index are on the image's right (+x), its pinky on the left."""
    joints = np.zeros((21, 3))
    joints[:, 2] = depth
    joints[script.INDEX_MCP, :2] = [0.02, -0.08]
    joints[script.PINKY_MCP, :2] = [-0.03, -0.07]
    return joints


def test_a_right_palm_seen_from_the_front_faces_the_camera_and_from_behind_does_not():
    joints = upright_right_palm()
    assert script.palm_faces_camera(joints, "right")
    turned = joints.copy()  # half a turn about the vertical through the wrist: the back towards the camera
    turned[:, 0] *= -1.0
    turned[:, 2] = 2 * joints[0, 2] - joints[:, 2]
    assert not script.palm_faces_camera(turned, "right")


def test_a_left_hand_is_the_mirror_image_of_a_right_one():
    joints = upright_right_palm()
    mirrored = joints * np.array([-1.0, 1.0, 1.0])  # the same hand seen in a mirror: a left hand, palm still here
    assert script.palm_faces_camera(mirrored, "left")
    assert not script.palm_faces_camera(mirrored, "right")
    rng = np.random.default_rng(0)
    for _ in range(20):  # any pose: mirroring keeps which side faces the camera
        random = rng.normal(size=(21, 3)) * 0.05 + np.array([0.0, 0.0, 0.5])
        assert script.palm_faces_camera(random, "right") == script.palm_faces_camera(
            random * np.array([-1.0, 1.0, 1.0]), "left")
