import pickle

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from hoi_perception.config import ConfigError
from hoi_perception.hand_model.mano import HandModel
from hoi_perception.synth.sequence_files import DatasetFormatError
from hoi_training.data.ho3d import HO3DConfig, HO3DDataset, read_split_file

GL_FLIP = np.diag([1.0, -1.0, -1.0])
CAM = np.array([[617.0, 0.0, 315.0], [0.0, 615.0, 242.0], [0.0, 0.0, 1.0]])


def run_mano(model, pose, betas, trans):
    """Vertices (778, 3) and HO-3D-ordered joints (21, 3), in float64."""
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64)[None])  # noqa: E731
    out = model(global_orient=t(pose[:3]), hand_pose=t(pose[3:]), betas=t(betas), transl=t(trans))
    return out.vertices[0].numpy(), out.joints[0].numpy()


def ho3d_projection(points_gl):
    """HO-3D's own projection of OpenGL-frame points (its visualisation scripts' formula)."""
    p = points_gl @ GL_FLIP.T @ CAM.T
    return p[:, :2] / p[:, 2:]


def write_image(path, ext, seed):
    image = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path.with_suffix(ext)), image)


def write_meta(path, meta):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(meta, f, protocol=2)


@pytest.fixture(scope="module")
def model():
    return HandModel("right").double()


def write_ho3d(root, model, ext=".png"):
    """Two training frames (the second without an object annotation) and one evaluation frame."""
    rng = np.random.default_rng(0)
    truth = {}
    corners_rest = np.array([[x, y, z] for x in (-0.04, 0.05) for y in (-0.03, 0.03) for z in (-0.1, 0.09)])
    corners_rest = corners_rest[rng.permutation(8)]  # HO-3D's corner order is not ours
    for i, frame in enumerate(("0000", "0001")):
        pose, betas = rng.normal(0, 0.4, 48), rng.normal(0, 1, 10)
        trans = np.array([0.03, -0.02, -0.55])  # OpenGL: in front of the camera is -z
        vertices, joints = run_mano(model, pose, betas, trans)
        obj_rot = Rotation.random(random_state=i).as_rotvec().reshape(3, 1)
        obj_trans = np.array([-0.02, 0.04, -0.6])
        write_meta(root / "train" / "ABF10" / "meta" / f"{frame}.pkl", {
            "handPose": pose, "handBeta": betas, "handTrans": trans, "handJoints3D": joints, "camMat": CAM,
            "objRot": obj_rot if i == 0 else None, "objTrans": obj_trans if i == 0 else None,
            "objCorners3DRest": corners_rest if i == 0 else None, "objName": "006_mustard_bottle" if i == 0 else None,
            "objLabel": 5})
        write_image(root / "train" / "ABF10" / "rgb" / f"{frame}.png", ext, i)
        truth[frame] = dict(pose=pose, betas=betas, vertices=vertices, joints=joints, obj_rot=obj_rot,
                            obj_trans=obj_trans, corners=corners_rest)
    root_gl = np.array([0.01, 0.02, -0.5])
    write_meta(root / "evaluation" / "SM1" / "meta" / "0000.pkl", {
        "handJoints3D": root_gl, "handBoundingBox": np.array([10.0, 12.0, 40.0, 44.0]), "camMat": CAM,
        "objRot": np.zeros((3, 1)), "objTrans": np.array([0.0, 0.0, -0.7]), "objCorners3DRest": corners_rest,
        "objName": "035_power_drill", "objLabel": 15})
    write_image(root / "evaluation" / "SM1" / "rgb" / "0000.png", ext, 9)
    (root / "train.txt").write_text("ABF10/0000\nABF10/0001\n")
    (root / "evaluation.txt").write_text("SM1/0000\n")
    truth["eval_root"] = root_gl
    return truth


def test_converted_mano_reproduces_the_flipped_mesh(tmp_path, model):
    truth = write_ho3d(tmp_path, model)
    dataset = HO3DDataset(HO3DConfig(root=tmp_path, version="v2", split="train"))
    assert len(dataset) == 2
    for index, frame in enumerate(("0000", "0001")):
        sample = dataset[index]
        expected = truth[frame]
        assert sample.has_mano and sample.has_hand_3d and sample.hand_side == "right"
        np.testing.assert_allclose(sample.joints_3d, expected["joints"] @ GL_FLIP.T, atol=1e-12)
        assert np.all(sample.joints_3d[:, 2] > 0)
        vertices, joints = run_mano(model, sample.mano_pose, sample.mano_shape, sample.mano_trans)
        np.testing.assert_allclose(vertices, expected["vertices"] @ GL_FLIP.T, atol=1e-9)
        np.testing.assert_allclose(joints, sample.joints_3d, atol=1e-9)
        np.testing.assert_allclose(sample.joints_2d, ho3d_projection(expected["joints"]), atol=1e-9)
        np.testing.assert_allclose(sample.hand_box, [*sample.joints_2d.min(0), *sample.joints_2d.max(0)])
        np.testing.assert_array_equal(sample.mano_pose[3:], expected["pose"][3:])
        assert sample.image.shape == (48, 64, 3) and sample.dataset == "ho3d_v2"


def test_object_pose_projects_like_ho3d(tmp_path, model):
    truth = write_ho3d(tmp_path, model)["0000"]
    sample = HO3DDataset(HO3DConfig(root=tmp_path, version="v2"))[0]
    assert sample.has_object_pose and sample.object_name == "006_mustard_bottle"
    posed_gl = truth["corners"] @ cv2.Rodrigues(truth["obj_rot"])[0].T + truth["obj_trans"]
    expected = ho3d_projection(posed_gl)
    ours = sample.object_points_2d[:8]
    distances = np.linalg.norm(expected[:, None] - ours[None], axis=2)
    assert distances.min(axis=1).max() < 1e-9  # the same 8 corners, in our order
    np.testing.assert_allclose(sample.object_control_points[20], truth["corners"].mean(0), atol=1e-12)
    np.testing.assert_allclose(sample.object_box, [*expected.min(0), *expected.max(0)], atol=1e-9)


def test_unannotated_object_is_left_out(tmp_path, model):
    write_ho3d(tmp_path, model)
    sample = HO3DDataset(HO3DConfig(root=tmp_path, version="v2"))[1]
    assert not sample.has_object_pose and not sample.has_object_box and sample.object_name == ""
    assert sample.has_mano


def test_evaluation_split_has_root_and_box_only(tmp_path, model):
    truth = write_ho3d(tmp_path, model, ext=".jpg")
    sample = HO3DDataset(HO3DConfig(root=tmp_path, version="v3", split="evaluation"))[0]
    assert not sample.has_hand_3d and not sample.has_hand_2d and not sample.has_mano
    assert sample.has_hand_root and sample.has_hand_box and sample.has_object_pose
    np.testing.assert_allclose(sample.root_3d, truth["eval_root"] * [1, -1, -1])
    np.testing.assert_allclose(sample.hand_box, [10.0, 12.0, 40.0, 44.0])
    np.testing.assert_allclose(sample.object_translation, [0.0, 0.0, 0.7])


def test_errors_name_the_file(tmp_path, model):
    with pytest.raises(ConfigError, match="not a folder"):
        HO3DDataset(HO3DConfig(root=tmp_path / "nope"))
    write_ho3d(tmp_path, model)
    (tmp_path / "bad.txt").write_text("ABF10/0000\nnot-a-pair\n")
    with pytest.raises(DatasetFormatError, match=r"bad.txt:2: expected 'SEQ/frame'"):
        read_split_file(tmp_path / "bad.txt")
    with pytest.raises(DatasetFormatError, match=r"ABF10/rgb/0000.jpg' not found"):
        HO3DDataset(HO3DConfig(root=tmp_path, version="v3"))[0]
    (tmp_path / "train" / "ABF10" / "meta" / "0001.pkl").write_bytes(b"garbage")
    with pytest.raises(DatasetFormatError, match=r"0001.pkl' could not be read"):
        HO3DDataset(HO3DConfig(root=tmp_path, version="v2"))[1]
    write_meta(tmp_path / "train" / "ABF10" / "meta" / "0001.pkl", {"camMat": CAM, "handPose": np.zeros(48)})
    with pytest.raises(DatasetFormatError, match=r"0001.pkl: missing key\(s\) \['handBeta'"):
        HO3DDataset(HO3DConfig(root=tmp_path, version="v2"))[1]
    (tmp_path / "train" / "ABF10" / "rgb" / "0000.png").write_bytes(b"not an image")
    with pytest.raises(DatasetFormatError, match=r"0000.png' could not be decoded"):
        HO3DDataset(HO3DConfig(root=tmp_path, version="v2"))[0]
    (tmp_path / "evaluation.txt").unlink()
    with pytest.raises(DatasetFormatError, match="evaluation.txt' not found"):
        HO3DDataset(HO3DConfig(root=tmp_path, split="evaluation"))
