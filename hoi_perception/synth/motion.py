"""Smooth random trajectories: the temporal constraints of the semi-supervised stage need
real sequences, so every motion here is a sum of low-frequency sinusoids."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation


@dataclass(frozen=True)
class SmoothSignal:
    """A vector signal x(t) = sum_k a_k sin(2 pi t / T_k + phi_k), differentiable and bounded."""

    amplitudes: np.ndarray  # (K, D)
    periods: np.ndarray  # (K,)
    phases: np.ndarray  # (K, D)

    @classmethod
    def random(cls, rng: np.random.Generator, dim: int, amplitude: float, period: tuple[float, float],
               components: int = 3) -> SmoothSignal:
        periods = rng.uniform(period[0], period[1], components)
        weights = rng.normal(size=(components, dim))
        weights /= np.sqrt(components)
        return cls(amplitude * weights, periods, rng.uniform(0, 2 * np.pi, (components, dim)))

    def __call__(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64).reshape(-1, 1, 1)
        waves = np.sin(2 * np.pi * t / self.periods[None, :, None] + self.phases[None])
        return (self.amplitudes[None] * waves).sum(axis=1)  # (T, D)


def smooth_rigid_motion(rng: np.random.Generator, times: np.ndarray, rotation_amplitude: float,
                        translation_amplitude: float, period: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Rotations (T, 3, 3) and translations (T, 3) of a small smooth motion around identity."""
    rotvec = SmoothSignal.random(rng, 3, rotation_amplitude, period)(times)
    translation = SmoothSignal.random(rng, 3, translation_amplitude, period)(times)
    return Rotation.from_rotvec(rotvec).as_matrix(), translation


def smooth_scalar(rng: np.random.Generator, times: np.ndarray, low: float, high: float,
                  period: tuple[float, float]) -> np.ndarray:
    """A smooth scalar signal that stays within [low, high]."""
    raw = SmoothSignal.random(rng, 1, 1.0, period, components=2)(times)[:, 0]
    squashed = 0.5 * (1.0 + np.tanh(raw))
    return low + (high - low) * squashed
