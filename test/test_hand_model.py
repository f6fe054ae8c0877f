"""The MANO layer (HandModel), model-file resolution and loading, and joint orders."""

import pickle
import sys
import types

import numpy as np
import pytest
import torch

from hoi_perception.config import ConfigError, load_config
from hoi_perception.hand_model.joint_orders import (
    FINGERTIP_VERTEX_IDS,
    HO3D_JOINT_NAMES,
    HO3D_PARENTS,
    SIMPLE_JOINT_NAMES,
    ho3d_to_simple,
    reorder_joints,
    simple_to_ho3d,
)
from hoi_perception.hand_model.mano import (
    ASSET_DIR,
    MANO_DIR_ENV,
    STANDIN_FILES,
    HandModel,
    HandModelConfig,
    MANOFileError,
    NumpyHandPoser,
    load_mano_arrays,
    resolve_mano_file,
)


@pytest.fixture(autouse=True)
def no_mano_env(monkeypatch):
    monkeypatch.delenv(MANO_DIR_ENV, raising=False)


@pytest.fixture(scope="module")
def right():
    return HandModel("right")


@pytest.fixture(scope="module")
def standin_arrays():
    return load_mano_arrays(ASSET_DIR / STANDIN_FILES["right"])


def random_pose(batch, seed=0, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(batch, 3, generator=g), scale * torch.randn(batch, 45, generator=g)


def write_npz(path, arrays):
    np.savez(path, **arrays)
    return path


# ---- model files --------------------------------------------------------------------------

def test_default_is_the_shipped_standin(right):
    assert right.is_standin and right.model_file == ASSET_DIR / "mano_standin_right.npz"
    assert HandModel("left").model_file.name == "mano_standin_left.npz"
    assert right.faces.shape == (1538, 3) and right.faces.dtype == np.int64
    assert right.parents == HO3D_PARENTS


def test_mano_dir_from_config_and_environment(tmp_path, monkeypatch, standin_arrays):
    write_npz(tmp_path / "MANO_RIGHT.npz", standin_arrays)
    assert resolve_mano_file("right", tmp_path) == tmp_path / "MANO_RIGHT.npz"
    assert resolve_mano_file("right", tmp_path / "MANO_RIGHT.npz") == tmp_path / "MANO_RIGHT.npz"
    nested = tmp_path / "models"
    (nested / "mano").mkdir(parents=True)
    write_npz(nested / "mano" / "MANO_RIGHT.npz", standin_arrays)
    assert resolve_mano_file("right", nested) == nested / "mano" / "MANO_RIGHT.npz"

    monkeypatch.setenv(MANO_DIR_ENV, str(tmp_path))
    model = HandModel("right")
    assert model.model_file == tmp_path / "MANO_RIGHT.npz" and not model.is_standin
    # An explicit directory wins over the environment.
    assert HandModel("right", HandModelConfig(mano_dir=nested)).model_file == nested / "mano" / "MANO_RIGHT.npz"
    with pytest.raises(MANOFileError, match=r"\$HOI_MANO_DIR=.*MANO_LEFT\.pkl or MANO_LEFT\.npz"):
        HandModel("left")


def test_missing_model_files_are_named(tmp_path):
    with pytest.raises(MANOFileError, match="no such file or directory"):
        resolve_mano_file("right", tmp_path / "nowhere")
    with pytest.raises(MANOFileError, match="MANO_LEFT.pkl or MANO_LEFT.npz found"):
        resolve_mano_file("left", tmp_path)
    with pytest.raises(ValueError, match="side must be"):
        resolve_mano_file("both", None)


def test_malformed_model_files_name_the_bad_arrays(tmp_path, standin_arrays):
    missing = dict(standin_arrays)
    del missing["J_regressor"], missing["hands_mean"]
    path = write_npz(tmp_path / "MANO_RIGHT.npz", missing)
    expected = r"MANO_RIGHT\.npz: missing MANO array\(s\) \['J_regressor', 'hands_mean'\]"
    with pytest.raises(MANOFileError, match=expected):
        HandModel("right", HandModelConfig(mano_dir=tmp_path))

    wrong = dict(standin_arrays, weights=np.zeros((778, 15)))
    write_npz(path, wrong)
    with pytest.raises(MANOFileError, match=r"'weights' has shape \(778, 15\).*expected 778x16"):
        load_mano_arrays(path)

    few_betas = dict(standin_arrays, shapedirs=standin_arrays["shapedirs"][..., :4])
    write_npz(path, few_betas)
    with pytest.raises(MANOFileError, match="4 shape components, expected >= 10"):
        load_mano_arrays(path)

    path.write_bytes(b"not a zip archive")
    with pytest.raises(MANOFileError, match="cannot read as a MANO .npz file"):
        load_mano_arrays(path)
    other = tmp_path / "MANO_RIGHT.obj"
    other.write_text("v 0 0 0")
    with pytest.raises(MANOFileError, match="expected a .pkl or .npz"):
        load_mano_arrays(other)


def test_official_pickle_loads_without_chumpy(tmp_path, monkeypatch, standin_arrays):
    """The released MANO pickles hold chumpy arrays and a scipy.sparse J_regressor."""
    from scipy import sparse

    class Ch:  # pickled as chumpy.ch.Ch, whose state is its __dict__ with the array in 'x'
        def __init__(self, x):
            self.x = x
            self._dirty_vars = set()

    module = types.ModuleType("chumpy.ch")
    module.Ch = Ch
    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    monkeypatch.setitem(sys.modules, "chumpy", types.ModuleType("chumpy"))
    monkeypatch.setitem(sys.modules, "chumpy.ch", module)
    data = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in standin_arrays.items()}
    data["shapedirs"] = Ch(data["shapedirs"])
    data["J_regressor"] = sparse.csc_matrix(data["J_regressor"])
    data["bs_style"] = "lbs"
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps(data, protocol=2))
    monkeypatch.delitem(sys.modules, "chumpy.ch")
    monkeypatch.delitem(sys.modules, "chumpy")

    loaded = load_mano_arrays(path)
    np.testing.assert_allclose(loaded["shapedirs"], standin_arrays["shapedirs"], atol=1e-7)
    np.testing.assert_allclose(loaded["J_regressor"], standin_arrays["J_regressor"], atol=1e-7)
    from_pkl = HandModel("right", HandModelConfig(mano_dir=tmp_path))
    assert from_pkl.model_file == path
    go, hp = random_pose(2)
    expected = HandModel("right")(go, hp).vertices
    torch.testing.assert_close(from_pkl(go, hp).vertices, expected, atol=1e-6, rtol=0)


def test_official_left_shapedirs_sign_bug_is_fixed(tmp_path, standin_arrays):
    left = load_mano_arrays(ASSET_DIR / STANDIN_FILES["left"])
    buggy = dict(left, shapedirs=left["shapedirs"].copy())
    buggy["shapedirs"][:, 0, :] *= -1.0  # x offsets equal to the right hand's, as in the release
    write_npz(tmp_path / "MANO_RIGHT.npz", standin_arrays)
    write_npz(tmp_path / "MANO_LEFT.npz", buggy)
    model = HandModel("left", HandModelConfig(mano_dir=tmp_path))
    np.testing.assert_allclose(model.mano.shapedirs.numpy(), left["shapedirs"], atol=1e-7)


def test_config_from_yaml_and_validation():
    config = load_config(HandModelConfig, "hand_model.yaml")
    assert config == HandModelConfig()
    with pytest.raises(ConfigError, match="num_pca_comps: expected 1 to 45"):
        load_config(HandModelConfig, {"use_pca": True, "num_pca_comps": 0})


# ---- forward ------------------------------------------------------------------------------

def test_outputs_and_fingertips(right, standin_arrays):
    go, hp = random_pose(3)
    out = right(go, hp)
    assert out.vertices.shape == (3, 778, 3) and out.joints.shape == (3, 21, 3)
    torch.testing.assert_close(out.joints[:, 16:], out.vertices[:, list(FINGERTIP_VERTEX_IDS)])
    # Zero pose, zero shape: joints are the regressor applied to the template.
    rest = right(torch.zeros(1, 3), torch.zeros(1, 45))
    expected = standin_arrays["J_regressor"] @ standin_arrays["v_template"]
    np.testing.assert_allclose(rest.joints[0, :16].numpy(), expected, atol=1e-6)
    # Each sample of a batch is posed independently.
    torch.testing.assert_close(right(go[1:2], hp[1:2]).vertices[0], out.vertices[1])


def test_translation_and_global_rotation(right):
    go, hp = random_pose(2)
    transl = torch.tensor([[0.1, -0.2, 0.5], [0.0, 0.0, 1.0]])
    base = right(go, hp)
    moved = right(go, hp, transl=transl)
    torch.testing.assert_close(moved.vertices, base.vertices + transl[:, None])
    # Global orientation rotates the hand about the wrist joint.
    rest = right(torch.zeros(1, 3), hp[:1])
    turned = right(torch.tensor([[0.0, 0.0, np.pi / 2]]), hp[:1])
    wrist = rest.joints[0, 0]
    rot = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(turned.vertices[0], (rest.vertices[0] - wrist) @ rot.T + wrist, atol=1e-6, rtol=0)


@pytest.mark.parametrize("num_comps", [45, 12])
def test_pca_pose_matches_axis_angle(right, num_comps):
    pca = HandModel("right", HandModelConfig(use_pca=True, num_pca_comps=num_comps))
    assert pca.pose_dim == num_comps
    go, hp = random_pose(4, seed=1)
    if num_comps < 45:  # a pose inside the span of the first components
        hp = pca.pca_to_axis_angle(hp[:, :num_comps])
    coefficients = pca.axis_angle_to_pca(hp)
    assert coefficients.shape == (4, num_comps)
    torch.testing.assert_close(pca(go, coefficients).vertices, right(go, hp).vertices, atol=1e-5, rtol=0)


def test_pca_inverse_handles_components_that_are_not_unit_length(tmp_path, standin_arrays):
    lengths = np.linspace(0.5, 3.0, 45)[:, None]
    scaled = dict(standin_arrays, hands_components=standin_arrays["hands_components"] * lengths)
    write_npz(tmp_path / "MANO_RIGHT.npz", scaled)
    pca = HandModel("right", HandModelConfig(mano_dir=tmp_path, use_pca=True, num_pca_comps=45))
    _, hp = random_pose(3, seed=4)
    torch.testing.assert_close(pca.pca_to_axis_angle(pca.axis_angle_to_pca(hp)), hp, atol=1e-5, rtol=0)


def test_mean_hand_origin(right, standin_arrays):
    relaxed = HandModel("right", HandModelConfig(flat_hand_mean=False))
    mean = torch.tensor(standin_arrays["hands_mean"])[None]
    torch.testing.assert_close(relaxed(torch.zeros(1, 3), torch.zeros(1, 45)).vertices,
                               right(torch.zeros(1, 3), mean).vertices, atol=1e-6, rtol=0)
    # PCA coefficients are then relative to the mean pose.
    relaxed_pca = HandModel("right", HandModelConfig(flat_hand_mean=False, use_pca=True, num_pca_comps=45))
    go, hp = random_pose(2, seed=2, scale=0.3)
    torch.testing.assert_close(relaxed_pca(go, relaxed_pca.axis_angle_to_pca(hp)).vertices,
                               right(go, hp + mean).vertices, atol=1e-5, rtol=0)


def test_gradients_reach_pose_shape_and_translation(right):
    go, hp = random_pose(2)
    go, hp = go.requires_grad_(), hp.requires_grad_()
    betas = torch.zeros(2, 10, requires_grad=True)
    transl = torch.zeros(2, 3, requires_grad=True)
    out = right(go, hp, betas, transl)
    (out.vertices.square().sum() + out.joints.square().sum()).backward()
    for name, tensor in (("global_orient", go), ("hand_pose", hp), ("betas", betas), ("transl", transl)):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0, name
        assert torch.isfinite(tensor.grad).all(), name


def test_float64_and_device():
    model = HandModel("left").to(torch.float64)
    go, hp = random_pose(2)
    out = model(go.double(), hp.double(), torch.zeros(2, 10, dtype=torch.float64))
    assert out.vertices.dtype == torch.float64 and out.joints.dtype == torch.float64
    torch.testing.assert_close(out.vertices.float(), HandModel("left")(go, hp).vertices, atol=1e-5, rtol=0)
    if torch.cuda.is_available():
        cuda = HandModel("left").cuda()
        torch.testing.assert_close(cuda(go.cuda(), hp.cuda()).vertices.cpu(), HandModel("left")(go, hp).vertices,
                                   atol=1e-5, rtol=0)


def test_bad_inputs_are_named(right):
    with pytest.raises(ValueError, match=r"hand_pose: expected shape \(2, 45\), got \(2, 12\)"):
        right(torch.zeros(2, 3), torch.zeros(2, 12))
    with pytest.raises(ValueError, match=r"betas: expected shape \(1, 10\)"):
        right(torch.zeros(1, 3), torch.zeros(1, 45), torch.zeros(2, 10))
    with pytest.raises(ValueError, match=r"global_orient: expected shape \(B, 3\)"):
        right(torch.zeros(3), torch.zeros(1, 45))
    with pytest.raises(TypeError, match="transl: expected a torch.Tensor"):
        right(torch.zeros(1, 3), torch.zeros(1, 45), transl=np.zeros((1, 3)))


# ---- joint orders -------------------------------------------------------------------------

def test_joint_order_conversions():
    joints = np.arange(21 * 3, dtype=np.float64).reshape(21, 3)
    simple = ho3d_to_simple(joints)
    # Simple order: wrist, then thumb from its base to its tip, then the index finger...
    assert [SIMPLE_JOINT_NAMES[i] for i in (0, 1, 4, 5, 8, 20)] == [
        "wrist", "thumb1", "thumb_tip", "index1", "index_tip", "pinky_tip"]
    np.testing.assert_array_equal(simple[1], joints[13])
    np.testing.assert_array_equal(simple[4], joints[16])
    np.testing.assert_array_equal(simple[20], joints[20])
    np.testing.assert_array_equal(simple_to_ho3d(simple), joints)
    assert reorder_joints(joints, "ho3d", "ho3d") is joints
    batch = torch.tensor(np.stack([joints, 2 * joints]))[None]  # (1, 2, 21, 3)
    torch.testing.assert_close(simple_to_ho3d(ho3d_to_simple(batch)), batch)
    assert [HO3D_JOINT_NAMES[HO3D_PARENTS[c]] for c in (16, 17, 18, 19, 20)] == [
        "thumb3", "index3", "middle3", "ring3", "pinky3"]
    with pytest.raises(ValueError, match=r"\(\.\.\., 21, D\)"):
        ho3d_to_simple(np.zeros((16, 3)))
    with pytest.raises(ValueError, match="joint order must be one of"):
        reorder_joints(joints, "ho3d", "openpose")


@pytest.mark.parametrize("side", ["right", "left"])
def test_numpy_poser_matches_the_torch_model(side):
    model = HandModel(side, HandModelConfig(flat_hand_mean=False))  # a non-zero pose mean is added too
    poser = NumpyHandPoser(model)
    orient, hand_pose = random_pose(4, seed=3, scale=0.7)
    orient[0], hand_pose[0] = 0.0, 0.0  # the rest pose: Rodrigues at angle zero
    betas = torch.randn(4, 10, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        expected = model(global_orient=orient, hand_pose=hand_pose, betas=betas)
    vertices, joints = poser(torch.cat([orient, hand_pose], 1).double().numpy(), betas.double().numpy())
    assert vertices.shape == (4, 778, 3) and joints.shape == (4, 21, 3)
    # float64 against smplx's float32: agreement to float32 rounding (well under a micrometre).
    np.testing.assert_allclose(vertices, expected.vertices.double().numpy(), atol=1e-6)
    np.testing.assert_allclose(joints, expected.joints.double().numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="pose"):
        poser(np.zeros((1, 45)), np.zeros((1, 10)))
    with pytest.raises(ValueError, match="betas"):
        poser(np.zeros((2, 48)), np.zeros((1, 10)))
