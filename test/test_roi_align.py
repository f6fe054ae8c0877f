"""grid_sample RoIAlign against a per-sample loop reference of the Mask R-CNN algorithm."""

from __future__ import annotations

import math

import pytest
import torch

from hoi_perception.models.roi_align import RoIAlign, intersection_boxes, roi_align


def _bilinear(feature: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """The reference RoIAlign bilinear read on a (C, H, W) map, written out scalar by scalar."""
    height, width = feature.shape[-2:]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return torch.zeros(feature.shape[0], dtype=feature.dtype)
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (hy * hx * feature[:, y_low, x_low] + hy * lx * feature[:, y_low, x_high]
            + ly * hx * feature[:, y_high, x_low] + ly * lx * feature[:, y_high, x_high])


def reference_roi_align(features, rois, out_size, spatial_scale, sampling_ratio, aligned):
    """Loop over boxes, bins and sample points; rois are (K, 5) with a batch index."""
    out = torch.zeros(rois.shape[0], features.shape[1], out_size, out_size, dtype=features.dtype)
    offset = 0.5 if aligned else 0.0
    for k, (b, x0, y0, x1, y1) in enumerate(rois.tolist()):
        sx, sy = x0 * spatial_scale - offset, y0 * spatial_scale - offset
        w, h = x1 * spatial_scale - offset - sx, y1 * spatial_scale - offset - sy
        if not aligned:
            w, h = max(w, 1.0), max(h, 1.0)
        bin_w, bin_h = w / out_size, h / out_size
        for i in range(out_size):
            for j in range(out_size):
                acc = torch.zeros(features.shape[1], dtype=features.dtype)
                for iy in range(sampling_ratio):
                    y = sy + i * bin_h + (iy + 0.5) * bin_h / sampling_ratio
                    for ix in range(sampling_ratio):
                        x = sx + j * bin_w + (ix + 0.5) * bin_w / sampling_ratio
                        acc += _bilinear(features[int(b)], y, x)
                out[k, :, i, j] = acc / sampling_ratio ** 2
    return out


def _random_boxes(generator, count, image_size):
    # Boxes partly outside the image and tiny ones exercise the border rules.
    xy = torch.rand(count, 2, generator=generator) * image_size * 1.2 - 0.1 * image_size
    wh = torch.rand(count, 2, generator=generator) * image_size * 0.8 + 0.5
    return torch.cat((xy, xy + wh), dim=1)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [1, 2])
def test_batched_boxes_match_loop_reference(aligned, sampling_ratio):
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(3, 4, 10, 12, generator=generator, dtype=torch.float64)
    boxes = _random_boxes(generator, 3, 40.0).to(torch.float64)
    result = roi_align(features, boxes, 5, spatial_scale=0.25, sampling_ratio=sampling_ratio, aligned=aligned)
    rois = torch.cat((torch.arange(3, dtype=torch.float64)[:, None], boxes), dim=1)
    expected = reference_roi_align(features, rois, 5, 0.25, sampling_ratio, aligned)
    assert result.shape == (3, 4, 5, 5)
    assert torch.allclose(result, expected, atol=1e-5, rtol=0)


def test_indexed_rois_match_loop_reference_float32():
    generator = torch.Generator().manual_seed(7)
    features = torch.randn(2, 3, 8, 8, generator=generator)
    boxes = _random_boxes(generator, 5, 32.0)
    batch_index = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    rois = torch.cat((batch_index[:, None], boxes), dim=1)
    result = RoIAlign(output_size=4, spatial_scale=0.25, sampling_ratio=2, aligned=True)(features, rois)
    expected = reference_roi_align(features.double(), rois.double(), 4, 0.25, 2, True).float()
    assert result.shape == (5, 3, 4, 4)
    assert (result - expected).abs().max().item() < 1e-5


def test_box_on_pixel_grid_reads_exact_values():
    # With aligned=True, a box covering pixels [2, 6) x [1, 5) sampled once per bin at a 4x4
    # output reads the pixel centres exactly.
    features = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8)
    out = roi_align(features, torch.tensor([[2.0, 1.0, 6.0, 5.0]]), 4, spatial_scale=1.0, sampling_ratio=1)
    assert torch.equal(out[0, 0], features[0, 0, 1:5, 2:6])


def test_box_far_outside_is_zero():
    features = torch.ones(1, 2, 8, 8)
    out = roi_align(features, torch.tensor([[100.0, 100.0, 120.0, 120.0]]), 3, spatial_scale=0.25)
    assert torch.count_nonzero(out) == 0


def test_bad_inputs_name_the_argument():
    features = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"boxes: expected \(N, 4\)"):
        roi_align(features, torch.zeros(2, 3), 2)
    with pytest.raises(ValueError, match="one box per image"):
        roi_align(features, torch.zeros(3, 4), 2)
    with pytest.raises(ValueError, match="features"):
        roi_align(torch.zeros(4, 4), torch.zeros(1, 4), 2)
    with pytest.raises(ValueError, match="sampling_ratio"):
        roi_align(features, torch.zeros(2, 4), 2, sampling_ratio=0)


def test_gradient_flows_to_features():
    features = torch.randn(1, 2, 6, 6, requires_grad=True)
    roi_align(features, torch.tensor([[4.0, 4.0, 16.0, 20.0]]), 3, spatial_scale=0.25).sum().backward()
    assert features.grad.abs().sum() > 0


def test_intersection_boxes_and_mask():
    hand = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 5.0, 5.0]])
    obj = torch.tensor([[5.0, 2.0, 20.0, 8.0], [6.0, 6.0, 9.0, 9.0], [5.0, 0.0, 9.0, 5.0]])
    boxes, overlaps = intersection_boxes(hand, obj)
    assert torch.equal(boxes[0], torch.tensor([5.0, 2.0, 10.0, 8.0]))
    assert torch.equal(overlaps, torch.tensor([1.0, 0.0, 0.0]))  # touching edges do not overlap
    assert torch.all(boxes[:, 2:] >= boxes[:, :2])
    with pytest.raises(ValueError, match="same shape"):
        intersection_boxes(hand, obj[:2])


def test_sample_count_scales_with_ratio():
    # A linear ramp is reproduced exactly by bilinear sampling whatever the ratio.
    ramp = torch.arange(16, dtype=torch.float64).repeat(16, 1).view(1, 1, 16, 16)
    for ratio in (1, 2, 3):
        out = roi_align(ramp, torch.tensor([[2.0, 2.0, 10.0, 10.0]], dtype=torch.float64), 4, 1.0, ratio)
        assert math.isclose(out[0, 0, 0, 0].item(), 2.5, abs_tol=1e-9)
        assert math.isclose(out[0, 0, 3, 3].item(), 8.5, abs_tol=1e-9)
