"""Image backbones: SHO's single-stream ResNet-FPN and HFL's harmonious two-stream one.

Both take a raw RGB crop in [0, 1] (B,3,S,S) and normalise it with the ImageNet
mean/std inside the graph, so exported engines take the camera image as it is. Both
return :class:`BackboneFeatures` with a hand-stream and an object-stream P2 map
(stride 4); the single-stream backbone returns the same tensor for both.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hoi_perception.models.fpn import FPNP2
from hoi_perception.models.resnet import Activation, ResNet, load_trunk_state, read_checkpoint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class BackboneFeatures:
    """P2 feature maps (B, C, S/4, S/4) for the hand and the object stream."""

    hand: torch.Tensor
    object: torch.Tensor


class ImageNormalization(nn.Module):
    """(x - mean) / std with ImageNet statistics; buffers are not saved in checkpoints."""

    mean: torch.Tensor  # buffer, registered in __init__
    std: torch.Tensor  # buffer, registered in __init__

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.mean) / self.std


class SingleStreamBackbone(nn.Module):
    """One ResNet + one FPN; hand and object RoIs are cut from the same P2 (SHO)."""

    def __init__(self, depth: int, fpn_channels: int = 256, activation: Activation = "relu") -> None:
        super().__init__()
        self.normalize = ImageNormalization()
        self.resnet = ResNet(depth, activation)
        self.fpn = FPNP2(self.resnet.stage_channels, fpn_channels)
        self.out_channels = fpn_channels

    def forward(self, image: torch.Tensor) -> BackboneFeatures:
        p2 = self.fpn(*self.resnet(self.normalize(image)))
        return BackboneFeatures(hand=p2, object=p2)

    def load_imagenet_weights(self, path: str | Path) -> list[str]:
        """Initialise the ResNet from a torchvision ImageNet checkpoint; returns the skipped keys."""
        return load_trunk_state(self.resnet, read_checkpoint(path), str(path))


class HarmoniousBackbone(nn.Module):
    """HFL-Net's backbone: shared stem + layer1, per-stream layer2 and layer3, shared layer4.

    ``resnet`` holds the shared stages and the hand stream's layer2/layer3;
    ``object_layer2``/``object_layer3`` are the object stream's copies. Both streams
    pass through the same ``layer4`` (called once per stream, so batch-norm statistics
    are those of each stream), and each stream has its own FPN.
    """

    def __init__(self, depth: int, fpn_channels: int = 256, activation: Activation = "relu") -> None:
        super().__init__()
        self.normalize = ImageNormalization()
        self.resnet = ResNet(depth, activation)
        self.object_layer2 = copy.deepcopy(self.resnet.layer2)
        self.object_layer3 = copy.deepcopy(self.resnet.layer3)
        self.hand_fpn = FPNP2(self.resnet.stage_channels, fpn_channels)
        self.object_fpn = FPNP2(self.resnet.stage_channels, fpn_channels)
        self.out_channels = fpn_channels

    def forward(self, image: torch.Tensor) -> BackboneFeatures:
        c2 = self.resnet.layer1(self.resnet.stem(self.normalize(image)))
        hand_c3 = self.resnet.layer2(c2)
        hand_c4 = self.resnet.layer3(hand_c3)
        object_c3 = self.object_layer2(c2)
        object_c4 = self.object_layer3(object_c3)
        hand_c5 = self.resnet.layer4(hand_c4)
        object_c5 = self.resnet.layer4(object_c4)
        return BackboneFeatures(hand=self.hand_fpn(c2, hand_c3, hand_c4, hand_c5),
                                object=self.object_fpn(c2, object_c3, object_c4, object_c5))

    def load_imagenet_weights(self, path: str | Path) -> list[str]:
        """Initialise both streams from one torchvision ImageNet checkpoint (as HFL does)."""
        state = read_checkpoint(path)
        skipped = load_trunk_state(self.resnet, state, str(path))
        self.object_layer2.load_state_dict(self.resnet.layer2.state_dict())
        self.object_layer3.load_state_dict(self.resnet.layer3.state_dict())
        return skipped


Backbone = SingleStreamBackbone | HarmoniousBackbone


class DetectorTrunk(nn.Module):
    """The detector's own features (``detection_head.trunk: own``): its own copies of the
    ResNet's layer2 and layer3 on the crop backbone's stem and layer1 (generic edges and
    textures, shared and frozen), and a P2 FPN over C2-C4, for whole letterboxed frames.

    Left out: layer4 (the largest stage, whose context a frame of the crop's size does not
    need beside layer3's). :meth:`copy_from` starts it as the crop backbone's (its hand
    stream for HFL's), so training begins from the shared detector's features less C5's part.
    """

    def __init__(self, depth: int, fpn_channels: int, activation: Activation = "relu") -> None:
        super().__init__()
        resnet = ResNet(depth, activation)
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.fpn = FPNP2(resnet.stage_channels[:3], fpn_channels)
        self.out_channels = fpn_channels

    def forward(self, c2: torch.Tensor) -> torch.Tensor:
        """C2 (the crop backbone's layer1 output on the frame) -> the detector's P2."""
        c3 = self.layer2(c2)
        return self.fpn(c2, c3, self.layer3(c3))

    def copy_from(self, backbone: Backbone) -> None:
        """Load the crop backbone's layer2-3 and C2-C4 FPN weights (hand stream for HFL)."""
        fpn = backbone.fpn if isinstance(backbone, SingleStreamBackbone) else backbone.hand_fpn
        self.layer2.load_state_dict(backbone.resnet.layer2.state_dict())
        self.layer3.load_state_dict(backbone.resnet.layer3.state_dict())
        for index, lateral in enumerate(self.fpn.lateral):
            lateral.load_state_dict(fpn.lateral[index].state_dict())
        self.fpn.smooth.load_state_dict(fpn.smooth.state_dict())


def shared_c2(backbone: Backbone, image: torch.Tensor) -> torch.Tensor:
    """The crop backbone's C2 (normalisation, stem, layer1) of ``image``: what the detector's own trunk reads."""
    return backbone.resnet.layer1(backbone.resnet.stem(backbone.normalize(image)))


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameter values (shared modules counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
