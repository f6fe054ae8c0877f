"""The MediaPipe hand front-end on real camera footage (test/data/real_hand, Apache-2.0, see its
README): ``hoi-perception run --video FILE --hand-frontend mediapipe`` publishes the hand with
its mesh marker, and the projected joints lie on the hand. Skipped where the MediaPipe model
files are not installed; the skin check itself runs everywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import MEDIAPIPE_MODEL_DIR, load_benchmark, needs_mediapipe_models  # test/ is on sys.path under pytest

from hoi_perception.bag_io import BagReader
from hoi_perception.pipeline.video import run_main

VIDEO = Path(__file__).parent / "data" / "real_hand" / "open_hand_640x360.mp4"
real_video = load_benchmark("real_video")


def test_video_is_the_documented_file():
    import hashlib

    readme = (VIDEO.parent / "README.md").read_text()
    assert hashlib.sha256(VIDEO.read_bytes()).hexdigest() in readme
    assert "Apache License" in (VIDEO.parent / "LICENSE").read_text()


def test_fraction_on_mask_counts_pixels_and_treats_outside_as_off():
    mask = np.zeros((10, 20), bool)
    mask[2:5, 3:8] = True
    points = np.array([[3.0, 2.0], [7.9, 4.9], [8.0, 4.0], [-1.0, 3.0], [25.0, 3.0]])
    assert real_video.fraction_on_mask(points, mask) == pytest.approx(2 / 5)


def test_skin_mask_finds_skin_tones_not_grey_or_white():
    image = np.full((40, 60, 3), 200, np.uint8)  # light grey
    image[10:20, 10:20] = (224, 172, 150)  # a light skin tone
    image[25:35, 40:50] = (141, 85, 36)  # a dark skin tone
    mask = real_video.skin_mask(image)
    assert mask[15, 15] and mask[30, 45]
    grow = real_video.SKIN_GROW_PX
    assert not mask[15, 20 + grow + 1] and not mask[2, 55]


@pytest.fixture(scope="module")
def mediapipe_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "overlay.mp4"
    bag = out.with_name("bag")
    summary = run_main(video=VIDEO, out=out, bag=bag, overrides=["hand_frontend=mediapipe"])
    return summary, bag


@needs_mediapipe_models
def test_run_publishes_the_real_hand_with_its_mesh(mediapipe_run):
    summary, bag = mediapipe_run
    assert summary.frames == summary.processed == 202
    assert summary.hand_frames >= 0.8 * summary.frames
    reader = BagReader(bag)
    meshes = [reader.deserialize(m) for m in reader.messages(["/hoi_perception/hand_mesh"])]
    with_mesh = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in meshes if m.action == 0 and len(m.points)}
    assert len(with_mesh) >= 0.8 * summary.frames


@needs_mediapipe_models
def test_projected_joints_lie_on_the_real_hand():
    from hoi_perception.pipeline.config import DEFAULT_PERCEPTION_CONFIG, load_estimator_config
    from hoi_perception.pipeline.estimator import Estimator

    frames, fps = real_video.read_video(VIDEO)
    frames = frames[::4]  # every 4th frame: the hand is tracked across the gaps as across fast motion
    K = real_video.intrinsics_from_fov(640, 360)
    estimator = Estimator(load_estimator_config(DEFAULT_PERCEPTION_CONFIG, ["hand_frontend=mediapipe"]))
    summary = real_video.summarize(real_video.run_front_end(estimator, frames, fps / 4, K)["records"])
    assert summary["published"] >= 0.8 * len(frames)
    assert summary["on_skin_mean"] >= 0.9 and summary["on_skin_p5"] >= 0.75
    assert summary["beside_on_skin_mean"] <= 0.4  # the check can fail: beside the hand is mostly not skin


@needs_mediapipe_models
@pytest.mark.parametrize("interval", [1, 5])
def test_palm_detector_looks_for_a_second_hand_every_palm_interval_frames(interval):
    from hoi_perception.frontends.mediapipe_hands import MediaPipeHandsConfig, create_mediapipe_hands

    frames, _ = real_video.read_video(VIDEO)
    hands = create_mediapipe_hands(MediaPipeHandsConfig(model_dir=MEDIAPIPE_MODEL_DIR, num_hands=2,
                                                        palm_interval=interval))
    ran, tracked = [], []
    for rgb in frames[:40]:
        tracked.append(bool(hands._tracked))
        result = hands.process(rgb)
        ran.append(result.timings.palm_detection > 0)
        assert len(result.hands) == 1  # one real hand in view throughout
    assert not tracked[0] and all(tracked[1:]) and ran[0]
    assert sum(ran[1:]) == len(range(interval, 40, interval))  # with the hand tracked: every interval-th frame


HAS_ONNX_COPIES = MEDIAPIPE_MODEL_DIR is not None and (MEDIAPIPE_MODEL_DIR / "onnx_conversion.json").is_file()


@needs_mediapipe_models
@pytest.mark.skipif(not HAS_ONNX_COPIES, reason="no ONNX copies of the MediaPipe models (hoi-perception "
                    "convert-mediapipe-models needs tf2onnx and tensorflow)")
def test_onnx_copies_track_the_real_hand_as_litert_does():
    from hoi_perception.frontends import mediapipe_models as mm
    from hoi_perception.frontends.mediapipe_hands import MediaPipeHandsConfig, create_mediapipe_hands

    for model in mm.PINNED_MODELS:
        error = mm.conversion_error(mm.model_path(model, MEDIAPIPE_MODEL_DIR),
                                    mm.onnx_model_path(model, MEDIAPIPE_MODEL_DIR))
        assert error < mm.ONNX_TOLERANCE
    frames, _ = real_video.read_video(VIDEO)
    litert, onnx = (create_mediapipe_hands(MediaPipeHandsConfig(model_dir=MEDIAPIPE_MODEL_DIR, engine=engine))
                    for engine in ("litert", "onnxruntime"))
    palms_litert, palms_onnx = litert.detect_palms(frames[60]), onnx.detect_palms(frames[60])
    assert len(palms_litert) == len(palms_onnx) == 1
    np.testing.assert_allclose(palms_onnx[0].keypoints, palms_litert[0].keypoints, atol=0.05)
    for rgb in frames[:60:3]:
        regions = list(litert._tracked)  # the same crop for both runtimes
        hands = litert.process(rgb).hands
        assert len(hands) == 1
        if regions:
            again = onnx.landmarks_in(rgb, regions[0], from_palm=False)
            np.testing.assert_allclose(again.image_landmarks, hands[0].image_landmarks, atol=0.05)
            np.testing.assert_allclose(again.world_landmarks, hands[0].world_landmarks, atol=1e-4)
            assert again.side == hands[0].side
