"""ResNet trunks, FPN and the two backbones: names, parameter counts, weight loading, structure."""

from __future__ import annotations

import pytest
import torch

from hoi_perception.models.backbones import (
    IMAGENET_MEAN,
    HarmoniousBackbone,
    ImageNormalization,
    SingleStreamBackbone,
    count_parameters,
)
from hoi_perception.models.fpn import FPNP2
from hoi_perception.models.resnet import ResNet, load_imagenet_weights, make_activation

# torchvision's resnet18/34/50 parameter counts minus the 1000-way classifier (fc).
TORCHVISION_TRUNK_PARAMETERS = {18: 11_689_512 - 513_000, 34: 21_797_672 - 513_000, 50: 25_557_032 - 2_049_000}
# torchvision state_dict sizes (parameters + BN buffers) minus fc.weight and fc.bias.
TORCHVISION_TRUNK_KEYS = {18: 120, 34: 216, 50: 318}


@pytest.fixture(scope="module")
def resnet18() -> ResNet:
    torch.manual_seed(0)
    return ResNet(18).eval()


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_trunk_matches_torchvision_parameter_count_and_key_count(depth):
    model = ResNet(depth)
    assert count_parameters(model) == TORCHVISION_TRUNK_PARAMETERS[depth]
    assert len(model.state_dict()) == TORCHVISION_TRUNK_KEYS[depth]


def test_torchvision_names():
    keys50 = set(ResNet(50).state_dict())
    for name in ("conv1.weight", "bn1.running_mean", "layer1.0.conv3.weight", "layer1.0.bn3.bias",
                 "layer1.0.downsample.0.weight", "layer1.0.downsample.1.running_var",
                 "layer3.5.conv2.weight", "layer4.2.bn3.num_batches_tracked"):
        assert name in keys50
    keys18 = set(ResNet(18).state_dict())
    assert "layer2.0.downsample.0.weight" in keys18
    assert "layer1.0.downsample.0.weight" not in keys18  # ResNet-18 layer1 keeps 64 channels
    assert not any(k.startswith("layer1.0.conv3") for k in keys18)


def test_stage_shapes(resnet18):
    with torch.no_grad():
        c2, c3, c4, c5 = resnet18(torch.rand(2, 3, 64, 64))
    assert c2.shape == (2, 64, 16, 16)
    assert c3.shape == (2, 128, 8, 8)
    assert c4.shape == (2, 256, 4, 4)
    assert c5.shape == (2, 512, 2, 2)
    assert ResNet(50).stage_channels == (256, 512, 1024, 2048)


def test_bad_depth_is_rejected():
    with pytest.raises(ValueError, match="depth"):
        ResNet(101)
    with pytest.raises(ValueError, match="activation"):
        make_activation("tanh")


def test_leaky_relu_slope():
    x = torch.tensor([-2.0, 3.0])
    assert torch.allclose(make_activation("leaky_relu")(x.clone()), torch.tensor([-0.02, 3.0]))
    assert torch.allclose(make_activation("relu")(x.clone()), torch.tensor([0.0, 3.0]))


def test_load_imagenet_weights_roundtrip(tmp_path, resnet18):
    state = dict(resnet18.state_dict())
    state["fc.weight"] = torch.zeros(1000, 512)
    state["fc.bias"] = torch.zeros(1000)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)

    torch.manual_seed(1)
    fresh = ResNet(18).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(fresh(x)[3], resnet18(x)[3])
        skipped = load_imagenet_weights(fresh, path)
        assert skipped == ["fc.bias", "fc.weight"]
        assert torch.equal(fresh(x)[3], resnet18(x)[3])


def test_load_imagenet_weights_accepts_wrapped_and_dataparallel_checkpoints(tmp_path, resnet18):
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in resnet18.state_dict().items()}}, path)
    fresh = ResNet(18)
    assert load_imagenet_weights(fresh, path) == []
    assert torch.equal(fresh.layer3[1].conv2.weight, resnet18.layer3[1].conv2.weight)


def test_load_imagenet_weights_errors(tmp_path, resnet18):
    path = tmp_path / "r18.pth"
    torch.save(resnet18.state_dict(), path)
    with pytest.raises(ValueError, match=r"ResNet-34.*missing"):
        load_imagenet_weights(ResNet(34), path)
    with pytest.raises(ValueError, match=r"ResNet-50.*mismatched shapes"):
        load_imagenet_weights(ResNet(50), path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_imagenet_weights(ResNet(18), tmp_path / "nothing.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="state dict"):
        load_imagenet_weights(ResNet(18), tmp_path / "list.pth")


def test_fpn_p2_shape_and_parameters():
    fpn = FPNP2((256, 512, 1024, 2048), 256)
    # 1x1 laterals (with bias) + one 3x3 smoothing conv.
    assert count_parameters(fpn) == (256 + 512 + 1024 + 2048) * 256 + 4 * 256 + 256 * 256 * 9 + 256
    c = [torch.rand(1, ch, 32 // s, 32 // s) for ch, s in zip((256, 512, 1024, 2048), (1, 2, 4, 8))]
    assert fpn(*c).shape == (1, 256, 32, 32)
    with pytest.raises(ValueError, match="at least 2 levels"):
        FPNP2((256,))
    with pytest.raises(ValueError, match="expected 4 feature maps"):
        fpn(*c[:3])


def test_fpn_p2_over_three_levels_adds_each_upsampled_level():
    fpn = FPNP2((8, 16, 32), 4)
    with torch.no_grad():
        for lateral in fpn.lateral:
            lateral.weight.zero_()
            lateral.bias.zero_()
        fpn.lateral[2].bias.fill_(1.0)  # only C4 contributes: a constant 1 carried up to P2
        fpn.smooth.weight.zero_()
        fpn.smooth.bias.zero_()
        fpn.smooth.weight[:, :, 1, 1] = torch.eye(4)
    c = [torch.rand(1, ch, 16 // s, 16 // s) for ch, s in zip((8, 16, 32), (1, 2, 4))]
    out = fpn(*c)
    assert out.shape == (1, 4, 16, 16)
    torch.testing.assert_close(out, torch.ones(1, 4, 16, 16))


def test_backbone_parameter_counts_match_hfl_paper():
    # HFL-Net section 4.4: single-stream 25.08 M, HFL 34.97 M (ResNet-50 + FPN, no classifier).
    assert count_parameters(SingleStreamBackbone(50)) == 25_082_176
    assert count_parameters(HarmoniousBackbone(50)) == 34_974_272
    assert abs(count_parameters(SingleStreamBackbone(50)) / 1e6 - 25.08) < 0.01
    assert abs(count_parameters(HarmoniousBackbone(50)) / 1e6 - 34.97) < 0.01


def test_image_normalization_is_imagenet_and_not_saved():
    norm = ImageNormalization()
    mean_image = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert torch.allclose(norm(mean_image), torch.zeros(1, 3, 2, 2), atol=1e-6)
    assert torch.allclose(norm(torch.ones(1, 3, 1, 1)).flatten(), torch.tensor([2.2489, 2.4286, 2.64]), atol=1e-4)
    assert len(norm.state_dict()) == 0


def test_single_stream_returns_one_p2_for_both():
    model = SingleStreamBackbone(18, fpn_channels=64).eval()
    with torch.no_grad():
        features = model(torch.rand(2, 3, 64, 64))
    assert features.hand.shape == (2, 64, 16, 16)
    assert features.hand is features.object


def test_harmonious_backbone_structure_and_gradients():
    torch.manual_seed(0)
    model = HarmoniousBackbone(18, fpn_channels=32)
    features = model(torch.rand(2, 3, 64, 64))
    assert features.hand.shape == features.object.shape == (2, 32, 16, 16)
    assert not torch.allclose(features.hand, features.object)
    # The hand-stream loss trains the shared stem/layer1/layer4 and the hand layers only.
    features.hand.square().mean().backward()
    assert model.resnet.layer4[0].conv1.weight.grad.abs().sum() > 0
    assert model.resnet.layer1[0].conv1.weight.grad.abs().sum() > 0
    assert model.resnet.layer2[0].conv1.weight.grad.abs().sum() > 0
    assert model.object_layer2[0].conv1.weight.grad is None
    assert model.object_fpn.smooth.weight.grad is None


def test_harmonious_backbone_loads_both_streams_from_one_checkpoint(tmp_path, resnet18):
    path = tmp_path / "r18.pth"
    torch.save(resnet18.state_dict(), path)
    model = HarmoniousBackbone(18)
    model.load_imagenet_weights(path)
    assert torch.equal(model.object_layer2[1].conv2.weight, resnet18.layer2[1].conv2.weight)
    assert torch.equal(model.object_layer3[0].downsample[1].running_mean, resnet18.layer3[0].downsample[1].running_mean)
    assert torch.equal(model.resnet.layer4[0].conv1.weight, resnet18.layer4[0].conv1.weight)
    # The copies are independent parameters, not aliases.
    assert model.object_layer2[0].conv1.weight.data_ptr() != model.resnet.layer2[0].conv1.weight.data_ptr()
