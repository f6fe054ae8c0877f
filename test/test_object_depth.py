import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hoi_perception.config import ConfigError, load_config
from hoi_perception.geometry.camera import box_from_points, project
from hoi_perception.geometry.object_depth import ObjectDepthConfig, box_depth_scale
from hoi_perception.objects.models import load_object_library

K = np.array([[615.0, 0.0, 320.0], [0.0, 612.0, 241.0], [0.0, 0.0, 1.0]])
IMAGE_SIZE = (640, 480)


@pytest.fixture(scope="module")
def mug():
    return load_object_library().get("mug")


def _pose(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rotation = Rotation.random(random_state=seed).as_matrix()
    return rotation, np.array([0.06, -0.04, 0.45])


def _silhouette_box(vertices: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    box = box_from_points(project(vertices @ rotation.T + translation, K))
    return np.clip(box, 0.0, np.tile(IMAGE_SIZE, 2))


@pytest.mark.parametrize("pnp_factor", [0.7, 1.0, 1.3, 2.0])
def test_the_box_gives_back_the_depth_pnp_got_wrong(mug, pnp_factor):
    """PnP put the object pnp_factor as far along its ray as it is; the box's scale undoes it."""
    for seed in range(3):
        rotation, truth = _pose(seed)
        box = _silhouette_box(mug.vertices, rotation, truth)
        found = box_depth_scale(mug.vertices, rotation, truth * pnp_factor, box, K, IMAGE_SIZE)
        assert found.success and found.reason == ""
        assert found.scale == pytest.approx(1.0 / pnp_factor, rel=1e-3)
        np.testing.assert_allclose(truth * pnp_factor * found.scale, truth, atol=5e-4)


def test_a_box_cut_by_the_image_edge_is_matched_by_a_projection_cut_the_same_way(mug):
    rotation, _ = _pose(1)
    truth = np.array([-0.24, 0.0, 0.5])  # the mug's left half is out of view
    box = _silhouette_box(mug.vertices, rotation, truth)
    assert box[0] == 0.0
    found = box_depth_scale(mug.vertices, rotation, truth * 1.25, box, K, IMAGE_SIZE)
    np.testing.assert_allclose(truth * 1.25 * found.scale, truth, atol=2e-3)
    unclipped = box_depth_scale(mug.vertices, rotation, truth * 1.25, box, K, None)
    assert unclipped.scale * 1.25 > 1.2  # ignoring the cut puts it 20 % too far


def test_a_box_that_contradicts_the_votes_beyond_the_allowed_range_changes_nothing(mug):
    rotation, truth = _pose(2)
    box = _silhouette_box(mug.vertices, rotation, truth)
    centre, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 6  # a third of the size: 3x farther
    small = np.concatenate([centre - half, centre + half])
    found = box_depth_scale(mug.vertices, rotation, truth, small, K, IMAGE_SIZE)
    assert not found.success and found.scale == 1.0 and "smaller than the object projects even 1.5x farther" \
        in found.reason
    found = box_depth_scale(mug.vertices, rotation, truth * 3.0, box, K, IMAGE_SIZE)  # asks for 1/3
    assert not found.success and "larger than the object projects even 2.5x nearer" in found.reason
    wider = box_depth_scale(mug.vertices, rotation, truth * 3.0, box, K, IMAGE_SIZE,
                            ObjectDepthConfig(min_scale=0.2, max_scale=1.5))
    assert wider.success and wider.scale == pytest.approx(1 / 3, rel=1e-3)


@pytest.mark.parametrize("box, translation, message", [
    ([10.0, 10.0, 5.0, 40.0], [0.0, 0.0, 0.5], "not a finite box"),
    ([10.0, 10.0, np.nan, 40.0], [0.0, 0.0, 0.5], "not a finite box"),
    ([10.0, 10.0, 50.0, 40.0], [0.0, 0.0, -0.5], "not in front of the camera"),
    ([10.0, 10.0, 50.0, 40.0], [0.0, 0.0, 0.02], "behind the camera"),
])
def test_unusable_boxes_and_poses_are_reported(mug, box, translation, message):
    found = box_depth_scale(mug.vertices, np.eye(3), np.array(translation), np.array(box), K, IMAGE_SIZE)
    assert not found.success and found.scale == 1.0 and message in found.reason


@pytest.mark.parametrize("values", [{"min_scale": 1.2}, {"max_scale": 0.9}, {"min_scale": 0.0},
                                    {"max_scale": float("inf")}])
def test_the_scale_range_is_validated(values):
    with pytest.raises(ConfigError, match="need 0 < min_scale < 1 < max_scale"):
        load_config(ObjectDepthConfig, values)
