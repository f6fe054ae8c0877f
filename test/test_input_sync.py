"""The node's own approximate-time pairing of image and CameraInfo, and the stamp-gap count."""

import pytest

from hoi_perception.ros.input_sync import ApproximateTimeSync, StampGapCounter

MS = 1_000_000


def make_sync(inputs=2, queue_size=10, slop_s=0.02):
    matched, unmatched = [], []
    sync = ApproximateTimeSync(inputs, queue_size, slop_s, lambda *msgs: matched.append(msgs),
                               on_unmatched=unmatched.append, stamp_ns=lambda msg: msg[1])
    return sync, matched, unmatched


def msg(name, stamp_ms):
    return (name, int(stamp_ms * MS))


def test_pairs_messages_whose_stamps_differ_by_at_most_the_slop():
    sync, matched, unmatched = make_sync(slop_s=0.02)
    sync.add(0, msg("image", 100))
    sync.add(1, msg("info", 125))  # 25 ms apart: not a pair
    assert matched == []
    sync.add(1, msg("info", 115))  # 15 ms apart: the nearest one within the slop
    assert matched == [(msg("image", 100), msg("info", 115))]
    assert sync.pending() == [0, 1] and unmatched == []  # the later CameraInfo (125 ms) may still pair


def test_matches_in_either_arrival_order_and_picks_the_nearest_partner():
    sync, matched, _ = make_sync(slop_s=0.05)
    sync.add(1, msg("info", 90))
    sync.add(1, msg("info", 98))
    sync.add(1, msg("info", 130))
    sync.add(0, msg("image", 100))
    assert matched == [(msg("image", 100), msg("info", 98))]
    assert sync.pending() == [0, 1]  # 90 ms is older than the match: gone; 130 ms waits


def test_an_image_passed_over_by_a_later_match_is_reported_unmatched():
    sync, matched, unmatched = make_sync()
    sync.add(0, msg("image", 100))  # its CameraInfo is lost
    sync.add(0, msg("image", 133))
    sync.add(1, msg("info", 133))
    assert matched == [(msg("image", 133), msg("info", 133))]
    assert unmatched == [1] and sync.pending() == [0, 0]


def test_a_full_queue_drops_its_oldest_message():
    sync, matched, unmatched = make_sync(queue_size=3)
    for stamp in (0, 33, 66, 100):
        sync.add(0, msg("image", stamp))
    assert sync.pending() == [3, 0] and unmatched == [1]
    sync.add(1, msg("info", 0))  # its image was evicted: nothing within the slop
    assert matched == []
    sync.add(1, msg("info", 33))
    assert matched == [(msg("image", 33), msg("info", 33))]


def test_three_inputs_need_all_three_within_the_slop():
    sync, matched, _ = make_sync(inputs=3, slop_s=0.01)
    sync.add(0, msg("image", 100))
    sync.add(1, msg("info", 100))
    sync.add(2, msg("depth", 120))
    assert matched == []
    sync.add(2, msg("depth", 105))
    assert matched == [(msg("image", 100), msg("info", 100), msg("depth", 105))]


def test_settings_are_checked():
    with pytest.raises(ValueError, match="queue_size"):
        make_sync(queue_size=0)
    with pytest.raises(ValueError, match="inputs"):
        make_sync(inputs=1)


def test_stamp_gaps_count_missing_frames_at_the_observed_rate():
    counter = StampGapCounter()
    period = 33_333_333
    for i in range(5):
        assert counter.add(i * period) == 0
    assert counter.add(9 * period) == 4  # frames 5-8 missing
    assert counter.add(10 * period) == 0
    assert counter.add(10 * period) == 0 and counter.add(8 * period) == 0  # repeated, earlier
    assert (counter.lost, counter.out_of_order) == (4, 2)
    assert counter.add(10 * period + 5_000_000_000) == 0  # a 5 s pause is not a loss
    assert counter.add(11 * period + 5_000_000_000) == 0
    counter.reset()
    assert (counter.lost, counter.out_of_order) == (0, 0)


def test_stamp_gaps_tolerate_jitter():
    counter = StampGapCounter()
    stamps = [0, 30, 70, 100, 131, 170, 198, 236, 265]  # a 30 fps camera with +-5 ms jitter
    assert sum(counter.add(s * MS) for s in stamps) == 0
