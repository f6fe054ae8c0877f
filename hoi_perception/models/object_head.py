"""Object decoder: dense votes for the 21 bounding-box control points, with confidences.

Semi-Hand-Object's grid voting: every cell of the object RoI (32x32) predicts where
each control point lies, as an offset from the cell's own centre, plus how much it
trusts that vote. Dense voting tolerates occlusion by the hand: cells on visible
object parts still vote for hidden corners. PnP (``geometry/pnp.py``) uses the most
confident votes.

Units: votes and offsets are in *box units*: (0, 0) is the object box's top-left
corner and (1, 1) its bottom-right, whatever the box size in pixels. Cell (i, j)
(row i, column j) has centre ((j + 0.5) / W, (i + 0.5) / H). The raw regression output
is scaled by ``offset_scale`` (0.1, SHO's factor) so a unit network output moves a
vote by a tenth of the box. ``votes_to_pixels`` maps votes to the pixels of the frame
the box is given in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch import nn

NUM_CONTROL_POINTS = 21

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


@dataclass
class ObjectHeadOutput:
    """Dense control-point votes of a batch of object RoIs.

    votes: (B, 21, 2, H, W) vote of each cell for each control point, (x, y) in box units
        (cell centre + predicted offset).
    confidence: (B, 21, H, W) in (0, 1), trained towards exp(-distance of the vote to the
        true point, in box units).
    """

    votes: torch.Tensor
    confidence: torch.Tensor


def cell_centres(height: int, width: int) -> torch.Tensor:
    """(2, H, W) box-unit centres of a grid's cells: [0] = x, [1] = y."""
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=0)


class ObjectHead(nn.Module):
    """Three (1x1 conv C->C/2, 3x3 conv C/2->C) blocks, each conv followed by BN and LeakyReLU,
    then a 1x1 conv to 21 x (dx, dy, confidence logit).

    ``coord_channels`` appends each cell's centre (x, y in box units) to the RoI as two
    input channels. A vote is the cell's centre plus an offset, so the offset a cell must
    predict depends on where it sits in the box; convolutions alone see position only
    through the zero padding, which is what left SHO's head, trained from scratch, at the
    "vote the median point from the cell's position" level.
    """

    centres: torch.Tensor  # buffer, registered in __init__

    def __init__(self, in_channels: int = 256, roi_size: int = 32, num_blocks: int = 3,
                 offset_scale: float = 0.1, coord_channels: bool = False) -> None:
        super().__init__()
        if in_channels < 2 or in_channels % 2:
            raise ValueError(f"ObjectHead in_channels: expected an even number >= 2, got {in_channels}")
        if roi_size < 1 or num_blocks < 1 or offset_scale <= 0:
            raise ValueError(f"ObjectHead: need roi_size >= 1, num_blocks >= 1, offset_scale > 0; got "
                             f"{roi_size}, {num_blocks}, {offset_scale}")
        inner = in_channels // 2
        layers: list[nn.Module] = []
        for block in range(num_blocks):
            first_in = in_channels + (2 if coord_channels and block == 0 else 0)
            layers += [nn.Conv2d(first_in, inner, 1), nn.BatchNorm2d(inner), nn.LeakyReLU(0.1),
                       nn.Conv2d(inner, in_channels, 3, padding=1), nn.BatchNorm2d(in_channels), nn.LeakyReLU(0.1)]
        self.trunk = nn.Sequential(*layers)
        self.out = nn.Conv2d(in_channels, NUM_CONTROL_POINTS * 3, 1)
        # Start with every vote at its own cell centre and confidence 0.5.
        nn.init.normal_(self.out.weight, std=0.001)
        assert self.out.bias is not None
        nn.init.zeros_(self.out.bias)
        self.roi_size = roi_size
        self.offset_scale = offset_scale
        self.register_buffer("centres", cell_centres(roi_size, roi_size).view(1, 1, 2, roi_size, roi_size),
                             persistent=False)
        self.coord_channels = coord_channels

    def forward(self, object_roi: torch.Tensor) -> ObjectHeadOutput:
        if not torch.jit.is_tracing() and (object_roi.dim() != 4 or object_roi.shape[-2:] != (self.roi_size,) * 2):
            raise ValueError(f"ObjectHead input: expected (B, C, {self.roi_size}, {self.roi_size}), "
                             f"got {tuple(object_roi.shape)}")
        if self.coord_channels:
            coords = self.centres[:, 0].expand(object_roi.shape[0], -1, -1, -1).to(object_roi.dtype)
            object_roi = torch.cat([object_roi, coords], dim=1)
        raw = self.out(self.trunk(object_roi))
        raw = raw.view(-1, NUM_CONTROL_POINTS, 3, self.roi_size, self.roi_size)
        votes = self.centres + self.offset_scale * raw[:, :, :2]
        confidence = torch.sigmoid(raw[:, :, 2])
        return ObjectHeadOutput(votes=votes, confidence=confidence)


def votes_to_pixels(votes: ArrayT, boxes: ArrayT) -> ArrayT:
    """Box-unit votes (B, 21, 2, H, W) -> pixels of the frame ``boxes`` (B, 4) = (x0, y0, x1, y1) are in.

    Works for NumPy arrays and torch tensors alike.
    """
    if votes.ndim != 5 or votes.shape[2] != 2:
        raise ValueError(f"votes: expected shape (B, 21, 2, H, W), got {tuple(votes.shape)}")
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] != votes.shape[0]:
        raise ValueError(f"boxes: expected shape ({votes.shape[0]}, 4), got {tuple(boxes.shape)}")
    origin = boxes[:, None, 0:2, None, None]
    size = boxes[:, None, 2:4, None, None] - origin
    return origin + votes * size


def points_to_box_units(points: ArrayT, boxes: ArrayT) -> ArrayT:
    """Pixel points (B, N, 2) -> box units of ``boxes`` (B, 4): the training target of the votes."""
    if points.ndim != 3 or points.shape[2] != 2:
        raise ValueError(f"points: expected shape (B, N, 2), got {tuple(points.shape)}")
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] != points.shape[0]:
        raise ValueError(f"boxes: expected shape ({points.shape[0]}, 4), got {tuple(boxes.shape)}")
    origin = boxes[:, None, 0:2]
    return (points - origin) / (boxes[:, None, 2:4] - origin)


def box_units_to_points(points: ArrayT, boxes: ArrayT) -> ArrayT:
    """Box-unit points (B, N, 2) -> pixels of the frame ``boxes`` (B, 4) are in.

    The inverse of :func:`points_to_box_units`; also maps the hand decoder's ``joints2d``
    (hand-box units) to pixels.
    """
    if points.ndim != 3 or points.shape[2] != 2:
        raise ValueError(f"points: expected shape (B, N, 2), got {tuple(points.shape)}")
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] != points.shape[0]:
        raise ValueError(f"boxes: expected shape ({points.shape[0]}, 4), got {tuple(boxes.shape)}")
    origin = boxes[:, None, 0:2]
    return origin + points * (boxes[:, None, 2:4] - origin)
