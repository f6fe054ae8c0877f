"""Per-vertex image features for the DMA graphs (Wang et al. 2023, eq. 10-11).

Each coarse mesh vertex is projected into the crop with the crop camera matrix and
every selected feature map is sampled there bilinearly; the samples of all levels are
concatenated. To sample the image colour itself (DMA's ``f_b(I(v))``), pass the crop
as a stride-1 "feature map".

Pixel convention: the same as RoIAlign with ``aligned=True`` (``roi_align.py``) and the
crop camera matrix of ``geometry.camera.crop_intrinsics``: crop coordinates are
continuous, cell ``i`` of a stride-``s`` map covers crop pixels ``[i s, (i + 1) s)`` and
its centre is at ``(i + 0.5) s``. With ``grid_sample(align_corners=False)`` this is the
normalised coordinate ``2 u / (W s) - 1``. Vertices projecting outside the crop read
zeros (there is no image evidence there), and vertices at or behind the camera plane
are treated as lying at ``MIN_DEPTH``, so the graph stays finite on bad coarse input.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional

# Metres; depth floor for projection (a hand or object closer than 1 cm is not a valid input).
MIN_DEPTH = 0.01


def project_points(points: torch.Tensor, camera_matrix: torch.Tensor) -> torch.Tensor:
    """Camera-frame points (B, N, 3) -> crop pixels (B, N, 2) with ``camera_matrix`` (B, 3, 3)."""
    _check_inputs(points, camera_matrix)
    uvw = torch.matmul(points, camera_matrix.transpose(1, 2))
    return uvw[..., :2] / uvw[..., 2:3].clamp_min(MIN_DEPTH)


def sample_vertex_features(feature_maps: Sequence[torch.Tensor], strides: Sequence[float], camera_matrix: torch.Tensor,
                           points: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of every map at the projections of ``points``, concatenated: (B, N, sum C).

    feature_maps: (B, C_l, H_l, W_l) per level; strides: crop pixels per cell of each
    level; camera_matrix: (B, 3, 3) crop camera matrix; points: (B, N, 3) camera frame.
    """
    if len(feature_maps) != len(strides) or not feature_maps:
        raise ValueError(f"sample_vertex_features: expected one stride per feature map and at least one map, "
                         f"got {len(feature_maps)} maps and {len(strides)} strides")
    pixels = project_points(points, camera_matrix)
    samples = []
    for level, (features, stride) in enumerate(zip(feature_maps, strides)):
        if not torch.jit.is_tracing():
            if features.dim() != 4 or features.shape[0] != points.shape[0]:
                raise ValueError(f"feature_maps[{level}]: expected (B={points.shape[0]}, C, H, W), "
                                 f"got {tuple(features.shape)}")
            if not stride > 0:
                raise ValueError(f"strides[{level}]: expected a positive number of crop pixels, got {stride}")
        height, width = features.shape[-2:]
        grid_x = 2.0 * pixels[..., 0] / (width * stride) - 1.0
        grid_y = 2.0 * pixels[..., 1] / (height * stride) - 1.0
        grid = torch.stack([grid_x, grid_y], dim=-1).unsqueeze(1)  # (B, 1, N, 2)
        sampled = functional.grid_sample(features, grid.to(features.dtype), mode="bilinear", padding_mode="zeros",
                                         align_corners=False)  # (B, C, 1, N)
        samples.append(sampled.squeeze(2).transpose(1, 2))
    return torch.cat(samples, dim=-1)


def pool_global_feature(feature_maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Global feature (B, sum C): spatial mean of each map, concatenated (e.g. hand + object streams)."""
    if not feature_maps:
        raise ValueError("pool_global_feature: expected at least one feature map")
    return torch.cat([features.mean(dim=(-2, -1)) for features in feature_maps], dim=-1)


def _check_inputs(points: torch.Tensor, camera_matrix: torch.Tensor) -> None:
    if torch.jit.is_tracing():
        return
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points: expected camera-frame vertices (B, N, 3), got {tuple(points.shape)}")
    if camera_matrix.shape != (points.shape[0], 3, 3):
        raise ValueError(f"camera_matrix: expected ({points.shape[0]}, 3, 3) crop camera matrices, "
                         f"got {tuple(camera_matrix.shape)}")
