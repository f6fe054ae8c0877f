"""Pairing image and CameraInfo (and depth) by stamp, and counting input frames that never arrive.

The node's own replacement for ``message_filters.ApproximateTimeSynchronizer`` (not
installable with the ROS 2 wheels), with no ROS import so it is tested anywhere. It
also sees what message_filters hides: every image that is evicted without a partner,
so the node's diagnostics can count frames lost *before* the estimator next to
frames it skipped on purpose.

* :class:`ApproximateTimeSync`: one bounded queue per input; when a message arrives,
  the image with the earliest stamp whose every other input has a message within
  ``slop_s`` of it is emitted together with the nearest such messages. Emitting a set
  discards the messages of every queue stamped no later than the emitted ones (they can
  no longer pair: stamps only grow), and a full queue drops its oldest message;
  discarded images are reported.
* :class:`StampGapCounter`: counts images missing from the received sequence by their
  stamps (a camera at a steady rate: an interval of k periods means k - 1 frames lost
  on the way, e.g. overwritten in a keep-last subscription queue while the node was busy).
  An interval longer than ``pause_s`` is a pause of the stream (a camera restarted, a bag
  paused), not a loss.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from hoi_perception.pipeline.image_decoding import stamp_to_ns

IMAGE_INPUT = 0


def message_stamp_ns(message: Any) -> int:
    """The header stamp of a ROS message in integer nanoseconds."""
    return stamp_to_ns(message.header.stamp)


class ApproximateTimeSync:
    """Matches one message of each input whose stamps lie within ``slop_s`` of the image's.

    ``callback(*messages)`` receives a matched set in input order (image first);
    ``on_unmatched(count)`` is told how many images left the queues without a match.
    ``add(index, message)`` is what each subscription callback calls.
    """

    def __init__(self, inputs: int, queue_size: int, slop_s: float, callback: Callable[..., Any],
                 on_unmatched: Callable[[int], Any] = lambda count: None,
                 stamp_ns: Callable[[Any], int] = message_stamp_ns):
        if inputs < 2:
            raise ValueError(f"inputs: expected at least 2 (image and CameraInfo), got {inputs}")
        if queue_size < 1:
            raise ValueError(f"queue_size: expected >= 1, got {queue_size}")
        if not slop_s >= 0.0:
            raise ValueError(f"slop_s: expected >= 0 seconds, got {slop_s}")
        self.queue_size = queue_size
        self.slop_ns = int(round(slop_s * 1e9))
        self._callback = callback
        self._on_unmatched = on_unmatched
        self._stamp_ns = stamp_ns
        self._queues: list[deque[tuple[int, Any]]] = [deque() for _ in range(inputs)]

    def add(self, index: int, message: Any) -> None:
        queue = self._queues[index]
        queue.append((self._stamp_ns(message), message))
        if len(queue) > self.queue_size:
            queue.popleft()
            if index == IMAGE_INPUT:
                self._on_unmatched(1)
        self._emit_matches()

    def pending(self) -> list[int]:
        """Messages waiting per input."""
        return [len(queue) for queue in self._queues]

    def clear(self) -> None:
        for queue in self._queues:
            queue.clear()

    def _emit_matches(self) -> None:
        while True:
            match = self._first_match()
            if match is None:
                return
            positions, messages = match
            unmatched_images = 0
            for index, (queue, position) in enumerate(zip(self._queues, positions)):
                chosen = queue[position]
                # Stamps only grow: what is not newer than the emitted message can no longer pair.
                kept = [entry for entry in queue if entry is not chosen and entry[0] > chosen[0]]
                if index == IMAGE_INPUT:
                    unmatched_images = len(queue) - 1 - len(kept)
                queue.clear()
                queue.extend(kept)
            if unmatched_images:
                self._on_unmatched(unmatched_images)
            self._callback(*messages)

    def _first_match(self) -> tuple[list[int], list[Any]] | None:
        images = self._queues[IMAGE_INPUT]
        for image_position in sorted(range(len(images)), key=lambda i: images[i][0]):
            image_stamp, image = images[image_position]
            positions, messages = [image_position], [image]
            for queue in self._queues[1:]:
                nearest = _nearest(queue, image_stamp)
                if nearest is None or abs(queue[nearest][0] - image_stamp) > self.slop_ns:
                    break
                positions.append(nearest)
                messages.append(queue[nearest][1])
            else:
                return positions, messages
        return None


def _nearest(queue: Sequence[tuple[int, Any]], stamp: int) -> int | None:
    if not queue:
        return None
    return min(range(len(queue)), key=lambda i: abs(queue[i][0] - stamp))


class StampGapCounter:
    """Counts frames missing between received image stamps, at the rate the stamps themselves show.

    The period is the median of the last ``window`` intervals; an interval longer than
    1.5 periods (and at most ``pause_s``) counts ``round(interval / period) - 1`` lost
    frames. Repeated or earlier stamps are counted separately as ``out_of_order`` and do
    not move the reference.
    """

    def __init__(self, window: int = 15, min_intervals: int = 3, pause_s: float = 1.0):
        self._min_intervals = min_intervals
        self._pause_ns = int(pause_s * 1e9)
        self._intervals: deque[int] = deque(maxlen=window)
        self._last: int | None = None
        self.lost = 0
        self.out_of_order = 0

    def add(self, stamp_ns: int) -> int:
        """Record a received stamp; returns the frames this one shows were lost before it."""
        if self._last is not None and stamp_ns <= self._last:
            self.out_of_order += 1
            return 0
        lost = 0
        if self._last is not None and stamp_ns - self._last > self._pause_ns:
            self._intervals.clear()  # a pause: the rate may differ afterwards
        elif self._last is not None:
            interval = stamp_ns - self._last
            if len(self._intervals) >= self._min_intervals:
                period = statistics.median(self._intervals)
                if interval > 1.5 * period:
                    lost = int(round(interval / period)) - 1
            if lost == 0:
                self._intervals.append(interval)
        self._last = stamp_ns
        self.lost += lost
        return lost

    def reset(self) -> None:
        self._intervals.clear()
        self._last = None
        self.lost = 0
        self.out_of_order = 0
