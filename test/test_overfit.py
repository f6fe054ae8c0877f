"""The whole network learns: a small HOINet overfits a handful of synthetic frames on CPU."""

from __future__ import annotations

import torch

from hoi_perception.config import load_config
from hoi_perception.synth.config import SynthConfig
from hoi_perception.synth.generator import generate_dataset
from hoi_training.train_config import TrainConfig
from hoi_training.trainer import Trainer

NO_AUGMENTATION = ["augmentation.scale_jitter=0", "augmentation.center_jitter=0", "augmentation.rotation_deg=0",
                   "augmentation.color_jitter=0", "augmentation.blur_probability=0"]


def test_small_model_overfits_a_few_frames(tmp_path):
    torch.manual_seed(0)
    data = tmp_path / "synth"
    generate_dataset(load_config(SynthConfig, "synth.yaml", ["camera.width=64", "camera.height=64"]), data,
                     sequences=1, frames=4, seed=1)
    config = load_config(TrainConfig, "train/tiny_test.yaml", [
        f"datasets.synthetic.config.root={data}", f"output_dir={tmp_path / 'run'}", "batch_size=4",
        "optimizer.lr=0.006", "optimizer.weight_decay=0", "cpu_threads=2", *NO_AUGMENTATION])
    trainer = Trainer(config)
    batch = next(iter(trainer._loader()))
    losses = [trainer.train_step(batch)[0].total for _ in range(100)]
    first, last = losses[0], min(losses[-10:])
    # Every term (2D heatmaps and joints, MANO, mesh, votes, confidences, detection) trains
    # on the same four frames: the total must fall at least tenfold.
    assert last < first / 10, (first, last)
