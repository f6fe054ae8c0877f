"""ModelConfig files and the assembled HOINet: shapes, routing, gradients, input checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hoi_perception.config import ConfigError
from hoi_perception.models.backbones import HarmoniousBackbone, SingleStreamBackbone, count_parameters
from hoi_perception.models.config import ModelConfig, load_model_config
from hoi_perception.models.interaction import ContextualReasoning, HarmoniousInteraction
from hoi_perception.models.network import DETECTION_OUTPUT_NAMES, OUTPUT_NAMES, HOINet

# Small but structurally complete variants of the shipped configs, for speed.
TINY = ["input_size=64", "backbone.depth=18", "backbone.fpn_channels=32", "detection_head.head_channels=8",
        "detection_head.max_detections=6"]


def randomize(network: HOINet, seed: int = 0) -> HOINet:
    """Give every learnt conv/linear an O(1)-gain init so outputs depend visibly on inputs
    (HFL's 0.001-std init makes heatmaps nearly uniform)."""
    generator = torch.Generator().manual_seed(seed)
    for m in network.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.requires_grad:
            fan_in = m.weight[0].numel()
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) / math.sqrt(fan_in))
    return network


@pytest.fixture(scope="module")
def hfl_tiny() -> HOINet:
    torch.manual_seed(0)
    return randomize(HOINet(load_model_config("models/hfl_r18.yaml", TINY))).eval()


@pytest.fixture(scope="module")
def sho_tiny() -> HOINet:
    torch.manual_seed(0)
    return randomize(HOINet(load_model_config("models/sho_r50.yaml", TINY))).eval()


def _inputs(batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    crop = torch.rand(batch, 3, 64, 64, generator=generator)
    hand = torch.tensor([[4.0, 5.0, 40.0, 50.0], [10.0, 10.0, 30.0, 60.0], [2.0, 30.0, 20.0, 60.0]])[:batch]
    obj = torch.tensor([[20.0, 15.0, 60.0, 62.0], [0.0, 0.0, 24.0, 20.0], [30.0, 2.0, 62.0, 28.0]])[:batch]
    return crop, hand, obj


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", ["hfl_r50", "sho_r50", "hfl_r18"])
def test_shipped_configs_load(name):
    cfg = load_model_config(f"models/{name}.yaml")
    assert cfg.name == name
    assert cfg.roi.output_size == 32 and cfg.input_size % 32 == 0


def test_shipped_configs_match_the_papers():
    hfl, sho, fast = (load_model_config(f"models/{n}.yaml") for n in ("hfl_r50", "sho_r50", "hfl_r18"))
    assert (hfl.input_size, hfl.backbone.streams, hfl.interaction.kind, hfl.interaction.num_heads) == (
        256, "harmonious", "harmonious", 4)
    assert (sho.input_size, sho.backbone.streams, sho.backbone.activation) == (512, "single", "leaky_relu")
    assert (sho.interaction.kind, sho.interaction.query) == ("contextual_reasoning", "object")
    assert (fast.backbone.depth, fast.backbone.streams, fast.backbone.fpn_channels) == (18, "harmonious", 64)
    assert load_model_config(None) == hfl  # the defaults are HFL-Net's


@pytest.mark.parametrize("overrides, message", [
    (["input_size=100"], "multiple of 32"),
    (["interaction.query=hand"], "contextual_reasoning only"),
    (["interaction.kind=contextual_reasoning"], "needs query"),
    (["interaction.num_heads=3"], "must divide"),
    (["roi.output_size=24"], "divisible by 16"),
    (["roi.sampling_ratio=0"], "adaptive"),
    (["backbone.depth=101"], "not one of"),
    (["backbone.fpn_channels=33"], "even"),
    (["detection_head.input_size=200"], "null or a positive multiple of 32"),
])
def test_invalid_configs_are_rejected(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_model_config("models/hfl_r50.yaml", overrides)


# ----------------------------------------------------------------------------- assembly


def test_assembly_follows_the_config(hfl_tiny, sho_tiny):
    assert isinstance(hfl_tiny.backbone, HarmoniousBackbone)
    assert isinstance(hfl_tiny.interaction, HarmoniousInteraction)
    assert isinstance(sho_tiny.backbone, SingleStreamBackbone)
    assert isinstance(sho_tiny.interaction, ContextualReasoning)
    assert sho_tiny.backbone.resnet.relu.negative_slope == pytest.approx(0.01)
    assert hfl_tiny.detection_head.heatmap[0].in_channels == 64  # both streams' P2 side by side
    assert sho_tiny.detection_head.heatmap[0].in_channels == 32
    assert hfl_tiny.roi_align.spatial_scale == 0.25 and hfl_tiny.roi_align.aligned


def test_hfl_r50_parameter_budget():
    net = HOINet(load_model_config("models/hfl_r50.yaml"))
    assert count_parameters(net.backbone) == 34_974_272  # HFL paper: 34.97 M
    # o2h block at 512 channels: 4 x (512^2 + 512) projections, LayerNorm, MLP 512-2048-512.
    o2h = 4 * (512 * 512 + 512) + 2 * 512 + (512 * 2048 + 2048) + (2048 * 512 + 512)
    assert count_parameters(net.interaction.object_to_hand) == o2h
    assert count_parameters(net.hand_decoder.hand_model) == 0  # MANO is fixed


def test_new_layers_use_hfl_init():
    net = HOINet(load_model_config("models/hfl_r18.yaml", TINY))
    smooth = net.backbone.hand_fpn.smooth.weight
    assert 0.0007 < smooth.std().item() < 0.0013
    assert torch.count_nonzero(net.backbone.hand_fpn.smooth.bias) == 0
    q = net.interaction.object_to_hand.blocks[0].query.weight
    assert 0.0007 < q.std().item() < 0.0013
    # The detection prior and the regressor's identity-rotation bias are kept.
    assert net.detection_head.heatmap[-1].bias[0].item() == pytest.approx(-math.log(9.0))
    assert net.hand_decoder.regressor.rotations.bias[:6].tolist() == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def test_pytorch_init_keeps_kaiming_scale_for_training_from_scratch():
    net = HOINet(load_model_config("models/hfl_r18.yaml", [*TINY, "new_layer_init=pytorch"]))
    smooth = net.backbone.hand_fpn.smooth.weight
    fan_in = smooth[0].numel()
    # Kaiming-uniform with a = sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in)), std 1/sqrt(3 fan_in).
    assert smooth.std().item() == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.1)
    assert net.detection_head.heatmap[-1].bias[0].item() == pytest.approx(-math.log(9.0))
    with pytest.raises(ConfigError, match="new_layer_init"):
        load_model_config("models/hfl_r18.yaml", ["new_layer_init=xavier"])


# ----------------------------------------------------------------------------- forward / detect


@pytest.mark.parametrize("fixture", ["hfl_tiny", "sho_tiny"])
def test_forward_shapes(fixture, request):
    net = request.getfixturevalue(fixture)
    with torch.no_grad():
        out = net(*_inputs(2))
    flat = out.flat()
    assert tuple(flat) == OUTPUT_NAMES
    expected = {"hand_heatmaps": (2, 21, 32, 32), "hand_joints2d": (2, 21, 2), "hand_joint_confidence": (2, 21),
                "hand_pose": (2, 48), "hand_rot6d": (2, 16, 6), "hand_betas": (2, 10),
                "hand_vertices": (2, 778, 3), "hand_joints3d": (2, 21, 3),
                "object_votes": (2, 21, 2, 32, 32), "object_confidence": (2, 21, 32, 32)}
    assert {k: tuple(v.shape) for k, v in flat.items()} == expected
    assert torch.allclose(out.hand.joints3d[:, 0], torch.zeros(2, 3), atol=1e-6)  # root-relative
    assert all(torch.isfinite(v).all() for v in flat.values())


@pytest.mark.parametrize("name", ["hfl_r50", "sho_r50", "hfl_r18", "cpu_r18"])
def test_shipped_configs_run_at_full_size(name):
    """Every shipped config, at its real input size: output shapes, dtypes and finiteness."""
    torch.manual_seed(0)
    net = HOINet(load_model_config(f"models/{name}.yaml")).eval()
    size = net.config.input_size
    roi = net.config.roi.output_size
    crop = torch.rand(1, 3, size, size)
    hand = torch.tensor([[0.1, 0.2, 0.6, 0.7]]) * size
    obj = torch.tensor([[0.4, 0.3, 0.9, 0.8]]) * size
    with torch.no_grad():
        flat = net(crop, hand, obj).flat()
        detector_size = net.config.detector_input_size
        detections = net.detect_top_k(torch.rand(1, 3, detector_size, detector_size))
    assert flat["hand_heatmaps"].shape == (1, 21, roi, roi)
    assert flat["hand_vertices"].shape == (1, 778, 3) and flat["hand_joints3d"].shape == (1, 21, 3)
    assert flat["object_votes"].shape == (1, 21, 2, roi, roi)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in flat.values())
    k = net.config.detection_head.max_detections
    assert detections.boxes.shape == (1, k, 4) and detections.scores.shape == (1, k)


def test_batch_items_are_independent(hfl_tiny):
    crop, hand, obj = _inputs(3)
    with torch.no_grad():
        together = hfl_tiny(crop, hand, obj).flat()
        alone = hfl_tiny(crop[1:2], hand[1:2], obj[1:2]).flat()
    for name in OUTPUT_NAMES:
        scale = alone[name].abs().max().clamp(min=1e-6)
        assert (together[name][1:2] - alone[name]).abs().max() / scale < 1e-5, name


def test_object_ignores_a_non_overlapping_hand(hfl_tiny):
    crop, hand, obj = _inputs(1)
    obj = torch.tensor([[40.0, 40.0, 62.0, 62.0]])
    far_hands = (torch.tensor([[0.0, 0.0, 20.0, 20.0]]), torch.tensor([[2.0, 5.0, 30.0, 38.0]]))
    near_hand = torch.tensor([[30.0, 30.0, 50.0, 50.0]])
    with torch.no_grad():
        votes = [hfl_tiny(crop, h, obj).object.votes for h in (*far_hands, near_hand)]
    # No overlap -> zero intersection features -> the object branch cannot see the hand box.
    assert torch.allclose(votes[0], votes[1], atol=1e-6)
    assert not torch.allclose(votes[0], votes[2], atol=1e-4)


def test_hfl_hand_branch_does_not_use_the_object_box(hfl_tiny):
    crop, hand, obj = _inputs(1)
    with torch.no_grad():
        base = hfl_tiny(crop, hand, obj).hand.joints2d
        moved = hfl_tiny(crop, hand, obj + 4.0).hand.joints2d
    # HFL's hand branch does not use the object box at all (it reads the object stream at the hand box).
    assert torch.allclose(base, moved, atol=1e-6)


def test_detect_shapes(hfl_tiny, sho_tiny):
    frame = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        for net in (hfl_tiny, sho_tiny):
            raw = net.detect(frame)
            assert raw.heatmap_logits.shape == (2, 3, 16, 16)
            assert raw.sizes.shape == raw.offsets.shape == (2, 2, 16, 16)
            top = net.detect_top_k(frame)
            assert tuple(f for f in DETECTION_OUTPUT_NAMES) == ("boxes", "scores", "classes")
            assert top.boxes.shape == (2, 6, 4) and top.scores.shape == (2, 6) and top.classes.shape == (2, 6)


def test_bad_inputs_name_the_argument(hfl_tiny):
    crop, hand, obj = _inputs(2)
    with pytest.raises(ValueError, match=r"image: expected \(B, 3, 64, 64\)"):
        hfl_tiny(crop[:, :, :32], hand, obj)
    with pytest.raises(ValueError, match="hand_box"):
        hfl_tiny(crop, hand[:1], obj)
    with pytest.raises(ValueError, match="object_box"):
        hfl_tiny(crop, hand, obj[:, :3])
    with pytest.raises(ValueError, match="image"):
        hfl_tiny.detect(torch.rand(1, 3, 128, 128))


def test_detector_frame_size_is_its_own():
    """detection_head.input_size: the detector takes larger frames than the crops, and nothing else."""
    config = load_model_config("models/hfl_r18.yaml", TINY[1:] + ["detection_head.input_size=128"])
    assert (config.input_size, config.detector_input_size) == (128, 128)
    config = load_model_config("models/hfl_r18.yaml", TINY + ["detection_head.input_size=128"])
    assert (config.input_size, config.detector_input_size) == (64, 128)
    net = HOINet(config).eval()
    with torch.no_grad():
        assert net.detect(torch.rand(1, 3, 128, 128)).heatmap_logits.shape == (1, 3, 32, 32)
        with pytest.raises(ValueError, match=r"image: expected \(B, 3, 128, 128\)"):
            net.detect(torch.rand(1, 3, 64, 64))
    assert load_model_config("models/cpu_r18.yaml").detector_input_size == 128  # 256 px was tried: fewer hands


@pytest.mark.parametrize("config", ["models/hfl_r18.yaml", "models/sho_r50.yaml"])
def test_detector_own_trunk_starts_as_the_crop_backbone(config):
    """detection_head.trunk: own - layer2-3 copied from the crop backbone (its hand stream for
    HFL) on the backbone's own stem and layer1, a P2 FPN over C2-C4, a head as wide as one P2."""
    from hoi_perception.models.backbones import shared_c2

    torch.manual_seed(0)
    net = HOINet(load_model_config(config, [*TINY, "detection_head.trunk=own"])).eval()
    trunk = net.detector_trunk
    assert trunk is not None and not hasattr(trunk, "layer4") and not hasattr(trunk, "layer1")
    assert net.detection_head.heatmap[0].in_channels == net.config.backbone.fpn_channels
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        c2 = shared_c2(net.backbone, image)
        torch.testing.assert_close(trunk.layer3(trunk.layer2(c2)), net.backbone.resnet.layer3(
            net.backbone.resnet.layer2(c2)))
        out = net.detect(image)
    assert out.heatmap_logits.shape == (2, 3, 16, 16)
    fpn = net.backbone.fpn if hasattr(net.backbone, "fpn") else net.backbone.hand_fpn
    assert torch.equal(trunk.fpn.smooth.weight, fpn.smooth.weight)
    assert [lat.in_channels for lat in trunk.fpn.lateral] == list(net.backbone.resnet.stage_channels[:3])
    # The crop backbone's layers and the trunk's are separate weights: training one leaves the other.
    assert trunk.layer2[0].conv1.weight.data_ptr() != net.backbone.resnet.layer2[0].conv1.weight.data_ptr()
    resnet = net.backbone.resnet
    assert count_parameters(trunk) == (count_parameters(resnet.layer2) + count_parameters(resnet.layer3)
                                       + count_parameters(trunk.fpn))


def test_cpu_r18_detector_has_its_own_trunk():
    config = load_model_config("models/cpu_r18.yaml")
    assert config.detection_head.trunk == "own"
    net = HOINet(config)
    # ResNet-18's layer2-3 (525,568 + 2,099,712) and a 64-channel C2-C4 FPN.
    assert count_parameters(net.detector_trunk) == 2_625_280 + (64 + 128 + 256) * 64 + 3 * 64 + 64 * 64 * 9 + 64
    with pytest.raises(ConfigError, match="trunk"):
        load_model_config("models/cpu_r18.yaml", ["detection_head.trunk=both"])


@pytest.mark.parametrize("config", ["models/hfl_r18.yaml", "models/sho_r50.yaml"])
def test_every_trainable_parameter_gets_a_gradient(config):
    torch.manual_seed(0)
    net = HOINet(load_model_config(config, TINY)).train()
    crop, hand, obj = _inputs(2)
    out = net(crop, hand, obj)
    det = net.detect(torch.rand(2, 3, 64, 64))
    total = sum(v.square().mean() for v in out.flat().values())
    total = total + sum(getattr(det, n).square().mean() for n in ("heatmap_logits", "sizes", "offsets"))
    total.backward()
    trainable = {n: p for n, p in net.named_parameters() if p.requires_grad}
    assert len(trainable) > 100
    no_grad = [n for n, p in trainable.items() if p.grad is None or torch.count_nonzero(p.grad) == 0]
    assert no_grad == []
    assert all(not p.requires_grad for p in net.hand_decoder.hand_model.parameters())


def test_load_imagenet_weights_through_the_network(tmp_path):
    from hoi_perception.models.resnet import ResNet

    torch.manual_seed(3)
    source = ResNet(18)
    path = tmp_path / "resnet18.pth"
    torch.save({**source.state_dict(), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, path)
    net = HOINet(load_model_config("models/hfl_r18.yaml", TINY))
    assert net.load_imagenet_weights(path) == ["fc.bias", "fc.weight"]
    assert torch.equal(net.backbone.object_layer3[1].conv1.weight, source.layer3[1].conv1.weight)


def test_model_config_defaults_validate():
    ModelConfig().validate()


def test_checkpoints_leave_the_mano_layer_out(hfl_tiny):
    state = hfl_tiny.state_dict()
    assert not any("hand_model" in k for k in state)
    assert "backbone.object_layer2.0.conv1.weight" in state
    fresh = HOINet(load_model_config("models/hfl_r18.yaml", TINY)).eval()
    v_template = fresh.hand_decoder.hand_model.mano.v_template.clone()
    # A checkpoint that does carry MANO arrays must not overwrite the configured hand model.
    polluted = {**state, "hand_decoder.hand_model.mano.v_template": torch.zeros_like(v_template)}
    result = fresh.load_state_dict(polluted, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert torch.equal(fresh.hand_decoder.hand_model.mano.v_template, v_template)
    crop, hand, obj = _inputs(1)
    with torch.no_grad():
        assert torch.allclose(fresh(crop, hand, obj).hand.vertices, hfl_tiny(crop, hand, obj).hand.vertices)
