"""Feature Pyramid Network top-down path that produces only P2 (stride 4).

SHO and HFL read every RoI from P2 alone, so only the finest level is computed:
1x1 laterals on C2..C5 (C2..C4 for the detector's own trunk), nearest x2 upsampling and addition from C5 down to C2, and
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
    """Top-down FPN over C2..Cn (``in_channels`` lists their channels, finest first)
    returning P2 with ``out_channels`` channels.

    Input sizes must be multiples of 32 so each level is exactly twice the next
    (a fixed scale factor keeps the ONNX graph free of shape arithmetic).
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256) -> None:
        super().__init__()
        if len(in_channels) < 2:
            raise ValueError(f"FPN in_channels: expected at least 2 levels (C2, C3, ...), got {list(in_channels)}")
        self.out_channels = out_channels
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, kernel_size=1) for c in in_channels)
        self.smooth = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)

    def forward(self, *levels: torch.Tensor) -> torch.Tensor:
        if len(levels) != len(self.lateral):
            raise ValueError(f"FPN: expected {len(self.lateral)} feature maps (C2 first), got {len(levels)}")
        top = self.lateral[-1](levels[-1])
        for index in range(len(levels) - 2, -1, -1):
            top = functional.interpolate(top, scale_factor=2.0, mode="nearest") + self.lateral[index](levels[index])
        return self.smooth(top)
