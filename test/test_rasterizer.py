"""Tests for the NumPy z-buffer rasteriser: coverage, depth, occlusion, interpolation, clipping."""

import numpy as np
import pytest

from hoi_perception.render.rasterizer import Lighting, Mesh, render, vertex_normals

F, C, SIZE = 100.0, 32, 64
K = np.array([[F, 0.0, C], [0.0, F, C], [0.0, 0.0, 1.0]])
FLAT = Lighting(direction=(0.0, 0.0, -1.0), ambient=1.0, diffuse=0.0, specular=0.0)


def quad(x0, x1, y0, y1, z0, z1=None, **kwargs):
    """Rectangle [x0, x1] x [y0, y1] in the camera frame; depth from z0 (at x0) to z1 (at x1)."""
    z1 = z0 if z1 is None else z1
    v = np.array([[x0, y0, z0], [x1, y0, z1], [x1, y1, z1], [x0, y1, z0]], dtype=float)
    return Mesh(v, np.array([[0, 1, 2], [0, 2, 3]]), **kwargs)


def test_fronto_parallel_quad_covers_exact_pixels_and_depth():
    # u = 100 x + 32: x in [-0.205, 0.205] -> u in [11.5, 52.5] -> columns 12..52; rows 22..42.
    result = render([quad(-0.205, 0.205, -0.105, 0.105, 1.0)], K, SIZE, SIZE)
    expected = np.zeros((SIZE, SIZE), dtype=bool)
    expected[22:43, 12:53] = True
    np.testing.assert_array_equal(result.mask(0), expected)
    np.testing.assert_allclose(result.depth[expected], 1.0, atol=1e-6)
    assert np.all(result.depth[~expected] == 0)
    assert np.all(result.instance_ids[~expected] == -1)
    assert result.rgb.dtype == np.uint8 and result.rgb.shape == (SIZE, SIZE, 3)
    assert result.depth.dtype == np.float32 and result.instance_ids.dtype == np.int16


def test_tilted_plane_depth_matches_ray_intersection():
    # Plane z = 1 + 0.5 x; along the ray of column u, z = 1 / (1 - 0.5 (u - cx) / f).
    result = render([quad(-0.3, 0.3, -0.2, 0.2, 0.85, 1.15)], K, SIZE, SIZE)
    rows, cols = np.nonzero(result.mask(0))
    assert len(rows) > 500
    expected = 1.0 / (1.0 - 0.5 * (cols - C) / F)
    np.testing.assert_allclose(result.depth[rows, cols], expected, rtol=1e-5)


def test_colour_interpolation_is_perspective_correct():
    # Red grows linearly with x on a strongly tilted quad; screen-space (affine)
    # interpolation would be visibly wrong, the perspective-correct one is exact.
    x0, x1, z0, z1 = -0.4, 0.4, 0.6, 2.0
    v = np.array([[x0, -0.1, z0], [x1, -0.1, z1], [x1, 0.1, z1], [x0, 0.1, z0]])
    colors = np.array([[0, 0, 0], [255, 0, 0], [255, 0, 0], [0, 0, 0]], dtype=float)
    mesh = Mesh(v, np.array([[0, 1, 2], [0, 2, 3]]), vertex_colors=colors)
    result = render([mesh], K, SIZE, SIZE, lighting=FLAT)
    row = int(C)
    cols = np.flatnonzero(result.mask(0)[row])
    # Column u sees the point where x / z = (u - cx) / f on the line z = z0 + (x - x0) (z1 - z0) / (x1 - x0).
    slope = (z1 - z0) / (x1 - x0)
    ray = (cols - C) / F
    x = ray * (z0 - slope * x0) / (1 - ray * slope)
    expected = 255 * (x - x0) / (x1 - x0)
    red = result.rgb[row, cols, 0].astype(float)
    np.testing.assert_allclose(red, expected, atol=1.0)
    affine = 255 * (cols - cols[0]) / (cols[-1] - cols[0])
    assert np.abs(affine - expected).max() > 25  # the check above can tell the two apart


def test_nearer_mesh_occludes_regardless_of_order():
    near = quad(-0.1, 0.1, -0.1, 0.1, 1.0, vertex_colors=(255, 0, 0))
    far = quad(-0.4, 0.0, -0.4, 0.0, 2.0, vertex_colors=(0, 0, 255))
    for meshes, near_id in (([near, far], 0), ([far, near], 1)):
        result = render(meshes, K, SIZE, SIZE, lighting=FLAT)
        assert result.instance_ids[C, C] == near_id  # both cover the image centre
        assert result.depth[C, C] == pytest.approx(1.0, abs=1e-6)
        assert tuple(result.rgb[C, C]) == (255, 0, 0)
        # The far quad shows where only it projects: x in [-0.4, 0] at z = 2 -> u in [12, 32],
        # while the near one covers u in [22, 42].
        assert result.instance_ids[15, 15] == 1 - near_id
        assert result.depth[15, 15] == pytest.approx(2.0, abs=1e-6)
        assert tuple(result.rgb[15, 15]) == (0, 0, 255)


def test_interpenetrating_faces_split_along_their_intersection():
    # Two quads crossing at x = 0: left half is nearer on one, right half on the other.
    a = quad(-0.2, 0.2, -0.1, 0.1, 0.9, 1.1)
    b = quad(-0.2, 0.2, -0.1, 0.1, 1.1, 0.9)
    ids = render([a, b], K, SIZE, SIZE).instance_ids
    assert np.all(ids[C, 15:30] == 0) and np.all(ids[C, 35:50] == 1)


def test_empty_scene_returns_background():
    background = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    for meshes in ([], [Mesh(np.zeros((3, 3)), np.zeros((0, 3), dtype=int))]):
        result = render(meshes, K, SIZE, SIZE, background=background)
        np.testing.assert_array_equal(result.rgb, background)
        assert not result.depth.any()
        assert np.all(result.instance_ids == -1)


def test_degenerate_triangles_draw_nothing_and_do_not_disturb_others():
    v = np.array([[0.0, 0.0, 1.0], [0.1, 0.1, 1.0], [0.2, 0.2, 1.0], [0.0, 0.0, 1.0]])
    faces = np.array([[0, 1, 2], [0, 3, 1], [1, 1, 1]])  # collinear, repeated vertex, one point
    result = render([Mesh(v, faces)], K, SIZE, SIZE)
    assert np.all(result.instance_ids == -1) and result.stats["rasterised_faces"] == 0
    good = quad(-0.205, 0.205, -0.105, 0.105, 1.0)
    merged = Mesh(np.concatenate([good.vertices, v]), np.concatenate([good.faces, faces + 4]))
    assert render([merged], K, SIZE, SIZE).mask(0).sum() == 41 * 21


def test_geometry_behind_the_camera_is_dropped():
    behind = quad(-0.2, 0.2, -0.2, 0.2, -1.0)
    result = render([behind], K, SIZE, SIZE)
    assert np.all(result.instance_ids == -1)


def test_near_plane_clipping_keeps_the_visible_part_exact():
    # A floor y = 0.1 from z = -1 (behind) to z = 5: both clipping cases (one and two
    # corners in front) occur. Row v sees the floor at depth f * 0.1 / (v - cy).
    v = np.array([[-1.0, 0.1, -1.0], [1.0, 0.1, -1.0], [1.0, 0.1, 5.0], [-1.0, 0.1, 5.0]])
    result = render([Mesh(v, np.array([[0, 1, 2], [0, 2, 3]]))], K, SIZE, SIZE, near=0.05)
    rows, cols = np.nonzero(result.mask(0))
    assert rows.min() >= C + 2  # v - cy >= f * 0.1 / 5 = 2 px: nothing at or above the horizon
    assert rows.max() == SIZE - 1  # clipped geometry still reaches the bottom row
    np.testing.assert_allclose(result.depth[rows, cols], F * 0.1 / (rows - C), rtol=1e-5)
    # A row fully inside the floor's width (|x| <= 1 at depth 5) is covered completely.
    assert result.mask(0)[SIZE - 1].all()


def test_supersampling_antialiases_edges():
    # Edges on pixel boundaries' midlines: x = 10 and 30 split pixels 10 and 30 in half.
    white = quad(-0.22, -0.02, -0.22, -0.02, 1.0, vertex_colors=(255, 255, 255))
    sharp = render([white], K, SIZE, SIZE, lighting=FLAT)
    smooth = render([white], K, SIZE, SIZE, lighting=FLAT, supersample=2)
    assert smooth.rgb[20, 20, 0] == 255  # interior
    assert smooth.rgb[20, 10, 0] == 128  # half covered (2 of 4 samples)
    assert smooth.rgb[10, 10, 0] == 64  # corner: 1 of 4 samples
    assert set(np.unique(sharp.rgb[:, :, 0])) <= {0, 255}
    # Ids and depth come from the sample nearest the centre (+0.25 px for s = 2).
    assert smooth.instance_ids[20, 10] == 0 and smooth.instance_ids[20, 9] == -1
    assert smooth.depth[20, 10] == pytest.approx(1.0)


def test_texture_lookup_orientation_and_values():
    # 2 x 2 texture: row 0 (v = 1, top) red | green, row 1 (v = 0, bottom) blue | white.
    texture = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]], dtype=np.uint8)
    texture = np.repeat(np.repeat(texture, 8, axis=0), 8, axis=1)
    # Camera y points down: image top is y = -0.2, which gets v = 1.
    v = np.array([[-0.2, 0.2, 1.0], [0.2, 0.2, 1.0], [0.2, -0.2, 1.0], [-0.2, -0.2, 1.0]])
    uv = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    mesh = Mesh(v, np.array([[0, 1, 2], [0, 2, 3]]), uv=uv, texture=texture)
    rgb = render([mesh], K, SIZE, SIZE, lighting=FLAT).rgb
    assert tuple(rgb[20, 20]) == (255, 0, 0)  # top-left
    assert tuple(rgb[20, 44]) == (0, 255, 0)  # top-right
    assert tuple(rgb[44, 20]) == (0, 0, 255)  # bottom-left
    assert tuple(rgb[44, 44]) == (255, 255, 255)


def test_per_corner_uv_is_accepted():
    texture = np.full((4, 4, 3), 200, dtype=np.uint8)
    face_uv = np.zeros((2, 3, 2))
    mesh = quad(-0.1, 0.1, -0.1, 0.1, 1.0, uv=face_uv, texture=texture)
    assert tuple(render([mesh], K, SIZE, SIZE, lighting=FLAT).rgb[C, C]) == (200, 200, 200)


def test_lambert_shading_and_two_sided_lighting():
    albedo = (200, 200, 200)
    oblique = Lighting(direction=(0.0, -np.sqrt(3.0), -1.0), ambient=0.2, diffuse=0.8, specular=0.0)
    front = quad(-0.1, 0.1, -0.1, 0.1, 1.0, vertex_colors=albedo)  # normal (0, 0, -1) or its flip
    back = Mesh(front.vertices, front.faces[:, ::-1], vertex_colors=albedo)
    for mesh in (front, back):
        lit = render([mesh], K, SIZE, SIZE, lighting=oblique).rgb[C, C, 0]
        # cos(60 deg) = 0.5 between the light and the viewer-facing normal.
        assert lit == pytest.approx(200 * (0.2 + 0.8 * 0.5), abs=1)


def test_specular_highlight_brightens():
    light = Lighting(direction=(0.0, 0.0, -1.0), ambient=0.3, diffuse=0.3, specular=1.0, shininess=8)
    matte = quad(-0.1, 0.1, -0.1, 0.1, 1.0, vertex_colors=(100, 100, 100))
    shiny = quad(-0.1, 0.1, -0.1, 0.1, 1.0, vertex_colors=(100, 100, 100), specular=0.5)
    a = render([matte], K, SIZE, SIZE, lighting=light).rgb[C, C, 0]
    b = render([shiny], K, SIZE, SIZE, lighting=light).rgb[C, C, 0]
    assert a == 60 and b == pytest.approx(60 + 0.5 * 255, abs=1)  # normal = half vector at the centre


def test_smooth_vertex_normals_of_a_closed_box_point_outwards():
    v = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=float)
    faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    normals = vertex_normals(v, faces)
    assert np.all(np.einsum("ij,ij->i", normals, v / np.sqrt(3)) > 0.5)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0)


def test_background_composited_and_instance_ids_per_mesh():
    background = np.full((SIZE, SIZE, 3), 17, dtype=np.uint8)
    a = quad(-0.3, -0.1, -0.1, 0.1, 1.0)
    b = quad(0.1, 0.3, -0.1, 0.1, 1.0)
    result = render([a, b], K, SIZE, SIZE, background=background)
    assert result.mask(0).sum() == result.mask(1).sum() > 0
    assert not (result.mask(0) & result.mask(1)).any()
    assert np.all(result.rgb[result.instance_ids == -1] == 17)


def test_many_small_triangles_tile_without_holes():
    # A 40 x 40 grid of tiny triangles (about 1 px each) tiles a square exactly.
    n = 40
    xs = np.linspace(-0.2, 0.2, n + 1) + 0.0013
    grid = np.stack(np.meshgrid(xs, xs), -1).reshape(-1, 2)
    v = np.concatenate([grid, np.ones((len(grid), 1))], axis=1)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    a = (i * (n + 1) + j).ravel()
    faces = np.concatenate([np.stack([a, a + 1, a + n + 2], 1), np.stack([a, a + n + 2, a + n + 1], 1)])
    mask = render([Mesh(v, faces)], K, SIZE, SIZE).mask(0)
    expected = np.zeros_like(mask)
    lo, hi = int(np.ceil(F * xs[0] + C)), int(np.floor(F * xs[-1] + C))
    expected[lo:hi + 1, lo:hi + 1] = True
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize("kwargs, message", [
    (dict(K=np.eye(2)), "K"),
    (dict(width=0), "width"),
    (dict(supersample=0), "supersample"),
    (dict(background=np.zeros((2, 2, 3), np.uint8)), "background"),
    (dict(near=0.0), "near"),
])
def test_bad_render_arguments_are_named(kwargs, message):
    args = dict(meshes=[], K=K, width=SIZE, height=SIZE)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        render(**args)


@pytest.mark.parametrize("kwargs, message", [
    (dict(vertices=np.zeros((3, 2)), faces=[[0, 1, 2]]), "vertices"),
    (dict(vertices=np.zeros((3, 3)), faces=[[0, 1, 3]]), "faces"),
    (dict(vertices=np.zeros((3, 3)), faces=[[0, 1, 2]], vertex_colors=(300, 0, 0)), "vertex_colors"),
    (dict(vertices=np.zeros((3, 3)), faces=[[0, 1, 2]], texture=np.zeros((4, 4, 3), np.uint8)), "uv"),
    (dict(vertices=np.zeros((3, 3)), faces=[[0, 1, 2]], uv=np.zeros((2, 2))), "uv"),
])
def test_bad_mesh_inputs_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Mesh(**kwargs)
