"""Backgrounds, skin colours and camera degradations that tell the synthetic domains apart."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from hoi_perception.render.rasterizer import vertex_normals

# Light to dark skin albedos (linear-ish RGB in [0, 1]), interpolated by a tone in [0, 1].
_SKIN_PALETTE = np.array([
    [0.96, 0.80, 0.69],
    [0.89, 0.67, 0.53],
    [0.78, 0.55, 0.40],
    [0.60, 0.40, 0.27],
    [0.40, 0.26, 0.17],
    [0.26, 0.17, 0.11],
])


def skin_color(tone: float) -> np.ndarray:
    """Skin albedo for a tone in [0, 1] (0 lightest, 1 darkest)."""
    pos = float(np.clip(tone, 0.0, 1.0)) * (len(_SKIN_PALETTE) - 1)
    i = min(int(pos), len(_SKIN_PALETTE) - 2)
    w = pos - i
    return (1 - w) * _SKIN_PALETTE[i] + w * _SKIN_PALETTE[i + 1]


# The palm's and the nails' albedos, which a hand's back does not share: real palms carry
# little melanin (light and reddish at every skin tone), nails are a pinkish white.
PALM_COLOR = np.array([0.91, 0.70, 0.60])
NAIL_COLOR = np.array([0.93, 0.80, 0.77])


@dataclass(frozen=True)
class HandSurfaceRegions:
    """Per-vertex weights in [0, 1] of where a hand model's palm (``palmar``) and nails (``nail``) are.

    They are what tells a hand's palm from its back in an image, and with it which side a
    hand is: a uniformly coloured hand and its mirror image seen from the other side differ
    only by subtle shading and occlusion.
    """

    palmar: np.ndarray  # (V,)
    nail: np.ndarray  # (V,)


def _smoothstep(low: float, high: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - low) / (high - low), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def hand_surface_regions(rest_vertices: np.ndarray, faces: np.ndarray, rest_joints: np.ndarray,
                         palm_normal: np.ndarray, fingertip_chains: Sequence[Sequence[int]]) -> HandSurfaceRegions:
    """Palm and nail weights from a hand's rest geometry (any MANO-format hand, either side).

    Palmar: the rest-pose vertex normal facing along ``palm_normal``, blended over the
    hand's sides. Nail: the back of each finger's last segment beyond its middle
    (``fingertip_chains``: per finger the joint ids ending with its distal joint and tip).
    """
    normals = vertex_normals(rest_vertices, faces)
    facing = normals @ np.asarray(palm_normal, dtype=np.float64)
    palmar = _smoothstep(-0.25, 0.45, facing)
    nail = np.zeros(len(rest_vertices))
    for chain in fingertip_chains:
        distal, tip = rest_joints[chain[-2]], rest_joints[chain[-1]]
        length = float(np.linalg.norm(tip - distal))
        along = (rest_vertices - distal) @ ((tip - distal) / length) / length
        near_axis = np.linalg.norm(rest_vertices - (distal + (tip - distal) * np.clip(along, 0, 1)[:, None]), axis=1)
        on_tip = _smoothstep(0.3, 0.5, along) * (near_axis < 1.5 * length)
        nail = np.maximum(nail, on_tip * _smoothstep(-0.3, -0.6, facing))
    return HandSurfaceRegions(palmar=palmar, nail=nail)


def hand_vertex_colors(base: np.ndarray, regions: HandSurfaceRegions, palm_lightening: float,
                       nail_whitening: float, rng: np.random.Generator) -> np.ndarray:
    """Per-vertex hand albedo (V, 3) in [0, 1]: the skin's base colour on the back, moved
    ``palm_lightening`` of the way to :data:`PALM_COLOR` on the palm and ``nail_whitening``
    of the way to :data:`NAIL_COLOR` on the nails, with smooth low-amplitude variation (both
    0: one colour all round)."""
    palm = base + palm_lightening * (PALM_COLOR - base)
    colors = base[None, :] + regions.palmar[:, None] * (palm - base)[None, :]
    colors = colors + nail_whitening * regions.nail[:, None] * (NAIL_COLOR[None, :] - colors)
    num_vertices = len(colors)
    variation = rng.normal(0.0, 0.025, size=(num_vertices, 1)) + rng.normal(0.0, 0.01, size=(num_vertices, 3))
    return np.clip(colors * (1.0 + variation), 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Value noise in [0, 1]: random values on a coarse grid, bicubically upsampled."""
    gh, gw = max(2, height // cell + 2), max(2, width // cell + 2)
    grid = rng.random((gh, gw)).astype(np.float32)
    return np.clip(cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def lab_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A tidy lab scene seen from a robot: a plain wall above a bench top, soft shading."""
    wall = rng.uniform(0.65, 0.92) * np.ones(3) + rng.normal(0, 0.03, 3)
    bench = rng.choice([np.array([0.55, 0.45, 0.35]), np.array([0.75, 0.75, 0.72]), np.array([0.35, 0.38, 0.42])])
    bench = bench + rng.normal(0, 0.03, 3)
    horizon = int(height * rng.uniform(0.3, 0.7))
    img = np.empty((height, width, 3), np.float32)
    rows = np.arange(height, dtype=np.float32)[:, None, None]
    wall_shade = 1.0 - 0.15 * (rows / height)
    img[:] = wall[None, None, :] * wall_shade
    bench_shade = 0.85 + 0.15 * ((rows - horizon) / max(1, height - horizon))
    img[horizon:] = (bench[None, None, :] * bench_shade)[horizon:]
    grain = _smooth_noise(rng, height, width, 4)[..., None] - 0.5
    img += 0.03 * grain
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def clutter_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A busy, colourful scene: layered textured shapes over a noisy gradient."""
    base = rng.random(3) * 0.6 + 0.2
    img = np.empty((height, width, 3), np.float32)
    img[:] = base
    for c in range(3):
        img[..., c] *= 0.6 + 0.8 * _smooth_noise(rng, height, width, int(rng.integers(8, 48)))
    canvas = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    for _ in range(int(rng.integers(12, 30))):
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(max(4, width // 20), max(8, width // 3)))
        if kind == 0:
            cv2.rectangle(canvas, (cx - size, cy - size // 2), (cx + size, cy + size // 2), color, -1)
        elif kind == 1:
            cv2.ellipse(canvas, (cx, cy), (size, max(2, size // 2)), float(rng.uniform(0, 180)), 0, 360, color, -1)
        else:
            pts = rng.integers(-size, size, (5, 2)) + np.array([cx, cy])
            cv2.fillPoly(canvas, [pts.astype(np.int32)], color)
        if rng.random() < 0.4:  # stripes on some shapes
            stripe = tuple(int(v) for v in rng.integers(0, 256, 3))
            for k in range(-size, size, max(3, size // 4)):
                cv2.line(canvas, (cx + k, cy - size), (cx + k + size // 2, cy + size), stripe, 2)
    return canvas


def background(kind: str, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    if kind == "lab":
        return lab_background(rng, height, width)
    if kind == "clutter":
        return clutter_background(rng, height, width)
    raise ValueError(f"unknown background kind '{kind}'; expected 'lab' or 'clutter'")


def motion_blur(image: np.ndarray, length_px: float, angle_deg: float) -> np.ndarray:
    """Linear motion blur of a given length and direction."""
    if length_px < 1.0:
        return image
    size = int(np.ceil(length_px)) | 1
    kernel: np.ndarray = np.zeros((size, size), np.float32)
    kernel[size // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D((size / 2 - 0.5, size / 2 - 0.5), angle_deg, 1.0)
    kernel = np.asarray(cv2.warpAffine(kernel, rot, (size, size)), dtype=np.float32)  # float32 in, float32 out
    kernel /= max(kernel.sum(), 1e-6)
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)


def degrade(image: np.ndarray, rng: np.random.Generator, noise_std: float, blur_px: float, blur_angle: float,
            jpeg_quality: int) -> np.ndarray:
    """Camera degradations: motion blur, sensor noise, then JPEG compression."""
    out = motion_blur(image, blur_px, blur_angle)
    if noise_std > 0:
        noisy = out.astype(np.float32) + rng.normal(0.0, noise_std, out.shape).astype(np.float32)
        out = np.clip(noisy, 0, 255).astype(np.uint8)
    if jpeg_quality < 100:
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if decoded is None:
            raise RuntimeError("JPEG decoding failed")
        out = decoded[..., ::-1].copy()
    return out
