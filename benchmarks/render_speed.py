"""Rendering speed of the NumPy rasteriser on a hand + object scene at 256 x 256.

The scene matches what synthetic-data generation and debug overlays render: a
MANO-sized hand mesh (the project's stand-in model when present, else a UV
ellipsoid of similar size and face count) holding a textured object from the
shipped library, over a background image. Variants are timed round-robin (in a
shuffled order) in the same run, so their ratios are comparable even on a busy machine.

    python benchmarks/render_speed.py [--frames 40] [--out benchmarks/results/render_speed.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hoi_perception.atomic import atomic_write_text  # noqa: E402
from hoi_perception.objects import TextureSpec, load_object_library, make_texture  # noqa: E402
from hoi_perception.render import Lighting, Mesh, render  # noqa: E402

HAND_STANDIN = REPO / "hoi_perception" / "hand_model" / "assets" / "mano_standin_right.npz"
SIZE = 256
K = np.array([[450.0, 0.0, 128.0], [0.0, 450.0, 128.0], [0.0, 0.0, 1.0]])


@dataclass
class Variant:
    name: str
    textured: bool = True
    supersample: int = 1
    with_hand: bool = True
    specular: float = 0.0


VARIANTS = [
    Variant("baseline: hand + textured object, supersample 1"),
    Variant("supersample 2", supersample=2),
    Variant("untextured object (vertex colour)", textured=False),
    Variant("specular highlights on the object", specular=0.5),
    Variant("object only (no hand)", with_hand=False),
]


def hand_mesh() -> tuple[np.ndarray, np.ndarray, str]:
    """Hand vertices (object-sized, metres, centred) and faces, plus where they came from."""
    if HAND_STANDIN.is_file():
        data = np.load(HAND_STANDIN)
        vertices, faces = np.asarray(data["v_template"], dtype=np.float64), np.asarray(data["f"], dtype=np.int64)
        return vertices - vertices.mean(axis=0), faces, f"stand-in MANO template ({HAND_STANDIN.name})"
    n_lon, n_rings = 32, 24  # 770 vertices, 1536 faces: MANO has 778 / 1538
    theta = np.pi * np.arange(1, n_rings + 1) / (n_rings + 1)
    phi = 2 * np.pi * np.arange(n_lon) / n_lon
    ring = np.stack([np.sin(theta)[:, None] * np.cos(phi), np.sin(theta)[:, None] * np.sin(phi),
                     np.broadcast_to(np.cos(theta)[:, None], (n_rings, n_lon))], axis=-1).reshape(-1, 3)
    unit = np.concatenate([[[0, 0, 1.0]], ring, [[0, 0, -1.0]]])
    vertices = unit * np.array([0.045, 0.02, 0.09])  # palm-and-fingers sized ellipsoid
    j = np.arange(n_lon)
    j1 = (j + 1) % n_lon
    faces = [np.stack([np.zeros(n_lon, int), 1 + j, 1 + j1], 1)]
    for i in range(n_rings - 1):
        a, b = 1 + i * n_lon + j, 1 + i * n_lon + j1
        faces += [np.stack([a, a + n_lon, b], 1), np.stack([b, a + n_lon, b + n_lon], 1)]
    last = 1 + (n_rings - 1) * n_lon
    faces.append(np.stack([np.full(n_lon, len(unit) - 1), last + j1, last + j], 1))
    return vertices, np.concatenate(faces), f"UV ellipsoid ({len(vertices)} vertices, {n_lon * n_rings * 2} faces)"


def rotation(yaw: float, pitch: float) -> np.ndarray:
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1.0]])
    rx = np.array([[1.0, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return rx @ rz


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40, help="frames timed per variant")
    parser.add_argument("--object", default="mustard_bottle", help="object from config/objects.yaml")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "render_speed.md")
    args = parser.parse_args()

    model = load_object_library().get(args.object)
    hand_v, hand_f, hand_source = hand_mesh()
    background = make_texture(TextureSpec(pattern="noise", colors=[(70, 80, 90), (150, 140, 120)], count=4,
                                          seed=1, size=(SIZE, SIZE)))
    lighting = Lighting()
    upright = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])  # object z up in the image

    def frame(variant: Variant, k: int):
        angle = 2 * np.pi * k / max(args.frames, 1)
        obj = model.mesh(upright @ rotation(angle, 0.3), [0.0, 0.0, 0.55], specular=variant.specular)
        if not variant.textured:
            obj = Mesh(obj.vertices, obj.faces, vertex_colors=(230, 190, 40), normals=obj.normals)
        meshes = [obj]
        if variant.with_hand:
            hand_r = rotation(-angle, 1.2)
            meshes.append(Mesh(hand_v @ hand_r.T + [0.05, 0.01, 0.5], hand_f, vertex_colors=(225, 180, 150)))
        return render(meshes, K, SIZE, SIZE, background=background, lighting=lighting,
                      supersample=variant.supersample)

    for variant in VARIANTS:  # warm-up
        frame(variant, 0)
    wall = {v.name: [] for v in VARIANTS}
    cpu = {v.name: [] for v in VARIANTS}
    coverage = {v.name: [] for v in VARIANTS}
    order_rng = np.random.default_rng(0)
    for k in range(args.frames):
        # A fresh order each round, so no variant always follows the costly one (allocator, caches).
        for index in order_rng.permutation(len(VARIANTS)):
            variant = VARIANTS[index]
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            result = frame(variant, k)
            wall[variant.name].append(time.perf_counter() - start_wall)
            cpu[variant.name].append(time.process_time() - start_cpu)
            coverage[variant.name].append(int((result.instance_ids >= 0).sum()))

    base = statistics.median(cpu[VARIANTS[0].name])
    table = ["| variant | CPU ms/frame | frames/s (CPU time) | wall ms/frame | CPU time vs baseline | covered pixels |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for variant in VARIANTS:
        c, w = statistics.median(cpu[variant.name]), statistics.median(wall[variant.name])
        table.append(f"| {variant.name} | {c * 1000:.1f} | {1 / c:.1f} | {w * 1000:.1f} | {c / base:.2f}x | "
                     f"{statistics.mean(coverage[variant.name]):.0f} |")
    machine = describe_machine()
    report = "\n".join([
        "# Rasteriser speed (hoi_perception.render.rasterizer)",
        "",
        f"Command: `python benchmarks/render_speed.py --frames {args.frames} --object {args.object}`",
        "",
        f"Machine: {machine}",
        "",
        f"Scene: {SIZE}x{SIZE}, hand = {hand_source} ({len(hand_f)} faces), object = `{args.object}` "
        f"({len(model.faces)} faces, procedural {model.texture.shape[1]}x{model.texture.shape[0]} texture), "
        "noise background, one directional light; poses change every frame. "
        f"{args.frames} frames per variant, timed round-robin (shuffled each round) in one process; "
        "medians per frame. CPU time is the process's own (it stays meaningful when other jobs share the "
        "cores); wall time includes waiting for a core.",
        "",
        *table,
        "",
    ])
    print(report)
    atomic_write_text(args.out, report)


def describe_machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", 1-minute load average {os.getloadavg()[0]:.1f} at the end of the run (cores shared)"
    return (f"{cpu}, {cores} cores available, Python {platform.python_version()}, NumPy {np.__version__}, "
            f"{platform.system()} {platform.release()}{load}")


if __name__ == "__main__":
    main()
