"""ROS image and CameraInfo messages to NumPy, with refusals that say what was wrong.

Works on any object with the fields of ``sensor_msgs/Image``, ``sensor_msgs/CompressedImage``
and ``sensor_msgs/CameraInfo`` (rosbags' classes, rclpy's generated ones), so the bag
processor, the ROS node and the training frame sources share one decoder.

Colour images come out as (H, W, 3) uint8 RGB: ``rgb8``, ``bgr8`` and ``mono8`` raw
images (rows may be padded: ``step`` is honoured) and any CompressedImage OpenCV can
decode (JPEG, PNG). Depth images come out as (H, W) ``uint16`` millimetres (``16UC1``,
``mono16``) or ``float32`` metres (``32FC1``), byte-swapped when ``is_bigendian`` says so.
Anything else raises :class:`ImageDecodeError` naming the encoding and what is accepted.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
IMAGE_TYPES: tuple[str, ...] = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)

# Raw colour encodings -> channels.
COLOR_ENCODINGS: dict[str, int] = {"rgb8": 3, "bgr8": 3, "mono8": 1}
# Raw depth encodings -> dtype of one pixel (little-endian; swapped for big-endian data).
DEPTH_ENCODINGS: dict[str, np.dtype] = {"16UC1": np.dtype("<u2"), "mono16": np.dtype("<u2"),
                                        "32FC1": np.dtype("<f4")}


class ImageDecodeError(ValueError):
    """An image or CameraInfo message cannot be turned into what the pipeline needs."""


def stamp_to_ns(stamp: Any) -> int:
    """A builtin_interfaces/Time (sec, nanosec) as integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _raw_rows(msg: Any, bytes_per_pixel: int) -> np.ndarray:
    """The (H, W * bytes_per_pixel) payload of a raw Image, padding at the row ends dropped."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height < 1 or width < 1:
        raise ImageDecodeError(f"{msg.encoding} image is empty ({width}x{height} pixels)")
    data = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    row_bytes = width * bytes_per_pixel
    if step < row_bytes or data.size < step * height:
        raise ImageDecodeError(f"{msg.encoding} image of {width}x{height} with step {step} needs "
                               f"{max(step, row_bytes) * height} bytes but holds {data.size}")
    return data[: step * height].reshape(height, step)[:, :row_bytes]


def decode_color_image(msg: Any, msgtype: str) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a sensor_msgs/Image (rgb8, bgr8, mono8) or CompressedImage."""
    if msgtype == COMPRESSED_IMAGE_TYPE:
        data = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
        if data.size == 0:
            raise ImageDecodeError(f"compressed image (format {msg.format!r}) is empty")
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ImageDecodeError(f"compressed image (format {msg.format!r}, {data.size} bytes) could not be "
                                   "decoded")
        return np.ascontiguousarray(bgr[..., ::-1])
    if msgtype != IMAGE_TYPE:
        raise ImageDecodeError(f"message type {msgtype} is not an image; expected one of {list(IMAGE_TYPES)}")
    channels = COLOR_ENCODINGS.get(msg.encoding)
    if channels is None:
        hint = " (a depth encoding: pass it as the depth topic)" if msg.encoding in DEPTH_ENCODINGS else ""
        raise ImageDecodeError(f"image encoding {msg.encoding!r} is not supported{hint}; expected one of "
                               f"{sorted(COLOR_ENCODINGS)} or a CompressedImage topic")
    image = _raw_rows(msg, channels).reshape(int(msg.height), int(msg.width), channels)
    if msg.encoding == "bgr8":
        image = image[..., ::-1]
    elif msg.encoding == "mono8":
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image)


def decode_depth_image(msg: Any) -> np.ndarray:
    """Depth (H, W) from a raw sensor_msgs/Image: uint16 millimetres or float32 metres."""
    dtype = DEPTH_ENCODINGS.get(msg.encoding)
    if dtype is None:
        raise ImageDecodeError(f"depth encoding {msg.encoding!r} is not supported; expected one of "
                               f"{sorted(DEPTH_ENCODINGS)}")
    rows = np.ascontiguousarray(_raw_rows(msg, dtype.itemsize))
    depth = rows.view(dtype.newbyteorder(">") if msg.is_bigendian else dtype).reshape(int(msg.height), int(msg.width))
    return depth.astype(dtype.newbyteorder("="))


def camera_matrix_from_info(msg: Any) -> tuple[np.ndarray, int, int]:
    """(K, width, height) of a sensor_msgs/CameraInfo, refusing an uncalibrated or invalid K.

    Distortion is not modelled by the pipeline: images are assumed rectified (``k`` of a
    rectified stream, or a camera with negligible distortion).
    """
    K: np.ndarray = np.asarray(msg.k, dtype=np.float64).reshape(-1)
    if K.size != 9:
        raise ImageDecodeError(f"CameraInfo k has {K.size} values, expected 9")
    K = K.reshape(3, 3)
    reason = camera_matrix_problem(K)
    if reason:
        raise ImageDecodeError(f"CameraInfo: {reason}")
    return K, int(msg.width), int(msg.height)


def camera_matrix_problem(K: Any) -> str:
    """Why ``K`` is not a usable pinhole camera matrix ('' when it is)."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        return f"camera matrix K must be 3x3, got shape {K.shape}"
    if not np.all(np.isfinite(K)):
        return "camera matrix K contains NaN or infinity"
    if not np.any(K):
        return "camera matrix K is all zeros (an uncalibrated camera's CameraInfo)"
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        return f"camera matrix K needs positive focal lengths, got fx={K[0, 0]:g}, fy={K[1, 1]:g}"
    if not np.allclose(K[2], (0.0, 0.0, 1.0)) or K[1, 0] != 0.0:
        return f"camera matrix K is not a pinhole matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]]: {K.tolist()}"
    return ""
