"""The crop network's side vote (pipeline/hand_side.py): which crop of a hand, as it is or
mirrored, the network is more confident in, and how detections are relabelled by it."""

from __future__ import annotations

import numpy as np
import pytest

from hoi_perception.models.detection_head import Detection, FrameDetections
from hoi_perception.pipeline.hand_side import SideVote, vote_hand_sides, with_voted_sides

SIZE = 32
EXPANSION = 1.5


def brightness_runner(calls: list[int]):
    """A stand-in crop network whose joint confidence is the mean brightness of the crop's left
    half: a hand bright on its left side 'looks right-handed' as it is, and not once mirrored."""

    def run(inputs):
        crops = inputs["crop"]
        assert crops.shape[1:] == (3, SIZE, SIZE) and inputs["hand_box"].shape == (len(crops), 4)
        calls.append(len(crops))
        left_half = crops[:, :, :, : SIZE // 2].mean(axis=(1, 2, 3))
        return {"hand_joint_confidence": np.repeat(left_half[:, None], 21, axis=1)}

    return run


def _image_with_hand(box, bright_left: bool) -> np.ndarray:
    image = np.zeros((120, 160, 3), np.uint8)
    x0, y0, x1, y1 = (int(v) for v in box)
    middle = (x0 + x1) // 2
    if bright_left:
        image[y0:y1, x0:middle] = 255
    else:
        image[y0:y1, middle:x1] = 255
    return image


@pytest.mark.parametrize("bright_left, side", [(True, "right"), (False, "left")])
def test_the_vote_follows_the_crop_the_network_trusts(bright_left, side):
    box = np.array([40.0, 30.0, 80.0, 90.0])
    calls: list[int] = []
    votes = vote_hand_sides(_image_with_hand(box, bright_left), [box], None, brightness_runner(calls), SIZE,
                            EXPANSION)
    assert calls == [2]  # both crops of the hand in one batch
    assert len(votes) == 1 and votes[0].side == side
    # The crop's left half holds the bright half of the hand as it is, and none of it mirrored.
    trusted, other = votes[0].confidence(side), votes[0].confidence("left" if side == "right" else "right")
    assert trusted > 0.2 and other == 0.0


def test_no_hand_runs_nothing():
    calls: list[int] = []
    assert vote_hand_sides(np.zeros((10, 10, 3), np.uint8), [], None, brightness_runner(calls), SIZE, 1.5) == []
    detections = FrameDetections(None, None, Detection("object", np.array([1.0, 1, 5, 5]), 0.9))
    assert with_voted_sides(detections, np.zeros((10, 10, 3), np.uint8), brightness_runner(calls), SIZE,
                            1.5) is detections
    assert calls == []


def test_a_hand_the_detector_called_left_is_relabelled_right():
    box = np.array([40.0, 30.0, 80.0, 90.0])
    obj = Detection("object", np.array([60.0, 50, 100, 100]), 0.7)
    detections = FrameDetections(right_hand=None, left_hand=Detection("left_hand", box, 0.4), object=obj)
    relabelled = with_voted_sides(detections, _image_with_hand(box, True), brightness_runner([]), SIZE, EXPANSION)
    assert relabelled.left_hand is None and relabelled.right_hand is not None
    assert relabelled.right_hand.label == "right_hand" and relabelled.right_hand.score == 0.4
    np.testing.assert_array_equal(relabelled.right_hand.box, box)
    assert relabelled.object is obj


def test_two_hands_take_the_pair_of_sides_the_network_trusts_more(monkeypatch):
    """Both hands may prefer one side; the pair goes to the assignment with the larger summed confidence."""
    first, second = np.array([0.0, 0, 10, 10]), np.array([20.0, 0, 30, 10])
    detections = FrameDetections(Detection("right_hand", first, 0.5), Detection("left_hand", second, 0.5), None)
    votes = [SideVote(right_confidence=0.9, left_confidence=0.8), SideVote(right_confidence=0.7, left_confidence=0.1)]
    monkeypatch.setattr("hoi_perception.pipeline.hand_side.vote_hand_sides", lambda *args: votes)
    # as detected: 0.9 + 0.1 = 1.0; swapped: 0.8 + 0.7 = 1.5 -> the first hand is the left one
    result = with_voted_sides(detections, np.zeros((40, 40, 3), np.uint8), brightness_runner([]), SIZE, EXPANSION)
    np.testing.assert_array_equal(result.left_hand.box, first)
    np.testing.assert_array_equal(result.right_hand.box, second)
    assert (result.right_hand.label, result.left_hand.label) == ("right_hand", "left_hand")


def test_a_runner_with_the_wrong_row_count_is_an_error():
    box = np.array([40.0, 30.0, 80.0, 90.0])

    def run(inputs):
        return {"hand_joint_confidence": np.ones((1, 21))}

    with pytest.raises(ValueError, match="expected 2 rows"):
        vote_hand_sides(_image_with_hand(box, True), [box], None, run, SIZE, EXPANSION)


def test_a_side_head_decides_over_the_joint_confidence():
    """With the side head's logit among the outputs, the vote is its probability; the joint
    confidence (here favouring the other side) is not asked."""
    box = np.array([40.0, 30.0, 80.0, 90.0])

    def run(inputs):
        return {"hand_joint_confidence": np.array([[0.9] * 21, [0.1] * 21]),
                "hand_side_logit": np.array([-2.0, 1.0])}  # as it is: not a right hand; mirrored: one

    (vote,) = vote_hand_sides(_image_with_hand(box, True), [box], None, run, SIZE, EXPANSION)
    assert vote.side == "left"
    assert vote.right_confidence == pytest.approx(1 / (1 + np.exp(2.0)))
    assert vote.left_confidence == pytest.approx(1 / (1 + np.exp(-1.0)))
