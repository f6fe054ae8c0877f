import numpy as np
import pytest

from hoi_training.pseudolabel.weak_perspective import WeakPerspectiveCamera, fit_weak_perspective


def _points(rng, batch=(), count=21):
    return rng.normal(scale=0.05, size=batch + (count, 3))


def test_recovers_known_scale_and_translation_exactly():
    rng = np.random.default_rng(0)
    points_3d = _points(rng, batch=(5,))
    scale = np.array([800.0, 1200.0, 950.0, 400.0, 2000.0])
    translation = rng.uniform(50, 200, size=(5, 2))
    points_2d = scale[:, None, None] * points_3d[..., :2] + translation[:, None, :]
    camera = fit_weak_perspective(points_3d, points_2d)
    np.testing.assert_allclose(camera.scale, scale, rtol=1e-12)
    np.testing.assert_allclose(camera.translation, translation, rtol=1e-12)
    np.testing.assert_allclose(camera.project(points_3d), points_2d, atol=1e-9)


def test_fit_is_the_least_squares_minimum():
    rng = np.random.default_rng(1)
    points_3d = _points(rng)
    points_2d = 900.0 * points_3d[:, :2] + 120.0 + rng.normal(scale=3.0, size=(21, 2))
    camera = fit_weak_perspective(points_3d, points_2d)

    def cost(s, t):
        return np.sum((s * points_3d[:, :2] + t - points_2d) ** 2)

    best = cost(camera.scale, camera.translation)
    for ds, dt in [(1.0, (0, 0)), (-1.0, (0, 0)), (0.0, (0.5, 0)), (0.0, (0, -0.5)), (0.3, (0.2, 0.2))]:
        assert cost(camera.scale + ds, camera.translation + np.array(dt)) > best


def test_weights_ignore_points_with_zero_weight():
    rng = np.random.default_rng(2)
    points_3d = _points(rng)
    points_2d = 700.0 * points_3d[:, :2] + np.array([30.0, 40.0])
    points_2d[3] += 500.0  # an outlier joint
    weights = np.ones(21)
    weights[3] = 0.0
    camera = fit_weak_perspective(points_3d, points_2d, weights)
    assert camera.scale == pytest.approx(700.0, rel=1e-12)
    np.testing.assert_allclose(camera.translation, [30.0, 40.0], atol=1e-9)
    unweighted = fit_weak_perspective(points_3d, points_2d)
    assert abs(unweighted.scale - 700.0) > 1.0


def test_mirrored_points_give_negative_scale_and_degenerate_points_nan():
    rng = np.random.default_rng(3)
    points_3d = _points(rng)
    camera = fit_weak_perspective(points_3d, -500.0 * points_3d[:, :2])
    assert camera.scale == pytest.approx(-500.0)
    degenerate = fit_weak_perspective(np.zeros((21, 3)), rng.normal(size=(21, 2)))
    assert np.isnan(degenerate.scale)


def test_shape_errors_name_the_input():
    with pytest.raises(ValueError, match="points_2d"):
        fit_weak_perspective(np.zeros((21, 3)), np.zeros((20, 2)))
    with pytest.raises(ValueError, match="weights"):
        fit_weak_perspective(np.ones((21, 3)), np.ones((21, 2)), weights=np.ones(5))
    with pytest.raises(ValueError, match="weights"):
        fit_weak_perspective(np.ones((21, 3)), np.ones((21, 2)), weights=-np.ones(21))
    camera = WeakPerspectiveCamera(scale=np.ones(2), translation=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="batch shape"):
        camera.project(np.zeros((3, 21, 3)))
