"""RoIAlign written with ``grid_sample`` so it exports to ONNX (GridSample, opset >= 16).

Semantics follow Mask R-CNN / torchvision ``roi_align``: each output bin averages
``sampling_ratio x sampling_ratio`` bilinear samples at regularly spaced points; a
sample more than one pixel outside the map contributes zero, one within a pixel of
the border reads the clamped border value; ``aligned=True`` shifts boxes by half a
pixel so that box corners sit on pixel corners. Only a fixed ``sampling_ratio`` is
supported: torchvision's adaptive ratio (0) depends on box sizes, i.e. on data, and
cannot be a static graph.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional


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
    steps_x = (torch.arange(out_w * sampling_ratio, dtype=features.dtype, device=features.device) + 0.5)
    steps_y = (torch.arange(out_h * sampling_ratio, dtype=features.dtype, device=features.device) + 0.5)
    xs = x0 + steps_x / (out_w * sampling_ratio) * roi_w  # (K, out_w * ratio)
    ys = y0 + steps_y / (out_h * sampling_ratio) * roi_h  # (K, out_h * ratio)

    # Samples beyond one pixel outside the map are zero; the rest read clamped borders
    # (padding_mode="border" clamps exactly like the reference implementation).
    inside_x = ((xs >= -1.0) & (xs <= width)).to(features.dtype)
    inside_y = ((ys >= -1.0) & (ys <= height)).to(features.dtype)
    inside = inside_y[:, None, :, None] * inside_x[:, None, None, :]  # (K, 1, Hs, Ws)

    # Pixel centre i sits at normalised coordinate (2i + 1) / size - 1 with align_corners=False.
    grid_x = (2.0 * xs + 1.0) / width - 1.0
    grid_y = (2.0 * ys + 1.0) / height - 1.0
    num_rois = grid_x.shape[0]
    grid = torch.stack((grid_x[:, None, :].expand(num_rois, out_h * sampling_ratio, out_w * sampling_ratio),
                        grid_y[:, :, None].expand(num_rois, out_h * sampling_ratio, out_w * sampling_ratio)),
                       dim=-1)
    samples = functional.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return functional.avg_pool2d(samples * inside, kernel_size=sampling_ratio, stride=sampling_ratio)


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
