"""ResNet-18/34/50 feature extractors in plain PyTorch.

torchvision cannot be used in this project (its compiled ops do not load with the
CPU torch build), so the ResNets are written here. Parameter and buffer names are
identical to ``torchvision.models.resnet`` (``conv1``, ``bn1``, ``layer1..4`` with
``conv1/bn1/conv2/bn2[/conv3/bn3]/downsample.0/.1``) so an ImageNet checkpoint file
saved from torchvision loads with :func:`load_imagenet_weights`. The classifier
(``fc``) is not part of a feature extractor: its keys in a checkpoint are skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn

Activation = Literal["relu", "leaky_relu"]

# Semi-Hand-Object's ResNet uses LeakyReLU with PyTorch's default slope.
LEAKY_RELU_SLOPE = 0.01


def make_activation(name: Activation) -> nn.Module:
    """The nonlinearity used throughout the ResNet (parameter-free, so checkpoints load either way)."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "leaky_relu":
        return nn.LeakyReLU(LEAKY_RELU_SLOPE, inplace=True)
    raise ValueError(f"activation: expected 'relu' or 'leaky_relu', got {name!r}")


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut: ResNet-18/34."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 activation: Activation = "relu") -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = make_activation(activation)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, as torchvision's v1.5), 1x1 expand x4: ResNet-50."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 activation: Activation = "relu") -> None:
        super().__init__()
        self.conv1 = _conv1x1(in_channels, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = make_activation(activation)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# depth -> (block type, blocks per stage)
RESNET_SPECS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(nn.Module):
    """ResNet trunk without the classifier; :meth:`forward` returns the C2..C5 stage outputs.

    ``stage_channels`` gives the channel count of C2..C5 (strides 4, 8, 16, 32), which
    the FPN needs.
    """

    def __init__(self, depth: int, activation: Activation = "relu") -> None:
        super().__init__()
        if depth not in RESNET_SPECS:
            raise ValueError(f"ResNet depth: expected one of {sorted(RESNET_SPECS)}, got {depth!r}")
        block, blocks_per_stage = RESNET_SPECS[depth]
        self.depth = depth
        self._in_channels = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = make_activation(activation)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_stage(block, 64, blocks_per_stage[0], 1, activation)
        self.layer2 = self._make_stage(block, 128, blocks_per_stage[1], 2, activation)
        self.layer3 = self._make_stage(block, 256, blocks_per_stage[2], 2, activation)
        self.layer4 = self._make_stage(block, 512, blocks_per_stage[3], 2, activation)
        e = block.expansion
        self.stage_channels: tuple[int, int, int, int] = (64 * e, 128 * e, 256 * e, 512 * e)
        self._init_weights()

    def _make_stage(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int,
                    activation: Activation) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._in_channels != planes * block.expansion:
            downsample = nn.Sequential(_conv1x1(self._in_channels, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self._in_channels, planes, stride, downsample, activation)]
        self._in_channels = planes * block.expansion
        layers += [block(self._in_channels, planes, activation=activation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # The usual from-scratch ResNet init; an ImageNet checkpoint normally replaces it.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def stem(self, image: torch.Tensor) -> torch.Tensor:
        """conv1 + bn1 + activation + maxpool: stride 4, 64 channels."""
        return self.maxpool(self.relu(self.bn1(self.conv1(image))))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        c2 = self.layer1(self.stem(image))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c2, c3, c4, c5


CLASSIFIER_PREFIX = "fc."


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a torchvision-style ResNet state dict from a file.

    Accepts a bare state dict or one wrapped under ``state_dict``/``model`` (common
    training-checkpoint layouts), and strips a ``module.`` (DataParallel) prefix.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"ImageNet weights file '{file}' does not exist")
    data = torch.load(file, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(data, dict) and wrapper in data and isinstance(data[wrapper], dict):
            data = data[wrapper]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"ImageNet weights file '{file}': expected a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in data.items()}


def load_imagenet_weights(model: ResNet, path: str | Path) -> list[str]:
    """Load a torchvision ResNet checkpoint into ``model``; returns the skipped classifier keys.

    Every trunk parameter and buffer must be present with the right shape, otherwise a
    ValueError lists the missing, unexpected and mismatched keys (e.g. a ResNet-18 file
    given to a ResNet-50).
    """
    state = read_checkpoint(path)
    return load_trunk_state(model, state, str(path))


def load_trunk_state(model: ResNet, state: dict[str, torch.Tensor], origin: str) -> list[str]:
    """Strictly load ``state`` (torchvision names) into ``model``, skipping ``fc.*``."""
    skipped = sorted(k for k in state if k.startswith(CLASSIFIER_PREFIX))
    trunk_state = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIX)}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(trunk_state))
    unexpected = sorted(set(trunk_state) - set(expected))
    mismatched = sorted(f"{k}: file {tuple(trunk_state[k].shape)} vs model {tuple(expected[k].shape)}"
                        for k in set(expected) & set(trunk_state) if trunk_state[k].shape != expected[k].shape)
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if mismatched:
            problems.append(f"{len(mismatched)} with mismatched shapes (e.g. {mismatched[:3]})")
        raise ValueError(f"ImageNet weights '{origin}' do not fit a ResNet-{model.depth}: " + "; ".join(problems))
    model.load_state_dict(trunk_state, strict=True)
    return skipped

