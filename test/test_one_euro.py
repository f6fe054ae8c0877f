import math

import numpy as np
import pytest

from hoi_perception.config import ConfigError, load_config
from hoi_perception.tracking.one_euro import OneEuroConfig, OneEuroFilter, smoothing_factor


def reference_one_euro(samples, stamps, min_cutoff, beta, d_cutoff):
    """Scalar One Euro written straight from the algorithm in Casiez et al. 2012 / metrics.md."""
    def alpha(cutoff, te):
        return 1.0 / (1.0 + (1.0 / (2 * math.pi * cutoff)) / te)
    out, x_hat, dx_hat, last = [], None, 0.0, None
    for x, t in zip(samples, stamps):
        if x_hat is None:
            x_hat, last = x, t
            out.append(x)
            continue
        te = t - last
        dx = (x - x_hat) / te
        dx_hat = dx_hat + alpha(d_cutoff, te) * (dx - dx_hat)
        x_hat = x_hat + alpha(min_cutoff + beta * abs(dx_hat), te) * (x - x_hat)
        last = t
        out.append(x_hat)
    return np.array(out)


def test_smoothing_factor_matches_formula():
    # tau = 1 / (2 pi) s, Te = 1/30 s -> alpha = 1 / (1 + 30 / (2 pi))
    assert smoothing_factor(1.0, 1 / 30) == pytest.approx(1 / (1 + 30 / (2 * math.pi)))
    assert smoothing_factor(1.0, 1 / 30) == pytest.approx(0.173171, abs=1e-6)


def test_vectorised_filter_equals_scalar_reference_with_uneven_timestamps():
    rng = np.random.default_rng(0)
    stamps = np.cumsum(rng.uniform(0.02, 0.08, 60))
    signal = rng.normal(size=(60, 4, 3)).cumsum(axis=0)
    config = OneEuroConfig(min_cutoff_hz=0.7, beta=0.3, derivative_cutoff_hz=1.2)
    f = OneEuroFilter(config)
    ours = np.stack([f(x, t) for x, t in zip(signal, stamps)])
    for idx in [(0, 0), (2, 1), (3, 2)]:
        expected = reference_one_euro(signal[:, idx[0], idx[1]], stamps, 0.7, 0.3, 1.2)
        np.testing.assert_allclose(ours[:, idx[0], idx[1]], expected, rtol=1e-12, atol=1e-12)


def test_first_sample_passes_through_and_still_signal_is_smoothed():
    rng = np.random.default_rng(1)
    f = OneEuroFilter(OneEuroConfig(min_cutoff_hz=1.0, beta=0.0))
    noisy = 1.0 + rng.normal(0, 0.01, (300, 5))
    out = np.stack([f(x, i / 30) for i, x in enumerate(noisy)])
    np.testing.assert_array_equal(out[0], noisy[0])
    # A 1 Hz low-pass at 30 Hz keeps about a tenth of white-noise variance.
    assert out[50:].std() < 0.4 * noisy[50:].std()
    assert abs(out[50:].mean() - 1.0) < 0.003


def test_beta_reduces_lag_on_a_ramp():
    t = np.arange(60) / 30
    ramp = 0.5 * t  # 0.5 units per second
    lagging = OneEuroFilter(OneEuroConfig(1.0, 0.0))
    adaptive = OneEuroFilter(OneEuroConfig(1.0, 50.0))
    err_lag = abs(ramp[-1] - [lagging(np.array([x]), s) for x, s in zip(ramp, t)][-1][0])
    err_adapt = abs(ramp[-1] - [adaptive(np.array([x]), s) for x, s in zip(ramp, t)][-1][0])
    assert err_lag == pytest.approx(0.5 / (2 * math.pi), rel=0.15)  # steady-state lag of a 1 Hz low-pass: v * tau
    assert err_adapt < 0.2 * err_lag


def test_dropped_frame_trusts_the_new_sample_more():
    regular, gap = OneEuroFilter(OneEuroConfig()), OneEuroFilter(OneEuroConfig())
    for f in (regular, gap):
        f(np.zeros(1), 0.0)
    step_regular = regular(np.ones(1), 1 / 30)[0]
    step_gap = gap(np.ones(1), 5 / 30)[0]  # four frames lost
    assert step_gap > 2 * step_regular


@pytest.mark.parametrize("new_stamp", [0.5, 1.0])
def test_time_going_backwards_or_standing_still_resets(new_stamp):
    f = OneEuroFilter(OneEuroConfig())
    for i in range(31):
        f(np.array([0.0]), i / 30)  # ends at t = 1.0
    out = f(np.array([7.0]), new_stamp)
    assert out[0] == 7.0
    assert f.stamp == new_stamp


def test_bad_input_is_refused_with_a_clear_message():
    f = OneEuroFilter(OneEuroConfig())
    f(np.zeros(3), 0.0)
    with pytest.raises(ValueError, match="shape"):
        f(np.zeros(4), 0.1)
    with pytest.raises(ValueError, match="NaN"):
        f(np.array([0.0, np.nan, 0.0]), 0.2)
    with pytest.raises(ValueError, match="timestamp"):
        f(np.zeros(3), float("nan"))


def test_config_validation():
    with pytest.raises(ConfigError, match="min_cutoff_hz"):
        load_config(OneEuroConfig, {"min_cutoff_hz": 0.0})
    with pytest.raises(ConfigError, match="beta"):
        load_config(OneEuroConfig, {"beta": -1.0})
    assert load_config(OneEuroConfig, {"beta": 2}).beta == 2.0
