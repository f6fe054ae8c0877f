"""55-circle hand model: geometry, soft rendering, radius fit on rendered hands, eq. 11 loss."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from hoi_perception.geometry.camera import project
from hoi_perception.hand_model.joint_orders import HO3D_FINGER_CHAINS
from hoi_perception.hand_model.mano import HandModel
from hoi_perception.render.rasterizer import Mesh, render
from hoi_perception.synth.grasp import articulation, hand_geometry
from hoi_training.semihand.circle_model import (
    NUM_CIRCLES,
    CircleHandModel,
    box_pixel_centres,
    circle_centre_weights,
    cross_modal_consistency_loss,
    fit_circle_radii,
    load_circle_radii,
    mask_iou,
    save_circle_radii,
)
from hoi_training.semihand.label_correction import rest_pose_template

SIZE = 128
FOCAL = 220.0  # px; with the hand 0.4 m away it spans about half of the 128 px frame
DISTANCE = 0.4


@pytest.fixture(scope="module")
def hand():
    return HandModel("right")


@pytest.fixture(scope="module")
def template(hand) -> torch.Tensor:
    return rest_pose_template(hand)[0]


def render_hands(hand, seed: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random grasp-like articulations seen from random viewpoints (palm or back towards the
    camera, +-35 degree tilts, any roll), centred 0.4 m in front of a 128 x 128 camera.
    Returns 2D joints (N, 21, 2) in box units and hand masks (N, S, S)."""
    rng = np.random.default_rng(seed)
    geometry = hand_geometry(hand, "right", np.zeros(10))
    pose = articulation(geometry, rng.uniform(0.0, 0.8, (count, 5)))
    with torch.no_grad():
        posed = hand(torch.zeros(count, 3), torch.tensor(pose, dtype=torch.float32))
    vertices, joints = posed.vertices.double().numpy(), posed.joints.double().numpy()
    K = np.array([[FOCAL, 0.0, (SIZE - 1) / 2], [0.0, FOCAL, (SIZE - 1) / 2], [0.0, 0.0, 1.0]])
    # Hand frame -> camera: fingers up the image, palm normal towards the camera.
    facing = np.stack([np.cross(geometry.finger_direction, geometry.palm_normal), -geometry.finger_direction,
                       -geometry.palm_normal])
    uvs, masks = [], []
    for i in range(count):
        base = facing if rng.random() < 0.5 else np.diag([-1.0, 1.0, -1.0]) @ facing  # back of the hand
        angles = [rng.uniform(-35, 35), rng.uniform(-35, 35), rng.uniform(-180, 180)]
        rotation = Rotation.from_euler("xyz", angles, degrees=True).as_matrix() @ base
        centre = joints[i].mean(0)
        v = (vertices[i] - centre) @ rotation.T + [0.0, 0.0, DISTANCE]
        j = (joints[i] - centre) @ rotation.T + [0.0, 0.0, DISTANCE]
        masks.append(render([Mesh(v, hand.faces)], K, SIZE, SIZE).mask(0))
        uvs.append((project(j, K) + 0.5) / SIZE)  # OpenCV pixel centres -> box units
    return torch.tensor(np.array(uvs), dtype=torch.float32), torch.tensor(np.array(masks), dtype=torch.float32)


@pytest.fixture(scope="module")
def frames(hand):
    return render_hands(hand, seed=0, count=8), render_hands(hand, seed=1, count=8)


def test_circle_layout():
    weights = circle_centre_weights()
    assert weights.shape == (NUM_CIRCLES, 21) == (55, 21)
    np.testing.assert_allclose(weights.sum(1), 1.0)
    assert (weights >= 0).all()
    # Finger circles: 9 per finger, 3 per phalanx at 1/6, 1/2, 5/6.
    for finger, chain in enumerate(HO3D_FINGER_CHAINS):
        for k, (start, end) in enumerate(zip(chain[1:4], chain[2:5])):
            rows = weights[finger * 9 + 3 * k: finger * 9 + 3 * k + 3]
            np.testing.assert_allclose(rows[:, end], [1 / 6, 1 / 2, 5 / 6])
            np.testing.assert_allclose(rows[:, start], [5 / 6, 1 / 2, 1 / 6])
    # Palm circles use only the wrist and the base joints.
    palm = weights[45:]
    assert set(np.flatnonzero(palm.sum(0))) <= {0, 1, 4, 7, 10, 13}


def test_image_scale_of_an_orthographic_view_of_the_template(template):
    # Project the rest-pose template orthographically along the camera axis.
    joints = template.double().numpy()
    scale = 2.7  # box units per metre
    uv = torch.tensor(scale * joints[None, :, :2] + 0.5, dtype=torch.float32)
    model = CircleHandModel(template)
    measured = float(model.image_scale(uv)[0])
    # Projection only shortens segments, so the estimate never exceeds the true scale,
    # and at least one palm segment of the rest pose is nearly parallel to the image.
    assert measured <= scale * (1 + 1e-5)
    assert measured > 0.9 * scale


def test_soft_rendering_and_signed_distance():
    template = torch.zeros(21, 3)
    template[[1, 4, 7, 10]] = torch.tensor([[0.02, 0.1, 0.0], [0.0, 0.1, 0.0], [-0.04, 0.09, 0.0],
                                            [-0.02, 0.1, 0.0]])
    model = CircleHandModel(template, radii_m=torch.full((55,), 0.03), softness_px=1.0)
    uv = torch.full((1, 21, 2), 0.5)  # every joint, hence every circle centre, at the crop centre
    scale = float(model.image_scale(uv)[0])
    assert scale == 0.0
    uv = 0.5 + 3.0 * template[None, :, :2]  # a real hand scale: 3 box units per metre
    centres, radii = model.circles(uv)
    torch.testing.assert_close(radii, torch.full((1, 55), 0.09))  # 3 box units/m x 0.03 m
    sdf = model.signed_distance(uv, 64)
    grid = (torch.arange(64) + 0.5) / 64
    ys, xs = torch.meshgrid(grid, grid, indexing="ij")
    points = torch.stack([xs, ys], -1).reshape(-1, 2)
    brute = (torch.cdist(points.double(), centres[0].double()) - 0.09).min(-1).values.reshape(64, 64)
    torch.testing.assert_close(sdf[0].double(), brute, atol=1e-6, rtol=0)
    rendered = model.render(uv, 64)[0]
    inside, outside = sdf[0] < -2 / 64, sdf[0] > 2 / 64
    assert rendered[inside].min() > 0.85 and rendered[outside].max() < 0.15


def test_circle_mask_covers_the_hand_silhouette_of_rendered_frames(hand, template, frames):
    (fit_uv, fit_masks), (test_uv, test_masks) = frames
    assert 0.05 < float(fit_masks.mean()) < 0.5  # the hands fill a sensible part of the frame
    model = CircleHandModel(template)
    fit = fit_circle_radii(model, fit_uv, fit_masks)
    radii_mm = fit.radii_m.numpy() * 1000
    assert 1.0 <= radii_mm.min() and radii_mm.max() < 40.0  # fingers and palm, physically sized
    assert fit.fitted_iou >= fit.inscribed_iou
    with torch.no_grad():
        rendered = model.render(test_uv, SIZE)
    iou = mask_iou(rendered > 0.5, test_masks > 0.5)
    # Measured: mean held-out IoU 0.88 (min 0.85) with the stand-in hand.
    assert iou.mean() > 0.8 and iou.min() > 0.7
    # Wrong joints give a clearly worse fit.
    shuffled = mask_iou(model.render(test_uv.roll(1, dims=0), SIZE) > 0.5, test_masks > 0.5)
    assert shuffled.mean() < iou.mean() - 0.3


def test_cross_modal_loss_stops_the_mask_gradient_and_pulls_joints_onto_the_mask(template, frames):
    (uv, masks), _ = frames
    size = SIZE // 2  # the loss runs on the network's lower-resolution mask
    masks = (torch.nn.functional.avg_pool2d(masks[:2, None], 2)[:, 0] > 0.5).float()
    model = CircleHandModel(template)
    fit_circle_radii(model, uv[:2], masks)
    model.requires_grad_(False)
    target = masks.clone().requires_grad_(True)
    exact = cross_modal_consistency_loss(model, uv[:2], target)
    assert exact.model_to_data.shape == (2,) and exact.data_to_model.shape == (2,)
    # Shift all joints by 5 px (of 128); optimise a common 2D shift of them with the loss alone.
    offset = torch.tensor([4.0, -3.0]) / SIZE
    shift = torch.zeros(2, 1, 2, requires_grad=True)
    start = cross_modal_consistency_loss(model, uv[:2] + offset + shift, target)
    start.total.backward()
    assert target.grad is None  # stop-gradient on the mask
    assert shift.grad.abs().sum() > 0
    assert start.total > exact.total
    optimiser = torch.optim.Adam([shift], lr=0.004)
    for _ in range(30):
        optimiser.zero_grad()
        cross_modal_consistency_loss(model, uv[:2] + offset + shift, target).total.backward()
        optimiser.step()
    remaining = (offset + shift.detach()).norm(dim=-1) * SIZE
    assert size == masks.shape[-1] and remaining.max() < 2.0  # px of 128 (1 px of the mask), from 5 px


def test_data_to_model_term_is_zero_for_the_models_own_mask(template):
    model = CircleHandModel(template, radii_m=torch.full((55,), 0.008))
    uv = 0.5 + 3.0 * (template - template[:1])[None, :, :2]
    sdf = model.signed_distance(uv, 48)
    own = (sdf < 0).float()
    loss = cross_modal_consistency_loss(model, uv, own[:, None])
    assert loss.data_to_model.item() == 0.0
    assert 0 < loss.model_to_data.item() < 0.1  # only the soft edge differs
    # A background pixel deep inside a circle costs its depth (averaged over the 48 x 48 pixels).
    deepest = int(sdf[0].argmin())
    hole = own.clone()
    hole.view(-1)[deepest] = 0.0
    deeper = cross_modal_consistency_loss(model, uv, hole)
    torch.testing.assert_close(deeper.data_to_model, -sdf.view(-1)[deepest:deepest + 1] / 48 ** 2)


def test_mask_on_a_box_of_the_joints_frame(template):
    """A mask grid on a box (the hand box of a crop, joints in crop units) gives the loss of the
    same mask with the joints in the box's own units, distances scaled by the box side."""
    model = CircleHandModel(template, radii_m=torch.full((55,), 0.01))
    uv_box = 0.5 + 2.5 * (template - template[:1])[None, :, :2].float()
    mask = (model.signed_distance(uv_box, 32) < 0).float()
    mask = torch.roll(mask, 3, dims=-1)  # misplaced, so both terms are positive
    box = torch.tensor([[0.2, 0.1, 0.6, 0.5]])  # a square of side 0.4 in crop units
    uv_crop = box[:, None, :2] + 0.4 * uv_box
    in_box = cross_modal_consistency_loss(model, uv_box, mask)
    in_crop = cross_modal_consistency_loss(model, uv_crop, mask, box)
    assert in_box.data_to_model.item() > 0 and in_box.model_to_data.item() > 0
    torch.testing.assert_close(in_crop.model_to_data, in_box.model_to_data)
    torch.testing.assert_close(in_crop.data_to_model, 0.4 * in_box.data_to_model)
    centres = box_pixel_centres(torch.tensor([[0.0, 0.0, 1.0, 0.5]]), 2)
    torch.testing.assert_close(centres, torch.tensor([[[0.25, 0.125], [0.75, 0.125], [0.25, 0.375], [0.75, 0.375]]]))
    with pytest.raises(ValueError, match="mask_box"):
        cross_modal_consistency_loss(model, uv_crop, mask, torch.tensor([[0.5, 0.1, 0.2, 0.5]]))


def test_radii_file_round_trip_and_errors(tmp_path):
    radii = torch.linspace(0.005, 0.02, 55)
    path = save_circle_radii(tmp_path / "radii.npz", radii)
    torch.testing.assert_close(load_circle_radii(path), radii)
    with pytest.raises(FileNotFoundError, match="radii"):
        load_circle_radii(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", other=np.ones(3))
    with pytest.raises(ValueError, match="radii_m"):
        load_circle_radii(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="55 positive radii"):
        save_circle_radii(tmp_path / "x.npz", torch.ones(10))


def test_bad_inputs_are_named(template):
    with pytest.raises(ValueError, match="uv"):
        CircleHandModel(template).render(torch.zeros(2, 20, 2), 32)
    with pytest.raises(ValueError, match="mask"):
        cross_modal_consistency_loss(CircleHandModel(template), torch.zeros(2, 21, 2), torch.zeros(2, 32, 30))
    with pytest.raises(ValueError, match="template"):
        CircleHandModel(torch.zeros(21, 3))
    with pytest.raises(ValueError, match="radii_m"):
        CircleHandModel(template, radii_m=-torch.ones(55))
