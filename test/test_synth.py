import json

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from hoi_perception.config import ConfigError, load_config
from hoi_perception.geometry.camera import project
from hoi_perception.synth.config import SynthConfig
from hoi_perception.synth.generator import _viewpoint, generate_dataset
from hoi_training.cli import main as train_main

SMALL = ["camera.width=96", "camera.height=96"]


@pytest.fixture(scope="module")
def small_config():
    return load_config(SynthConfig, "synth.yaml", SMALL)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, small_config):
    out = tmp_path_factory.mktemp("synth") / "data"
    generate_dataset(small_config, out, sequences=2, frames=4, seed=3, domain="lab", write_bags=True)
    return out


def test_layout_and_labels_are_consistent(dataset):
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["total_frames"] == 8 and len(manifest["sequences"]) == 2
    assert (dataset / "preview.png").is_file()
    for seq in manifest["sequences"]:
        seq_dir = dataset / seq["name"]
        labels = np.load(seq_dir / "labels.npz")
        meta = json.loads((seq_dir / "meta.json").read_text())
        assert labels["joints3d"].shape == (4, 21, 3) and labels["vertices3d"].shape == (4, 778, 3)
        assert labels["hand_pose"].shape == (4, 48) and labels["betas"].shape == (10,)
        np.testing.assert_allclose(project(labels["joints3d"], labels["K"]), labels["joints2d"], atol=1e-6)
        assert np.all(labels["joints3d"][..., 2] > 0.1)  # in front of the camera, metres
        for i in range(4):
            rgb = cv2.imread(str(seq_dir / "rgb" / f"{i:06d}.png"))
            mask = cv2.imread(str(seq_dir / "mask" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
            depth = cv2.imread(str(seq_dir / "depth" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
            assert rgb.shape == (96, 96, 3) and mask.dtype == np.uint8 and depth.dtype == np.uint16
            hand = mask == meta["hand_label"]
            assert hand.sum() > 30 and (mask == meta["object_label"]).sum() > 30
            # Rendered hand depth agrees with the labelled 3D vertices (millimetres).
            z = labels["vertices3d"][i][:, 2] * 1000
            assert z.min() - 5 <= np.median(depth[hand]) <= z.max() + 5
            # The hand mask lies inside the labelled hand box.
            ys, xs = np.nonzero(hand)
            x0, y0, x1, y1 = labels["hand_box"][i]
            assert x0 - 1 <= xs.min() and xs.max() <= x1 + 1 and y0 - 1 <= ys.min() and ys.max() <= y1 + 1


def test_motion_is_smooth(dataset):
    labels = np.load(dataset / "seq_0000" / "labels.npz")
    step = np.linalg.norm(np.diff(labels["joints3d"], axis=0), axis=-1).max()
    assert step < 0.02  # under 2 cm per frame at 30 Hz


def test_bags_read_back(dataset):
    bag = dataset / "bags" / "seq_0000"
    counts = {}
    with AnyReader([bag]) as reader:
        for conn, _, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            counts[conn.topic] = counts.get(conn.topic, 0) + 1
            if conn.topic.endswith("image_raw") and msg.encoding == "rgb8":
                first = cv2.imread(str(dataset / "seq_0000" / "rgb" / "000000.png"))[..., ::-1]
                if counts[conn.topic] == 1:
                    np.testing.assert_array_equal(msg.data.reshape(first.shape), first)
    assert set(counts.values()) == {4} and len(counts) == 3


def test_same_seed_same_data_and_resume(tmp_path, small_config, dataset):
    out = tmp_path / "again"
    generate_dataset(small_config, out, sequences=1, frames=4, seed=3, domain="lab")
    a = np.load(out / "seq_0000" / "labels.npz")
    b = np.load(dataset / "seq_0000" / "labels.npz")
    for key in ("joints3d", "hand_pose", "object_rotation"):
        np.testing.assert_array_equal(a[key], b[key])
    rgb_a = cv2.imread(str(out / "seq_0000" / "rgb" / "000002.png"))
    rgb_b = cv2.imread(str(dataset / "seq_0000" / "rgb" / "000002.png"))
    np.testing.assert_array_equal(rgb_a, rgb_b)
    # An interrupted run (no manifest, a half-written sequence) resumes and keeps finished sequences.
    (out / "manifest.json").unlink()
    (out / ".seq_0001.partial" / "rgb").mkdir(parents=True)
    mtime = (out / "seq_0000" / "labels.npz").stat().st_mtime_ns
    generate_dataset(small_config, out, sequences=2, frames=4, seed=3, domain="lab")
    assert (out / "seq_0000" / "labels.npz").stat().st_mtime_ns == mtime
    assert (out / "seq_0001" / "meta.json").exists() and not (out / ".seq_0001.partial").exists()


def test_refuses_to_overwrite_and_bad_settings(tmp_path, small_config, dataset):
    with pytest.raises(FileExistsError, match="finished synthetic dataset"):
        generate_dataset(small_config, dataset, sequences=1, frames=4, seed=3)
    with pytest.raises(ValueError, match="domain 'mars'"):
        generate_dataset(small_config, tmp_path / "x", sequences=1, frames=1, seed=0, domain="mars")
    other = load_config(SynthConfig, "synth.yaml", SMALL + ["objects=[teapot]"])
    with pytest.raises(ValueError, match="unknown object"):
        generate_dataset(other, tmp_path / "y", sequences=1, frames=1, seed=0)
    with pytest.raises(ConfigError, match=r"palm_lightening: values must be <= 1.0, got \[0.5, 1.5\]"):
        load_config(SynthConfig, "synth.yaml", SMALL + ["domains.lab.palm_lightening=[0.5, 1.5]"])
    with pytest.raises(ConfigError, match=r"max_palm_view_cosine must be in \(-1, 1\], got 1.5"):
        load_config(SynthConfig, "synth.yaml", SMALL + ["camera.max_palm_view_cosine=1.5"])


@pytest.mark.parametrize("limit", [0.35, 0.75])
def test_viewpoints_looking_into_the_palm_are_limited(limit):
    rng = np.random.default_rng(0)
    palm_normal = np.array([0.0, 0.6, 0.8])
    cosines = np.array([_viewpoint(rng, palm_normal, limit).inv().apply([0.0, 0.0, -1.0]) @ palm_normal
                        for _ in range(400)])
    assert cosines.max() < limit
    # Below the limit the draw is uniform: the share of views between 0 and 0.35 stays that of the sphere.
    kept = (1 + limit) / 2
    assert abs(np.mean((cosines > 0) & (cosines < 0.35)) - 0.175 / kept) < 0.05
    assert np.mean(cosines > 0.35) == pytest.approx((limit - 0.35) / 2 / kept, abs=0.05)


def test_cli_reports_errors_cleanly(tmp_path, dataset, caplog):
    code = train_main(["synth", "--out", str(dataset), "--sequences", "1", "--frames", "1"] +
                      [f"--set={s}" for s in SMALL])
    assert code == 2 and "finished synthetic dataset" in caplog.text


def test_domains_look_different(tmp_path, small_config):
    means = {}
    for domain in ("lab", "wild"):
        out = tmp_path / domain
        generate_dataset(small_config, out, sequences=1, frames=1, seed=5, domain=domain)
        img = cv2.imread(str(out / "seq_0000" / "rgb" / "000000.png")).astype(np.float32)
        mask = cv2.imread(str(out / "seq_0000" / "mask" / "000000.png"), cv2.IMREAD_UNCHANGED)
        # High-frequency energy of the background: clutter, noise and compression make the wild domain busier.
        energy = np.abs(cv2.Laplacian(img, cv2.CV_32F)).sum(axis=-1)
        means[domain] = energy[mask == 0].mean()
    assert means["wild"] > 1.5 * means["lab"], means
