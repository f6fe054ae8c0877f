import numpy as np
import pytest

from hoi_perception.hand_model.mano import HandModel
from hoi_perception.objects.models import load_object_library
from hoi_perception.synth.grasp import ConvexSDF, _forward, hand_geometry, synthesize_grasp


@pytest.fixture(scope="module")
def library():
    return load_object_library()


def test_convex_sdf_of_a_cube():
    cube = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=float)
    sdf = ConvexSDF.from_points(cube)
    np.testing.assert_allclose(sdf(np.array([[0, 0, 0], [0.5, 0, 0], [2, 0, 0]])), [-1.0, -0.5, 1.0], atol=1e-12)


@pytest.mark.parametrize("side", ["right", "left"])
def test_palm_normal_points_where_fingers_curl(side):
    hand = HandModel(side)
    geo = hand_geometry(hand, side, np.zeros(10))
    # Curling every finger halfway must move the fingertips toward the palm side.
    _, flat = _forward(hand, np.zeros(45), geo.betas)
    from hoi_perception.synth.grasp import articulation
    _, curled = _forward(hand, articulation(geo, np.full((1, 5), 0.5)), geo.betas)
    tips = [16, 17, 18, 19, 20]
    moves = (curled[0, tips] - flat[0, tips]) @ geo.palm_normal
    assert np.all(moves > 0.01), moves
    assert abs(np.dot(geo.palm_normal, geo.finger_direction)) < 1e-9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fingers_close_onto_the_surface_without_sinking_in(library, seed):
    rng = np.random.default_rng(seed)
    name = sorted(library)[seed % len(library)]
    obj = library[name]
    hand = HandModel("right")
    geo = hand_geometry(hand, "right", rng.normal(0, 0.5, 10))
    grasp = synthesize_grasp(hand, geo, obj.vertices, rng, penetration_tolerance=0.002)
    verts, _ = _forward(hand, grasp.hand_pose(geo, 1.0), geo.betas)
    sdf = ConvexSDF.from_points(obj.vertices @ grasp.object_rotation.T + grasp.object_translation)
    dist = sdf(verts[0])
    # Little penetration anywhere (the interpolated contact may overshoot the tolerance a little) ...
    assert dist.min() > -0.005, (name, dist.min())
    # ... and at least three fingers touch the object (within 5 mm).
    touching = [dist[ids].min() < 0.005 for ids in geo.finger_vertices]
    assert sum(touching) >= 3, (name, touching)


@pytest.mark.parametrize("side", ["right", "left"])
def test_palm_and_nails_are_where_a_hand_has_them(side):
    from hoi_perception.render.rasterizer import vertex_normals
    from hoi_perception.synth.appearance import hand_surface_regions, hand_vertex_colors, skin_color
    from hoi_perception.synth.grasp import FINGER_CHAINS

    hand = HandModel(side)
    geo = hand_geometry(hand, side, np.zeros(10))
    regions = hand_surface_regions(geo.rest_vertices, hand.faces, geo.rest_joints, geo.palm_normal, FINGER_CHAINS)
    facing = vertex_normals(geo.rest_vertices, hand.faces) @ geo.palm_normal
    assert regions.palmar[facing > 0.6].min() == 1.0 and regions.palmar[facing < -0.3].max() == 0.0
    assert 0.25 < regions.palmar.mean() < 0.6  # about half the surface: palm and finger pads
    nails = regions.nail > 0.5
    assert np.all(facing[nails] < -0.3)  # on the back of the fingers
    # One nail per finger, each within a last finger segment (about 2.5 cm) of its fingertip.
    tips = geo.rest_joints[[chain[-1] for chain in FINGER_CHAINS]]
    nearest_tip = np.linalg.norm(geo.rest_vertices[nails][:, None] - tips[None], axis=2)
    assert nearest_tip.min(1).max() < 0.025 and set(nearest_tip.argmin(1)) == set(range(5))
    assert 10 < nails.sum() < 100
    # A dark hand's palm is much lighter than its back; nails lighter still.
    colors = hand_vertex_colors(skin_color(1.0), regions, 0.5, 0.8, np.random.default_rng(0))
    back, palm = colors[(facing < -0.6) & (regions.nail < 0.01)].mean(0), colors[facing > 0.6].mean(0)
    assert palm.sum() > 2.0 * back.sum() and colors[nails].mean(0).sum() > palm.sum()
    # Both at 0 (the default domains): one colour all round, the draws of renders from before the option.
    plain = hand_vertex_colors(skin_color(1.0), regions, 0.0, 0.0, np.random.default_rng(0))
    rng = np.random.default_rng(0)
    variation = rng.normal(0.0, 0.025, size=(len(plain), 1)) + rng.normal(0.0, 0.01, size=(len(plain), 3))
    np.testing.assert_array_equal(plain, np.clip(skin_color(1.0)[None] * (1.0 + variation), 0.0, 1.0))


def test_left_hands_have_the_right_hands_regions():
    from hoi_perception.synth.appearance import hand_surface_regions
    from hoi_perception.synth.grasp import FINGER_CHAINS

    regions = {}
    for side in ("right", "left"):
        hand = HandModel(side)
        geo = hand_geometry(hand, side, np.zeros(10))
        regions[side] = hand_surface_regions(geo.rest_vertices, hand.faces, geo.rest_joints, geo.palm_normal,
                                             FINGER_CHAINS)
    np.testing.assert_allclose(regions["left"].palmar, regions["right"].palmar, atol=1e-6)
    np.testing.assert_allclose(regions["left"].nail, regions["right"].nail, atol=1e-6)
