"""RoIAlign written as two matrix products, so it exports to plain ONNX MatMuls.

Semantics follow Mask R-CNN / torchvision ``roi_align``: each output bin averages
``sampling_ratio x sampling_ratio`` bilinear samples at regularly spaced points; a
sample more than one pixel outside the map contributes zero, one within a pixel of
the border reads the clamped border value; ``aligned=True`` shifts boxes by half a
pixel so that box corners sit on pixel corners. Only a fixed ``sampling_ratio`` is
supported: torchvision's adaptive ratio (0) depends on box sizes, i.e. on data, and
cannot be a static graph.

Boxes are axis-aligned, so bilinear sampling separates into rows and columns: each bin's
average over its samples is ``A_y @ F @ A_x^T`` per channel, with ``A_x`` (out_w, W)
holding each bin's mean interpolation weight per feature column (and ``A_y`` per row).
That is exact, and far cheaper than gathering every sample (ONNX Runtime's GridSample
kernel was a fifth of the crop network's time).
"""

from __future__ import annotations

import torch
from torch import nn


def _check_boxes(features: torch.Tensor, boxes: torch.Tensor) -> None:
    if features.dim() != 4:
        raise ValueError(f"roi_align features: expected (N, C, H, W), got shape {tuple(features.shape)}")
    if boxes.dim() != 2 or boxes.shape[1] not in (4, 5):
        raise ValueError("roi_align boxes: expected (N, 4) boxes, one per image, or (K, 5) rows "
                         f"(batch_index, x0, y0, x1, y1), got shape {tuple(boxes.shape)}")
    if boxes.shape[1] == 4 and not torch.jit.is_tracing() and boxes.shape[0] != features.shape[0]:
        raise ValueError(f"roi_align boxes: (N, 4) boxes need one box per image; got {boxes.shape[0]} boxes "
                         f"for {features.shape[0]} images (use (K, 5) rows with a batch index otherwise)")


def roi_align(features: torch.Tensor, boxes: torch.Tensor, output_size: int | tuple[int, int],
              spatial_scale: float = 1.0, sampling_ratio: int = 2, aligned: bool = True) -> torch.Tensor:
    """Crop and resample ``features`` inside ``boxes`` to ``output_size``.

    Args:
        features: (N, C, H, W) feature map.
        boxes: (N, 4) ``(x0, y0, x1, y1)``, box i taken from image i; or (K, 5) rows
            ``(batch_index, x0, y0, x1, y1)``. Coordinates are in input-image pixels and
            are multiplied by ``spatial_scale`` (1/4 for a stride-4 map).
        output_size: output height and width (an int for a square output).
        sampling_ratio: samples per bin along each axis (fixed, > 0).
        aligned: shift boxes by -0.5 pixel (the modern, unbiased convention).

    Returns:
        (K, C, out_h, out_w) with K the number of boxes.
    """
    _check_boxes(features, boxes)
    if sampling_ratio <= 0:
        raise ValueError(f"roi_align sampling_ratio: expected a positive integer, got {sampling_ratio}")
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    height, width = features.shape[-2:]
    boxes = boxes.to(features.dtype)
    if boxes.shape[1] == 5:
        features = features.index_select(0, boxes[:, 0].long())
        boxes = boxes[:, 1:]

    offset = 0.5 if aligned else 0.0
    x0 = boxes[:, 0:1] * spatial_scale - offset
    y0 = boxes[:, 1:2] * spatial_scale - offset
    roi_w = boxes[:, 2:3] * spatial_scale - offset - x0
    roi_h = boxes[:, 3:4] * spatial_scale - offset - y0
    if not aligned:
        # The legacy convention forces every box to be at least one pixel wide.
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)

    # Sample positions along each axis: bin b, sample s -> (b + (s + 0.5) / ratio) * bin size.
    x_weights = _bin_weights(x0, roi_w, out_w, sampling_ratio, width)  # (K, out_w, W)
    y_weights = _bin_weights(y0, roi_h, out_h, sampling_ratio, height)  # (K, out_h, H)
    return y_weights[:, None] @ features @ x_weights[:, None].transpose(-1, -2)


def _bin_weights(start: torch.Tensor, length: torch.Tensor, bins: int, ratio: int, size: int) -> torch.Tensor:
    """(K, bins, size): each bin's mean bilinear weight on each feature row (or column) over its
    ``ratio`` samples along one axis of boxes starting at ``start`` (K, 1) and ``length`` long."""
    steps = torch.arange(bins * ratio, dtype=start.dtype, device=start.device) + 0.5
    positions = start + steps / (bins * ratio) * length  # (K, bins * ratio)
    # Samples beyond one pixel outside the map are zero; the rest read clamped borders.
    inside = ((positions >= -1.0) & (positions <= size)).to(start.dtype)
    clamped = positions.clamp(0.0, size - 1.0)
    pixels = torch.arange(size, dtype=start.dtype, device=start.device)
    weights = (1.0 - (clamped[..., None] - pixels).abs()).clamp(min=0.0) * inside[..., None]
    return weights.reshape(weights.shape[0], bins, ratio, size).mean(2)


class RoIAlign(nn.Module):
    """Module form of :func:`roi_align` with fixed geometry (SHO/HFL: 32x32, scale 1/4, aligned)."""

    def __init__(self, output_size: int = 32, spatial_scale: float = 0.25, sampling_ratio: int = 2,
                 aligned: bool = True) -> None:
        super().__init__()
        if output_size <= 0:
            raise ValueError(f"RoIAlign output_size: expected a positive integer, got {output_size}")
        if sampling_ratio <= 0:
            raise ValueError(f"RoIAlign sampling_ratio: expected a positive integer, got {sampling_ratio}")
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, features: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return roi_align(features, boxes, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}")


def intersection_boxes(hand_boxes: torch.Tensor, object_boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlap of paired (B, 4) boxes and a (B,) float mask that is 1 where they overlap.

    Non-overlapping pairs get a degenerate (zero-size) box; multiply the RoI features by
    the mask to zero them, which keeps the graph free of data-dependent branches.
    """
    if hand_boxes.shape != object_boxes.shape or hand_boxes.dim() != 2 or hand_boxes.shape[1] != 4:
        raise ValueError("intersection_boxes: expected two (B, 4) box tensors of the same shape, got "
                         f"{tuple(hand_boxes.shape)} and {tuple(object_boxes.shape)}")
    top_left = torch.maximum(hand_boxes[:, :2], object_boxes[:, :2])
    bottom_right = torch.minimum(hand_boxes[:, 2:], object_boxes[:, 2:])
    overlaps = ((bottom_right[:, 0] > top_left[:, 0]) & (bottom_right[:, 1] > top_left[:, 1])).to(hand_boxes.dtype)
    return torch.cat((top_left, torch.maximum(bottom_right, top_left)), dim=1), overlaps
