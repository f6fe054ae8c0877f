"""PseudoLabelDataset: pseudo-label output read back as hand-only samples, and training on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hoi_perception.config import ConfigError, load_config
from hoi_perception.hand_model.mano import HandModel
from hoi_training.data.augment import mirror_sample
from hoi_training.data.synthetic import SyntheticConfig, SyntheticDataset
from hoi_training.pseudolabel import load_shard
from hoi_training.pseudolabel.dataset import PseudoLabelDataset, PseudoLabelDatasetConfig, read_manifest
from hoi_training.train_config import TrainConfig
from hoi_training.trainer import Trainer, build_hand_object_targets, collate_examples


@pytest.fixture
def data(oracle_pseudo_data) -> dict[str, Path]:
    return oracle_pseudo_data


def stored_rows(labels: Path) -> dict[str, np.ndarray]:
    shards = [load_shard(labels / s["file"]) for s in read_manifest(labels)["shards"]]
    return {key: np.concatenate([s[key] for s in shards]) for key in shards[0]}


def test_samples_carry_hand_labels_only_in_the_stored_crop(data):
    rows = stored_rows(data["labels"])
    dataset = PseudoLabelDataset(PseudoLabelDatasetConfig(root=data["labels"], filter="none"))
    truth = SyntheticDataset(SyntheticConfig(root=data["wild"], load_masks=False))
    assert len(dataset) == len(truth) == 8
    sample = dataset[6]
    assert sample.dataset == "pseudo" and sample.sequence == "seq_0001" and sample.frame == "000002"
    assert sample.image.shape == (32, 32, 3) and sample.weight == 1.0 and sample.hand_side == "left"
    assert sample.object_box is None and sample.object_rotation is None and sample.object_points_2d is None
    to_crop = rows["image_to_crop"][6]
    np.testing.assert_allclose(sample.K, to_crop @ truth[6].K)
    np.testing.assert_allclose(sample.joints_2d, truth[6].joints_2d @ to_crop[:2, :2].T + to_crop[:2, 2], atol=1e-3)
    x0, y0, x1, y1 = truth[6].hand_box
    scale = to_crop[0, 0]
    np.testing.assert_allclose(sample.hand_box, [x0 * scale + to_crop[0, 2], y0 * scale + to_crop[1, 2],
                                                 x1 * scale + to_crop[0, 2], y1 * scale + to_crop[1, 2]], atol=1e-3)
    hand = HandModel("right")
    for index in (1, 6):  # a right hand, and a left one through the mirror (as training sees it)
        pseudo, true = dataset[index], truth[index]
        np.testing.assert_allclose(pseudo.joints_3d, true.joints_3d, atol=1e-5)
        np.testing.assert_allclose(pseudo.vertices_3d, true.vertices_3d, atol=1e-5)
        right = mirror_sample(pseudo) if pseudo.hand_side == "left" else pseudo
        pose = torch.as_tensor(right.mano_pose[None], dtype=torch.float32)
        out = hand(global_orient=pose[:, :3], hand_pose=pose[:, 3:],
                   betas=torch.as_tensor(right.mano_shape[None], dtype=torch.float32))
        np.testing.assert_allclose(out.joints[0].double().numpy() + right.mano_trans, right.joints_3d, atol=1e-4)


def test_filters_select_frames_and_confidence_weights(data):
    rows = stored_rows(data["labels"])
    kept = PseudoLabelDataset(PseudoLabelDatasetConfig(root=data["labels"]))
    assert len(kept) == int(rows["kept"].sum()) >= 6
    assert [f"{s.sequence}/{s.frame}" for s in (kept[i] for i in range(len(kept)))] == [
        f"seq_{i // 4:04d}/{i % 4:06d}" for i in np.flatnonzero(rows["kept"])]
    assert len(PseudoLabelDataset(PseudoLabelDatasetConfig(root=data["labels"], filter="none"))) == 8
    weighted = PseudoLabelDataset(PseudoLabelDatasetConfig(root=data["labels"], filter="none", weight="confidence"))
    assert weighted[3].weight == pytest.approx(float(rows["joint_confidence"][3].mean()), rel=1e-6)


def test_unfinished_output_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="has no manifest.json"):
        PseudoLabelDataset(PseudoLabelDatasetConfig(root=tmp_path))
    with pytest.raises(ConfigError, match="'sometimes' is not one of"):
        load_config(PseudoLabelDatasetConfig, {"root": str(tmp_path), "filter": "sometimes"})


def test_semi_supervised_config_masks_the_object_loss_on_pseudo_labels(data):
    config = load_config(TrainConfig, "train/semi_synthetic_hfl_r18.yaml",
                         [f"datasets.synthetic_lab.config.root={data['lab']}",
                          f"datasets.pseudo_wild.config.root={data['labels']}", "init_checkpoint=null"])
    entry = config.datasets["pseudo_wild"]
    assert entry.kind == "pseudo" and entry.object_loss is False and config.datasets["synthetic_lab"].object_loss
    assert entry.dataset_config().filter == "job"


def test_training_step_on_labelled_and_pseudo_data(data, tmp_path):
    config = load_config(TrainConfig, "train/tiny_test.yaml", [
        f"datasets.synthetic.config.root={data['lab']}", f"output_dir={tmp_path / 'run'}",
        "datasets.wild.kind=pseudo", f"datasets.wild.config.root={data['labels']}",
        "datasets.wild.object_loss=false"])
    trainer = Trainer(config)
    lab, wild = trainer.dataset.parts
    assert len(lab) == 4 and len(wild) >= 6
    mixed = collate_examples([lab[0], wild[0], wild[5]])
    targets, _, _ = build_hand_object_targets(mixed.crop, mixed.object_loss, trainer.network.hand_decoder.hand_model,
                                              trainer.model_config.roi.output_size)
    assert targets.has_object.tolist() == [1.0, 0.0, 0.0]
    assert targets.has_hand2d.tolist() == [1.0, 1.0, 1.0]
    assert targets.has_mano.tolist() == [1.0, 1.0, 1.0] and targets.has_hand3d.tolist() == [1.0, 1.0, 1.0]

    pseudo_only, _ = trainer.train_step(collate_examples([wild[0], wild[1]]))
    assert pseudo_only.terms["object_votes"] == 0.0 and pseudo_only.terms["object_confidence"] == 0.0
    assert pseudo_only.terms["joints2d"] > 0 and pseudo_only.terms["heatmaps"] > 0
    labelled, _ = trainer.train_step(collate_examples([lab[0], lab[1]]))
    assert labelled.terms["object_votes"] > 0 and labelled.terms["object_confidence"] > 0
    assert np.isfinite(pseudo_only.total) and np.isfinite(labelled.total)
