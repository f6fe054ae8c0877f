import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hoi_perception.config import ConfigError, load_config
from hoi_training.pseudolabel.tta import (
    HAND_OUTPUT_KINDS,
    Augmentation,
    OutputKind,
    TTAConfig,
    average_predictions,
    chordal_mean_rotations,
    mean_axis_angle,
    predict_with_tta,
    undo_augmentation,
)

DEFAULT_AUGMENTATIONS = TTAConfig().augmentations()


def _blob(size, centre, sigma=2.0):
    ys, xs = np.mgrid[0:size, 0:size]
    return np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma ** 2))


def _centroid(image):
    ys, xs = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    return np.array([(xs * image).sum(), (ys * image).sum()]) / image.sum()


def test_default_set_is_eight_copies_identity_first():
    assert len(DEFAULT_AUGMENTATIONS) == 8
    assert DEFAULT_AUGMENTATIONS[0] == Augmentation(0.0, 1.0)
    assert TTAConfig(enabled=False).augmentations() == (Augmentation(),)
    assert load_config(TTAConfig, {"rotations_deg": [0, 180], "scales": [1.0]}).augmentations() == (
        Augmentation(0.0, 1.0), Augmentation(180.0, 1.0))
    with pytest.raises(ConfigError, match="repeated"):
        load_config(TTAConfig, {"rotations_deg": [0, 360]})
    with pytest.raises(ConfigError, match="scales"):
        load_config(TTAConfig, {"scales": [0.0]})


@pytest.mark.parametrize("size", [16, 17])
def test_quarter_turns_move_pixels_exactly_like_points(size):
    image = np.zeros((size, size, 3), dtype=np.uint8)
    image[3, 11] = (255, 128, 7)  # row 3, column 11: the point (11, 3)
    for aug in DEFAULT_AUGMENTATIONS[:4]:
        out = aug.apply_image(image)
        row, col = np.unravel_index(np.argmax(out[..., 0]), out.shape[:2])
        np.testing.assert_array_equal(aug.apply_points_2d(np.array([11.0, 3.0]), size), [col, row])
        np.testing.assert_array_equal(out[row, col], (255, 128, 7))
    # 90 degrees is clockwise on screen: the top-right area goes to the bottom-right.
    turned = Augmentation(90.0).apply_image(image)
    assert turned[11, size - 1 - 3, 0] == 255


@pytest.mark.parametrize("aug", DEFAULT_AUGMENTATIONS, ids=str)
def test_resampled_image_follows_the_point_map(aug):
    size = 48
    point = np.array([20.0, 29.0])
    out = aug.apply_image(_blob(size, point).astype(np.float32))
    np.testing.assert_allclose(_centroid(out), aug.apply_points_2d(point, size), atol=0.02)
    assert out.shape == (size, size)


@pytest.mark.parametrize("aug", [*DEFAULT_AUGMENTATIONS, Augmentation(33.0, 1.2)], ids=str)
def test_inverse_maps_undo_forward_maps(aug):
    rng = np.random.default_rng(0)
    points_2d = rng.uniform(0, 64, size=(5, 21, 2))
    np.testing.assert_allclose(aug.invert_points_2d(aug.apply_points_2d(points_2d, 64), 64), points_2d, atol=1e-10)
    points_3d = rng.normal(size=(5, 21, 3))
    np.testing.assert_allclose(aug.invert_points_3d(aug.apply_points_3d(points_3d)), points_3d, atol=1e-12)
    orient = Rotation.random(5, random_state=1).as_rotvec()
    restored = aug.invert_global_rotation(aug.apply_global_rotation(orient))
    np.testing.assert_allclose(Rotation.from_rotvec(restored).as_matrix(), Rotation.from_rotvec(orient).as_matrix(),
                               atol=1e-10)


@pytest.mark.parametrize("aug", DEFAULT_AUGMENTATIONS[:4], ids=str)
def test_image_rotation_is_the_3d_rotation_about_the_optical_axis(aug):
    """A camera whose principal point is the crop centre sees R_z X where the rotated image shows X."""
    size, focal = 64, 80.0
    centre = (size - 1) / 2
    K = np.array([[focal, 0, centre], [0, focal, centre], [0, 0, 1.0]])
    rng = np.random.default_rng(2)
    points = rng.normal(scale=0.05, size=(21, 3)) + [0.02, -0.01, 0.5]

    def project(x):
        uvw = x @ K.T
        return uvw[:, :2] / uvw[:, 2:]

    np.testing.assert_allclose(project(aug.apply_points_3d(points)), aug.apply_points_2d(project(points), size),
                               atol=1e-9)
    # The global orientation turns with the points: R_z (R x) = (R_z R) x.
    orient = Rotation.random(random_state=3)
    turned = Rotation.from_rotvec(aug.apply_global_rotation(orient.as_rotvec()))
    np.testing.assert_allclose(turned.apply(points), aug.apply_points_3d(orient.apply(points)), atol=1e-10)


def test_chordal_mean_of_rotations():
    base = Rotation.random(4, random_state=4)
    same = np.stack([base.as_matrix()] * 3)
    np.testing.assert_allclose(chordal_mean_rotations(same), base.as_matrix(), atol=1e-12)
    delta = Rotation.from_rotvec([0.3, -0.2, 0.1])
    pair = np.stack([(base * delta).as_matrix(), (base * delta.inv()).as_matrix()])
    mean = chordal_mean_rotations(pair)
    np.testing.assert_allclose(mean, base.as_matrix(), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(mean), 1.0)
    # Axis-angles near pi on both sides of the wrap average to the rotation between them, not to zero.
    near_pi = np.array([[0.0, 0.0, np.pi - 0.1], [0.0, 0.0, -(np.pi - 0.1)]])
    np.testing.assert_allclose(np.abs(mean_axis_angle(near_pi)), [0.0, 0.0, np.pi], atol=1e-9)


def _ground_truth(count, size, rng):
    pose = np.concatenate([Rotation.random(count, random_state=5).as_rotvec(), rng.normal(scale=0.3, size=(count, 45))],
                          axis=1)
    return {
        "joints_2d": rng.uniform(0.2 * size, 0.8 * size, size=(count, 21, 2)),
        "joints_3d": rng.normal(scale=0.04, size=(count, 21, 3)),
        "vertices": rng.normal(scale=0.04, size=(count, 30, 3)),
        "pose": pose,
        "betas": rng.normal(size=(count, 10)),
    }


def _equivariant_predictor(images, truth, augmentations, noise_rng=None):
    """A network that is exactly equivariant: it recognises which copy of which crop it is given
    and returns that crop's ground truth moved by that augmentation (plus optional noise)."""
    size = images.shape[1]
    copies = {(n, k): aug.apply_image(image) for k, aug in enumerate(augmentations) for n, image in enumerate(images)}

    def predict(batch):
        out = {key: [] for key in truth}
        for image in batch:
            (n, k), = [key for key, copy in copies.items() if np.array_equal(copy, image)]
            aug = augmentations[k]
            pose = truth["pose"][n].copy()
            pose[:3] = aug.apply_global_rotation(pose[:3])
            values = {"joints_2d": aug.apply_points_2d(truth["joints_2d"][n], size),
                      "joints_3d": aug.apply_points_3d(truth["joints_3d"][n]),
                      "vertices": aug.apply_points_3d(truth["vertices"][n]), "pose": pose,
                      "betas": truth["betas"][n].copy()}
            if noise_rng is not None:
                values["joints_2d"] += noise_rng.normal(scale=2.0, size=(21, 2))
                values["joints_3d"] += noise_rng.normal(scale=0.005, size=(21, 3))
                values["vertices"] += noise_rng.normal(scale=0.005, size=(30, 3))
                noise = Rotation.from_rotvec(noise_rng.normal(scale=0.1, size=(16, 3)))
                values["pose"] = (noise * Rotation.from_rotvec(values["pose"].reshape(16, 3))).as_rotvec().ravel()
                values["betas"] += noise_rng.normal(scale=0.2, size=10)
            for key, value in values.items():
                out[key].append(value)
        return {key: np.stack(value) for key, value in out.items()}

    return predict


def _pose_error(a, b):
    """Mean rotation angle between two (N, 48) axis-angle poses."""
    ra, rb = Rotation.from_rotvec(a.reshape(-1, 3)), Rotation.from_rotvec(b.reshape(-1, 3))
    return float(np.mean((ra.inv() * rb).magnitude()))


def test_equivariant_predictor_ensemble_equals_its_single_prediction():
    rng = np.random.default_rng(6)
    size = 32
    images = rng.integers(0, 256, size=(3, size, size, 3), dtype=np.uint8)
    truth = _ground_truth(3, size, rng)
    predict = _equivariant_predictor(images, truth, DEFAULT_AUGMENTATIONS)
    single = predict_with_tta(predict, images, [Augmentation()])
    ensemble = predict_with_tta(predict, images, DEFAULT_AUGMENTATIONS, batch_size=5)
    for key in ("joints_2d", "joints_3d", "vertices", "betas"):
        np.testing.assert_allclose(ensemble[key], single[key], atol=1e-9)
        np.testing.assert_allclose(ensemble[key], truth[key], atol=1e-9)
    assert _pose_error(ensemble["pose"], truth["pose"]) < 1e-9


def test_ensemble_of_noisy_predictions_is_more_accurate():
    rng = np.random.default_rng(7)
    size, count = 32, 12
    images = rng.integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)
    truth = _ground_truth(count, size, rng)
    predict = _equivariant_predictor(images, truth, DEFAULT_AUGMENTATIONS, noise_rng=np.random.default_rng(8))
    single = predict_with_tta(predict, images, [Augmentation()])
    ensemble = predict_with_tta(predict, images, DEFAULT_AUGMENTATIONS)
    for key in ("joints_2d", "joints_3d", "vertices", "betas"):
        single_error = np.mean(np.linalg.norm(single[key] - truth[key], axis=-1))
        ensemble_error = np.mean(np.linalg.norm(ensemble[key] - truth[key], axis=-1))
        # Eight independent copies: the error shrinks by about sqrt(8) = 2.8.
        assert ensemble_error < 0.6 * single_error, key
    assert _pose_error(ensemble["pose"], truth["pose"]) < 0.6 * _pose_error(single["pose"], truth["pose"])


def test_undeclared_or_malformed_outputs_are_refused():
    images = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="'heatmaps' has no output kind"):
        predict_with_tta(lambda x: {"heatmaps": np.zeros((len(x), 21, 2))}, images, DEFAULT_AUGMENTATIONS)
    with pytest.raises(ValueError, match="leading axis"):
        predict_with_tta(lambda x: {"betas": np.zeros((1, 10))}, images, DEFAULT_AUGMENTATIONS)
    with pytest.raises(ValueError, match="square"):
        predict_with_tta(lambda x: {"betas": np.zeros((len(x), 10))}, np.zeros((2, 8, 6, 3)), DEFAULT_AUGMENTATIONS)
    with pytest.raises(ValueError, match="joints_3d"):
        undo_augmentation({"joints_3d": np.zeros((2, 21, 2))}, Augmentation(90.0), 8, HAND_OUTPUT_KINDS)
    with pytest.raises(ValueError, match="keys"):
        average_predictions([{"betas": np.zeros((1, 10))}, {}], {"betas": OutputKind.INVARIANT})
