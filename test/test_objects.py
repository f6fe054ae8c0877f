"""Tests for object models: parametric shapes, textures, control points, diameter, sampling, loading."""

import textwrap

import cv2
import numpy as np
import pytest
import trimesh

from hoi_perception.config import ConfigError
from hoi_perception.geometry.boxes import BOX_CORNER_EDGES
from hoi_perception.objects import (
    ObjectSpec,
    TextureSpec,
    UnknownObjectError,
    bbox_control_points,
    build_object,
    crease_normals,
    exact_diameter,
    load_object_library,
    make_object_model,
    make_texture,
    sample_surface,
    shapes,
    symmetry_group,
)
from hoi_perception.render import render

SHAPES = {
    "box": shapes.box(0.1, 0.05, 0.2),
    "cylinder": shapes.cylinder(0.033, 0.1),
    "bottle": shapes.bottle(0.0475, 0.19, 0.012, 0.03, 0.045, depth=0.058),
    "mug": shapes.mug(0.04, 0.082, 0.004, 0.025, 0.006),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_shapes_are_closed_outward_and_centred(name):
    mesh = SHAPES[name]
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    assert tm.is_watertight and tm.is_winding_consistent
    assert shapes.signed_volume(mesh.vertices, mesh.faces) > 0  # outward normals
    np.testing.assert_allclose(mesh.vertices.min(0) + mesh.vertices.max(0), 0.0, atol=1e-12)
    assert mesh.uv.shape == (len(mesh.faces), 3, 2)
    assert mesh.uv.min() >= 0.0 and mesh.uv.max() <= 1.0


def test_shape_dimensions_and_volumes():
    np.testing.assert_allclose(SHAPES["box"].vertices.max(0), [0.05, 0.025, 0.1])
    assert shapes.signed_volume(SHAPES["box"].vertices, SHAPES["box"].faces) == pytest.approx(0.001)
    np.testing.assert_allclose(SHAPES["cylinder"].vertices.max(0), [0.033, 0.033, 0.05], atol=1e-12)
    # 48-gon prism with 3 mm bevels: within 2 % of pi r^2 h.
    can = shapes.signed_volume(SHAPES["cylinder"].vertices, SHAPES["cylinder"].faces)
    assert can == pytest.approx(np.pi * 0.033 ** 2 * 0.1, rel=0.02)
    # Flattened bottle: x extent = 2 radius, y extent = depth.
    extent = SHAPES["bottle"].vertices.max(0) - SHAPES["bottle"].vertices.min(0)
    np.testing.assert_allclose(extent, [0.095, 0.058, 0.19], atol=1e-12)
    # Mug: the handle reaches radius - wall / 2 + handle_radius + thickness on +x.
    extent = SHAPES["mug"].vertices.max(0) - SHAPES["mug"].vertices.min(0)
    np.testing.assert_allclose(extent, [0.04 + 0.038 + 0.025 + 0.006, 0.08, 0.082], atol=1e-12)


def winding_number(vertices, faces, point):
    """Generalised winding number of a closed mesh around a point (1 inside, 0 outside)."""
    a, b, c = (vertices[faces[:, k]] - point for k in range(3))
    la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
    det = np.einsum("ij,ij->i", a, np.cross(b, c))
    div = la * lb * lc + np.einsum("ij,ij->i", a, b) * lc + np.einsum("ij,ij->i", b, c) * la \
        + np.einsum("ij,ij->i", c, a) * lb
    return float(2 * np.arctan2(det, div).sum() / (4 * np.pi))


def test_mug_is_hollow():
    mesh = SHAPES["mug"]
    z_bottom = mesh.vertices[:, 2].min()
    axis_x = -0.0545 + 0.04  # the bounding box is centred, the cup axis is not
    cavity = [axis_x, 0.0, z_bottom + 0.04]
    in_wall = [axis_x - 0.038, 0.0, z_bottom + 0.06]
    in_handle = [axis_x + 0.038 + 0.025, 0.0, 0.0]  # middle of the handle's arc
    assert winding_number(mesh.vertices, mesh.faces, np.array(cavity)) == pytest.approx(0.0, abs=1e-9)
    assert winding_number(mesh.vertices, mesh.faces, np.array(in_wall)) == pytest.approx(1.0, abs=1e-9)
    assert winding_number(mesh.vertices, mesh.faces, np.array(in_handle)) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("builder, kwargs, message", [
    (shapes.box, dict(width=-1, depth=1, height=1), "width"),
    (shapes.bottle, dict(radius=0.01, height=0.1, neck_radius=0.02, neck_height=0.01, shoulder_height=0.01),
     "neck_radius"),
    (shapes.bottle, dict(radius=0.05, height=0.05, neck_radius=0.01, neck_height=0.03, shoulder_height=0.03),
     "height"),
    (shapes.mug, dict(radius=0.04, height=0.05, wall=0.004, handle_radius=0.025, handle_thickness=0.006), "handle"),
    (shapes.cylinder, dict(radius=0.03, height=0.1, segments=2), "segments"),
])
def test_impossible_shapes_are_rejected(builder, kwargs, message):
    with pytest.raises(ValueError, match=message):
        builder(**kwargs)


def test_control_point_order():
    lo, hi = np.array([-1.0, -2.0, -3.0]), np.array([1.0, 2.0, 3.0])
    cp = bbox_control_points(lo, hi)
    assert cp.shape == (21, 3)
    np.testing.assert_array_equal(cp[0], lo)
    np.testing.assert_array_equal(cp[7], hi)
    np.testing.assert_array_equal(cp[4], [1, -2, -3])  # bit 2 -> x max
    np.testing.assert_array_equal(cp[2], [-1, 2, -3])  # bit 1 -> y max
    np.testing.assert_array_equal(cp[1], [-1, -2, 3])  # bit 0 -> z max
    np.testing.assert_array_equal(cp[8], [0, -2, -3])  # first x edge: corners 0-4
    np.testing.assert_array_equal(cp[12], [-1, 0, -3])  # first y edge: corners 0-2
    np.testing.assert_array_equal(cp[16], [-1, -2, 0])  # first z edge: corners 0-1
    np.testing.assert_array_equal(cp[20], [0, 0, 0])
    # Every edge joins corners that differ along exactly one axis.
    diffs = (np.abs(cp[BOX_CORNER_EDGES[:, 0]] - cp[BOX_CORNER_EDGES[:, 1]]) > 0).sum(1)
    assert np.all(diffs == 1) and len({tuple(sorted(e)) for e in BOX_CORNER_EDGES.tolist()}) == 12


def test_exact_diameter_matches_brute_force():
    rng = np.random.default_rng(3)
    for points in (rng.normal(size=(500, 3)), SHAPES["mug"].vertices, SHAPES["bottle"].vertices):
        brute = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1).max())
        assert exact_diameter(points) == pytest.approx(brute, rel=1e-12)
    assert exact_diameter(SHAPES["box"].vertices) == pytest.approx(np.sqrt(0.1 ** 2 + 0.05 ** 2 + 0.2 ** 2))
    flat = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0], [1, 2, 0.0]])  # coplanar: no 3D hull
    assert exact_diameter(flat) == pytest.approx(np.sqrt(5))


def test_surface_sampling_is_deterministic_on_surface_and_area_uniform():
    box = SHAPES["box"]
    a = sample_surface(box.vertices, box.faces, 20000, seed=1)
    np.testing.assert_array_equal(a, sample_surface(box.vertices, box.faces, 20000, seed=1))
    assert not np.array_equal(a, sample_surface(box.vertices, box.faces, 20000, seed=2))
    half = np.array([0.05, 0.025, 0.1])
    on_face = np.isclose(np.abs(a), half, atol=1e-12)
    assert np.all(on_face.sum(1) >= 1) and np.all(np.abs(a) <= half + 1e-12)
    # Fraction on the +-x, +-y, +-z face pairs follows their areas.
    areas = np.array([0.05 * 0.2, 0.1 * 0.2, 0.1 * 0.05]) * 2
    fractions = on_face.mean(0)
    np.testing.assert_allclose(fractions, areas / areas.sum(), atol=0.015)


def test_crease_normals_keep_box_edges_sharp_and_cans_round():
    box = SHAPES["box"]
    normals = crease_normals(box.vertices, box.faces, 40.0)
    tri = box.vertices[box.faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    face_n /= np.linalg.norm(face_n, axis=1, keepdims=True)
    np.testing.assert_allclose(normals, np.repeat(face_n[:, None], 3, axis=1), atol=1e-12)
    smooth = crease_normals(box.vertices, box.faces, 180.0)
    assert np.all(np.einsum("fkc,fkc->fk", smooth, box.vertices[box.faces]) > 0)  # all point outwards, averaged
    assert not np.allclose(smooth, normals)
    can = SHAPES["cylinder"]
    n = crease_normals(can.vertices, can.faces, 40.0)
    v = can.vertices[can.faces]
    side = np.abs(v[:, :, 2]) < 0.03  # mid-height ring corners: radial normals
    radial = v[side][:, :2] / np.linalg.norm(v[side][:, :2], axis=1, keepdims=True)
    np.testing.assert_allclose(n[side][:, :2], radial, atol=1e-12)
    np.testing.assert_allclose(n[side][:, 2], 0.0, atol=1e-12)


def test_textures_are_deterministic_and_patterned():
    noise = TextureSpec(pattern="noise", colors=[(0, 0, 0), (255, 255, 255)], count=4, seed=3, size=(64, 128))
    a = make_texture(noise)
    np.testing.assert_array_equal(a, make_texture(noise))
    noise.seed = 4
    assert not np.array_equal(a, make_texture(noise))
    assert a.shape == (64, 128, 3) and a.dtype == np.uint8 and a.std() > 30
    stripes = make_texture(TextureSpec(pattern="stripes", colors=[(255, 0, 0), (0, 0, 255)], count=4, size=(64, 8)))
    assert [tuple(stripes[r, 0]) for r in (0, 16, 32, 48)] == [(255, 0, 0), (0, 0, 255), (255, 0, 0), (0, 0, 255)]
    label = make_texture(TextureSpec(pattern="label", colors=[(10, 10, 10), (200, 0, 0), (255, 255, 255)],
                                     band=(0.25, 0.75), text="SOUP", count=2, size=(128, 256)))
    assert tuple(label[5, 5]) == (10, 10, 10)  # v = 0.96: outside the band
    band = label[40:90]
    ink = np.all(band == 255, axis=2).mean()
    assert 0.03 < ink < 0.5 and np.all(band[:, :, 0] >= 200)  # red band with white text


def test_texture_spec_validation():
    with pytest.raises(ConfigError, match="colors"):
        TextureSpec(pattern="label", colors=[(1, 2, 3)]).validate()
    with pytest.raises(ConfigError, match="band"):
        TextureSpec(pattern="label", colors=[(1, 2, 3)] * 3, band=(0.8, 0.2)).validate()
    with pytest.raises(ConfigError, match="text"):
        TextureSpec(pattern="solid", text="X").validate()


def test_shipped_library():
    library = load_object_library()
    assert len(library) >= 6
    for name in library:
        model = library.get(name)
        assert model.control_points.shape == (21, 3)
        assert model.points.shape == (1000, 3)
        assert model.normals.shape == (len(model.faces), 3, 3)
        assert model.texture is not None and model.uv.shape == (len(model.faces), 3, 2)
        # Parametric shapes are centred on their bounding box.
        np.testing.assert_allclose(model.control_points[20], 0.0, atol=1e-12)
        assert model.diameter <= model.bbox_diagonal + 1e-12
    cracker = library.get("cracker_box")
    assert cracker.diameter == pytest.approx(np.sqrt(0.158 ** 2 + 0.060 ** 2 + 0.210 ** 2))
    np.testing.assert_allclose(cracker.corners[7], [0.079, 0.030, 0.105])
    assert library.get("wood_block").is_symmetric and cracker.is_symmetric and not library.get("mug").is_symmetric
    assert [len(library.get(n).symmetry_rotations) for n in ("cracker_box", "tomato_soup_can", "mug", "wood_block")] \
        == [2, 12, 1, 8]
    with pytest.raises(UnknownObjectError, match="known objects: .*cracker_box"):
        library.get("drill")


def test_posed_model_renders_with_expected_silhouette():
    can = load_object_library().get("tomato_soup_can")
    upright = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])  # object z -> image up
    t = np.array([0.0, 0.0, 0.5])
    mesh = can.mesh(upright, t)
    np.testing.assert_allclose(mesh.vertices, can.vertices @ upright.T + t)
    np.testing.assert_allclose(mesh.normals, can.normals @ upright.T)
    f = 400.0
    result = render([mesh], np.array([[f, 0, 64], [0, f, 64], [0, 0, 1.0]]), 128, 128)
    # Side view of a can: about (2 r) x h over the mean depth, a bit more (closer front, caps).
    area = result.mask(0).sum()
    assert area == pytest.approx(2 * 0.033 * 0.101 * f ** 2 / 0.5 ** 2, rel=0.12)
    rows, cols = np.nonzero(result.mask(0))
    assert abs(rows.mean() - 64) < 1.5 and abs(cols.mean() - 64) < 1.5


def test_mirror_planes_of_the_shipped_objects():
    """The mug's handle lies along x, so only its y reflection maps it onto itself; the rest are
    symmetric about x. A shape off its frame's origin has no mirror plane through it."""
    library = load_object_library()
    assert {name: model.mirror_axis for name, model in library.items()} == {
        "cracker_box": 0, "sugar_box": 0, "tomato_soup_can": 0, "mustard_bottle": 0, "bleach_cleanser": 0,
        "mug": 1, "wood_block": 0}
    np.testing.assert_array_equal(library.get("mug").mirror_reflection, np.diag([1.0, -1.0, 1.0]))
    box = shapes.box(0.1, 0.05, 0.2)
    assert make_object_model("shifted", box.vertices + [0.02, 0.0, 0.0], box.faces).mirror_axis == 1
    assert make_object_model("off", box.vertices + [0.02, 0.02, 0.02], box.faces).mirror_axis is None


def test_symmetry_group_is_closed_and_starts_with_the_identity():
    group = symmetry_group([("z", 90), ("x", 180)])
    assert len(group) == 8
    np.testing.assert_allclose(group[0], np.eye(3))
    for a in group:
        np.testing.assert_allclose(a @ a.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(a) == pytest.approx(1.0)
        for b in group:  # closed under products
            assert min(np.abs(a @ b - c).max() for c in group) < 1e-9
    np.testing.assert_allclose(symmetry_group([("z", 180)])[1], np.diag([-1.0, -1.0, 1.0]), atol=1e-12)
    assert len(symmetry_group([])) == 1


@pytest.mark.parametrize("name", ["cracker_box", "mustard_bottle", "wood_block"])
def test_declared_symmetries_look_the_same(name):
    """The shipped textures repeat, so a declared symmetry rotation changes the rendered image far
    less than a small turn about the same axis does (what lets the vote loss treat them as one)."""
    model = load_object_library().get(name)
    K = np.array([[300.0, 0, 64], [0, 300.0, 64], [0, 0, 1]])
    t = np.array([0.0, 0.0, 0.6])
    tilt = np.array([[1.0, 0, 0], [0, np.cos(1.0), -np.sin(1.0)], [0, np.sin(1.0), np.cos(1.0)]])
    base = render([model.mesh(tilt, t)], K, 128, 128).rgb.astype(float)
    turned = render([model.mesh(tilt @ model.symmetry_rotations[1], t)], K, 128, 128).rgb.astype(float)
    small = render([model.mesh(tilt @ symmetry_group([("z", 20)])[1], t)], K, 128, 128).rgb.astype(float)
    assert np.abs(base - turned).mean() < 0.4 * np.abs(base - small).mean()


def write_yaml(tmp_path, body):
    path = tmp_path / "objects.yaml"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.mark.parametrize("body, message", [
    ("objects: {a: {shape: sphere, dimensions: {radius: 0.1}}}", "objects.a.shape"),
    ("objects: {a: {shape: box, dimensions: {width: 0.1, depth: 0.1}}}", "missing \\['height'\\]"),
    ("objects: {a: {shape: box, dimensions: {width: 0.1, depth: 0.1, height: -1}}}", "positive"),
    ("objects: {a: {shape: box, dimensions: {width: 1, depth: 1, height: 1, radius: 1}}}", "unknown \\['radius'\\]"),
    ("objects: {a: {shape: box, mesh: x.obj, dimensions: {width: 1, depth: 1, height: 1}}}", "exactly one"),
    ("objects: {a: {shape: box, segments: 8, dimensions: {width: 1, depth: 1, height: 1}}}", "segments"),
    ("objects: {a: {mesh: missing.obj}}", "missing.obj: mesh file not found"),
    ("objects: {a: {mesh: model.stl}}", "unsupported mesh format"),
    ("objects: {a: {shape: cylinder, dimensions: {radius: 0.1, height: 0.1}, symmetry: z}}", "symmetry"),
    ("objects: {a: {shape: mug, dimensions: {radius: 0.04, height: 0.04, wall: 0.004, handle_radius: 0.025, "
     "handle_thickness: 0.006}}}", "objects.a: mug: the handle"),
    ("objects: {}", "no objects"),
    ("objects: {a: {shape: box, dimensions: {width: 1, depth: 1, height: 1}, symmetry_rotations: [[z, 180]]}}",
     "declared 'symmetry: none'"),
    ("objects: {a: {shape: box, dimensions: {width: 1, depth: 1, height: 1}, symmetry: discrete, "
     "symmetry_rotations: [[z, 70]]}}", "divide 360"),
    ("objects: {a: {shape: box, dimensions: {width: 1, depth: 1, height: 1}, symmetry: discrete, "
     "symmetry_rotations: [[w, 90]]}}", "symmetry_rotations"),
])
def test_config_errors_name_the_problem(tmp_path, body, message):
    path = write_yaml(tmp_path, body)
    with pytest.raises(ConfigError, match=message):
        load_object_library(path)


def test_malformed_mesh_file(tmp_path):
    (tmp_path / "broken.obj").write_text("this is not an obj file\nv 1 2\n")
    path = write_yaml(tmp_path, "objects: {a: {mesh: broken.obj}}")
    with pytest.raises(ConfigError, match="broken.obj"):
        load_object_library(path)


def test_load_textured_obj_and_coloured_ply(tmp_path):
    texture = np.zeros((8, 8, 3), dtype=np.uint8)
    texture[:, :, 1] = 200
    cv2.imwrite(str(tmp_path / "tex.png"), texture[:, :, ::-1])
    (tmp_path / "model.mtl").write_text("newmtl m\nKd 1 1 1\nmap_Kd tex.png\n")
    (tmp_path / "model.obj").write_text(textwrap.dedent("""\
        mtllib model.mtl
        v 0 0 0
        v 100 0 0
        v 0 100 0
        v 0 0 100
        vt 0 0
        vt 1 0
        vt 0 1
        vt 1 1
        usemtl m
        f 1/1 3/3 2/2
        f 1/1 2/2 4/4
        f 1/1 4/4 3/3
        f 2/2 3/3 4/4
        """))
    tetra = trimesh.Trimesh([[0, 0, 0], [0.1, 0, 0], [0, 0.1, 0], [0, 0, 0.1]],
                            [[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], process=False)
    tetra.visual.vertex_colors = np.array([[255, 0, 0, 255]] * 4, dtype=np.uint8)
    tetra.export(tmp_path / "model.ply")
    path = write_yaml(tmp_path, """\
        objects:
          textured: {mesh: model.obj, scale: 0.001}
          coloured: {mesh: model.ply, symmetry: z_axis}
        num_points: 50
        """)
    library = load_object_library(path)
    textured = library.get("textured")
    np.testing.assert_allclose(textured.vertices.max(0), [0.1, 0.1, 0.1])  # mm -> m
    assert textured.texture.shape == (8, 8, 3) and tuple(textured.texture[0, 0]) == (0, 200, 0)
    assert textured.uv.shape == (4, 3, 2) and textured.points.shape == (50, 3)
    assert textured.diameter == pytest.approx(0.1 * np.sqrt(2))
    coloured = library.get("coloured")
    assert coloured.is_symmetric and coloured.vertex_colors.shape == (4, 3)
    assert tuple(coloured.mesh().vertex_colors[0]) == (255, 0, 0)
    # Mesh files keep their own frame: no recentring.
    np.testing.assert_allclose(coloured.control_points[0], [0, 0, 0])


def test_make_object_model_validates_arrays():
    with pytest.raises(ValueError, match="face indices"):
        make_object_model("x", np.zeros((3, 3)), [[0, 1, 5]])
    with pytest.raises(ValueError, match="symmetry"):
        make_object_model("x", np.eye(3), [[0, 1, 2]], symmetry="round")


def test_build_object_from_spec():
    spec = ObjectSpec(shape="cylinder", dimensions={"radius": 0.03, "height": 0.1}, segments=12, color=(1, 2, 3),
                      symmetry="z_axis")
    model = build_object("can", spec, num_points=10, seed=5)
    assert len(model.vertices) == 2 + 5 * 12 and model.texture is None and model.color == (1, 2, 3)
    assert tuple(model.mesh().vertex_colors) == (1, 2, 3)
