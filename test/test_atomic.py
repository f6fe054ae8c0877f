import json

import numpy as np
import pytest

from hoi_perception.atomic import atomic_open, atomic_save_npz, atomic_write_json


def test_failed_write_leaves_previous_file_and_no_temp(tmp_path):
    target = tmp_path / "ckpt.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as handle:
            handle.write(b"partial")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.bin"]


def test_json_and_npz_round_trip(tmp_path):
    atomic_write_json(tmp_path / "a" / "m.json", {"x": np.float32(1.5), "v": np.arange(3)})
    assert json.loads((tmp_path / "a" / "m.json").read_text()) == {"v": [0, 1, 2], "x": 1.5}
    atomic_save_npz(tmp_path / "l.npz", k=np.eye(3))
    np.testing.assert_array_equal(np.load(tmp_path / "l.npz")["k"], np.eye(3))


def test_written_files_follow_the_umask_not_mkstemp(tmp_path):
    import os
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "m.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644
