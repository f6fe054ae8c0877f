"""The shipped MANO-format stand-in hand: format, mesh, skeleton, skinning, shape and pose spaces."""

import contextlib
import io

import numpy as np
import pytest
import smplx
import torch

from hoi_perception.hand_model.joint_orders import (
    FINGER_NAMES,
    FINGERTIP_VERTEX_IDS,
    HO3D_BONES,
    HO3D_FINGER_CHAINS,
    MANO_PARENTS,
)
from hoi_perception.hand_model.kinematics import check_biomechanics, mirror_points, mirror_pose
from hoi_perception.hand_model.mano import ASSET_DIR, STANDIN_FILES
from hoi_training.assets.standin_hand import (
    MANO_RIGHT_TEMPLATE_JOINTS,
    boundary_loops,
    build_standin_right,
    topology_report,
)

RIGHT = ASSET_DIR / STANDIN_FILES["right"]
LEFT = ASSET_DIR / STANDIN_FILES["left"]


@pytest.fixture(scope="module")
def arrays():
    with np.load(RIGHT) as data:
        return {k: data[k] for k in data.files}


def smplx_mano(path, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return smplx.MANO(model_path=str(path), ext="npz", **kwargs)


def pose_right(model, hand_pose, betas=None, global_orient=None, transl=None):
    b = hand_pose.shape[0]
    out = model(betas=torch.zeros(b, 10) if betas is None else betas,
                global_orient=torch.zeros(b, 3) if global_orient is None else global_orient,
                hand_pose=hand_pose, transl=transl)
    joints = torch.cat([out.joints, out.vertices[:, list(FINGERTIP_VERTEX_IDS)]], 1)
    return out.vertices.detach().numpy(), joints.detach().numpy()


def subtree(joint):
    out = {joint}
    for j in range(16):
        if MANO_PARENTS[j] in out:
            out.add(j)
    return sorted(out)


def test_smplx_loads_the_shipped_files_unchanged():
    for path in (RIGHT, LEFT):
        model = smplx_mano(path, use_pca=True, num_pca_comps=6, flat_hand_mean=False)
        out = model()  # smplx's own default parameters: PCA pose, mean hand
        assert out.vertices.shape == (1, 778, 3)
        assert out.joints.shape == (1, 16, 3)
        assert torch.isfinite(out.vertices).all()
    assert RIGHT.stat().st_size < 2_000_000 and LEFT.stat().st_size < 2_000_000


def test_exact_mano_array_layout(arrays):
    shapes = {"v_template": (778, 3), "shapedirs": (778, 3, 10), "posedirs": (778, 3, 135),
              "J_regressor": (16, 778), "weights": (778, 16), "kintree_table": (2, 16), "f": (1538, 3),
              "hands_components": (45, 45), "hands_mean": (45,)}
    assert set(arrays) == set(shapes)
    for key, shape in shapes.items():
        assert arrays[key].shape == shape, key
    assert arrays["v_template"].dtype == np.float32
    np.testing.assert_array_equal(arrays["kintree_table"][0, 1:], MANO_PARENTS[1:])
    np.testing.assert_array_equal(arrays["kintree_table"][1], np.arange(16))
    assert not arrays["posedirs"].any()


def test_mesh_is_one_manifold_disk_open_at_a_16_vertex_wrist(arrays):
    faces = arrays["f"].astype(np.int64)
    report = topology_report(faces, 778)
    assert report.edge_manifold and report.vertex_manifold and report.consistently_oriented
    assert report.components == 1 and report.unused_vertices == 0
    assert report.boundary_loop_sizes == [16]
    # The opening is the wrist: its centre is within 1 cm of the wrist joint.
    loop = boundary_loops(faces)[0]
    v = arrays["v_template"].astype(np.float64)
    assert np.linalg.norm(v[loop].mean(0) - MANO_RIGHT_TEMPLATE_JOINTS[0]) < 0.01
    # Outward normals: the enclosed volume (hole capped by a fan) is positive, hand-sized.
    tri = v[faces]
    volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    c = v[loop].mean(0)
    volume += sum(np.dot(c, np.cross(v[loop[(i + 1) % 16]], v[loop[i]])) for i in range(16)) / 6
    assert 2e-4 < volume < 6e-4  # 200 to 600 ml (an adult hand is about 350-500 ml)
    # No degenerate triangles.
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1) / 2
    assert area.min() > 1e-7


def test_rest_pose_is_a_human_sized_flat_hand(arrays):
    model = smplx_mano(RIGHT, use_pca=False, flat_hand_mean=True)
    _, joints = pose_right(model, torch.zeros(1, 45))
    joints = joints[0]
    np.testing.assert_allclose(joints[:16], MANO_RIGHT_TEMPLATE_JOINTS, atol=1e-4)
    length = {c: np.linalg.norm(joints[c] - joints[p]) for p, c in HO3D_BONES}
    assert 0.08 <= length[4] <= 0.11  # wrist to middle knuckle
    for chain in HO3D_FINGER_CHAINS:
        finger = sum(length[c] for c in chain[2:])  # base joint to tip
        assert 0.05 <= finger <= 0.11, chain
        for c in chain[2:]:
            assert 0.015 <= length[c] <= 0.05, (chain, c)
    assert 0.05 <= np.linalg.norm(joints[1] - joints[7]) <= 0.09  # index to pinky knuckle
    assert bool(check_biomechanics(joints).valid)


def test_fingertip_vertices_are_the_most_distal_of_their_finger(arrays):
    v, w = arrays["v_template"], arrays["weights"]
    joints = MANO_RIGHT_TEMPLATE_JOINTS
    last = {"thumb": 15, "index": 3, "middle": 6, "ring": 12, "pinky": 9}
    for finger, tip_id in zip(FINGER_NAMES, FINGERTIP_VERTEX_IDS):
        j = last[finger]
        direction = (v[tip_id] - joints[j]) / np.linalg.norm(v[tip_id] - joints[j])
        on_segment = np.flatnonzero(w[:, j] > 0.5)
        assert tip_id in on_segment
        reach = (v[on_segment] - joints[j]) @ direction
        assert on_segment[np.argmax(reach)] == tip_id
        # And the tip continues the finger's last bone (within 20 degrees).
        bone = joints[j] - joints[MANO_PARENTS[j]]
        assert np.degrees(np.arccos(direction @ bone / np.linalg.norm(bone))) < 20


def test_joint_regressor_and_skinning_weights_are_averages(arrays):
    reg, w = arrays["J_regressor"], arrays["weights"]
    assert (reg >= 0).all() and (w >= 0).all()
    np.testing.assert_allclose(reg.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-5)
    assert ((reg > 1e-3).sum(1) >= 8).all()  # a ring of vertices, not a single vertex
    # Smooth skinning: every articulated joint shares a band of vertices with its parent.
    for j in range(1, 16):
        p = MANO_PARENTS[j]
        blended = (w[:, j] > 0.1) & (w[:, p] > 0.1)
        assert blended.sum() >= 6, j


@pytest.mark.parametrize("joint", [1, 5, 9, 10, 13, 15])
def test_rotating_a_joint_moves_only_its_descendants(arrays, joint):
    model = smplx_mano(RIGHT, use_pca=False, flat_hand_mean=True)
    rest, _ = pose_right(model, torch.zeros(1, 45))
    pose = torch.zeros(1, 45)
    pose[0, 3 * (joint - 1):3 * joint] = torch.tensor([0.3, -0.4, 1.0])
    posed, _ = pose_right(model, pose)
    moved = np.linalg.norm(posed[0] - rest[0], axis=1)
    on_subtree = arrays["weights"][:, subtree(joint)].sum(1)
    assert moved[on_subtree == 0].max() < 1e-7
    # The subtree itself does move (vertices on the rotation axis through the joint excepted).
    assert np.median(moved[on_subtree > 0.5]) > 3e-3


def test_left_hand_is_the_mirror_of_the_right():
    right, left = smplx_mano(RIGHT, use_pca=False), smplx_mano(LEFT, use_pca=False)
    g = torch.Generator().manual_seed(3)
    hand_pose = 0.4 * torch.randn(4, 45, generator=g)
    global_orient = torch.randn(4, 3, generator=g)
    betas = torch.randn(4, 10, generator=g)
    transl = 0.1 * torch.randn(4, 3, generator=g)
    v_r, j_r = pose_right(right, hand_pose, betas, global_orient, transl)
    v_l, j_l = pose_right(left, mirror_pose(hand_pose), betas, mirror_pose(global_orient), mirror_points(transl))
    np.testing.assert_allclose(v_l, mirror_points(v_r), atol=2e-6)
    np.testing.assert_allclose(j_l, mirror_points(j_r), atol=2e-6)
    # Mirrored faces keep pointing outward.
    with np.load(RIGHT) as r, np.load(LEFT) as lf:
        np.testing.assert_array_equal(lf["f"], r["f"][:, [0, 2, 1]])


def test_shape_space_is_orthogonal_and_stays_human(arrays):
    dirs = arrays["shapedirs"].reshape(-1, 10).astype(np.float64)
    norms = np.linalg.norm(dirs, axis=0)
    cos = (dirs.T @ dirs) / np.outer(norms, norms)
    assert np.abs(cos - np.eye(10)).max() < 1e-4
    rms_mm = 1000 * norms / np.sqrt(778)
    assert (rms_mm > 0.3).all() and (rms_mm < 6).all()  # each beta moves the surface by mm
    model = smplx_mano(RIGHT, use_pca=False)
    for k in range(10):
        for sign in (-2.0, 2.0):
            betas = torch.zeros(1, 10)
            betas[0, k] = sign
            _, joints = pose_right(model, torch.zeros(1, 45), betas)
            wrist_to_middle = np.linalg.norm(joints[0, 4] - joints[0, 0])
            assert 0.08 <= wrist_to_middle <= 0.11, (k, sign)
            assert bool(check_biomechanics(joints[0]).valid), (k, sign)
    # Smooth: at beta = 1 no edge stretches or shrinks by more than 45% (no tearing),
    # and 99% of edges by less than 25%; the overall-size direction is a uniform 5%.
    faces = arrays["f"].astype(np.int64)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    v, d = arrays["v_template"].astype(np.float64), arrays["shapedirs"].astype(np.float64)
    strain = (np.linalg.norm(d[edges[:, 0]] - d[edges[:, 1]], axis=1)
              / np.linalg.norm(v[edges[:, 0]] - v[edges[:, 1]], axis=1)[:, None])
    assert (strain.max(0) < 0.45).all()
    assert (np.percentile(strain, 99, axis=0) < 0.25).all()
    assert strain[:, 0].max() == pytest.approx(0.05, abs=1e-3)


def test_pose_pca_is_an_orthonormal_basis_around_a_relaxed_hand(arrays):
    comps = arrays["hands_components"].astype(np.float64)
    np.testing.assert_allclose(comps @ comps.T, np.eye(45), atol=1e-5)
    model = smplx_mano(RIGHT, use_pca=False, flat_hand_mean=True)
    _, mean_joints = pose_right(model, torch.tensor(arrays["hands_mean"])[None])
    angles = check_biomechanics(mean_joints[0]).joint_angles_deg
    _, flat_joints = pose_right(model, torch.zeros(1, 45))
    flat = check_biomechanics(flat_joints[0]).joint_angles_deg
    # Relaxed: fingers (not thumb) curled more than flat at every joint, but far from a fist.
    curl = angles[1:, 1:] - flat[1:, 1:]
    assert (curl > 5).all() and (angles < 80).all()
    # The first component is the grasp: moving along it curls every finger's middle joint.
    _, grasp = pose_right(model, torch.tensor(arrays["hands_mean"] + 1.5 * comps[0], dtype=torch.float32)[None])
    _, opened = pose_right(model, torch.tensor(arrays["hands_mean"] - 1.5 * comps[0], dtype=torch.float32)[None])
    g, o = (check_biomechanics(x[0]).joint_angles_deg[1:, 1] for x in (grasp, opened))
    assert ((g - o) > 20).all() or ((o - g) > 20).all()


def test_generator_reproduces_the_shipped_files(arrays):
    rebuilt = build_standin_right()
    assert set(rebuilt) == set(arrays)
    for key, value in rebuilt.items():
        np.testing.assert_allclose(value, arrays[key], atol=1e-6, err_msg=key)
