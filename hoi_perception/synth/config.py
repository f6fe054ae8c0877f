"""Configuration of the synthetic hand-object generator (config/synth.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hoi_perception.config import ConfigError


def _check_range(name: str, value: tuple[float, float], low: float | None = None, high: float | None = None) -> None:
    if value[0] > value[1]:
        raise ConfigError(f"{name}: range {list(value)} has min > max")
    if low is not None and value[0] < low:
        raise ConfigError(f"{name}: values must be >= {low}, got {list(value)}")
    if high is not None and value[1] > high:
        raise ConfigError(f"{name}: values must be <= {high}, got {list(value)}")


@dataclass
class CameraConfig:
    width: int = 256
    height: int = 256
    fps: float = 30.0
    # Focal length as a multiple of the image width (0.9-1.3 spans ~42-58 degree fields of view).
    focal_over_width: tuple[float, float] = (0.9, 1.3)
    # Principal point offset from the image centre, as a fraction of the size.
    principal_jitter: float = 0.03
    # Distance of the hand-object centre from the camera, metres.
    distance: tuple[float, float] = (0.28, 0.45)
    # Views looking into the palm are redrawn when the cosine between the direction to the
    # camera and the palm normal exceeds this (0.35: within ~70 degrees), because the held
    # object would hide the hand; larger values keep more palm-towards-camera views, which a
    # hand-side classifier needs to see (1.0 keeps every view).
    max_palm_view_cosine: float = 0.35

    def validate(self) -> None:
        if not -1.0 < self.max_palm_view_cosine <= 1.0:
            raise ConfigError(f"camera.max_palm_view_cosine must be in (-1, 1], got {self.max_palm_view_cosine}")
        if self.width < 32 or self.height < 32:
            raise ConfigError(f"camera image size must be at least 32x32, got {self.width}x{self.height}")
        if self.fps <= 0:
            raise ConfigError(f"camera.fps must be positive, got {self.fps}")
        _check_range("camera.focal_over_width", self.focal_over_width, 0.1)
        _check_range("camera.distance", self.distance, 0.1)


@dataclass
class HandConfig:
    left_probability: float = 0.3
    # Standard deviation of sampled shape coefficients (MANO betas).
    betas_std: float = 0.8
    # Fraction of the contact flexion the fingers reach at the most open moment of a sequence.
    min_closure: float = 0.55
    # How far fingers may sink into the object surface when closing, metres.
    penetration_tolerance: float = 0.002

    def validate(self) -> None:
        if not 0.0 <= self.left_probability <= 1.0:
            raise ConfigError(f"hand.left_probability must be in [0, 1], got {self.left_probability}")
        if not 0.0 <= self.min_closure <= 1.0:
            raise ConfigError(f"hand.min_closure must be in [0, 1], got {self.min_closure}")


@dataclass
class MotionConfig:
    # Amplitudes of the smooth random motion of the grasped object and hand.
    rotation_amplitude_deg: float = 25.0
    translation_amplitude: float = 0.04
    # Periods of the sinusoids that make up the motion, seconds.
    period: tuple[float, float] = (1.5, 4.0)

    def validate(self) -> None:
        _check_range("motion.period", self.period, 0.1)


@dataclass
class DomainConfig:
    """Appearance of one domain: the labelled 'lab' and the shifted 'wild' domain differ here."""

    background: str = "lab"  # lab: plain walls and a table; clutter: random textured shapes
    ambient: tuple[float, float] = (0.45, 0.6)
    diffuse: tuple[float, float] = (0.5, 0.7)
    light_tint: float = 0.0  # max per-channel deviation of the light colour from white
    noise_std: tuple[float, float] = (0.0, 0.0)  # sensor noise, in 0-255 units
    motion_blur_px: tuple[float, float] = (0.0, 0.0)
    jpeg_quality: tuple[int, int] = (100, 100)  # 100 = no compression artefacts
    skin_tone: tuple[float, float] = (0.0, 1.0)  # range over the light-to-dark skin palette
    # How far the palm's albedo moves from the back's toward a palm's light, reddish colour
    # (0: one colour all round, 1: the palm colour itself), drawn per sequence, and how far
    # the nails move toward a nail's pinkish white. Both 0 (the default) render the hand in one
    # skin colour, byte-identical to data rendered before the option; the side head's data
    # (config/train/cpu_r18_side.yaml) sets them.
    palm_lightening: tuple[float, float] = (0.0, 0.0)
    nail_whitening: float = 0.0

    def validate(self) -> None:
        if self.background not in ("lab", "clutter"):
            raise ConfigError(f"background must be 'lab' or 'clutter', got '{self.background}'")
        for name in ("ambient", "diffuse", "noise_std", "motion_blur_px", "skin_tone"):
            _check_range(name, getattr(self, name), 0.0)
        _check_range("palm_lightening", self.palm_lightening, 0.0, 1.0)
        if not 0.0 <= self.nail_whitening <= 1.0:
            raise ConfigError(f"nail_whitening must be in [0, 1], got {self.nail_whitening}")
        if not (1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100):
            raise ConfigError(f"jpeg_quality must satisfy 1 <= min <= max <= 100, got {list(self.jpeg_quality)}")


@dataclass
class SynthConfig:
    camera: CameraConfig = field(default_factory=CameraConfig)
    hand: HandConfig = field(default_factory=HandConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    # Object names from the object library; empty = every object in it.
    objects: list[str] = field(default_factory=list)
    domains: dict[str, DomainConfig] = field(default_factory=lambda: {"lab": DomainConfig()})
    # Anti-aliasing: render at this multiple of the resolution and downsample.
    supersample: int = 1

    def validate(self) -> None:
        if not self.domains:
            raise ConfigError("at least one domain must be defined")
        if self.supersample < 1:
            raise ConfigError(f"supersample must be >= 1, got {self.supersample}")
