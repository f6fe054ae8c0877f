"""Greedy pose registration onto template bone lengths (SemiHand section 3.2)."""

import numpy as np
import pytest
import torch

from hoi_perception.hand_model.joint_orders import HO3D_BONES, HO3D_PARENTS
from hoi_perception.hand_model.kinematics import bone_lengths
from hoi_perception.hand_model.mano import HandModel
from hoi_training.semihand.label_correction import (
    HandPoseLabel,
    correct_hand_pose,
    register_to_template,
    rest_pose_template,
)


@pytest.fixture(scope="module")
def template() -> np.ndarray:
    return rest_pose_template(HandModel("right"))[0].double().numpy()


def feasible_pose(template: np.ndarray, rng: np.random.Generator, batch: int) -> np.ndarray:
    """Poses with exactly the template's bone lengths: random bone directions down the chain."""
    lengths = bone_lengths(template)
    joints = np.zeros((batch, 21, 3))
    joints[:, 0] = rng.normal(0.0, 0.1, (batch, 3))
    for child in range(1, 21):
        direction = rng.normal(size=(batch, 3))
        direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
        joints[:, child] = joints[:, HO3D_PARENTS[child]] + lengths[child - 1] * direction
    return joints


def test_output_bones_have_exactly_the_template_lengths(template):
    rng = np.random.default_rng(0)
    noisy = template[None] + rng.normal(0.0, 0.01, (64, 21, 3))  # 1 cm joint noise
    out = register_to_template(noisy, template)
    assert out.shape == (64, 21, 3) and isinstance(out, np.ndarray)
    np.testing.assert_allclose(bone_lengths(out), np.broadcast_to(bone_lengths(template), (64, 20)), atol=1e-12)
    # The input's lengths were really off (so the test can fail).
    assert np.abs(bone_lengths(noisy) - bone_lengths(template)).max() > 0.005


def test_feasible_pose_is_unchanged(template):
    joints = feasible_pose(template, np.random.default_rng(1), 16)
    np.testing.assert_allclose(register_to_template(joints, template), joints, atol=1e-12)


def test_root_stays_and_directions_point_from_registered_parent_to_predicted_child(template):
    rng = np.random.default_rng(2)
    noisy = feasible_pose(template, rng, 8) + rng.normal(0.0, 0.008, (8, 21, 3))
    out = register_to_template(noisy, template)
    np.testing.assert_array_equal(out[:, 0], noisy[:, 0])
    for parent, child in HO3D_BONES:
        registered = out[:, child] - out[:, parent]
        towards_prediction = noisy[:, child] - out[:, parent]
        cosine = np.sum(registered * towards_prediction, -1) / (
            np.linalg.norm(registered, axis=-1) * np.linalg.norm(towards_prediction, axis=-1))
        np.testing.assert_allclose(cosine, 1.0, atol=1e-12)
    # Bones leaving the root keep the predicted bone direction itself.
    for child in (1, 4, 7, 10, 13):
        predicted = noisy[:, child] - noisy[:, 0]
        registered = out[:, child] - out[:, 0]
        np.testing.assert_allclose(registered / np.linalg.norm(registered, axis=-1, keepdims=True),
                                   predicted / np.linalg.norm(predicted, axis=-1, keepdims=True), atol=1e-12)


def test_torch_matches_numpy_and_is_differentiable(template):
    rng = np.random.default_rng(3)
    noisy = template[None] * 1.2 + rng.normal(0.0, 0.01, (4, 21, 3))
    expected = register_to_template(noisy, template)
    joints = torch.tensor(noisy, dtype=torch.float64, requires_grad=True)
    out = register_to_template(joints, torch.tensor(template))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_allclose(out.detach().numpy(), expected, atol=1e-12)
    out.sum().backward()
    assert torch.isfinite(joints.grad).all() and joints.grad.abs().sum() > 0


def test_per_sample_templates_broadcast(template):
    small, large = template * 0.9, template * 1.1
    templates = np.stack([small, large])
    joints = np.stack([template, template])
    out = register_to_template(joints, templates)
    np.testing.assert_allclose(bone_lengths(out[0]), bone_lengths(small), atol=1e-12)
    np.testing.assert_allclose(bone_lengths(out[1]), bone_lengths(large), atol=1e-12)


def test_degenerate_bone_falls_back_and_stays_finite(template):
    joints = template.copy()
    joints[2] = joints[1]  # index middle joint predicted on top of its parent
    joints[3] = joints[1]
    out = register_to_template(joints, template)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(bone_lengths(out), bone_lengths(template), atol=1e-12)


def test_bad_input_is_named(template):
    with pytest.raises(ValueError, match="joints: expected shape"):
        register_to_template(np.zeros((2, 20, 3)), template)
    with pytest.raises(ValueError, match="template"):
        register_to_template(np.zeros((2, 21, 3)), np.zeros((3, 21, 3)))
    with pytest.raises(ValueError, match="NaN"):
        register_to_template(np.full((21, 3), np.nan), template)
    with pytest.raises(TypeError, match="joints"):
        register_to_template([[0.0] * 3] * 21, template)


def test_corrected_2d_joints_follow_the_labels_weak_perspective_camera(template):
    joints3d = torch.tensor(template - template[:1], dtype=torch.float64).repeat(3, 1, 1)
    joints3d[:, 8] += torch.tensor([0.01, -0.004, 0.002], dtype=torch.float64)  # lengthen the pinky's last bones
    scale, shift = 2.5, torch.tensor([0.5, 0.45], dtype=torch.float64)
    uv = scale * joints3d[..., :2] + shift
    corrected = correct_hand_pose(HandPoseLabel(uv=uv, joints3d=joints3d), torch.tensor(template))
    np.testing.assert_allclose(bone_lengths(corrected.joints3d.numpy()),
                               np.broadcast_to(bone_lengths(template), (3, 20)), atol=1e-12)
    np.testing.assert_allclose(corrected.uv.numpy(), (scale * corrected.joints3d[..., :2] + shift).numpy(),
                               atol=1e-12)
    # Joints the registration does not move keep their exact 2D position.
    moved = (corrected.joints3d - joints3d).norm(dim=-1) > 1e-12
    assert moved.any() and not moved.all()
    np.testing.assert_array_equal(corrected.uv[~moved].numpy(), uv[~moved].numpy())
    assert corrected.pose25d().depth.shape == (3, 21)


def test_rest_pose_template_matches_the_hand_model():
    hand = HandModel("right")
    betas = torch.zeros(2, 10)
    betas[1, 0] = 2.0
    templates = rest_pose_template(hand, betas)
    assert templates.shape == (2, 21, 3)
    lengths = bone_lengths(templates.double().numpy())
    assert 0.07 < lengths[0, 3] < 0.12  # wrist to middle base, metres
    assert not np.allclose(lengths[0], lengths[1])  # the shape changes the template
