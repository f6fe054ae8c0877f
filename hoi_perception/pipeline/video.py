"""``hoi-perception run``: the estimator on a video file or a webcam, for people's own recordings.

The camera matrix comes from a calibration file in ROS ``camera_info`` YAML (or the same
keys in JSON: ``image_width``, ``image_height``, ``camera_matrix: {rows, cols, data}``),
as ``camera_calibration`` and ``camera_info_manager`` write it. Without one it is
estimated from a horizontal field of view (a guess: metric depth and the object pose
are then only as good as that guess, and a warning says so). Outputs: an overlay video
(MP4) and optionally an MCAP bag with the same topics as ``process-bag`` plus the input
images, so the run can be replayed in RViz, Foxglove or Lichtblick.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from hoi_perception.output_paths import MP4_VIDEO, ROSBAG, check_output
from hoi_perception.pipeline.image_decoding import camera_matrix_problem

log = logging.getLogger(__name__)

DEFAULT_HFOV_DEG = 60.0  # a typical webcam
INPUT_TOPIC = "/camera/color/image_raw"
CAMERA_INFO_TOPIC = "/camera/color/camera_info"
CAMERA_FRAME_ID = "camera_color_optical_frame"


class VideoSourceError(ValueError):
    """A video file or camera cannot be opened or read."""


class NothingProcessedError(ValueError):
    """No frame of the input could be processed."""


def load_intrinsics(path: str | Path) -> tuple[np.ndarray, int, int]:
    """(K, width, height) from a ROS camera_info YAML or JSON calibration file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"intrinsics file '{p}' does not exist")
    try:
        data = json.loads(p.read_text()) if p.suffix.lower() == ".json" else yaml.safe_load(p.read_text())
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"intrinsics file '{p}' is not valid {p.suffix.lstrip('.') or 'YAML'}: {exc}") from None
    expected = "image_width, image_height and camera_matrix: {rows: 3, cols: 3, data: [9 numbers]}"
    if not isinstance(data, dict):
        raise ValueError(f"intrinsics file '{p}': expected a mapping with {expected}")
    missing = [k for k in ("image_width", "image_height", "camera_matrix") if k not in data]
    if missing:
        raise ValueError(f"intrinsics file '{p}' lacks {missing}; expected {expected}")
    matrix = data["camera_matrix"]
    values = matrix.get("data") if isinstance(matrix, dict) else None
    if not isinstance(matrix, dict) or matrix.get("rows") != 3 or matrix.get("cols") != 3 \
            or not isinstance(values, list) or len(values) != 9:
        raise ValueError(f"intrinsics file '{p}': camera_matrix must be {{rows: 3, cols: 3, data: [9 numbers]}}, "
                         f"got {matrix!r}")
    try:
        K = np.array(values, dtype=np.float64).reshape(3, 3)
        width, height = int(data["image_width"]), int(data["image_height"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"intrinsics file '{p}': non-numeric values ({exc})") from None
    problem = camera_matrix_problem(K)
    if problem:
        raise ValueError(f"intrinsics file '{p}': {problem}")
    if width < 1 or height < 1:
        raise ValueError(f"intrinsics file '{p}': image size {width}x{height} must be positive")
    return K, width, height


def intrinsics_from_fov(width: int, height: int, hfov_deg: float = DEFAULT_HFOV_DEG) -> np.ndarray:
    """A pinhole K with square pixels and the principal point at the image centre."""
    if not 1.0 < hfov_deg < 179.0:
        raise ValueError(f"field of view must be in (1, 179) degrees, got {hfov_deg}")
    f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def fit_intrinsics(K: np.ndarray, calibrated: tuple[int, int], actual: tuple[int, int]) -> np.ndarray:
    """K for frames of size ``actual`` when calibrated at ``calibrated`` (same aspect ratio: scaled)."""
    if calibrated == actual:
        return K
    sx, sy = actual[0] / calibrated[0], actual[1] / calibrated[1]
    if abs(sx - sy) > 0.01 * max(sx, sy):
        raise ValueError(f"frames are {actual[0]}x{actual[1]} but the intrinsics were calibrated at "
                         f"{calibrated[0]}x{calibrated[1]} (another aspect ratio); calibrate this resolution")
    log.warning("scaling the intrinsics from %dx%d to the frames' %dx%d", *calibrated, *actual)
    scaled = np.array(K, dtype=np.float64)
    scaled[0] *= sx
    scaled[1] *= sy
    return scaled


def open_capture(video: str | Path | None, camera: int | None) -> tuple[cv2.VideoCapture, str, float]:
    """The capture, a name for messages, and its frame rate (0 when unknown)."""
    if (video is None) == (camera is None):
        raise ValueError("give exactly one of --video FILE or --camera INDEX")
    if video is not None:
        path = Path(video).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"video '{path}' does not exist")
        with _quiet_stderr():  # FFmpeg prints "moov atom not found" and the like before our one-line error
            capture = cv2.VideoCapture(str(path))
        name = f"video '{path}'"
    else:
        assert camera is not None  # exactly one of video and camera, checked above
        capture, name = cv2.VideoCapture(int(camera)), f"camera {camera}"
    if not capture.isOpened():
        hint = "unsupported container or codec?" if video is not None else "no such device, or it is in use?"
        raise VideoSourceError(f"{name} could not be opened ({hint})")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    return capture, name, fps if math.isfinite(fps) and fps > 0 else 0.0


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the process's stderr (file descriptor 2, where FFmpeg writes) for the block."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def read_frames(capture: cv2.VideoCapture, name: str, fps: float, live: bool) -> Iterator[tuple[float, np.ndarray]]:
    """(stamp s, RGB frame); stamps from the frame index and rate for files, the clock for cameras."""
    index = 0
    start = time.monotonic()
    while True:
        ok, bgr = capture.read()
        if not ok or bgr is None:
            break
        stamp = time.monotonic() - start if live or fps <= 0 else index / fps
        yield stamp, np.ascontiguousarray(bgr[..., ::-1])
        index += 1
    if index == 0:
        raise VideoSourceError(f"{name}: no frame could be read (corrupt file, unsupported codec or camera busy?)")


@dataclass
class RunSummary:
    frames: int = 0
    processed: int = 0
    skipped: int = 0
    hand_frames: int = 0  # processed frames that published at least one hand
    object_frames: int = 0  # processed frames that published an object pose
    mean_ms: float = 0.0
    video_path: Path | None = None
    bag_path: Path | None = None


def check_run_outputs(out: str | Path | None, bag: str | Path | None, inputs: Sequence[str | Path],
                      overwrite: bool) -> None:
    """``--out`` (an MP4) and ``--bag`` (a rosbag2 folder) may replace neither an input, each other,
    nor, even with ``--overwrite``, anything that is not their kind."""
    if out is not None:
        check_output(out, kind=MP4_VIDEO, inputs=inputs, overwrite=overwrite, option="--out")
    if bag is not None:
        check_output(bag, kind=ROSBAG, inputs=[*inputs, *([out] if out is not None else [])], overwrite=overwrite,
                     option="--bag")


def run_estimator(estimator: Any, frames: Iterator[tuple[float, np.ndarray]], K: np.ndarray | None, *,
                  out: str | Path | None = None, bag: str | Path | None = None, fps: float = 30.0,
                  show: bool = False, hfov_deg: float = DEFAULT_HFOV_DEG, max_frames: int | None = None,
                  inputs: Sequence[str | Path] = (), overwrite: bool = False, outputs: Any = None) -> RunSummary:
    """Process ``frames`` with ``estimator``; write the overlay video ``out`` and the MCAP ``bag``
    (images, CameraInfo and the node's outputs, named by ``outputs``, an
    :class:`~hoi_perception.pipeline.messages.OutputSettings`). ``inputs`` are never overwritten; existing outputs only
    with ``overwrite`` (:func:`hoi_perception.output_paths.check_output`)."""
    from hoi_perception.bag_io import camera_info_msg, image_msg, open_bag_writer
    from hoi_perception.pipeline.bag_processing import EstimateBagWriter, object_control_points
    from hoi_perception.pipeline.messages import draw_frame

    if max_frames is not None and max_frames < 1:
        raise ValueError(f"--max-frames must be a positive number of frames, got {max_frames}")
    summary = RunSummary()
    out_path = Path(out).expanduser() if out is not None else None
    if out_path is not None and out_path.suffix.lower() != ".mp4":
        raise ValueError(f"--out '{out_path}': expected a .mp4 file name")
    check_run_outputs(out_path, bag, inputs, overwrite)
    writer: cv2.VideoWriter | None = None
    video_tmp: Path | None = None
    total_ms = 0.0
    try:
        with contextlib.ExitStack() as stack:
            bag_writer = None
            if bag is not None:
                bag_writer = EstimateBagWriter(stack.enter_context(open_bag_writer(bag, storage="mcap",
                                                                                   overwrite=overwrite)),
                                               {side: estimator.hand_faces(side) for side in ("right", "left")},
                                               object_control_points(estimator), outputs)
            for stamp, image in frames:
                if max_frames is not None and summary.frames >= max_frames:
                    break
                summary.frames += 1
                height, width = image.shape[:2]
                if K is None:
                    K = intrinsics_from_fov(width, height, hfov_deg)
                    log.warning("no intrinsics given: assuming a %.0f deg horizontal field of view (fx = %.1f px); "
                                "3D positions and depths are only as good as that guess - pass --intrinsics with "
                                "a calibration for metric results", hfov_deg, K[0, 0])
                result = estimator.process(image, K, stamp)
                total_ms += result.total_ms
                if result.skipped is not None:
                    summary.skipped += 1
                    continue
                summary.processed += 1
                summary.hand_frames += bool(result.hands)
                summary.object_frames += any(t.result.success for t in result.objects)
                drawn = draw_frame(image, result, K, object_control_points(estimator))
                stamp_ns = int(round(stamp * 1e9))
                if bag_writer is not None:
                    bag_writer.bag.write(INPUT_TOPIC, image_msg(bag_writer.ts, image, stamp_ns, CAMERA_FRAME_ID),
                                         stamp_ns)
                    bag_writer.bag.write(CAMERA_INFO_TOPIC, camera_info_msg(bag_writer.ts, K, width, height, stamp_ns,
                                                                            CAMERA_FRAME_ID), stamp_ns)
                    bag_writer.write(result, image, K, stamp_ns, CAMERA_FRAME_ID, stamp_ns)
                if out_path is not None:
                    if writer is None:
                        out_path.parent.mkdir(parents=True, exist_ok=True)
                        video_tmp = out_path.with_name(f".{out_path.stem}.partial.mp4")
                        writer = cv2.VideoWriter(str(video_tmp), cv2.VideoWriter.fourcc(*"mp4v"), fps or 30.0,
                                                 (width, height))
                        if not writer.isOpened():
                            raise VideoSourceError(f"cannot write '{out_path}' (no MP4 encoder in this OpenCV "
                                                   "build?)")
                    writer.write(np.ascontiguousarray(drawn[..., ::-1]))
                if show:
                    _show(drawn)
            if summary.processed == 0:  # raised inside the bag writer: no bag is left behind
                raise NothingProcessedError(f"no frame was processed ({summary.frames} read, {summary.skipped} "
                                            "skipped by the estimator; see the warning above); nothing written")
    except BaseException:
        if writer is not None:
            writer.release()
            assert video_tmp is not None  # named when the writer was opened
            video_tmp.unlink(missing_ok=True)
        raise
    if bag is not None:
        summary.bag_path = Path(bag)
    if writer is not None:
        writer.release()
        assert video_tmp is not None and out_path is not None  # both set when the writer was opened
        os.replace(video_tmp, out_path)
        summary.video_path = out_path
    summary.mean_ms = total_ms / summary.frames if summary.frames else 0.0
    return summary


def _show(image: np.ndarray) -> None:
    try:
        cv2.imshow("hoi-perception", image[..., ::-1])
        cv2.waitKey(1)
    except cv2.error as exc:
        raise VideoSourceError("--show needs an OpenCV build with a GUI (opencv-python, not "
                               f"opencv-python-headless): {exc}") from None


def run_main(video: str | Path | None = None, camera: int | None = None, intrinsics: str | Path | None = None,
             out: str | Path | None = None, config: str | Path | None = None, show: bool = False, *,
             bag: str | Path | None = None, overrides: Sequence[str] = (), hfov_deg: float = DEFAULT_HFOV_DEG,
             max_frames: int | None = None, overwrite: bool = False, outputs: Any = None) -> RunSummary:
    """``hoi-perception run``: the estimator on ``video`` or webcam ``camera``; see the module docstring."""
    from hoi_perception.pipeline.shipped_model import runtime_estimator

    if out is None and bag is None and not show:
        raise ValueError("nothing to produce: give --out VIDEO.mp4, --bag OUT_BAG and/or --show")
    inputs = [p for p in (video, intrinsics) if p is not None]
    check_run_outputs(out, bag, inputs, overwrite)  # before the slow start
    calibration = load_intrinsics(intrinsics) if intrinsics is not None else None
    capture, name, fps = open_capture(video, camera)
    try:
        estimator = runtime_estimator(config, overrides)
        frames = read_frames(capture, name, fps, live=camera is not None)
        K = None
        if calibration is not None:
            first_stamp, first = next(frames)
            K = fit_intrinsics(calibration[0], (calibration[1], calibration[2]), (first.shape[1], first.shape[0]))
            frames = _prepend((first_stamp, first), frames)
        summary = run_estimator(estimator, frames, K, out=out, bag=bag, fps=fps, show=show, hfov_deg=hfov_deg,
                                max_frames=max_frames, inputs=inputs, overwrite=overwrite, outputs=outputs)
    finally:
        capture.release()
    print(f"{name}: {summary.frames} frames, {summary.processed} processed, {summary.skipped} skipped, "
          f"{summary.mean_ms:.1f} ms per frame; a hand published in {summary.hand_frames}, an object pose in "
          f"{summary.object_frames}")
    for path in (summary.video_path, summary.bag_path):
        if path is not None:
            print(f"wrote {path}")
    return summary


def _prepend(first: tuple[float, np.ndarray], rest: Iterator[tuple[float, np.ndarray]]
             ) -> Iterator[tuple[float, np.ndarray]]:
    yield first
    yield from rest
