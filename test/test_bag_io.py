import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from hoi_perception.bag_io import camera_info_msg, image_msg, open_bag_writer


def test_written_bag_reads_back_with_rosbags(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (6, 8, 3), dtype=np.uint8)
    depth = np.full((6, 8), 512, np.uint16)
    K = np.array([[100.0, 0, 4], [0, 100.0, 3], [0, 0, 1]])
    path = tmp_path / "bag"
    with open_bag_writer(path) as bag:
        ts = bag.typestore
        for i in range(3):
            stamp = 1_000_000_000 + i * 33_333_333
            bag.write("/cam/image_raw", image_msg(ts, rgb, stamp, "cam_optical"), stamp)
            bag.write("/cam/depth", image_msg(ts, depth, stamp, "cam_optical"), stamp)
            bag.write("/cam/camera_info", camera_info_msg(ts, K, 8, 6, stamp, "cam_optical"), stamp)
    assert sorted(p.name for p in path.iterdir()) == ["bag.mcap", "metadata.yaml"]
    assert [p.name for p in tmp_path.iterdir()] == ["bag"]
    seen = {}
    with AnyReader([path]) as reader:
        for conn, stamp, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            seen.setdefault(conn.topic, []).append((stamp, msg))
    assert len(seen["/cam/image_raw"]) == 3
    _, img = seen["/cam/image_raw"][1]
    assert img.encoding == "rgb8" and img.header.stamp.nanosec == 33_333_333
    np.testing.assert_array_equal(img.data.reshape(6, 8, 3), rgb)
    _, dep = seen["/cam/depth"][0]
    assert dep.encoding == "16UC1"
    np.testing.assert_array_equal(dep.data.view(np.uint16).reshape(6, 8), depth)
    _, info = seen["/cam/camera_info"][0]
    np.testing.assert_allclose(info.k.reshape(3, 3), K)


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "bag"
    with pytest.raises(RuntimeError):
        with open_bag_writer(path) as bag:
            bag.write("/x", image_msg(bag.typestore, np.zeros((2, 2), np.uint8), 1, "f"), 1)
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_refuses_existing_bag_and_bad_images(tmp_path):
    (tmp_path / "bag").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        with open_bag_writer(tmp_path / "bag"):
            pass
    with open_bag_writer(tmp_path / "other") as bag:
        with pytest.raises(ValueError, match="cannot encode"):
            image_msg(bag.typestore, np.zeros((2, 2, 3), np.float64), 0, "f")
