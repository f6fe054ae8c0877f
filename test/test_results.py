import numpy as np
import pytest

from hoi_perception.models.results import HandResult, ObjectResult


def _hand(**overrides):
    values = dict(side="left", pose=np.zeros(48), betas=np.zeros(10), joints_cam=np.ones((21, 3)),
                  vertices_cam=np.zeros((778, 3)), joints2d=np.zeros((21, 2)), box=[0, 0, 10, 10],
                  joint_confidence=np.ones(21), confidence=0.9)
    values.update(overrides)
    return HandResult(**values)


def test_hand_result_converts_and_checks_shapes():
    hand = _hand(joints_cam=np.arange(63, dtype=np.float32).reshape(21, 3))
    assert hand.joints_cam.dtype == np.float64 and hand.box.shape == (4,)
    np.testing.assert_array_equal(hand.root_cam, [0, 1, 2])
    with pytest.raises(ValueError, match="HandResult.pose"):
        _hand(pose=np.zeros(45))
    with pytest.raises(ValueError, match="side"):
        _hand(side="both")


def test_object_result_failure_is_nan_with_reason():
    ok = ObjectResult("mustard", np.eye(3), [0, 0, 0.5], np.zeros((21, 2)), [0, 0, 5, 5], 120, 0.8, True)
    np.testing.assert_array_equal(ok.pose_matrix[:3, 3], [0, 0, 0.5])
    assert ok.pose_matrix[3, 3] == 1.0
    failed = ObjectResult("mustard", np.full((3, 3), np.nan), np.full(3, np.nan), np.zeros((21, 2)), [0, 0, 5, 5],
                          0, 0.0, False, "too few confident votes")
    assert not failed.success
    with pytest.raises(ValueError, match="failure_reason"):
        ObjectResult("mustard", np.full((3, 3), np.nan), np.full(3, np.nan), np.zeros((21, 2)), [0, 0, 5, 5],
                     0, 0.0, False)
    with pytest.raises(ValueError, match="finite"):
        ObjectResult("mustard", np.full((3, 3), np.nan), np.zeros(3), np.zeros((21, 2)), [0, 0, 5, 5], 0, 0.0, True)
    with pytest.raises(ValueError, match="control_points_2d"):
        ObjectResult("mustard", np.eye(3), np.zeros(3), np.zeros((8, 2)), [0, 0, 5, 5], 0, 0.0, True)
