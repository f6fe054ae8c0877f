"""Hand decoder: 2D joint heatmaps, then MANO pose and shape, then the mesh.

Semi-Hand-Object's decoder, used unchanged by HFL-Net:

1. an hourglass (4 levels of pre-activation bottlenecks) on the 32x32 hand RoI gives
   21 heatmaps; a spatial softmax with a learnable per-joint temperature turns them
   into distributions whose expectation (soft-argmax) is the joint's 2D position,
   differentiable end to end;
2. an encoder fuses heatmaps and hourglass features (1x1 convs, summed) and reduces
   them with four rounds of (2 residual blocks + 2x2 max-pool) to a vector;
3. a regressor predicts 16 joint rotations in the continuous 6D form and 10 shape
   coefficients; the rotations become MANO's axis-angle pose, and a right-hand MANO
   layer (flat hand mean, no PCA) gives vertices and joints, made root-relative;
4. optionally (``mask_head``), a small convolutional decoder on the same hourglass
   features gives a hand-mask logit map on the hand-box grid. SemiHand predicts the
   mask with the pose network's shared trunk, which ties the two tasks together and
   is what its view and cross-modal consistency terms compare the pose with.

2D joints are in *hand-box units*: (0, 0) is the hand box's top-left corner and
(1, 1) its bottom-right; heatmap cell (i, j) has centre ((j + 0.5) / W, (i + 0.5) / H).
3D outputs are in metres, relative to the wrist (joint 0), in the axes of the camera
the crop was taken with. Left hands are mirrored before the network
(``geometry/mirror.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import nn

from hoi_perception.geometry.rotations import matrix_to_axis_angle, rot6d_to_matrix
from hoi_perception.hand_model.mano import HandModel

NUM_JOINTS = 21
NUM_MANO_ROTATIONS = 16
NUM_BETAS = 10


@dataclass
class HandDecoderOutput:
    """Hand decoder outputs for a batch of hand RoIs.

    heatmaps: (B, 21, H, W) per-joint spatial distributions (each sums to 1).
    joints2d: (B, 21, 2) soft-argmax (x, y) in hand-box units.
    joint_confidence: (B, 21) heatmap mass within ``confidence_radius`` cells of joints2d, in [0, 1].
    pose: (B, 48) MANO axis-angle: global orientation (3) then 15 joints (45).
    rot6d: (B, 16, 6) the same rotations in 6D form (what the pose loss compares).
    betas: (B, 10) MANO shape.
    vertices: (B, 778, 3) and joints3d: (B, 21, 3) root-relative (wrist at the origin), metres.
    mask_logits: (B, 1, H, W) hand-mask logits on the heatmap grid (the hand box), or None
        without a mask head (the output is then absent from flattened and exported outputs).
    side_logit: (B,) logit that the crop shows a right hand as it is (a left hand's crop
        mirrored, as the network expects), or None without a side head (absent as mask_logits).
    """

    heatmaps: torch.Tensor
    joints2d: torch.Tensor
    joint_confidence: torch.Tensor
    pose: torch.Tensor
    rot6d: torch.Tensor
    betas: torch.Tensor
    vertices: torch.Tensor
    joints3d: torch.Tensor
    mask_logits: torch.Tensor | None = None
    side_logit: torch.Tensor | None = None


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck residual (BN-LReLU-conv x3: 1x1 down to half, 3x3, 1x1 up)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.LeakyReLU(0.01), nn.Conv2d(in_channels, mid, 1),
            nn.BatchNorm2d(mid), nn.LeakyReLU(0.01), nn.Conv2d(mid, mid, 3, padding=1),
            nn.BatchNorm2d(mid), nn.LeakyReLU(0.01), nn.Conv2d(mid, out_channels, 1),
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


class Hourglass(nn.Module):
    """Recursive hourglass: at each level a skip branch at full resolution plus a
    max-pooled branch that recurses, upsampled (nearest, x2) and added back."""

    def __init__(self, channels: int, depth: int) -> None:
        super().__init__()
        self.skip = PreActBottleneck(channels, channels)
        self.down = PreActBottleneck(channels, channels)
        self.inner = Hourglass(channels, depth - 1) if depth > 1 else PreActBottleneck(channels, channels)
        self.up = PreActBottleneck(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.up(self.inner(self.down(F.max_pool2d(x, 2))))
        return self.skip(x) + F.interpolate(low, scale_factor=2.0, mode="nearest")


class HeatmapNet(nn.Module):
    """Hourglass -> residual -> 1x1 conv features; 1x1 conv to per-joint logits; soft-argmax."""

    grid: torch.Tensor  # buffer, registered in __init__

    def __init__(self, channels: int, roi_size: int, hourglass_depth: int, confidence_radius: float) -> None:
        super().__init__()
        self.hourglass = Hourglass(channels, hourglass_depth)
        self.residual = PreActBottleneck(channels, channels)
        self.features = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels), nn.LeakyReLU(0.01))
        self.logits = nn.Conv2d(channels, NUM_JOINTS, 1)
        # Learnable per-joint inverse temperature of the spatial softmax (SHO initialises it to 1).
        self.inverse_temperature = nn.Parameter(torch.ones(1, NUM_JOINTS, 1))
        centres = (torch.arange(roi_size, dtype=torch.float32) + 0.5) / roi_size
        grid_y, grid_x = torch.meshgrid(centres, centres, indexing="ij")
        self.register_buffer("grid", torch.stack([grid_x.flatten(), grid_y.flatten()], dim=-1), persistent=False)
        self.roi_size = roi_size
        self.confidence_radius = confidence_radius / roi_size  # cells -> box units

    def forward(self, hand_roi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.features(self.residual(self.hourglass(hand_roi)))
        logits = self.logits(features).flatten(2)  # (B, 21, H*W)
        probabilities = torch.softmax(logits * self.inverse_temperature, dim=-1)
        joints2d = torch.matmul(probabilities, self.grid)  # (B, 21, 2) expectation of the cell centres
        distance_sq = ((self.grid.unsqueeze(0).unsqueeze(0) - joints2d.unsqueeze(2)) ** 2).sum(-1)
        near = (distance_sq <= self.confidence_radius ** 2).to(probabilities.dtype)
        confidence = (probabilities * near).sum(-1)
        heatmaps = probabilities.view(-1, NUM_JOINTS, self.roi_size, self.roi_size)
        return heatmaps, joints2d, confidence, features


class MaskDecoder(nn.Module):
    """Hourglass features (B, C, R, R) -> hand-mask logits (B, 1, R, R): a 3x3 conv to C/2
    channels (BN, LeakyReLU) and a 1x1 conv to one logit per cell. It reads the features the
    joint heatmaps come from, so the mask needs no resolution of its own and costs two convs."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        mid = channels // 2
        self.body = nn.Sequential(nn.Conv2d(channels, mid, 3, padding=1), nn.BatchNorm2d(mid), nn.LeakyReLU(0.01),
                                  nn.Conv2d(mid, 1, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.body(features)


class SideClassifier(nn.Module):
    """Hourglass features (B, C, R, R) and joint heatmaps (B, 21, R, R) -> (B,) logit that the
    crop shows a right hand: the features pooled under each joint's heatmap (B, 21 x C),
    batch-normalised, then a hidden layer (LeakyReLU) and a linear output.

    The network models right hands, so which side a detected hand is comes down to whether
    its crop as it is, or mirrored, is a right hand. The joint confidence says that only
    weakly: a mirrored hand seen from the other side projects to nearly the same joints.
    This head is trained on crops mirrored against their side (``side_negatives``) to tell
    them apart by what the joints do not show: which side of the hand faces the camera, i.e.
    whether a fingertip shows its nail or its pad and the palm its own colour. Pooling per
    joint keeps where each appearance is; a global mean over the features loses it (a probe
    on frozen features: the model card's "What is next").
    """

    def __init__(self, channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(NUM_JOINTS * channels)
        self.body = nn.Sequential(nn.Linear(NUM_JOINTS * channels, hidden), nn.LeakyReLU(0.01))
        self.logit = nn.Linear(hidden, 1)

    def forward(self, features: torch.Tensor, heatmaps: torch.Tensor) -> torch.Tensor:
        pooled = torch.matmul(heatmaps.flatten(2), features.flatten(2).transpose(1, 2))  # (B, 21, C)
        return self.logit(self.body(self.norm(pooled.flatten(1))))[:, 0]


class HandEncoder(nn.Module):
    """Heatmaps and features to ``channels`` by 1x1 convs, summed; then ``num_rounds`` x
    (``blocks_per_round`` residuals + 2x2 max-pool); flattened."""

    def __init__(self, channels: int, num_rounds: int, blocks_per_round: int) -> None:
        super().__init__()
        self.heatmap_proj = nn.Conv2d(NUM_JOINTS, channels, 1)
        self.feature_proj = nn.Conv2d(channels, channels, 1)
        layers: list[nn.Module] = []
        for _ in range(num_rounds):
            layers += [PreActBottleneck(channels, channels) for _ in range(blocks_per_round)]
            layers.append(nn.MaxPool2d(2))
        self.reduce = nn.Sequential(*layers)

    def forward(self, heatmaps: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.heatmap_proj(heatmaps) + self.feature_proj(features)).flatten(1)


class MANORegressor(nn.Module):
    """FC feature -> hidden (LeakyReLU), then 16 rotations in 6D form and 10 betas."""

    def __init__(self, in_features: int, hidden: int) -> None:
        super().__init__()
        self.base = nn.Sequential(nn.Linear(in_features, hidden), nn.LeakyReLU(0.01))
        self.rotations = nn.Linear(hidden, NUM_MANO_ROTATIONS * 6)
        self.shape = nn.Linear(hidden, NUM_BETAS)
        # HFL's init (normal, std 0.01) and a bias at the identity rotation: training starts at the
        # flat, mean-shaped hand instead of at arbitrary joint rotations.
        for layer in (self.base[0], self.rotations, self.shape):
            assert isinstance(layer, nn.Linear)
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)
        with torch.no_grad():
            self.rotations.bias.copy_(torch.tensor([1.0, 0, 0, 0, 1, 0]).repeat(NUM_MANO_ROTATIONS))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.base(x)
        return self.rotations(h).view(-1, NUM_MANO_ROTATIONS, 6), self.shape(h)


class HandDecoder(nn.Module):
    """Hand RoI (B, C, R, R) -> :class:`HandDecoderOutput` (see the module docstring).

    Args:
        hand_model: right-hand MANO layer (flat hand mean, no PCA), called as
            ``hand_model(global_orient=(B,3), hand_pose=(B,45), betas=(B,10))`` and returning
            ``.vertices`` (B,778,3) and ``.joints`` (B,21,3) in metres, i.e.
            ``hoi_perception.hand_model.mano.HandModel``. Its parameters are frozen; it stays
            a submodule so the exported graph includes it.
        channels: RoI and hourglass channels (256 in SHO/HFL).
        roi_size: RoI side R (32); must be divisible by 2**max(hourglass_depth, encoder_rounds).
        hourglass_depth: hourglass levels (4).
        encoder_rounds, encoder_blocks: the encoder's (blocks + max-pool) rounds (4, 2).
        regressor_hidden: width of the MANO regressor's hidden layer (512).
        confidence_radius: radius in heatmap cells for ``joint_confidence`` (2).
        mask_head: add :class:`MaskDecoder` and output ``mask_logits``; off, the decoder's
            parameters and outputs are exactly those of a decoder built before the option.
        side_head: add :class:`SideClassifier` and output ``side_logit`` (off: as mask_head).
    """

    def __init__(self, hand_model: HandModel, channels: int = 256, roi_size: int = 32, hourglass_depth: int = 4,
                 encoder_rounds: int = 4, encoder_blocks: int = 2, regressor_hidden: int = 512,
                 confidence_radius: float = 2.0, mask_head: bool = False, side_head: bool = False) -> None:
        super().__init__()
        if channels < 2 or channels % 2:
            raise ValueError(f"HandDecoder channels: expected an even number >= 2, got {channels}")
        if hourglass_depth < 1 or encoder_rounds < 1 or encoder_blocks < 1:
            raise ValueError("HandDecoder: hourglass_depth, encoder_rounds and encoder_blocks must be >= 1")
        divisor = 2 ** max(hourglass_depth, encoder_rounds)
        if roi_size % divisor:
            raise ValueError(f"HandDecoder roi_size {roi_size} must be divisible by {divisor} "
                             f"(2 ** max(hourglass_depth, encoder_rounds))")
        if confidence_radius <= 0:
            raise ValueError(f"HandDecoder confidence_radius must be > 0 cells, got {confidence_radius}")
        self.roi_size = roi_size
        self.heatmap_net = HeatmapNet(channels, roi_size, hourglass_depth, confidence_radius)
        self.encoder = HandEncoder(channels, encoder_rounds, encoder_blocks)
        encoded = channels * (roi_size // 2 ** encoder_rounds) ** 2
        self.regressor = MANORegressor(encoded, regressor_hidden)
        self.mask_decoder = MaskDecoder(channels) if mask_head else None
        self.side_classifier = SideClassifier(channels) if side_head else None
        self.hand_model = hand_model
        for p in self.hand_model.parameters():
            p.requires_grad_(False)

    def forward(self, hand_roi: torch.Tensor) -> HandDecoderOutput:
        if not torch.jit.is_tracing() and (hand_roi.dim() != 4 or hand_roi.shape[-2:] != (self.roi_size,) * 2):
            raise ValueError(f"HandDecoder input: expected (B, C, {self.roi_size}, {self.roi_size}), "
                             f"got {tuple(hand_roi.shape)}")
        heatmaps, joints2d, confidence, features = self.heatmap_net(hand_roi)
        rot6d, betas = self.regressor(self.encoder(heatmaps, features))
        pose = matrix_to_axis_angle(rot6d_to_matrix(rot6d)).flatten(1)  # (B, 48)
        mano = self.hand_model(global_orient=pose[:, :3], hand_pose=pose[:, 3:], betas=betas)
        root = mano.joints[:, :1]
        mask_logits = None if self.mask_decoder is None else self.mask_decoder(features)
        side_logit = None if self.side_classifier is None else self.side_classifier(features, heatmaps)
        return HandDecoderOutput(heatmaps=heatmaps, joints2d=joints2d, joint_confidence=confidence, pose=pose,
                                 rot6d=rot6d, betas=betas, vertices=mano.vertices - root,
                                 joints3d=mano.joints - root, mask_logits=mask_logits, side_logit=side_logit)
