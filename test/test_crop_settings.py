"""One crop for training and the runtime, and the crop a model was trained with travelling inside it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_model  # test/ is on sys.path under pytest

from hoi_perception.config import load_config, to_dict
from hoi_perception.engines.base import EngineConfig
from hoi_perception.engines.export import ModelMetadata, export_main, read_onnx_metadata
from hoi_perception.geometry.crop import CROP_SETTINGS_KEY, resolve_box_expansion, square_crop_box
from hoi_perception.models.config import load_model_config
from hoi_perception.models.network import HOINet
from hoi_perception.pipeline.config import EstimatorConfig
from hoi_perception.pipeline.crops import crop_geometry
from hoi_perception.pipeline.estimator import Estimator
from hoi_training.data.augment import AugmentConfig, crop_box_of, evaluation_crop
from hoi_training.release import release_checkpoint
from hoi_training.train_config import TrainConfig
from hoi_training.trainer import Trainer

TINY_MODEL = tiny_model(32)


def test_training_and_runtime_cut_the_same_crop(tiny_set):
    from hoi_training.data.synthetic import SyntheticConfig, SyntheticDataset

    sample = SyntheticDataset(SyntheticConfig(tiny_set))[1]
    for expansion in (1.0, 1.5, 2.2):
        box = crop_box_of(sample, expansion)
        np.testing.assert_allclose(box, square_crop_box((sample.hand_box, sample.object_box), expansion))
        crop, transform = evaluation_crop(sample, AugmentConfig(output_size=32, box_expansion=expansion))
        geometry = crop_geometry(sample.hand_box, sample.object_box, sample.image.shape[1], 32, False, expansion)
        np.testing.assert_allclose(geometry.image_to_crop, transform.image_to_crop, atol=1e-9)
        np.testing.assert_allclose(geometry.hand_box, crop.hand_box, atol=1e-6)


def test_resolving_the_crop_setting():
    assert resolve_box_expansion(None, 1.3, "model") == 1.3
    assert resolve_box_expansion(1.3, 1.3, "model") == 1.3
    assert resolve_box_expansion(None, None, "model") == 1.5  # a model that predates the record: SHO/HFL's x1.5
    assert resolve_box_expansion(1.8, None, "model") == 1.8
    with pytest.raises(ValueError, match=r"crop_box_expansion 1.5 is configured, but m.onnx was trained with crops "
                                         r"enlarged x1.3"):
        resolve_box_expansion(1.5, 1.3, "m.onnx")


def test_the_crop_setting_goes_from_training_to_checkpoint_release_onnx_and_runtime(tiny_set, tmp_path):
    config = load_config(TrainConfig, "train/tiny_test.yaml", [f"datasets.synthetic.config.root={tiny_set}",
                                                                 "augmentation.box_expansion=1.3",
                                                                 f"output_dir={tmp_path / 'run'}"])
    trainer = Trainer(config)
    assert trainer.checkpoint_state()[CROP_SETTINGS_KEY] == {"box_expansion": 1.3}
    trainer.save_checkpoint()
    released = tmp_path / "released.pt"
    release_checkpoint(trainer.checkpoint_path, released)
    assert torch.load(released, weights_only=True)[CROP_SETTINGS_KEY] == {"box_expansion": 1.3}

    written = export_main(released, "onnx", tmp_path / "onnx")
    metadata = ModelMetadata.from_props(read_onnx_metadata(written["crop"]), "crop")
    assert metadata.crop_box_expansion == 1.3
    files = {"crop_model": written["crop"], "detector_model": written["detector"]}
    estimator = Estimator(EstimatorConfig(**files))
    assert estimator.box_expansion == 1.3
    with pytest.raises(ValueError, match="crop_box_expansion 1.5 is configured, but .* trained with crops enlarged "
                                         "x1.3"):
        Estimator(EstimatorConfig(crop_box_expansion=1.5, **files))
    torch_config = EstimatorConfig(checkpoint=released, engine=EngineConfig(kind="torch"))
    assert Estimator(torch_config).box_expansion == 1.3


def test_models_without_the_record_crop_at_the_configured_or_default_enlargement(tmp_path):
    torch.manual_seed(0)
    config = load_model_config("models/hfl_r18.yaml", TINY_MODEL)
    path = tmp_path / "old.pt"
    torch.save({"model_config": to_dict(config), "model": HOINet(config).state_dict()}, path)
    written = export_main(path, "onnx", tmp_path / "onnx")
    assert not any(key.endswith("crop_box_expansion") for key in read_onnx_metadata(written["crop"]))
    files = {"crop_model": written["crop"], "detector_model": written["detector"]}
    assert Estimator(EstimatorConfig(**files)).box_expansion == 1.5
    assert Estimator(EstimatorConfig(crop_box_expansion=1.7, **files)).box_expansion == 1.7
