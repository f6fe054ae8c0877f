"""`hoi-train synth`: render labelled hand-object video sequences on the CPU.

On-disk format (FORMAT_VERSION 1), one folder per sequence, written under a hidden
``.seq_XXXX.partial`` name and renamed when complete; ``manifest.json`` is written
last, so a folder without a manifest is an unfinished run that the same command resumes:

    DIR/manifest.json          format version, generator config, seed, domain, sequences, totals
    DIR/preview.png            the previews of the first four sequences, stacked
    DIR/seq_0000/meta.json     side, object, intrinsics, image size, fps, seed
    DIR/seq_0000/labels.npz    per-frame labels (see SEQUENCE_LABEL_KEYS), metres, OpenCV camera frame
    DIR/seq_0000/rgb/000000.png    RGB image
    DIR/seq_0000/depth/000000.png  uint16 depth in millimetres, 0 where nothing was rendered
    DIR/seq_0000/mask/000000.png   uint8 segmentation: 0 background, 1 hand, 2 object
    DIR/seq_0000/preview.png   four frames with the hand mesh, skeleton and object box drawn
                               (the first PREVIEW_SEQUENCES sequences only: drawing is slow)
    DIR/bags/seq_0000/         with --bag: a ROS 2 bag (MCAP) of the camera topics
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import shutil
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.spatial.transform import Rotation
from tqdm import tqdm

from hoi_perception.atomic import atomic_save_npz, atomic_write_json
from hoi_perception.config import to_dict
from hoi_perception.geometry.camera import box_from_points, project
from hoi_perception.hand_model.mano import HandModel, HandModelConfig
from hoi_perception.objects.models import ObjectLibrary, ObjectModel, load_object_library
from hoi_perception.render.overlay import draw_hand_skeleton, draw_mesh, draw_object_pose, save_png
from hoi_perception.render.rasterizer import Lighting, Mesh, render
from hoi_perception.synth import appearance
from hoi_perception.synth.config import DomainConfig, SynthConfig
from hoi_perception.synth.grasp import FINGER_CHAINS, Grasp, HandGeometry, hand_geometry, synthesize_grasp
from hoi_perception.synth.motion import smooth_rigid_motion, smooth_scalar
from hoi_perception.synth.sequence_files import DatasetFormatError, read_rgb

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
PREVIEW_SEQUENCES = 4  # sequences that get a preview.png; the dataset's preview stacks theirs
HAND_LABEL, OBJECT_LABEL = 1, 2
BAG_EPOCH_NS = 1_700_000_000 * 1_000_000_000
CAMERA_FRAME_ID = "camera_color_optical_frame"
IMAGE_TOPIC = "/camera/color/image_raw"
CAMERA_INFO_TOPIC = "/camera/color/camera_info"
DEPTH_TOPIC = "/camera/aligned_depth_to_color/image_raw"
SEQUENCE_LABEL_KEYS = (
    "K", "timestamps", "joints3d", "joints2d", "vertices3d", "hand_pose", "betas", "hand_transl", "hand_box",
    "object_box", "object_rotation", "object_translation", "object_control_points2d",
)


@dataclass
class SequencePlan:
    """Everything random about one sequence, drawn up front from its own seed."""

    index: int
    seed: int
    side: str
    object_name: str
    K: np.ndarray
    rotations: np.ndarray  # (F, 3, 3) rigid motion of the hand-object pair in the camera frame
    positions: np.ndarray  # (F, 3) camera-frame position of the grasp centre
    closure: np.ndarray  # (F,) fraction of the contact closure
    lighting: Lighting
    light_tint: np.ndarray
    skin: np.ndarray
    palm_lightening: float
    noise_std: float
    blur_px: float
    blur_angle: float
    jpeg_quality: int


def _sequence_rng(seed: int, index: int, domain: str) -> np.random.Generator:
    return np.random.default_rng([seed, index, zlib.crc32(domain.encode())])


def _config_digest(config: SynthConfig, domain: str, frames: int, seed: int) -> str:
    payload = json.dumps({"config": to_dict(config), "domain": domain, "frames": frames, "seed": seed,
                          "format": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class SequenceRenderer:
    """Draws grasps, motions and appearances and renders them into labelled frames."""

    def __init__(self, config: SynthConfig, domain: str, mano_dir: str | Path | None,
                 objects: ObjectLibrary):
        if domain not in config.domains:
            raise ValueError(f"domain '{domain}' is not defined in the synth config; defined: {sorted(config.domains)}")
        self.config = config
        self.domain_name = domain
        self.domain: DomainConfig = config.domains[domain]
        names = config.objects or sorted(objects)
        unknown = [n for n in names if n not in objects]
        if unknown:
            raise ValueError(f"synth config names unknown object(s) {unknown}; the library has {sorted(objects)}")
        self.object_names = names
        self.objects = objects
        hand_config = HandModelConfig(mano_dir=Path(mano_dir) if mano_dir else None)
        self.hands = {side: HandModel(side, hand_config) for side in ("right", "left")}

    def plan(self, index: int, seed: int, frames: int) -> tuple[SequencePlan, Grasp, HandGeometry]:
        cfg, dom = self.config, self.domain
        rng = _sequence_rng(seed, index, self.domain_name)
        side = "left" if rng.random() < cfg.hand.left_probability else "right"
        object_name = self.object_names[int(rng.integers(len(self.object_names)))]
        betas = np.clip(rng.normal(0.0, cfg.hand.betas_std, 10), -2.5, 2.5)
        hand = self.hands[side]
        geometry = hand_geometry(hand, side, betas)
        obj = self.objects[object_name]
        grasp = synthesize_grasp(hand, geometry, obj.vertices, rng, cfg.hand.penetration_tolerance)

        cam = cfg.camera
        f = rng.uniform(*cam.focal_over_width) * cam.width
        cx = cam.width / 2 + rng.uniform(-1, 1) * cam.principal_jitter * cam.width
        cy = cam.height / 2 + rng.uniform(-1, 1) * cam.principal_jitter * cam.height
        K = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1.0]])

        times = np.arange(frames) / cam.fps
        base = _viewpoint(rng, geometry.palm_normal, cam.max_palm_view_cosine)
        wobble, drift = smooth_rigid_motion(rng, times, np.deg2rad(cfg.motion.rotation_amplitude_deg),
                                            cfg.motion.translation_amplitude, cfg.motion.period)
        rotations = (base * Rotation.from_matrix(wobble)).as_matrix()
        distance = rng.uniform(*cam.distance)
        # Keep the pair inside the view: lateral offsets limited to a third of the half field of view.
        half_w, half_h = cam.width / (2 * f), cam.height / (2 * f)
        centre = np.array([rng.uniform(-1, 1) * half_w / 3, rng.uniform(-1, 1) * half_h / 3, 1.0]) * distance
        positions = centre[None] + drift
        closure = smooth_scalar(rng, times, cfg.hand.min_closure, 1.0, cfg.motion.period)

        light_dir = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.8, 0.2), -1.0])  # towards the light
        lighting = Lighting(direction=light_dir / np.linalg.norm(light_dir), ambient=rng.uniform(*dom.ambient),
                            diffuse=rng.uniform(*dom.diffuse), specular=0.15, shininess=24.0)
        tint = 1.0 + rng.uniform(-dom.light_tint, dom.light_tint, 3)
        skin = appearance.skin_color(rng.uniform(*dom.skin_tone))
        plan = SequencePlan(index=index, seed=seed, side=side, object_name=object_name, K=K, rotations=rotations,
                            positions=positions, closure=closure, lighting=lighting, light_tint=tint, skin=skin,
                            palm_lightening=self._palm_lightening(seed, index),
                            noise_std=rng.uniform(*dom.noise_std), blur_px=rng.uniform(*dom.motion_blur_px),
                            blur_angle=rng.uniform(0, 180),
                            jpeg_quality=int(rng.integers(dom.jpeg_quality[0], dom.jpeg_quality[1] + 1)))
        return plan, grasp, geometry

    def _palm_lightening(self, seed: int, index: int) -> float:
        # Its own stream: every other draw of a sequence stays what it was before palms had a colour.
        return float(_sequence_rng(seed, index, self.domain_name + "/palm").uniform(*self.domain.palm_lightening))

    def render_sequence(self, plan: SequencePlan, grasp: Grasp, geometry: HandGeometry):
        """Yield (rgb, depth_mm, mask, labels) per frame, labels as a dict of arrays."""
        cfg = self.config
        hand = self.hands[plan.side]
        obj = self.objects[plan.object_name]
        rng = _sequence_rng(plan.seed, plan.index, self.domain_name + "/render")
        frames = len(plan.rotations)
        bg = appearance.background(self.domain.background, rng, cfg.camera.height, cfg.camera.width)
        regions = appearance.hand_surface_regions(geometry.rest_vertices, hand.faces, geometry.rest_joints,
                                                  geometry.palm_normal, FINGER_CHAINS)
        skin_colors = 255.0 * appearance.hand_vertex_colors(plan.skin, regions, plan.palm_lightening,
                                                            self.domain.nail_whitening, rng)

        hand_pose = grasp.hand_pose(geometry, plan.closure)  # (F, 45)
        R = plan.rotations
        rest_wrist = geometry.rest_joints[0]
        # smplx rotates about the wrist joint: v = R (v0 - J0) + J0 + transl. The pair pivots about grasp.centre.
        transl = plan.positions - np.einsum("fij,j->fi", R, grasp.centre) + np.einsum("fij,j->fi", R, rest_wrist) \
            - rest_wrist
        global_orient = Rotation.from_matrix(R).as_rotvec()
        with torch.no_grad():
            out = hand(global_orient=torch.as_tensor(global_orient, dtype=torch.float32),
                       hand_pose=torch.as_tensor(hand_pose, dtype=torch.float32),
                       betas=torch.as_tensor(np.repeat(grasp.betas[None], frames, 0), dtype=torch.float32),
                       transl=torch.as_tensor(transl, dtype=torch.float32))
        vertices = out.vertices.numpy().astype(np.float64)
        joints = out.joints.numpy().astype(np.float64)
        obj_R = R @ grasp.object_rotation
        obj_t = np.einsum("fij,j->fi", R, grasp.object_translation - grasp.centre) + plan.positions

        for i in range(frames):
            obj_mesh = obj.mesh(obj_R[i], obj_t[i], specular=0.4)
            obj_verts = obj_mesh.vertices
            meshes = [Mesh(vertices=vertices[i], faces=hand.faces, vertex_colors=skin_colors, specular=0.2), obj_mesh]
            result = render(meshes, plan.K, cfg.camera.width, cfg.camera.height, background=bg,
                            lighting=plan.lighting, supersample=cfg.supersample)
            rgb = np.clip(result.rgb.astype(np.float32) * plan.light_tint[None, None], 0, 255).astype(np.uint8)
            rgb = appearance.degrade(rgb, rng, plan.noise_std, plan.blur_px, plan.blur_angle, plan.jpeg_quality)
            mask = np.zeros(result.instance_ids.shape, np.uint8)
            mask[result.instance_ids == 0] = HAND_LABEL
            mask[result.instance_ids == 1] = OBJECT_LABEL
            depth_mm = np.round(result.depth * 1000.0).clip(0, 65535).astype(np.uint16)
            joints2d = project(joints[i], plan.K)
            size = (cfg.camera.width, cfg.camera.height)
            labels = {
                "joints3d": joints[i], "joints2d": joints2d, "vertices3d": vertices[i].astype(np.float32),
                "hand_pose": np.concatenate([global_orient[i], hand_pose[i]]), "hand_transl": transl[i],
                "hand_box": _clip_box(box_from_points(project(vertices[i], plan.K)), size),
                "object_box": _clip_box(box_from_points(project(obj_verts, plan.K)), size),
                "object_rotation": obj_R[i], "object_translation": obj_t[i],
                "object_control_points2d": project(obj.control_points @ obj_R[i].T + obj_t[i], plan.K),
            }
            yield rgb, depth_mm, mask, labels


def _viewpoint(rng: np.random.Generator, palm_normal: np.ndarray, max_palm_cosine: float,
               max_tries: int = 50) -> Rotation:
    """A random hand-to-camera rotation from which the object does not hide the hand.

    The object sits on the palm side, so views looking into the palm through the object
    (cosine between the camera direction and the palm normal above ``max_palm_cosine``;
    0.35 is within ~70 degrees) are redrawn.
    """
    rotation = Rotation.random(random_state=rng)
    for _ in range(max_tries):
        towards_camera = rotation.inv().apply([0.0, 0.0, -1.0])
        if np.dot(towards_camera, palm_normal) < max_palm_cosine:
            break
        rotation = Rotation.random(random_state=rng)
    return rotation


def _clip_box(box: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    return np.array([np.clip(box[0], 0, w), np.clip(box[1], 0, h), np.clip(box[2], 0, w), np.clip(box[3], 0, h)])


def _draw_labels(rgb: np.ndarray, labels: dict, faces: np.ndarray, K: np.ndarray, obj: ObjectModel) -> np.ndarray:
    image = draw_mesh(rgb, labels["vertices3d"], faces, K, alpha=0.35)
    image = draw_hand_skeleton(image, labels["joints2d"])
    return draw_object_pose(image, obj.control_points, labels["object_rotation"], labels["object_translation"], K)


def _write_png(path: Path, image: np.ndarray) -> None:
    if image.ndim == 3:
        image = image[..., ::-1]
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write image '{path}'")


def _write_sequence(renderer: SequenceRenderer, plan: SequencePlan, grasp: Grasp, geometry: HandGeometry,
                    seq_dir: Path, digest: str, progress: tqdm | None) -> dict:
    partial = seq_dir.parent / f".{seq_dir.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    for sub in ("rgb", "depth", "mask"):
        (partial / sub).mkdir(parents=True)
    obj = renderer.objects[plan.object_name]
    faces = renderer.hands[plan.side].faces
    fps = renderer.config.camera.fps
    stacked: dict[str, list] = {}
    preview_ids = (set(np.linspace(0, len(plan.rotations) - 1, 4).round().astype(int).tolist())
                   if plan.index < PREVIEW_SEQUENCES else set())
    previews = []
    for i, (rgb, depth, mask, labels) in enumerate(renderer.render_sequence(plan, grasp, geometry)):
        name = f"{i:06d}.png"
        _write_png(partial / "rgb" / name, rgb)
        _write_png(partial / "depth" / name, depth)
        _write_png(partial / "mask" / name, mask)
        for key, value in labels.items():
            stacked.setdefault(key, []).append(value)
        if i in preview_ids:
            previews.append(_draw_labels(rgb, labels, faces, plan.K, obj))
        if progress is not None:
            progress.update(1)
    frames = len(plan.rotations)
    arrays = {key: np.stack(values) for key, values in stacked.items()}
    arrays["K"] = plan.K
    arrays["betas"] = grasp.betas
    arrays["timestamps"] = np.arange(frames) / fps
    atomic_save_npz(partial / "labels.npz", **arrays)
    if previews:
        save_png(partial / "preview.png", np.concatenate(previews, axis=1))
    meta = {
        "format_version": FORMAT_VERSION, "config_digest": digest, "index": plan.index, "seed": plan.seed,
        "domain": renderer.domain_name, "hand_side": plan.side, "object_name": plan.object_name,
        "object_symmetry": obj.symmetry, "frames": frames, "fps": fps,
        "width": renderer.config.camera.width, "height": renderer.config.camera.height, "K": plan.K.tolist(),
        "hand_label": HAND_LABEL, "object_label": OBJECT_LABEL, "depth_unit": "millimetre",
    }
    atomic_write_json(partial / "meta.json", meta)
    if seq_dir.exists():
        shutil.rmtree(seq_dir)
    partial.rename(seq_dir)
    return meta


def write_sequence_bag(seq_dir: Path, bag_path: Path) -> None:
    """Write a finished sequence folder as a ROS 2 bag with camera-like topics."""
    from hoi_perception.bag_io import camera_info_msg, image_msg, open_bag_writer

    meta = json.loads((seq_dir / "meta.json").read_text())
    K = np.asarray(meta["K"])
    period_ns = int(round(1e9 / meta["fps"]))
    start = BAG_EPOCH_NS + meta["index"] * 3600 * 1_000_000_000
    with open_bag_writer(bag_path, storage="mcap", overwrite=True) as bag:
        ts = bag.typestore
        for i in range(meta["frames"]):
            stamp = start + i * period_ns
            rgb = read_rgb(seq_dir / "rgb" / f"{i:06d}.png")
            depth = cv2.imread(str(seq_dir / "depth" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
            if depth is None:
                raise DatasetFormatError(f"depth image '{seq_dir / 'depth' / f'{i:06d}.png'}' could not be read")
            bag.write(IMAGE_TOPIC, image_msg(ts, rgb, stamp, CAMERA_FRAME_ID), stamp)
            bag.write(CAMERA_INFO_TOPIC, camera_info_msg(ts, K, meta["width"], meta["height"], stamp,
                                                         CAMERA_FRAME_ID), stamp)
            bag.write(DEPTH_TOPIC, image_msg(ts, depth, stamp, CAMERA_FRAME_ID), stamp)


def _check_output_dir(out_dir: Path) -> None:
    if (out_dir / "manifest.json").exists():
        raise FileExistsError(f"'{out_dir}' already holds a finished synthetic dataset (manifest.json); "
                              "choose another --out or delete it")
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out '{out_dir}' exists and is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PermissionError(f"cannot create output folder '{out_dir}': {exc}") from exc
    probe = out_dir / ".write_test"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise PermissionError(f"output folder '{out_dir}' is not writable: {exc}") from exc
    own = ("seq_", ".seq_", "bags", "preview.png", ".preview.png.")
    foreign = [p.name for p in out_dir.iterdir() if not p.name.startswith(own)]
    if foreign:
        raise FileExistsError(f"output folder '{out_dir}' holds other files ({sorted(foreign)[:5]}); "
                              "use an empty or new folder")


# One renderer per worker process, built by _init_worker (renderers hold hand models and object meshes).
_WORKER: dict = {}


def _init_worker(config: SynthConfig, domain: str, mano_dir: str | Path | None, objects_path: str | Path | None,
                 ) -> None:
    torch.set_num_threads(1)
    _WORKER["renderer"] = SequenceRenderer(config, domain, mano_dir, load_object_library(objects_path))


def _render_in_worker(index: int, seed: int, frames: int, seq_dir: Path, digest: str) -> dict:
    renderer = _WORKER["renderer"]
    plan, grasp, geometry = renderer.plan(index, seed, frames)
    return _write_sequence(renderer, plan, grasp, geometry, seq_dir, digest, None)


def _finished_meta(seq_dir: Path, digest: str) -> dict | None:
    """The meta of a sequence a previous run finished with the same settings; None when not finished."""
    meta_path = seq_dir / "meta.json"
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("config_digest") != digest:
        raise FileExistsError(f"'{seq_dir}' was generated with other settings (config, domain, frames "
                              "or seed); use a new --out folder")
    return meta


def generate_dataset(config: SynthConfig, out_dir: str | Path, sequences: int, frames: int, seed: int,
                     domain: str = "lab", write_bags: bool = False, mano_dir: str | Path | None = None,
                     objects_path: str | Path | None = None, workers: int = 1) -> dict:
    """Render ``sequences`` sequences of ``frames`` frames; resumes an unfinished run in ``out_dir``.

    With ``workers`` > 1 the sequences render in that many processes. A sequence depends only
    on (seed, index, domain, config), so the data are the same for any worker count, and an
    interrupted run resumes at the first unfinished sequences.
    """
    if sequences < 1 or frames < 1:
        raise ValueError(f"--sequences and --frames must be at least 1, got {sequences} and {frames}")
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    out_dir = Path(out_dir)
    _check_output_dir(out_dir)
    renderer = SequenceRenderer(config, domain, mano_dir, load_object_library(objects_path))
    digest = _config_digest(config, domain, frames, seed)
    metas: dict[int, dict] = {}
    todo = []
    for index in range(sequences):
        meta = _finished_meta(out_dir / f"seq_{index:04d}", digest)
        if meta is None:
            todo.append(index)
        else:
            metas[index] = meta
    if metas:
        log.info("keeping %d finished sequences", len(metas))
    with tqdm(total=sequences * frames, initial=len(metas) * frames, desc=f"synth {domain}", unit="frame") as progress:
        if workers == 1 or len(todo) < 2:
            for index in todo:
                plan, grasp, geometry = renderer.plan(index, seed, frames)
                metas[index] = _write_sequence(renderer, plan, grasp, geometry, out_dir / f"seq_{index:04d}", digest,
                                               progress)
        else:
            context = multiprocessing.get_context("spawn")  # no forked torch thread pools
            with ProcessPoolExecutor(min(workers, len(todo)), mp_context=context, initializer=_init_worker,
                                     initargs=(config, domain, mano_dir, objects_path)) as pool:
                futures = {pool.submit(_render_in_worker, index, seed, frames, out_dir / f"seq_{index:04d}", digest):
                           index for index in todo}
                for future in as_completed(futures):
                    metas[futures[future]] = future.result()
                    progress.update(frames)
    if write_bags:
        for index in range(sequences):
            seq_dir = out_dir / f"seq_{index:04d}"
            if not (out_dir / "bags" / seq_dir.name / "metadata.yaml").exists():
                write_sequence_bag(seq_dir, out_dir / "bags" / seq_dir.name)
    ordered = [metas[index] for index in range(sequences)]
    previews = [read_rgb(out_dir / f"seq_{i:04d}" / "preview.png") for i in range(min(PREVIEW_SEQUENCES, sequences))]
    save_png(out_dir / "preview.png", np.concatenate(previews, axis=0))
    manifest = {
        "format_version": FORMAT_VERSION, "generator": "hoi-train synth", "seed": seed, "domain": domain,
        "frames_per_sequence": frames, "config": to_dict(config), "config_digest": digest,
        "hand_model": "stand-in" if mano_dir is None else str(mano_dir),
        "sequences": [{"name": f"seq_{m['index']:04d}", "hand_side": m["hand_side"], "object_name": m["object_name"],
                       "frames": m["frames"]} for m in ordered],
        "total_frames": sum(m["frames"] for m in ordered),
        "bags": sorted(f"bags/seq_{m['index']:04d}" for m in ordered) if write_bags else [],
        "topics": {"image": IMAGE_TOPIC, "camera_info": CAMERA_INFO_TOPIC, "depth": DEPTH_TOPIC,
                   "frame_id": CAMERA_FRAME_ID} if write_bags else {},
    }
    atomic_write_json(out_dir / "manifest.json", manifest)
    log.info("wrote %d sequences (%d frames) to %s", sequences, manifest["total_frames"], out_dir)
    return manifest
