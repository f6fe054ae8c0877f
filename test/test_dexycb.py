import pickle
import sys
import types

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hoi_perception.geometry.camera import project
from hoi_perception.hand_model.joint_orders import HO3D_TO_SIMPLE
from hoi_perception.hand_model.mano import ASSET_DIR, STANDIN_FILES, MANOFileError
from hoi_perception.synth.sequence_files import DatasetFormatError
from hoi_training.data.dexycb import (
    SERIALS,
    SPLITS,
    SUBJECTS,
    DexYCBConfig,
    DexYCBDataset,
    load_mano_pca,
)

FX, FY, CX, CY = 615.0, 614.0, 320.5, 241.0
K = np.array([[FX, 0, CX], [0, FY, CY], [0, 0, 1]])
YCB_IDS = [1, 6, 10]
GRASPED = 1  # index into YCB_IDS: 6 = 007_tuna_fish_can


def sequence_names(subject: str) -> list[str]:
    day = subject.split("-")[0]
    return [f"{day}_{140000 + i:06d}" for i in range(100)]


def write_mano_files(mano_dir, monkeypatch):
    """MANO-format files with known PCA bases: MANO_RIGHT.npz, and MANO_LEFT.pkl pickled as the
    released files are, with arrays inside chumpy objects (readable without chumpy)."""
    rng = np.random.default_rng(5)
    mano_dir.mkdir()
    bases = {side: (np.linalg.qr(rng.normal(size=(45, 45)))[0], rng.normal(0, 0.1, 45)) for side in ("right", "left")}
    right = dict(np.load(ASSET_DIR / STANDIN_FILES["right"]))
    right["hands_components"], right["hands_mean"] = bases["right"]
    np.savez(mano_dir / "MANO_RIGHT.npz", **right)
    chumpy, chumpy_ch = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = x

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    chumpy_ch.Ch = Ch
    monkeypatch.setitem(sys.modules, "chumpy", chumpy)
    monkeypatch.setitem(sys.modules, "chumpy.ch", chumpy_ch)
    left = dict(np.load(ASSET_DIR / STANDIN_FILES["left"]))
    left["hands_components"], left["hands_mean"] = Ch(bases["left"][0]), bases["left"][1]
    with open(mano_dir / "MANO_LEFT.pkl", "wb") as f:
        pickle.dump(left, f, protocol=2)
    monkeypatch.delitem(sys.modules, "chumpy.ch")
    monkeypatch.delitem(sys.modules, "chumpy")
    return bases


def write_frame(frame_dir, frame, joints, pose_m, object_pose, seed):
    """color_XXXXXX.jpg and labels_XXXXXX.npz; joints (HO-3D order) or None for "no hand"."""
    frame_dir.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert cv2.imwrite(str(frame_dir / f"color_{frame:06d}.jpg"), image)
    seg = np.zeros((480, 640), np.uint8)
    seg[100:200, 100:200] = 255
    seg[250:300, 300:400] = YCB_IDS[GRASPED]
    seg[0:10, 0:10] = YCB_IDS[0]
    pose_y = np.zeros((len(YCB_IDS), 3, 4), np.float32)
    if object_pose is not None:
        pose_y[GRASPED] = object_pose
    if joints is None:
        joint_3d, joint_2d = -np.ones((1, 21, 3)), -np.ones((1, 21, 2))
    else:
        simple = joints[list(HO3D_TO_SIMPLE)]
        joint_3d, joint_2d = simple[None], project(simple, K)[None]
    np.savez_compressed(frame_dir / f"labels_{frame:06d}.npz", seg=seg, pose_y=pose_y,
                        pose_m=np.asarray(pose_m, np.float32).reshape(1, 51),
                        joint_3d=joint_3d.astype(np.float32), joint_2d=joint_2d.astype(np.float32))


@pytest.fixture
def dexycb(tmp_path, monkeypatch):
    """The s0 val split's subjects (1 and 2), with real labels in three frames."""
    root = tmp_path / "dex"
    calib = root / "calibration"
    (calib / "intrinsics").mkdir(parents=True)
    for serial in SERIALS:
        (calib / "intrinsics" / f"{serial}_640x480.yml").write_text(
            f"color: {{fx: {FX}, fy: {FY}, ppx: {CX}, ppy: {CY}}}\ndepth: {{fx: 1.0, fy: 1.0, ppx: 0, ppy: 0}}\n")
    for side in ("right", "left"):
        (calib / f"mano_20200709_{side}").mkdir()
        betas = [round(0.1 * i, 1) for i in range(10)]
        (calib / f"mano_20200709_{side}" / "mano.yml").write_text(f"betas: {betas}\n")
    for subject in SUBJECTS[:2]:
        for i, name in enumerate(sequence_names(subject)):
            (root / subject / name).mkdir(parents=True)
            side = "left" if (subject == SUBJECTS[0] and i == 9) else "right"
            frames = 2 if (subject == SUBJECTS[0] and i == 4) else 1
            (root / subject / name / "meta.yml").write_text(
                f"serials: {list(SERIALS)}\nnum_frames: {frames}\nycb_ids: {YCB_IDS}\nycb_grasp_ind: {GRASPED}\n"
                f"mano_sides: [{side}]\nmano_calib: [20200709_{side}]\n")
    model = root / "models" / "007_tuna_fish_can"
    model.mkdir(parents=True)
    (model / "textured_simple.obj").write_text(
        "# tuna\nv -0.04 -0.04 -0.015\nv 0.045 0.04 0.017\nv 0.0 0.01 0.0\nvt 0 0\nf 1 2 3\n")
    rng = np.random.default_rng(0)
    joints = rng.normal([0.0, 0.0, 0.6], 0.04, (21, 3))
    pose_m = np.concatenate([rng.normal(0, 0.5, 48), [0.01, -0.02, 0.58]])
    object_pose = np.concatenate([Rotation.random(random_state=1).as_matrix(), [[0.05], [0.02], [0.7]]], axis=1)
    first = root / SUBJECTS[0] / sequence_names(SUBJECTS[0])[4] / SERIALS[0]
    write_frame(first, 0, joints, pose_m, object_pose, seed=0)
    write_frame(first, 1, None, np.zeros(51), None, seed=1)
    left_dir = root / SUBJECTS[0] / sequence_names(SUBJECTS[0])[9] / SERIALS[0]
    write_frame(left_dir, 0, joints, pose_m, object_pose, seed=2)
    pca = write_mano_files(tmp_path / "mano", monkeypatch)
    return dict(root=root, mano_dir=tmp_path / "mano", pca=pca, joints=joints, pose_m=pose_m,
                object_pose=object_pose)


def test_split_rules_match_the_toolkit():
    subjects, serials, sequences = SPLITS["s0"]["train"]
    assert len(subjects) == 10 and len(serials) == 8 and len(sequences) == 80 and 4 not in sequences
    assert SPLITS["s0"]["val"][0] == [0, 1] and SPLITS["s0"]["test"][0] == [2, 3, 4, 5, 6, 7, 8, 9]
    assert SPLITS["s0"]["test"][2] == list(range(4, 100, 5))
    assert set(SPLITS["s0"]["train"][2]).isdisjoint(SPLITS["s0"]["test"][2])
    assert SPLITS["s2"]["test"][1] == [7] and SPLITS["s1"]["val"][0] == [6]
    assert SPLITS["s3"]["val"][2] == [15, 16, 17, 18, 19, 95, 96, 97, 98, 99]


def test_s0_val_selects_every_fifth_sequence_of_two_subjects(dexycb):
    dataset = DexYCBDataset(DexYCBConfig(root=dexycb["root"], setup="s0", split="val"))
    assert len(dataset.sequences) == 40
    names = sequence_names(SUBJECTS[0])
    assert [s.name for s in dataset.sequences[:2]] == [f"{SUBJECTS[0]}/{names[4]}", f"{SUBJECTS[0]}/{names[9]}"]
    assert len(dataset) == (40 * 1 + 1) * 8  # one sequence has two frames
    np.testing.assert_allclose(dataset.intrinsics[SERIALS[3]], K)


def test_right_hand_sample_is_converted(dexycb):
    dataset = DexYCBDataset(DexYCBConfig(root=dexycb["root"], split="val", mano_dir=dexycb["mano_dir"]))
    sample = dataset[0]
    assert sample.hand_side == "right" and sample.object_name == "007_tuna_fish_can"
    assert sample.sequence.endswith(SERIALS[0]) and sample.frame == "000000" and sample.dataset == "dexycb_s0"
    np.testing.assert_allclose(sample.joints_3d, dexycb["joints"], atol=1e-6)  # simple order -> ours
    np.testing.assert_allclose(project(sample.joints_3d, sample.K), sample.joints_2d, atol=1e-3)
    components, mean = dexycb["pca"]["right"]
    pose_m = dexycb["pose_m"].astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(sample.mano_pose[:3], pose_m[:3])
    np.testing.assert_allclose(sample.mano_pose[3:], pose_m[3:48] @ components + mean, atol=1e-12)
    np.testing.assert_allclose(sample.mano_trans, pose_m[48:])
    np.testing.assert_allclose(sample.mano_shape, np.arange(10) * 0.1)
    np.testing.assert_allclose(sample.object_control_points[0], [-0.04, -0.04, -0.015])
    np.testing.assert_allclose(sample.object_control_points[7], [0.045, 0.04, 0.017])
    np.testing.assert_allclose(sample.object_rotation, dexycb["object_pose"][:, :3], atol=1e-6)
    np.testing.assert_allclose(project(sample.object_points_camera(), sample.K), sample.object_points_2d)
    assert sample.hand_mask.sum() == 100 * 100 and sample.object_mask.sum() == 50 * 100


def test_left_hand_uses_the_left_components(dexycb):
    dataset = DexYCBDataset(DexYCBConfig(root=dexycb["root"], split="val", mano_dir=dexycb["mano_dir"]))
    sample = dataset[16]  # first sequence: 8 cameras x 2 frames
    components, mean = dexycb["pca"]["left"]
    pose_m = dexycb["pose_m"].astype(np.float32).astype(np.float64)
    assert sample.hand_side == "left"
    np.testing.assert_allclose(sample.mano_pose[3:], pose_m[3:48] @ components + mean, atol=1e-12)
    np.testing.assert_allclose(load_mano_pca(dexycb["mano_dir"], "left").components, components)


def test_missing_hand_and_object_and_no_mano_dir(dexycb):
    dataset = DexYCBDataset(DexYCBConfig(root=dexycb["root"], split="val", load_masks=False))
    empty = dataset[1]
    assert not (empty.has_hand_3d or empty.has_hand_2d or empty.has_mano or empty.has_object_pose)
    assert not empty.has_hand_mask and not empty.has_hand_box
    labelled = dataset[0]
    assert labelled.has_hand_3d and labelled.has_object_pose and not labelled.has_mano


def test_errors_name_the_file(dexycb):
    root = dexycb["root"]
    with pytest.raises(DatasetFormatError, match="labels_000000.npz' not found"):
        DexYCBDataset(DexYCBConfig(root=root, split="val"))[2]
    np.savez(root / SUBJECTS[0] / sequence_names(SUBJECTS[0])[4] / SERIALS[0] / "labels_000001.npz",
             seg=np.zeros((480, 640)), pose_y=np.zeros((3, 3, 4)), pose_m=np.zeros((1, 48)),
             joint_3d=np.zeros((1, 21, 3)), joint_2d=np.zeros((1, 21, 2)))
    with pytest.raises(DatasetFormatError, match=r"labels_000001.npz: 'pose_m' should have shape \(1, 51\)"):
        DexYCBDataset(DexYCBConfig(root=root, split="val"))[1]
    with pytest.raises(MANOFileError, match="no MANO_LEFT.pkl or MANO_LEFT.npz"):
        DexYCBDataset(DexYCBConfig(root=root, split="val", mano_dir=root))
    with pytest.raises(DatasetFormatError, match="subject-03' not found"):
        DexYCBDataset(DexYCBConfig(root=root, split="test"))
    (root / "calibration" / "intrinsics" / f"{SERIALS[5]}_640x480.yml").unlink()
    with pytest.raises(DatasetFormatError, match=f"{SERIALS[5]}_640x480.yml' not found"):
        DexYCBDataset(DexYCBConfig(root=root, split="val"))
    (root / "calibration" / "intrinsics" / f"{SERIALS[5]}_640x480.yml").write_text("color: {fx: 1}\n")
    with pytest.raises(DatasetFormatError, match="expected 'color' with fx, fy, ppx, ppy"):
        DexYCBDataset(DexYCBConfig(root=root, split="val"))
    (root / "calibration" / "intrinsics" / f"{SERIALS[5]}_640x480.yml").write_text(
        "color: {fx: 1, fy: 1, ppx: 0, ppy: 0}\n")
    (root / SUBJECTS[0] / sequence_names(SUBJECTS[0])[9] / "meta.yml").write_text("num_frames: 1\n")
    with pytest.raises(DatasetFormatError, match=r"meta.yml: missing key\(s\) \['ycb_ids'"):
        DexYCBDataset(DexYCBConfig(root=root, split="val"))
    (root / SUBJECTS[0] / sequence_names(SUBJECTS[0])[0] / "meta.yml").unlink()
    (root / SUBJECTS[0] / sequence_names(SUBJECTS[0])[0]).rmdir()
    with pytest.raises(DatasetFormatError, match="holds 99 sequence folders; DexYCB has 100"):
        DexYCBDataset(DexYCBConfig(root=root, split="val"))
