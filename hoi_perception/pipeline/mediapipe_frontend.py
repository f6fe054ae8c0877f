"""The estimator's hand stage with ``hand_frontend: mediapipe``: MediaPipe landmarks -> MANO -> camera frame.

Per frame, for each hand MediaPipe Hands finds (:mod:`hoi_perception.frontends.mediapipe_hands`,
which also tracks the hands between frames):

1. the 21 image landmarks become the hand's 2D joints (HO-3D order), its box the box around
   them (this frame's evidence, like a detection);
2. the world landmarks (root-relative, metres, camera axes) are fitted by the hand layer
   (:mod:`hoi_perception.frontends.mano_fit`), warm-started from the track's previous fit,
   with the track's shape held after its first frames. Left hands are fitted as mirrored
   right hands, the convention of the whole pipeline (one right-hand MANO layer);
3. the camera-frame translation from the 2D joints and the fitted joints (``locate_hand``,
   refined by depth when given).

One hand per side (the most certain side score wins); a side's track id lasts while
MediaPipe follows that hand from frame to frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hoi_perception.frontends.mano_fit import HandShapeTrack, ManoFitConfig, ManoFitter
from hoi_perception.frontends.mediapipe_hands import HandLandmarks, MediaPipeHands
from hoi_perception.geometry.hand_translation import HandTranslationConfig, locate_hand
from hoi_perception.geometry.mirror import mirror_axis_angle, mirror_points_3d
from hoi_perception.hand_model.joint_orders import simple_to_ho3d
from hoi_perception.hand_model.mano import HandModel
from hoi_perception.pipeline.results import HandEstimate
from hoi_perception.pipeline.tracking import Track


@dataclass
class FrontendHandEstimate:
    """One hand from the front-end before gates and filter (camera frame; a left hand's pose is
    the mirrored right-hand pose, as the network path reports it)."""

    hand: HandEstimate
    landmarks: HandLandmarks
    fit_rms_m: float

    @property
    def track(self) -> Track:
        return self.hand.track


@dataclass
class _SideTrack:
    track_id: int
    shape: HandShapeTrack


class MediaPipeHandStage:
    """Hands from MediaPipe, fitted and placed in the camera frame; keeps one track per side.

    ``new_track_id`` hands out ids unique among all of the estimator's tracks.
    """

    def __init__(self, frontend: MediaPipeHands, hand_model: HandModel, hand_sides: tuple[str, ...],
                 fit_config: ManoFitConfig, translation_config: HandTranslationConfig,
                 new_track_id: Callable[[], int]) -> None:
        if hand_model.side != "right":
            raise ValueError("MediaPipeHandStage fits left hands as mirrored right hands: pass the right hand model")
        self.frontend = frontend
        self.fitter = ManoFitter(hand_model, fit_config)
        self.hand_sides = hand_sides
        self.fit_config = fit_config
        self.translation_config = translation_config
        self.new_track_id = new_track_id
        self._tracks: dict[str, _SideTrack] = {}

    def reset(self) -> list[int]:
        """Forget every hand; returns the ended track ids."""
        ended = [t.track_id for t in self._tracks.values()]
        self._tracks.clear()
        self.frontend.reset()
        return ended

    def track_hands(self, image: np.ndarray,
                    timings: dict[str, float]) -> tuple[list[tuple[Track, HandLandmarks]], list[int]]:
        """This frame's hands (at most one per side) as tracks with their landmarks, and the ids of the
        tracks that ended; adds the front-end's milliseconds to ``timings``."""
        result = self.frontend.process(image)
        if result.timings.palm_detection:
            timings["palm_detection"] = result.timings.palm_detection * 1000.0
        timings["landmarks"] = result.timings.landmarks * 1000.0
        by_side: dict[str, HandLandmarks] = {}
        for hand in result.hands:
            if hand.side in self.hand_sides and (hand.side not in by_side
                                                 or hand.side_score > by_side[hand.side].side_score):
                by_side[hand.side] = hand
        ended = []
        for side in list(self._tracks):
            found = by_side.get(side)
            # A hand found by the palm detector again is a new track (MediaPipe had lost it).
            if found is None or found.from_palm:
                ended.append(self._tracks.pop(side).track_id)
        tracked = []
        for side, hand in by_side.items():
            if side not in self._tracks:
                self._tracks[side] = _SideTrack(self.new_track_id(), HandShapeTrack(self.fit_config.shape_frames))
            xy = hand.image_landmarks[:, :2]
            box = np.concatenate([xy.min(0), xy.max(0)])
            tracked.append((Track(side, self._tracks[side].track_id, box, hand.presence,  # type: ignore[arg-type]
                                  box_detected=True), hand))
        return tracked, ended

    def process(self, image: np.ndarray, K: np.ndarray, depth: np.ndarray | None, depth_scale: float,  # noqa: N803
                timings: dict[str, float]) -> tuple[list[FrontendHandEstimate], list[int]]:
        """This frame's hands, fitted and placed, and the ids of the tracks that ended (see :meth:`track_hands`)."""
        tracked, ended = self.track_hands(image, timings)
        estimates = [self._estimate(track, hand, K, depth, depth_scale, image.shape[1::-1], timings)
                     for track, hand in tracked]
        return estimates, ended

    def _estimate(self, track: Track, hand: HandLandmarks, K: np.ndarray,  # noqa: N803
                  depth: np.ndarray | None, depth_scale: float, image_size: tuple[int, int],
                  timings: dict[str, float]) -> FrontendHandEstimate:
        start = time.perf_counter()
        joints2d = simple_to_ho3d(hand.image_landmarks[:, :2])
        world = simple_to_ho3d(hand.world_landmarks)
        mirrored = track.key == "left"
        shape = self._tracks[track.key].shape
        fit = shape.fit(self.fitter, mirror_points_3d(world) if mirrored else world)
        joints_rel, vertices_rel, pose = fit.joints, fit.vertices, fit.pose
        if mirrored:
            joints_rel, vertices_rel, pose = mirror_points_3d(joints_rel), mirror_points_3d(vertices_rel), \
                mirror_axis_angle(pose)
        timings["mano_fit"] = timings.get("mano_fit", 0.0) + (time.perf_counter() - start) * 1000.0
        start = time.perf_counter()
        confidence = np.full(len(joints2d), hand.presence)
        located = locate_hand(joints2d, joints_rel, vertices_rel, None, K, confidence, depth=depth,
                              depth_scale=depth_scale, image_size=image_size, config=self.translation_config)
        timings["translation"] = timings.get("translation", 0.0) + (time.perf_counter() - start) * 1000.0
        estimate = HandEstimate(track, track.box.copy(), joints2d, joints_rel, vertices_rel, pose, fit.betas,
                                confidence, located.translation if located.success else None, located.reason)
        return FrontendHandEstimate(estimate, hand, fit.rms_m)
