"""Penetration depth and contact against shapes with known distances (unit cube, sphere)."""

import numpy as np
import pytest
import trimesh

from hoi_training.evaluation import interaction as ia


@pytest.fixture(scope="module")
def cube() -> ia.TriangleMesh:
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))  # centred at the origin, half side 0.5
    return ia.TriangleMesh(box.vertices, box.faces)


@pytest.fixture(scope="module")
def sphere() -> ia.TriangleMesh:
    ico = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    return ia.TriangleMesh(ico.vertices, ico.faces)


def test_winding_numbers_inside_outside_and_face_orientation(cube):
    points = np.array([[0.0, 0.0, 0.0], [0.4, -0.3, 0.2], [0.7, 0.0, 0.0], [2.0, 2.0, 2.0]])
    np.testing.assert_allclose(ia.winding_numbers(points, cube), [1, 1, 0, 0], atol=1e-9)
    flipped = ia.TriangleMesh(cube.vertices, cube.faces[:, ::-1])
    np.testing.assert_allclose(ia.winding_numbers(points, flipped), [-1, -1, 0, 0], atol=1e-9)
    np.testing.assert_array_equal(ia.points_inside_mesh(points, flipped), [True, True, False, False])


def test_fast_winding_numbers_agree_with_exact_sum_on_a_torus():
    torus = trimesh.creation.torus(1.0, 0.3, major_sections=48, minor_sections=24)  # non-convex, 2304 faces
    mesh = ia.TriangleMesh(torus.vertices, torus.faces)
    rng = np.random.default_rng(1)
    far_and_near = rng.uniform(-1.5, 1.5, size=(300, 3)) * [1, 1, 0.4]
    on_surface, _ = trimesh.sample.sample_surface(torus, 100, seed=2)
    points = np.concatenate([far_and_near, on_surface + rng.normal(scale=0.01, size=on_surface.shape)])
    exact = ia.winding_numbers(points, mesh)
    fast = ia.fast_winding_numbers(points, mesh)
    assert np.abs(fast - exact).max() < 0.05
    np.testing.assert_array_equal(ia.points_inside_mesh(points, mesh), np.abs(exact) >= 0.5)
    assert ia.points_inside_mesh(np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), mesh).tolist() == [True, False]


def test_surface_distances_on_cube(cube):
    points = np.array([
        [0.0, 0.0, 0.0],  # centre: 0.5 to every face
        [0.4, 0.0, 0.0],  # 0.1 below the +x face
        [0.45, 0.45, 0.0],  # 0.05 from two faces
        [0.7, 0.0, 0.0],  # outside, facing +x
        [0.75, 0.75, 0.75],  # outside, nearest feature is a corner
        [0.75, 0.75, 0.0],  # outside, nearest feature is an edge
    ])
    expected = [0.5, 0.1, 0.05, 0.2, 0.25 * np.sqrt(3), 0.25 * np.sqrt(2)]
    np.testing.assert_allclose(ia.surface_distances(points, cube), expected, atol=1e-12)


def test_pruned_surface_distances_match_all_triangles_on_sphere(sphere):
    rng = np.random.default_rng(0)
    points = rng.normal(scale=0.8, size=(60, 3))
    tri = sphere.triangles
    closest = ia._closest_points_on_triangles(points[:, None], tri[None, :, 0], tri[None, :, 1], tri[None, :, 2])
    brute_force = np.sqrt(((closest - points[:, None]) ** 2).sum(-1).min(axis=1))
    np.testing.assert_allclose(ia.surface_distances(points, sphere), brute_force, atol=1e-12)
    # and against the exact distance to a sphere: the icosphere lies within 1.5 % of it
    np.testing.assert_allclose(brute_force, np.abs(np.linalg.norm(points, axis=1) - 1.0), atol=0.015)


def test_penetration_depths_in_cube(cube):
    hand = np.array([[0.4, 0.0, 0.0], [0.0, 0.3, 0.0], [0.9, 0.0, 0.0], [0.0, 0.0, 3.0]])
    result = ia.evaluate_interaction(hand, cube)
    assert result.penetrating_vertices == 2
    assert result.max_penetration_depth == pytest.approx(0.2)  # (0, 0.3, 0) is 0.2 below +y face
    assert result.mean_penetration_depth == pytest.approx(0.15)  # mean of 0.1 and 0.2
    assert result.in_contact


def test_penetration_depths_in_sphere(sphere):
    radii = np.array([0.0, 0.5, 0.9, 1.3])
    hand = radii[:, None] * np.array([0.0, 0.6, 0.8])
    result = ia.evaluate_interaction(hand, sphere)
    assert result.penetrating_vertices == 3
    # the icosphere is inscribed in the unit sphere: depths are 1 - r minus < 1.5 % of the radius
    assert result.max_penetration_depth == pytest.approx(1.0, abs=0.015)
    assert result.mean_penetration_depth == pytest.approx(np.mean([1.0, 0.5, 0.1]), abs=0.015)


def test_contact_threshold_is_inclusive(cube):
    at_threshold = np.array([[0.75, 0.0, 0.0]])  # exactly 0.25 outside the +x face
    assert ia.evaluate_interaction(at_threshold, cube, contact_threshold=0.25).in_contact
    just_beyond = np.array([[0.7500001, 0.0, 0.0]])
    assert not ia.evaluate_interaction(just_beyond, cube, contact_threshold=0.25).in_contact


def test_default_contact_threshold_is_2_mm(cube):
    assert ia.DEFAULT_CONTACT_THRESHOLD_M == 0.002
    touching = ia.evaluate_interaction(np.array([[0.5015, 0.0, 0.0]]), cube)
    hovering = ia.evaluate_interaction(np.array([[0.5025, 0.0, 0.0]]), cube)
    assert touching.in_contact and touching.penetrating_vertices == 0 and touching.max_penetration_depth == 0.0
    assert not hovering.in_contact


def test_deep_penetration_counts_as_contact_even_with_zero_threshold(cube):
    result = ia.evaluate_interaction(np.array([[0.0, 0.0, 0.0]]), cube, contact_threshold=0.0)
    assert result.in_contact and result.max_penetration_depth == pytest.approx(0.5)


def test_far_hand_has_no_contact_or_penetration(cube):
    result = ia.evaluate_interaction(np.full((778, 3), 5.0), cube)
    assert result == ia.InteractionFrameResult(0.0, 0.0, 0, False)


def test_summary_averages_over_all_frames(cube):
    frames = [
        ia.evaluate_interaction(np.array([[0.4, 0.0, 0.0], [0.0, 0.3, 0.0]]), cube),  # max 0.2, mean 0.15
        ia.evaluate_interaction(np.array([[0.501, 0.0, 0.0]]), cube),  # touching only
        ia.evaluate_interaction(np.array([[3.0, 0.0, 0.0]]), cube),  # free
        ia.evaluate_interaction(np.array([[0.0, 0.0, 0.0]]), cube),  # max 0.5
    ]
    s = ia.summarize_interaction(frames)
    assert s.num_frames == 4
    assert s.max_penetration_depth == pytest.approx((0.2 + 0.5) / 4)
    assert s.mean_penetration_depth == pytest.approx((0.15 + 0.5) / 4)
    assert s.contact_fraction == pytest.approx(0.75)
    assert s.penetrating_frame_fraction == pytest.approx(0.5)


def test_posed_mesh_and_bad_inputs(cube):
    moved = cube.transformed(np.eye(3), np.array([0.0, 0.0, 2.0]))
    assert ia.evaluate_interaction(np.array([[0.0, 0.0, 2.1]]), moved).max_penetration_depth == pytest.approx(0.4)
    with pytest.raises(ValueError, match="mesh faces"):
        ia.TriangleMesh(cube.vertices, np.array([[0, 1, 99]]))
    with pytest.raises(ValueError, match="points"):
        ia.evaluate_interaction(np.zeros((4, 2)), cube)
    with pytest.raises(ValueError, match="contact_threshold"):
        ia.evaluate_interaction(np.zeros((1, 3)), cube, contact_threshold=-1.0)
    with pytest.raises(ValueError, match="at least one frame"):
        ia.summarize_interaction([])
