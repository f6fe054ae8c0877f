"""Procedural textures for the parametric objects.

Shipped objects need appearance that a network can key on (labels, stripes,
grain) without image files in the repository. Each texture is a deterministic
function of its spec: NumPy's seeded generator, OpenCV resizing and OpenCV's
built-in Hershey fonts, so the same spec gives the same pixels everywhere.

Images are (H, W, 3) uint8 RGB with row 0 at v = 1 (OBJ convention, as the
rasteriser samples them); u runs along the columns and wraps around.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from hoi_perception.config import ConfigError

Pattern = Literal["solid", "stripes", "checker", "noise", "label"]
_MIN_COLORS = {"solid": 1, "stripes": 2, "checker": 2, "noise": 2, "label": 3}


@dataclass
class TextureSpec:
    """A procedural texture.

    ``pattern``: ``solid`` (colors[0]); ``stripes`` (``count`` horizontal bands cycling
    through ``colors``); ``checker`` (``count`` cells around u, colors[0] / colors[1]);
    ``noise`` (smooth value noise with ``count`` cells around u blending colors[0] into
    colors[1], plus fine grain); ``label`` (colors[0] background, a colors[1] band over
    ``band`` = (v_low, v_high) edged in colors[2], ``text`` written ``count`` times along
    the band in colors[2], and small print blocks placed from ``seed``).
    """

    pattern: Pattern = "solid"
    colors: list[tuple[int, int, int]] = field(default_factory=lambda: [(200, 200, 200)])
    count: int = 2
    band: tuple[float, float] = (0.3, 0.7)
    text: str = ""
    seed: int = 0
    size: tuple[int, int] = (256, 512)

    def validate(self) -> None:
        need = _MIN_COLORS[self.pattern]
        if len(self.colors) < need:
            raise ConfigError(f"colors: pattern '{self.pattern}' needs at least {need} RGB colours, "
                              f"got {len(self.colors)}")
        for i, colour in enumerate(self.colors):
            if len(colour) != 3 or any(not 0 <= int(c) <= 255 for c in colour):
                raise ConfigError(f"colors[{i}]: expected an RGB triple in 0..255, got {list(colour)}")
        if self.count < 1:
            raise ConfigError(f"count: expected >= 1, got {self.count}")
        if not 0.0 <= self.band[0] < self.band[1] <= 1.0:
            raise ConfigError(f"band: expected 0 <= v_low < v_high <= 1, got {list(self.band)}")
        if self.size[0] < 8 or self.size[1] < 8:
            raise ConfigError(f"size: expected (height, width) of at least 8 pixels, got {list(self.size)}")
        if self.text and self.pattern != "label":
            raise ConfigError(f"text: only the 'label' pattern writes text, not '{self.pattern}'")
        if not self.text.isascii():
            raise ConfigError(f"text: OpenCV's fonts draw ASCII only, got {self.text!r}")


def make_texture(spec: TextureSpec) -> np.ndarray:
    """Render ``spec`` into an (H, W, 3) uint8 RGB image."""
    spec.validate()
    h, w = spec.size
    colors = np.array(spec.colors, dtype=np.float64)
    if spec.pattern == "solid":
        return np.broadcast_to(colors[0].astype(np.uint8), (h, w, 3)).copy()
    if spec.pattern == "stripes":
        rows = np.arange(h) * spec.count // h
        return np.broadcast_to(colors[rows % len(colors)][:, None, :], (h, w, 3)).astype(np.uint8)
    if spec.pattern == "checker":
        cell = w / spec.count
        parity = (np.floor(np.arange(h) / cell)[:, None] + np.floor(np.arange(w) / cell)[None, :]) % 2
        return np.where(parity[:, :, None] == 0, colors[0], colors[1]).astype(np.uint8)
    if spec.pattern == "noise":
        rng = np.random.default_rng(spec.seed)
        t = _value_noise(rng, h, w, spec.count)
        grain = rng.normal(0.0, 6.0, size=(h, w, 1))
        image = colors[0] * (1 - t[:, :, None]) + colors[1] * t[:, :, None] + grain
        return np.clip(image + 0.5, 0, 255).astype(np.uint8)
    return _label(spec, colors)


def _value_noise(rng: np.random.Generator, h: int, w: int, cells_u: int) -> np.ndarray:
    """Smooth noise in [0, 1] that tiles in u: cubic upsampling of a random grid."""
    cells_v = max(1, round(cells_u * h / w))
    grid = rng.random((cells_v + 1, cells_u)).astype(np.float32)
    tiled = np.concatenate([grid, grid, grid], axis=1)  # neighbours on both sides make u periodic
    big = cv2.resize(tiled, (3 * w, h), interpolation=cv2.INTER_CUBIC)[:, w:2 * w]
    lo, hi = float(big.min()), float(big.max())
    return (big - lo) / (hi - lo) if hi > lo else np.zeros_like(big)


def _label(spec: TextureSpec, colors: np.ndarray) -> np.ndarray:
    h, w = spec.size
    image = np.empty((h, w, 3), dtype=np.uint8)
    image[:] = colors[0].astype(np.uint8)
    top = round((1.0 - spec.band[1]) * h)  # row 0 is v = 1
    bottom = round((1.0 - spec.band[0]) * h)
    band_colour = tuple(int(c) for c in colors[1])
    ink = tuple(int(c) for c in colors[2])
    image[top:bottom] = band_colour
    edge = max(1, h // 64)
    image[max(0, top - edge):top + edge] = ink
    image[max(0, bottom - edge):bottom + edge] = ink
    band_h = bottom - top
    slot_w = w / spec.count
    rng = np.random.default_rng(spec.seed)
    for slot in range(spec.count):
        x0 = slot * slot_w
        if spec.text:
            font = cv2.FONT_HERSHEY_DUPLEX
            (tw, th), _ = cv2.getTextSize(spec.text, font, 1.0, 2)
            scale = min(0.45 * band_h / th, 0.8 * slot_w / tw)
            thickness = max(1, round(2 * scale))
            (tw, th), _ = cv2.getTextSize(spec.text, font, scale, thickness)
            org = (round(x0 + (slot_w - tw) / 2), round(top + 0.45 * band_h + th / 2))
            cv2.putText(image, spec.text, org, font, scale, ink, thickness, cv2.LINE_AA)
        # Small print: a few thin dark blocks under the text, like a product label's fine print.
        for line in range(3):
            y = round(top + band_h * (0.68 + 0.08 * line))
            length = rng.uniform(0.3, 0.7) * slot_w
            start = x0 + rng.uniform(0.05, 0.95 - length / slot_w) * slot_w
            cv2.rectangle(image, (round(start), y), (round(start + length), y + max(1, band_h // 40)), ink, -1)
    return image
