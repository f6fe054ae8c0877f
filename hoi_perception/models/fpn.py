"""Feature Pyramid Network top-down path that produces only P2 (stride 4).

SHO and HFL read every RoI from P2 alone, so only the finest level is computed:
1x1 laterals on C2..C5, nearest x2 upsampling and addition from C5 down to C2, and
one 3x3 smoothing convolution on the result. With ResNet-50 inputs and 256 output
channels this is 1.574 M parameters, which with the trunk gives the 25.08 M of
HFL's "single-stream" backbone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional


class FPNP2(nn.Module):
    """Top-down FPN over C2..C5 returning P2 with ``out_channels`` channels.

    Input sizes must be multiples of 32 so each level is exactly twice the next
    (a fixed scale factor keeps the ONNX graph free of shape arithmetic).
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256) -> None:
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"FPN in_channels: expected 4 values (C2..C5), got {list(in_channels)}")
        self.out_channels = out_channels
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, kernel_size=1) for c in in_channels)
        self.smooth = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)

    def forward(self, c2: torch.Tensor, c3: torch.Tensor, c4: torch.Tensor, c5: torch.Tensor) -> torch.Tensor:
        top = self.lateral[3](c5)
        for lateral, feature in zip((self.lateral[2], self.lateral[1], self.lateral[0]), (c4, c3, c2)):
            top = functional.interpolate(top, scale_factor=2.0, mode="nearest") + lateral(feature)
        return self.smooth(top)
