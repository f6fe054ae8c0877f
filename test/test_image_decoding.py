"""ROS image and CameraInfo decoding: every accepted encoding to RGB / depth, clear refusals."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from hoi_perception.bag_io import camera_info_msg, header, image_msg, typestore
from hoi_perception.pipeline.image_decoding import (
    COMPRESSED_IMAGE_TYPE,
    IMAGE_TYPE,
    ImageDecodeError,
    camera_matrix_from_info,
    decode_color_image,
    decode_depth_image,
    stamp_to_ns,
)

TS = typestore()
RGB = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
K = np.array([[100.0, 0, 4], [0, 100.0, 3], [0, 0, 1]])


def raw(data: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False):
    """An Image message with rows padded by ``pad`` bytes (step > width * bytes per pixel)."""
    height, width = data.shape[:2]
    rows = np.ascontiguousarray(data).view(np.uint8).reshape(height, -1)
    padded = np.zeros((height, rows.shape[1] + pad), np.uint8)
    padded[:, : rows.shape[1]] = rows
    return TS.types[IMAGE_TYPE](header=header(TS, 5, "cam"), height=height, width=width, encoding=encoding,
                                is_bigendian=int(bigendian), step=padded.shape[1], data=padded.reshape(-1))


@pytest.mark.parametrize("encoding, data, expected", [
    ("rgb8", RGB, RGB),
    ("bgr8", RGB[..., ::-1], RGB),
    ("mono8", RGB[..., 0], np.repeat(RGB[..., :1], 3, axis=2)),
])
def test_raw_colour_encodings_with_padded_rows(encoding, data, expected):
    image = decode_color_image(raw(data, encoding, pad=3), IMAGE_TYPE)
    assert image.dtype == np.uint8 and image.flags.c_contiguous
    np.testing.assert_array_equal(image, expected)


def test_compressed_png_and_stamps():
    png = np.frombuffer(cv2.imencode(".png", RGB[..., ::-1])[1].tobytes(), np.uint8)
    msg = TS.types[COMPRESSED_IMAGE_TYPE](header=header(TS, 3_000_000_123, "cam"), format="png", data=png)
    np.testing.assert_array_equal(decode_color_image(msg, COMPRESSED_IMAGE_TYPE), RGB)
    assert stamp_to_ns(msg.header.stamp) == 3_000_000_123


def test_depth_encodings_and_byte_order():
    millimetres = np.arange(48, dtype=np.uint16).reshape(6, 8) * 100
    depth = decode_depth_image(raw(millimetres, "16UC1", pad=2))
    assert depth.dtype == np.uint16
    np.testing.assert_array_equal(depth, millimetres)
    np.testing.assert_array_equal(decode_depth_image(raw(millimetres.byteswap(), "16UC1", bigendian=True)),
                                  millimetres)
    metres = millimetres.astype(np.float32) / 1000
    np.testing.assert_array_equal(decode_depth_image(image_msg(TS, metres, 0, "cam")), metres)


def test_refusals_name_the_problem():
    with pytest.raises(ImageDecodeError, match=r"encoding '16UC1' is not supported \(a depth encoding"):
        decode_color_image(raw(np.zeros((2, 2), np.uint16), "16UC1"), IMAGE_TYPE)
    with pytest.raises(ImageDecodeError, match=r"encoding 'yuv422' is not supported; expected one of"):
        decode_color_image(raw(RGB, "yuv422"), IMAGE_TYPE)
    truncated = raw(RGB, "rgb8")
    truncated.data = truncated.data[:-5]
    with pytest.raises(ImageDecodeError, match=r"rgb8 image of 8x6 with step 24 needs 144 bytes but holds 139"):
        decode_color_image(truncated, IMAGE_TYPE)
    broken = TS.types[COMPRESSED_IMAGE_TYPE](header=header(TS, 0, "c"), format="jpeg",
                                             data=np.arange(50, dtype=np.uint8))
    with pytest.raises(ImageDecodeError, match=r"compressed image \(format 'jpeg', 50 bytes\) could not be decoded"):
        decode_color_image(broken, COMPRESSED_IMAGE_TYPE)
    with pytest.raises(ImageDecodeError, match="depth encoding 'rgb8' is not supported"):
        decode_depth_image(raw(RGB, "rgb8"))
    with pytest.raises(ImageDecodeError, match="is not an image"):
        decode_color_image(raw(RGB, "rgb8"), "sensor_msgs/msg/CameraInfo")


def test_camera_info():
    K_out, width, height = camera_matrix_from_info(camera_info_msg(TS, K, 8, 6, 0, "cam"))
    np.testing.assert_array_equal(K_out, K)
    assert (width, height) == (8, 6)
    with pytest.raises(ImageDecodeError, match="all zeros"):
        camera_matrix_from_info(camera_info_msg(TS, np.zeros((3, 3)), 8, 6, 0, "cam"))
    with pytest.raises(ImageDecodeError, match="not a pinhole matrix"):
        camera_matrix_from_info(camera_info_msg(TS, K + np.array([[0, 0, 0], [0, 0, 0], [1, 0, 0]]), 8, 6, 0, "c"))
