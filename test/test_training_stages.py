"""The CPU recipe's pieces: stages, warm-up + cosine schedule, 3D ramp, detection augmentation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hoi_perception.config import ConfigError, load_config, resolve_config_path
from hoi_perception.models.config import load_model_config
from hoi_perception.models.detection_head import LEFT_HAND, OBJECT, RIGHT_HAND
from hoi_perception.models.object_head import ObjectHead
from hoi_training.losses import LossConfig, LossWeights
from hoi_training.train_config import DetectionAugmentConfig, OptimizerConfig, TrainConfig
from hoi_training.trainer import fit_main
from hoi_training.training.batches import augment_detection_frame

TINY = "train/tiny_test.yaml"


def overrides(root: Path, *extra: str) -> list[str]:
    return [f"datasets.synthetic.config.root={root}", "image_interval=0", *extra]


def test_warmup_then_cosine_learning_rate():
    config = OptimizerConfig(kind="adamw", lr=1e-3, schedule="cosine", warmup_steps=4, min_lr_ratio=0.1)
    factors = [config.lr_factor(step, 24) for step in range(25)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[4] == pytest.approx(1.0)
    assert factors[14] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))  # half-way: 0.55
    assert factors[24] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:]))
    assert OptimizerConfig(warmup_steps=2).lr_factor(10, 100) == 1.0  # step schedule: warm-up only


def test_3d_terms_ramp_in():
    config = LossConfig(weights=LossWeights(vertices=10000.0, joints3d=10000.0, mano_pose=1.0, heatmaps=100.0),
                        ramp_3d_steps=100)
    quarter = config.at_step(25).weights
    assert quarter.vertices == pytest.approx(2500.0) and quarter.joints3d == pytest.approx(2500.0)
    assert quarter.mano_pose == pytest.approx(0.25) and quarter.heatmaps == 100.0
    assert config.at_step(0).weights.vertices == 0.0
    assert config.at_step(100) is config and LossConfig().at_step(0).weights.vertices == 10000.0


def test_detection_flip_swaps_sides_and_zoom_moves_boxes():
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[10:20, 5:15] = 255  # the right hand's pixels
    boxes = np.array([[5.0, 10, 15, 20], [30, 30, 50, 60]])
    classes = np.array([RIGHT_HAND, OBJECT])
    flipped, out_boxes, out_classes = augment_detection_frame(frame, boxes, classes,
                                                              DetectionAugmentConfig(flip_probability=1.0),
                                                              np.random.default_rng(0))
    np.testing.assert_allclose(out_boxes, [[48, 10, 58, 20], [13, 30, 33, 60]])  # u -> 63 - u, as mirror_boxes
    assert out_classes.tolist() == [LEFT_HAND, OBJECT]
    assert flipped[10:20, 49:59].min() == 255 and flipped[10:20, 5:15].max() == 0

    config = DetectionAugmentConfig(scale_jitter=0.5, min_box_side=2.0)
    for seed in range(10):
        zoomed, z_boxes, z_classes = augment_detection_frame(frame, boxes[:1], classes[:1], config,
                                                             np.random.default_rng(seed))
        if len(z_boxes):  # the box still covers the hand's pixels
            x0, y0, x1, y1 = np.round(z_boxes[0]).astype(int)
            inside = zoomed[y0 + 1:y1 - 1, x0 + 1:x1 - 1, 0]
            assert inside.size == 0 or inside.mean() > 200
            assert z_classes.tolist() == [RIGHT_HAND]


def test_object_head_coordinate_channels_tell_cells_apart():
    torch.manual_seed(0)
    head = ObjectHead(8, 8, num_blocks=1, coord_channels=True).eval()
    assert head.trunk[0].in_channels == 10
    out = head(torch.zeros(2, 8, 8, 8))  # no image signal: only the coordinates differ between cells
    assert out.votes.shape == (2, 21, 2, 8, 8)
    raw = (out.votes - head.centres) / head.offset_scale
    assert raw[0, :, :, 0, 0].sub(raw[0, :, :, 7, 7]).abs().max() > 1e-6
    assert load_model_config("models/cpu_r18.yaml").object_head.coord_channels


@pytest.mark.parametrize("override, message", [
    ("stage=detector", "must start from trained weights"),
    ("optimizer.min_lr_ratio=2", "min_lr_ratio must be in [0, 1]"),
    ("detection_augmentation.scale_jitter=1.5", "scale_jitter must be in [0, 1)"),
    ("side_negatives=0.5", "side_negatives (0.5) trains the side head in a full stage"),
    ("side_negatives=1.5", "side_negatives must be a fraction in [0, 1]"),
])
def test_stage_config_errors(tiny_set, override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        load_config(TrainConfig, TINY, overrides(tiny_set, override))


def test_stages_train_what_they_say(tiny_set, tmp_path):
    """heatmaps -> full (from it) -> detector (from that): each stage moves only its parts."""
    heat = tmp_path / "heatmaps"
    assert fit_main(TINY, overrides(tiny_set, "stage=heatmaps", "max_steps=2", "optimizer.kind=adamw",
                                    "optimizer.schedule=cosine", "optimizer.warmup_steps=1"), out_dir=heat) == 0
    full = tmp_path / "full"
    assert fit_main(TINY, overrides(tiny_set, "max_steps=2", f"init_checkpoint={heat}/checkpoints/last.pt",
                                    "loss.ramp_3d_steps=2"), out_dir=full) == 0
    detector = tmp_path / "detector"
    assert fit_main(TINY, overrides(tiny_set, "stage=detector", "max_steps=2",
                                    "detection_augmentation.flip_probability=0.5",
                                    f"init_checkpoint={full}/checkpoints/last.pt"), out_dir=detector) == 0
    from hoi_perception.models.network import HOINet

    torch.manual_seed(0)  # the trainer's seed: the network stage 1 started from
    initial = HOINet(load_config(TrainConfig, TINY, overrides(tiny_set)).model_config()).state_dict()
    states = [torch.load(run / "checkpoints" / "last.pt", weights_only=False) for run in (heat, full, detector)]

    def moved(before, after):
        return {k.split(".")[0] + ("." + k.split(".")[1] if k.startswith("hand_decoder") else "")
                for k in after if not torch.equal(before[k], after[k])}

    # Stage 1 (seeded like the fresh network above) moves the backbone and the heatmap net only.
    assert moved(initial, states[0]["model"]) == {"backbone", "hand_decoder.heatmap_net"}
    assert states[0]["scheduler"]["last_epoch"] == 2  # the cosine schedule steps per optimiser step
    assert moved(states[1]["model"], states[2]["model"]) == {"detection_head"}


def test_detector_stage_trains_its_own_trunk_from_the_crop_backbone(tiny_set, tmp_path):
    """detection_head.trunk: own, started from a shared-trunk checkpoint: the trunk begins as
    the crop backbone's copy and trains with the head; the crop network does not move."""
    full = tmp_path / "full"
    assert fit_main(TINY, overrides(tiny_set, "max_steps=1"), out_dir=full) == 0
    config = yaml.safe_load(resolve_config_path(TINY).read_text())
    config["model"] = str(resolve_config_path(config["model"]))
    config["model_overrides"] = [*config["model_overrides"], "detection_head.trunk=own"]
    own_yaml = tmp_path / "own.yaml"
    own_yaml.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="detector_trunk_init: crop_backbone"):
        load_config(TrainConfig, own_yaml, overrides(tiny_set, "detector_trunk_init=crop_backbone"))
    own = tmp_path / "own"
    assert fit_main(str(own_yaml), overrides(tiny_set, "stage=detector", "max_steps=2",
                                             "detector_trunk_init=crop_backbone",
                                             f"init_checkpoint={full}/checkpoints/last.pt"), out_dir=own) == 0
    before = torch.load(full / "checkpoints" / "last.pt", weights_only=False)["model"]
    after = torch.load(own / "checkpoints" / "last.pt", weights_only=False)["model"]
    crop_network = [k for k in before if not k.startswith("detection_head.")]
    assert all(torch.equal(before[k], after[k]) for k in crop_network)
    trunk = {k.removeprefix("detector_trunk."): v for k, v in after.items()
             if k.startswith(("detector_trunk.layer2.", "detector_trunk.layer3."))}
    source = {k.removeprefix("backbone.resnet."): v for k, v in before.items() if k.startswith("backbone.resnet.")}
    assert set(trunk) == {k for k in source if k.startswith(("layer2.", "layer3."))}
    moved = [k for k in trunk if k.endswith("weight") and not torch.equal(trunk[k], source[k])]
    assert len(moved) > 10  # it started as the copy and trained
    # Two Adam steps at the warm-up's small learning rate keep it close to the copy.
    assert max((trunk[k] - source[k]).abs().max().item() for k in moved) < 0.05


def test_frozen_modules_keep_their_weights_and_running_statistics(tiny_set, tmp_path):
    """frozen_modules: the named modules stay exactly as init_checkpoint has them (BatchNorm
    statistics included) while the rest of the network trains."""
    first = tmp_path / "first"
    assert fit_main(TINY, overrides(tiny_set, "max_steps=1"), out_dir=first) == 0
    frozen = ["backbone.resnet.bn1", "backbone.resnet.layer1"]
    second = tmp_path / "second"
    assert fit_main(TINY, overrides(tiny_set, "max_steps=2", f"init_checkpoint={first}/checkpoints/last.pt",
                                    f"frozen_modules=[{', '.join(frozen)}]"), out_dir=second) == 0
    before = torch.load(first / "checkpoints" / "last.pt", weights_only=False)["model"]
    after = torch.load(second / "checkpoints" / "last.pt", weights_only=False)["model"]
    kept = [k for k in before if k.startswith(tuple(f"{name}." for name in frozen))]
    assert any(k.endswith("running_mean") for k in kept)
    assert all(torch.equal(before[k], after[k]) for k in kept)
    trained = "backbone.resnet.layer2.0.conv1.weight"
    assert not torch.equal(before[trained], after[trained])
    with pytest.raises(ConfigError, match="has no module 'backbone.resnet.layer9'"):
        fit_main(TINY, overrides(tiny_set, "max_steps=1", f"init_checkpoint={first}/checkpoints/last.pt",
                                 "frozen_modules=[backbone.resnet.layer9]"), out_dir=tmp_path / "bad")


def test_side_negatives_are_the_crops_mirrored_with_their_boxes():
    from hoi_training.training.step import SideNegatives

    image = torch.zeros(1, 3, 8, 8)
    image[0, :, 2:4, 1:3] = 1.0  # the "hand" pixels, columns 1-2
    hand_box = torch.tensor([[1.0, 2.0, 2.0, 3.0]])
    negatives = SideNegatives.mirror(image, hand_box, torch.tensor([[0.0, 0.0, 7.0, 5.0]]))
    assert negatives.image[0, 0, 2:4, 5:7].min() == 1.0 and negatives.image[0, 0, :, :5].max() == 0.0
    torch.testing.assert_close(negatives.hand_box, torch.tensor([[5.0, 2.0, 6.0, 3.0]]))  # u -> 7 - u
    torch.testing.assert_close(negatives.object_box, torch.tensor([[0.0, 0.0, 7.0, 5.0]]))


def test_side_negatives_train_the_side_head(tiny_set, tmp_path):
    """A full stage with side_negatives logs the side term and moves the side head, which a run
    without it leaves at its initialisation."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "side"
    args = overrides(tiny_set, "max_steps=2", "model_overrides=[input_size=32, backbone.fpn_channels=16, "
                     "roi.output_size=8, hand_head.hourglass_depth=2, hand_head.encoder_rounds=2, "
                     "hand_head.regressor_hidden=32, object_head.num_blocks=1, detection_head.head_channels=8, "
                     "hand_head.side_head=true]", "batch_size=4")
    assert fit_main(TINY, [*args, "side_negatives=0.5"], out_dir=run) == 0
    plain = tmp_path / "plain"
    assert fit_main(TINY, args, out_dir=plain) == 0
    trained = torch.load(run / "checkpoints" / "last.pt", weights_only=False)["model"]
    untouched = torch.load(plain / "checkpoints" / "last.pt", weights_only=False)["model"]
    key = "hand_decoder.side_classifier.logit.weight"
    assert not torch.equal(trained[key], untouched[key])
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    side_terms = [tag for tag in events.Tags()["scalars"] if "hand_side" in tag or "side_accuracy" in tag]
    assert len(side_terms) == 2
    losses = [e.value for e in events.Scalars(next(t for t in side_terms if "hand_side" in t))]
    assert all(0.0 < value < 100.0 * 5 for value in losses)  # weight 100 x a binary cross-entropy
