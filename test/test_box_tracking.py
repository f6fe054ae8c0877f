"""BoxTracker: when the detector runs, how boxes are carried between frames, track ids."""

from __future__ import annotations

import numpy as np
import pytest

from hoi_perception.config import ConfigError, load_config
from hoi_perception.models.detection_head import Detection, FrameDetections
from hoi_perception.pipeline.tracking import BoxTracker, TrackingConfig, enlarge_box, visible_fraction


def detections(right=None, left=None, obj=None) -> FrameDetections:
    def make(label, box):
        return None if box is None else Detection(label, np.asarray(box, dtype=np.float64), 0.8)
    return FrameDetections(make("right_hand", right), make("left_hand", left), make("object", obj))


def test_box_helpers():
    np.testing.assert_allclose(enlarge_box(np.array([10.0, 20.0, 30.0, 60.0]), 0.25), [0, 10, 40, 70])
    assert visible_fraction(np.array([-10.0, 0.0, 10.0, 10.0]), 100, 100) == pytest.approx(0.5)
    assert visible_fraction(np.array([200.0, 0.0, 210.0, 10.0]), 100, 100) == 0.0
    assert visible_fraction(np.array([5.0, 5.0, 5.0, 9.0]), 100, 100) == 0.0


def test_detect_track_redetect_schedule_and_ids():
    tracker = BoxTracker(TrackingConfig(redetect_interval=3, box_margin=0.1), ("right", "left"), True)
    assert tracker.needs_detection()
    assert tracker.update_from_detections(detections(right=[10, 10, 50, 50], obj=[40, 40, 80, 80])) == []
    assert {k: t.track_id for k, t in tracker.tracks.items()} == {"right": 1, "object": 2}
    assert tracker.end_frame() == ("detecting", 0)
    states = []
    for _ in range(2):
        assert not tracker.needs_detection()
        assert tracker.follow("right", np.array([[12.0, 12.0], [52.0, 52.0]]), 0.9, 640, 480)
        states.append(tracker.end_frame())
    assert states == [("tracking", 1), ("tracking", 2)]
    np.testing.assert_allclose(tracker.tracks["right"].box, [8, 8, 56, 56])  # 40 px + 10 % each side
    assert tracker.needs_detection()  # every 3 frames
    # The right hand is found again where it was tracked; the object is gone; a left hand appears.
    ended = tracker.update_from_detections(detections(right=[9, 9, 55, 55], left=[300, 300, 340, 360]))
    assert ended == [2]
    assert {k: t.track_id for k, t in tracker.tracks.items()} == {"right": 1, "left": 3}
    # A re-detection far from the tracked box is another hand: new id.
    assert tracker.update_from_detections(detections(right=[400, 10, 450, 60], left=[300, 300, 340, 360])) == [1]
    assert tracker.tracks["right"].track_id == 4 and tracker.tracks["left"].track_id == 3


@pytest.mark.parametrize("points, confidence, reason", [
    ([[10.0, 10.0], [50.0, 50.0]], 0.1, "confidence 0.10 < 0.20"),
    ([[600.0, 10.0], [700.0, 50.0]], 0.9, "box left the image (40% visible)"),
    ([[20.0, 20.0], [22.0, 21.0]], 0.9, "box shrank below 8 px"),
    ([[np.nan, 1.0]], 0.9, "no finite 2D points to follow"),
])
def test_lost_tracks_trigger_detection_next_frame(points, confidence, reason):
    tracker = BoxTracker(TrackingConfig(redetect_interval=0, box_margin=0.0), ("right",), False)
    tracker.update_from_detections(detections(right=[10, 10, 50, 50], obj=[40, 40, 80, 80]))
    assert set(tracker.tracks) == {"right"}  # objects are not tracked when not asked for
    tracker.end_frame()
    assert not tracker.needs_detection()  # interval 0: only when needed
    assert not tracker.follow("right", np.array(points), confidence, 640, 480)
    assert tracker.lost_reasons == {"right": reason} and tracker.tracks == {}
    assert tracker.end_frame() == ("lost", 1)
    assert tracker.needs_detection()
    tracker.update_from_detections(detections(right=[10, 10, 50, 50]))
    assert tracker.tracks["right"].track_id == 2 and tracker.end_frame() == ("detecting", 0)


def test_small_detections_are_ignored_and_reset_forgets_tracks():
    tracker = BoxTracker(TrackingConfig(min_box_size_px=8.0), ("right", "left"), True)
    tracker.update_from_detections(detections(right=[10, 10, 15, 14], left=[100, 100, 140, 150]))
    assert set(tracker.tracks) == {"left"}
    tracker.reset()
    assert tracker.tracks == {} and tracker.needs_detection() and tracker.frames_since_detection == 0


@pytest.mark.parametrize("key, value, message", [
    ("redetect_interval", -1, "redetect_interval must be >= 0"),
    ("box_margin", 3.0, "box_margin must be in"),
    ("min_hand_confidence", 1.5, "min_hand_confidence must be in"),
    ("min_box_size_px", 0.5, "min_box_size_px must be >= 1"),
])
def test_invalid_tracking_config(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TrackingConfig, {key: value})
