import numpy as np
import pytest
import smplx
import torch
from scipy.spatial.transform import Rotation
from smplx.utils import Struct
from torch.utils.data import DataLoader

from hoi_perception.geometry.camera import box_from_points, project
from hoi_perception.objects.models import bbox_control_points
from hoi_training.data.sample import (
    FLAG_FIELDS,
    HandObjectSample,
    SampleError,
    collate_samples,
    project_object_points,
    rotate_mano_global,
    rotate_sample_3d,
)

PARENTS = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14])


def random_mano(seed: int = 0) -> smplx.MANO:
    """A MANO-format model with random arrays: enough to check rigid-transform algebra."""
    rng = np.random.default_rng(seed)
    regressor = rng.random((16, 778))
    weights = rng.random((778, 16)) ** 4
    data = dict(v_template=rng.normal(0, 0.04, (778, 3)), shapedirs=rng.normal(0, 0.005, (778, 3, 10)),
                posedirs=rng.normal(0, 0.001, (778, 3, 135)), J_regressor=regressor / regressor.sum(1, keepdims=True),
                weights=weights / weights.sum(1, keepdims=True),
                kintree_table=np.stack([np.where(PARENTS < 0, 2**32 - 1, PARENTS), np.arange(16)]),
                f=rng.integers(0, 778, (1538, 3)), hands_components=np.eye(45), hands_mean=np.zeros(45))
    return smplx.MANO(model_path="", data_struct=Struct(**data), use_pca=False, flat_hand_mean=True)


def run_mano(model, pose, betas, trans):
    t = lambda a: torch.as_tensor(np.asarray(a)[None], dtype=torch.float64)  # noqa: E731
    out = model.double()(global_orient=t(pose[:3]), hand_pose=t(pose[3:]), betas=t(betas), transl=t(trans))
    return out.vertices[0].numpy(), out.joints[0].numpy()


def make_sample(seed: int = 0, size=(240, 320), **overrides) -> HandObjectSample:
    rng = np.random.default_rng(seed)
    height, width = size
    K = np.array([[300.0, 0, 150.0], [0, 320.0, 130.0], [0, 0, 1]])
    joints = rng.normal([0.02, 0.0, 0.5], 0.03, (21, 3))
    R = Rotation.random(random_state=seed).as_matrix()
    t = np.array([-0.03, 0.02, 0.55])
    points = bbox_control_points(np.array([-0.03, -0.02, -0.05]), np.array([0.03, 0.02, 0.05]))
    joints_2d = project(joints, K)
    points_2d = project(points @ R.T + t, K)
    hand_mask = np.zeros(size, bool)
    hand_mask[50:90, 60:120] = True
    fields = dict(
        image=rng.integers(0, 256, (height, width, 3), dtype=np.uint8), K=K, dataset="fixture", sequence="seq",
        frame=f"{seed:04d}", object_name="box", hand_box=box_from_points(joints_2d),
        object_box=box_from_points(points_2d[:8]), joints_2d=joints_2d, joints_3d=joints,
        vertices_3d=rng.normal([0.02, 0.0, 0.5], 0.03, (778, 3)), mano_pose=rng.normal(0, 0.3, 48),
        mano_shape=rng.normal(0, 1, 10), mano_trans=rng.normal(0, 0.05, 3), object_rotation=R,
        object_translation=t, object_control_points=points, object_points_2d=points_2d, hand_mask=hand_mask,
        object_mask=~hand_mask)
    fields.update(overrides)
    return HandObjectSample(**fields)


def test_complete_sample_validates_and_reports_every_label():
    sample = make_sample().validate()
    for flag in FLAG_FIELDS:
        assert getattr(sample, flag), flag
    assert sample.has_boxes and sample.image_size == (320, 240)
    assert sample.sample_id == "fixture/seq/0000"
    np.testing.assert_allclose(project_object_points(sample), sample.object_points_2d, atol=1e-9)


def test_missing_labels_are_flagged_false():
    sample = make_sample(mano_pose=None, mano_shape=None, mano_trans=None, vertices_3d=None, joints_3d=None,
                         hand_root_3d=np.array([0.0, 0.0, 0.4]), object_mask=None).validate()
    assert not sample.has_mano and not sample.has_hand_3d and not sample.has_vertices and not sample.has_object_mask
    assert sample.has_hand_root
    np.testing.assert_allclose(sample.root_3d, [0.0, 0.0, 0.4])


@pytest.mark.parametrize("overrides, message", [
    ({"image": np.zeros((4, 4, 3), np.float32)}, "uint8 RGB"),
    ({"joints_3d": np.zeros((20, 3))}, r"joints_3d: expected shape \(21, 3\)"),
    ({"mano_trans": None}, r"missing \['mano_trans'\]"),
    ({"hand_root_3d": np.zeros(3)}, "only when joints_3d is missing"),
    ({"hand_side": "both"}, "hand_side"),
    ({"object_rotation": np.diag([1.0, 1.0, -1.0])}, "not a rotation"),
    ({"hand_mask": np.zeros((10, 10), bool)}, r"hand_mask: expected shape \(240, 320\)"),
    ({"K": np.zeros((3, 3))}, "positive focal"),
    ({"joints_2d": np.full((21, 2), np.nan)}, "non-finite"),
])
def test_validate_names_the_bad_field(overrides, message):
    with pytest.raises(SampleError, match=message):
        make_sample(**overrides).validate()


def test_rotate_mano_global_reproduces_rotated_mesh():
    model = random_mano()
    rng = np.random.default_rng(1)
    pose, betas, trans = rng.normal(0, 0.4, 48), rng.normal(0, 1, 10), np.array([0.05, -0.02, 0.6])
    vertices, joints = run_mano(model, pose, betas, trans)
    Q = Rotation.random(random_state=3).as_matrix()
    new_pose, new_trans = rotate_mano_global(pose, trans, joints[0], Q)
    new_vertices, _ = run_mano(model, new_pose, betas, new_trans)
    np.testing.assert_allclose(new_vertices, vertices @ Q.T, atol=1e-9)
    np.testing.assert_array_equal(new_pose[3:], pose[3:])


def test_rotate_sample_3d_moves_all_3d_labels_and_keeps_2d():
    sample = make_sample(seed=2)
    Q = Rotation.from_euler("z", 40, degrees=True).as_matrix()
    out = rotate_sample_3d(sample, Q)
    np.testing.assert_allclose(out.joints_3d, sample.joints_3d @ Q.T)
    np.testing.assert_allclose(out.vertices_3d, sample.vertices_3d @ Q.T)
    np.testing.assert_allclose(out.object_points_camera(), sample.object_points_camera() @ Q.T, atol=1e-12)
    np.testing.assert_allclose(Rotation.from_rotvec(out.mano_pose[:3]).as_matrix(),
                               Q @ Rotation.from_rotvec(sample.mano_pose[:3]).as_matrix(), atol=1e-12)
    np.testing.assert_array_equal(out.joints_2d, sample.joints_2d)
    np.testing.assert_array_equal(out.object_control_points, sample.object_control_points)


def test_collate_stacks_and_zero_fills_missing_labels():
    full = make_sample(seed=0)
    partial = make_sample(seed=1, mano_pose=None, mano_shape=None, mano_trans=None, hand_mask=None,
                          object_rotation=None, object_translation=None, weight=0.25)
    batch = collate_samples([full, partial])
    assert batch["image"].shape == (2, 3, 240, 320) and batch["image"].dtype == torch.float32
    np.testing.assert_allclose(batch["image"][0, 1].numpy(), full.image[..., 1] / 255.0, atol=1e-7)
    assert batch["has_mano"].tolist() == [True, False]
    assert batch["has_object_pose"].tolist() == [True, False]
    assert batch["has_hand_mask"].tolist() == [True, False]
    assert batch["has_hand_3d"].tolist() == [True, True]
    assert torch.count_nonzero(batch["mano_pose"][1]) == 0
    np.testing.assert_allclose(batch["mano_pose"][0].numpy(), full.mano_pose, rtol=1e-6)
    np.testing.assert_allclose(batch["hand_root_3d"][1].numpy(), partial.joints_3d[0], rtol=1e-6)
    assert batch["hand_mask"].dtype == torch.bool and not batch["hand_mask"][1].any()
    assert batch["weight"].tolist() == [1.0, 0.25]
    assert batch["sample_id"] == ["fixture/seq/0000", "fixture/seq/0001"]


def test_collate_works_in_a_dataloader_and_rejects_mixed_sizes():
    samples = [make_sample(seed=i) for i in range(3)]
    batches = list(DataLoader(samples, batch_size=2, collate_fn=collate_samples))
    assert [b["K"].shape[0] for b in batches] == [2, 1]
    with pytest.raises(ValueError, match="differ in size"):
        collate_samples([make_sample(), make_sample(size=(100, 100))])
    with pytest.raises(ValueError, match="empty"):
        collate_samples([])
