"""run: intrinsics files and field-of-view fallback, overlay video and bag output, unreadable sources."""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
from helpers import write_tiny_checkpoint
from rosbags.highlevel import AnyReader
from scenes import HEIGHT, WIDTH, K, build_scene, coordinate_image, make_estimator

from hoi_perception.pipeline.video import (
    VideoSourceError,
    fit_intrinsics,
    intrinsics_from_fov,
    load_intrinsics,
    run_estimator,
    run_main,
)

CAMERA_INFO_YAML = """image_width: 640
image_height: 480
camera_name: webcam
camera_matrix: {rows: 3, cols: 3, data: [600.0, 0.0, 320.5, 0.0, 601.0, 240.5, 0.0, 0.0, 1.0]}
distortion_model: plumb_bob
distortion_coefficients: {rows: 1, cols: 5, data: [0, 0, 0, 0, 0]}
"""


@pytest.fixture(scope="module")
def scene():
    return build_scene()


def test_intrinsics_from_camera_info_yaml_and_json(tmp_path):
    (tmp_path / "cam.yaml").write_text(CAMERA_INFO_YAML)
    K_yaml, width, height = load_intrinsics(tmp_path / "cam.yaml")
    assert (width, height) == (640, 480) and K_yaml[0, 0] == 600.0 and K_yaml[1, 2] == 240.5
    (tmp_path / "cam.json").write_text(json.dumps({"image_width": 640, "image_height": 480, "camera_matrix": {
        "rows": 3, "cols": 3, "data": K_yaml.reshape(-1).tolist()}}))
    np.testing.assert_array_equal(load_intrinsics(tmp_path / "cam.json")[0], K_yaml)
    np.testing.assert_allclose(fit_intrinsics(K_yaml, (640, 480), (320, 240))[:2], K_yaml[:2] / 2)
    with pytest.raises(ValueError, match="another aspect ratio"):
        fit_intrinsics(K_yaml, (640, 480), (640, 360))
    (tmp_path / "bad.yaml").write_text("image_width: 640\nimage_height: 480\ncamera_matrix: {rows: 3, cols: 3, "
                                       "data: [0, 0, 0, 0, 0, 0, 0, 0, 0]}\n")
    with pytest.raises(ValueError, match="all zeros"):
        load_intrinsics(tmp_path / "bad.yaml")
    (tmp_path / "short.yaml").write_text("image_width: 640\n")
    with pytest.raises(ValueError, match=r"lacks \['image_height', 'camera_matrix'\]"):
        load_intrinsics(tmp_path / "short.yaml")
    K_fov = intrinsics_from_fov(640, 480, 90.0)
    assert K_fov[0, 0] == pytest.approx(320.0) and K_fov[0, 2] == pytest.approx(319.5)


def test_run_writes_an_overlay_video_and_a_bag(scene, tmp_path):
    estimator, _, _ = make_estimator(scene)
    frames = ((1.0 + i / 30, coordinate_image()) for i in range(3))
    summary = run_estimator(estimator, frames, K, out=tmp_path / "overlay.mp4", bag=tmp_path / "run", fps=30.0)
    assert (summary.frames, summary.processed, summary.skipped) == (3, 3, 0)
    capture = cv2.VideoCapture(str(tmp_path / "overlay.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    assert (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (WIDTH,
                                                                                                          HEIGHT)
    with AnyReader([tmp_path / "run"]) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts["/camera/color/image_raw"] == 3 and counts["/hoi_perception/estimate"] == 3 and counts["/tf"] == 3
    assert not list(tmp_path.glob(".*partial*"))


def test_run_main_on_a_video_file_guesses_intrinsics_with_a_warning(tmp_path, caplog):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (96, 64))
    for i in range(3):
        writer.write(np.full((64, 96, 3), 40 * i, np.uint8))
    writer.release()
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pt")
    with caplog.at_level(logging.WARNING):
        summary = run_main(video=path, out=tmp_path / "out.mp4",
                           overrides=["engine.kind=torch", f"checkpoint={checkpoint}"])
    assert summary.frames == 3 and summary.video_path == tmp_path / "out.mp4" and summary.video_path.is_file()
    assert "assuming a 60 deg horizontal field of view" in caplog.text


def test_unusable_sources_are_refused(tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(VideoSourceError, match=r"video '.*notes.mp4' could not be opened|no frame could be read"):
        run_main(video=tmp_path / "notes.mp4", out=tmp_path / "o.mp4")
    with pytest.raises(FileNotFoundError, match="missing.mp4' does not exist"):
        run_main(video=tmp_path / "missing.mp4", out=tmp_path / "o.mp4")
    with pytest.raises(ValueError, match="exactly one of --video FILE or --camera INDEX"):
        run_main(video=tmp_path / "a.mp4", camera=0, out=tmp_path / "o.mp4")
    with pytest.raises(ValueError, match="nothing to produce"):
        run_main(camera=0)
    with pytest.raises(VideoSourceError, match="camera 97 could not be opened"):
        run_main(camera=97, out=tmp_path / "o.mp4")
