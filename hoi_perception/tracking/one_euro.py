"""One Euro filter (Casiez, Roussel and Vogel, CHI 2012), vectorised over arrays.

A first-order low-pass whose cutoff rises with the signal's speed: slow motion is
smoothed hard (little jitter), fast motion is followed closely (little lag). The
update follows the reference algorithm:

    alpha(fc, Te) = 1 / (1 + tau / Te),  tau = 1 / (2 pi fc)
    dx  = (x - previous output) / Te          (the first sample passes through, dx = 0)
    edx = low-pass(dx, alpha(derivative_cutoff))
    fc  = min_cutoff + beta * |edx|
    out = low-pass(x, alpha(fc))

Te comes from the timestamps of consecutive samples, so a dropped frame (a larger
Te) makes the filter trust the new sample more, as it should. Time that does not
move forward (a bag looping back to its start, a restarted clock) resets the
filter and passes the sample through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hoi_perception.config import ConfigError


@dataclass
class OneEuroConfig:
    """Parameters of one One Euro filter.

    min_cutoff_hz: cutoff at rest; lower removes more jitter on a still signal.
    beta: cutoff increase per unit of speed (per signal unit / s); higher means less lag when moving.
    derivative_cutoff_hz: cutoff of the speed estimate itself (the reference default, 1 Hz).
    """

    min_cutoff_hz: float = 1.0
    beta: float = 0.0
    derivative_cutoff_hz: float = 1.0

    def validate(self) -> None:
        if not (self.min_cutoff_hz > 0 and math.isfinite(self.min_cutoff_hz)):
            raise ConfigError(f"min_cutoff_hz must be a positive number of Hz, got {self.min_cutoff_hz}")
        if not (self.beta >= 0 and math.isfinite(self.beta)):
            raise ConfigError(f"beta must be >= 0, got {self.beta}")
        if not (self.derivative_cutoff_hz > 0 and math.isfinite(self.derivative_cutoff_hz)):
            raise ConfigError(f"derivative_cutoff_hz must be a positive number of Hz, got {self.derivative_cutoff_hz}")


def smoothing_factor(cutoff_hz: float | np.ndarray, dt: float) -> float | np.ndarray:
    """Weight of the new sample in an exponential low-pass with the given cutoff and sample period."""
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff_hz, dtype=np.float64))
    return 1.0 / (1.0 + tau / dt)


class FilterState:
    """What every One Euro variant keeps between samples: the last output, its low-passed
    speed and the time stamp; a reset forgets all three."""

    def __init__(self, config: OneEuroConfig) -> None:
        config.validate()
        self.config = config
        self._value: np.ndarray | None = None  # last output
        self._speed: np.ndarray | None = None  # low-passed derivative, per second
        self._stamp: float | None = None

    @property
    def initialized(self) -> bool:
        return self._value is not None

    @property
    def value(self) -> np.ndarray | None:
        """The last output (a copy), or None before the first sample."""
        return None if self._value is None else self._value.copy()

    @property
    def speed(self) -> np.ndarray | None:
        """The low-passed derivative (per second), or None before the first sample."""
        return None if self._speed is None else self._speed.copy()

    @property
    def stamp(self) -> float | None:
        return self._stamp

    def reset(self) -> None:
        """Forget all history; the next sample passes through unchanged."""
        self._value = None
        self._speed = None
        self._stamp = None


class OneEuroFilter(FilterState):
    """One Euro filter over arrays of a fixed shape, each element filtered independently.

    The cutoff is adapted per element (as the reference filter does per scalar), so a
    moving fingertip is followed closely while the still wrist stays smooth.
    """

    def __call__(self, x: np.ndarray, stamp: float) -> np.ndarray:
        """Filter sample ``x`` taken at time ``stamp`` (seconds) and return the smoothed value."""
        x = np.array(x, dtype=np.float64)
        stamp = float(stamp)
        if not math.isfinite(stamp):
            raise ValueError(f"OneEuroFilter: timestamp must be finite, got {stamp}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"OneEuroFilter: sample of shape {x.shape} contains NaN or infinity")
        if self._value is not None and x.shape != self._value.shape:
            raise ValueError(f"OneEuroFilter: sample shape {x.shape} differs from the filtered shape "
                             f"{self._value.shape}; call reset() to filter a different signal")
        if self._stamp is not None and stamp <= self._stamp:
            self.reset()  # time went backwards or stood still: start over
        if self._value is None:
            self._value = x
            self._speed = np.zeros_like(x)
            self._stamp = stamp
            return x.copy()
        assert self._stamp is not None  # set together with self._value
        dt = stamp - self._stamp
        derivative = (x - self._value) / dt
        self._speed = self._speed + smoothing_factor(self.config.derivative_cutoff_hz, dt) * (derivative - self._speed)
        cutoff = self.config.min_cutoff_hz + self.config.beta * np.abs(self._speed)
        self._value = self._value + smoothing_factor(cutoff, dt) * (x - self._value)
        self._stamp = stamp
        return self._value.copy()
