import json

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hoi_perception.objects.models import bbox_control_points
from hoi_perception.synth.sequence_files import DatasetFormatError
from hoi_training.data.sample import collate_samples
from hoi_training.data.synthetic import SyntheticConfig, SyntheticDataset

WIDTH, HEIGHT = 64, 48
OBJECTS_YAML = """
num_points: 20
objects:
  test_box:
    shape: box
    dimensions: {width: 0.1, depth: 0.06, height: 0.2}
"""


def write_sequence(root, index, frames, side, object_name, rng):
    """One sequence folder in `hoi-train synth`'s format version 1, filled with random labels."""
    seq = root / f"seq_{index:04d}"
    for sub in ("rgb", "depth", "mask"):
        (seq / sub).mkdir(parents=True)
    K = np.array([[80.0, 0, 32.0], [0, 80.0, 24.0], [0, 0, 1]])
    labels = {
        "K": K, "timestamps": np.arange(frames) / 30.0, "betas": rng.normal(0, 1, 10),
        "joints3d": rng.normal([0, 0, 0.5], 0.03, (frames, 21, 3)), "joints2d": rng.uniform(0, 48, (frames, 21, 2)),
        "vertices3d": rng.normal([0, 0, 0.5], 0.03, (frames, 778, 3)).astype(np.float32),
        "hand_pose": rng.normal(0, 0.3, (frames, 48)), "hand_transl": rng.normal(0, 0.05, (frames, 3)),
        "hand_box": np.tile([5.0, 6.0, 30.0, 40.0], (frames, 1)), "object_box": np.tile([20.0, 8, 60, 44], (frames, 1)),
        "object_rotation": Rotation.random(frames, random_state=index).as_matrix(),
        "object_translation": rng.normal([0, 0, 0.6], 0.02, (frames, 3)),
        "object_control_points2d": rng.uniform(0, 48, (frames, 21, 2)),
    }
    np.savez(seq / "labels.npz", **labels)
    for f in range(frames):
        name = f"{f:06d}.png"
        rgb = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        assert cv2.imwrite(str(seq / "rgb" / name), rgb[..., ::-1])
        assert cv2.imwrite(str(seq / "depth" / name), np.full((HEIGHT, WIDTH), 500, np.uint16))
        mask = np.zeros((HEIGHT, WIDTH), np.uint8)
        mask[5:15, 5:20] = 1
        mask[20:30, 30:60] = 2
        assert cv2.imwrite(str(seq / "mask" / name), mask)
    meta = {"format_version": 1, "config_digest": "abc", "index": index, "seed": 0, "domain": "lab",
            "hand_side": side, "object_name": object_name, "object_symmetry": "none", "frames": frames, "fps": 30,
            "width": WIDTH, "height": HEIGHT, "K": K.tolist(), "hand_label": 1, "object_label": 2,
            "depth_unit": "millimetre"}
    (seq / "meta.json").write_text(json.dumps(meta))
    return labels


@pytest.fixture
def synthetic(tmp_path):
    root = tmp_path / "synth"
    rng = np.random.default_rng(0)
    labels = [write_sequence(root, 0, 3, "right", "test_box", rng), write_sequence(root, 1, 2, "left", "test_box", rng)]
    manifest = {"format_version": 1, "generator": "hoi-train synth", "seed": 0, "domain": "lab",
                "frames_per_sequence": 3, "sequences": [
                    {"name": "seq_0000", "hand_side": "right", "object_name": "test_box", "frames": 3},
                    {"name": "seq_0001", "hand_side": "left", "object_name": "test_box", "frames": 2}],
                "total_frames": 5, "bags": [], "topics": {}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    objects = tmp_path / "objects.yaml"
    objects.write_text(OBJECTS_YAML)
    return root, objects, labels


def test_every_frame_loads_with_its_labels(synthetic):
    root, objects, labels = synthetic
    dataset = SyntheticDataset(SyntheticConfig(root=root, objects=objects))
    assert len(dataset) == 5
    sample = dataset[4]  # second sequence, frame 1
    assert (sample.sequence, sample.frame, sample.hand_side, sample.dataset) == ("seq_0001", "000001", "left",
                                                                                   "synthetic")
    truth = labels[1]
    np.testing.assert_allclose(sample.joints_3d, truth["joints3d"][1])
    np.testing.assert_allclose(sample.vertices_3d, truth["vertices3d"][1])
    np.testing.assert_allclose(sample.mano_pose, truth["hand_pose"][1])
    np.testing.assert_allclose(sample.mano_trans, truth["hand_transl"][1])
    np.testing.assert_allclose(sample.mano_shape, truth["betas"])
    np.testing.assert_allclose(sample.object_rotation, truth["object_rotation"][1])
    np.testing.assert_allclose(sample.object_points_2d, truth["object_control_points2d"][1])
    np.testing.assert_allclose(sample.K, truth["K"])
    np.testing.assert_allclose(sample.object_control_points,
                               bbox_control_points(np.array([-0.05, -0.03, -0.1]), np.array([0.05, 0.03, 0.1])),
                               atol=1e-9)
    assert sample.hand_mask.sum() == 10 * 15 and sample.object_mask.sum() == 10 * 30
    assert sample.image.shape == (HEIGHT, WIDTH, 3) and sample.image.dtype == np.uint8
    batch = collate_samples([dataset[0], dataset[1]])
    assert bool(batch["has_mano"].all()) and bool(batch["has_vertices"].all())


def test_masks_can_be_skipped(synthetic):
    root, objects, _ = synthetic
    sample = SyntheticDataset(SyntheticConfig(root=root, objects=objects, load_masks=False))[0]
    assert not sample.has_hand_mask and not sample.has_object_mask


def test_unfinished_or_inconsistent_datasets_are_refused(synthetic):
    root, objects, _ = synthetic
    (root / "manifest.json").rename(root / "manifest.bak")
    with pytest.raises(DatasetFormatError, match="no manifest.json: not a finished synthetic dataset"):
        SyntheticDataset(SyntheticConfig(root=root, objects=objects))
    (root / "manifest.bak").rename(root / "manifest.json")
    other = objects.parent / "other.yaml"
    other.write_text(OBJECTS_YAML.replace("test_box", "another_box"))
    with pytest.raises(DatasetFormatError, match=r"seq_0000/meta.json: unknown object 'test_box'"):
        SyntheticDataset(SyntheticConfig(root=root, objects=other))
    meta = json.loads((root / "seq_0001" / "meta.json").read_text())
    (root / "seq_0001" / "meta.json").write_text(json.dumps({**meta, "format_version": 2}))
    with pytest.raises(DatasetFormatError, match="format_version 2 is not supported"):
        SyntheticDataset(SyntheticConfig(root=root, objects=objects))
    (root / "seq_0001" / "meta.json").write_text(json.dumps({**meta, "frames": 4}))
    dataset = SyntheticDataset(SyntheticConfig(root=root, objects=objects))
    with pytest.raises(DatasetFormatError, match=r"seq_0001/labels.npz: array\(s\) \['joints3d'"):
        dataset[3]
    (root / "seq_0000" / "rgb" / "000002.png").unlink()
    with pytest.raises(DatasetFormatError, match=r"seq_0000/rgb/000002.png' not found"):
        dataset[2]
