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
