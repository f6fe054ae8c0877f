"""The runtime estimator: a full camera frame in, tracked and filtered hands and object out.

Per frame (:meth:`Estimator.process`):

1. **boxes** - the detector (letterboxed full frame) when :class:`BoxTracker` asks for it,
   with each hand's side from the crop network's confidence on its crop as it is and
   mirrored (:mod:`hoi_perception.pipeline.hand_side`), otherwise the boxes carried over
   from the previous frame's estimates;
2. **crop** - per tracked hand, the training crop (``hoi_training.data.augment``): the
   union of the hand and object boxes, each enlarged x1.5, squared and resized to the
   network's input. A left hand's crop is taken from the mirrored image (one affine
   warp with the flip folded in), as the network models right hands;
3. **network** - all crops of the frame in one batch;
4. **geometry** - 2D joints and control-point votes mapped from crop units back to
   full-image pixels (which also un-mirrors them), 3D outputs un-mirrored; the hand's
   camera-frame translation from its 2D joints, root-relative joints and K (refined by
   depth when given); the object pose by PnP on the votes with the full K, its depth then
   taken from the object's detected box (:mod:`hoi_perception.geometry.object_depth`: the
   votes are drawn towards the object's centre, so PnP alone puts it too far); between
   detections the track keeps the factor its last detected box gave;
4b. **refine** - with a ``refine: dma`` model and an object, each hand crop's coarse hand
   mesh and the object pose go through the refine graph (``refine`` or, for mirrored
   crops, ``refine_mirrored``; :mod:`hoi_perception.models.refinement`): the refined
   joints and wrist replace the hand's, the refined mesh's offsets from the coarse one
   are kept for the output mesh, and the crop that gave the object pose gives the
   refined object pose;
4c. **gates** - a hand or object pose whose projection contradicts its 2D box (centre,
   size, hence depth) or its 2D joints / control-point votes is refused with a reason
   (:mod:`hoi_perception.pipeline.gates`): it is not filtered, published or followed (the
   object's box is then held as it was until the detector runs again);
5. **filter** - per track the hand and object temporal filters, then the MANO layer
   re-poses the hand mesh from the filtered pose and shape, so mesh and joints agree.

With ``hand_frontend: mediapipe`` step **0** comes first: MediaPipe Hands finds and tracks
the hands itself, and :mod:`hoi_perception.pipeline.mediapipe_frontend` turns each into a
hand estimate (2D joints from its landmarks, a MANO fit to its world landmarks, the
translation as in step 4). Those hands replace the network's: steps 1-4 then run only
for the object (when a network and an object are configured; the network's detector for
the object, its crops around the front-end's hand boxes), step 4b is skipped, and the
hands go through the same gates (4c) and filter (5). With ``mediapipe_hands_from: network``
step 0 only gives the hands' boxes and sides, and steps 2-4 estimate the hands on them.

Bad input (empty or corrupt image, wrong dtype or shape, an invalid camera matrix, a
repeated stamp, NaN network outputs) skips the frame with a reason: the result has
``skipped`` set, nothing from it may be published, and :attr:`Estimator.skipped`
counts it by kind. A stamp earlier than the last one starts a new stream (a bag that
loops): tracks and filters are reset.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hoi_perception.config import ConfigError
from hoi_perception.engines.base import InferenceEngine, create_engine
from hoi_perception.engines.export import REFINE_GRAPHS
from hoi_perception.frontends.mediapipe_hands import MediaPipeHands, create_mediapipe_hands
from hoi_perception.geometry.camera import project
from hoi_perception.geometry.crop import (
    checkpoint_box_expansion,
    resolve_box_expansion,
)
from hoi_perception.geometry.hand_translation import locate_hand
from hoi_perception.geometry.mirror import (
    MIRROR_X,
    mirror_axis_angle,
    mirror_points_3d,
    mirrored_crop_point_order,
)
from hoi_perception.geometry.object_depth import box_depth_scale
from hoi_perception.geometry.pnp import PnPResult, select_votes, solve_pnp
from hoi_perception.hand_model.mano import HandModel, HandModelConfig, NumpyHandPoser
from hoi_perception.models.detection_head import FrameDetections, letterbox_image, select_detections
from hoi_perception.models.network import DETECTION_OUTPUT_NAMES
from hoi_perception.models.object_head import box_units_to_points
from hoi_perception.models.refinement import (
    LEVEL_INPUTS,
    REFINED_OUTPUT_NAMES,
    REFINEMENT_GLOBAL_OUTPUT,
    REFINEMENT_P2_OUTPUT,
    crop_camera_matrix,
    mirror_pose,
)
from hoi_perception.models.results import HandResult, ObjectResult
from hoi_perception.objects.models import load_object_library_names, load_object_model
from hoi_perception.pipeline.config import EstimatorConfig
from hoi_perception.pipeline.crops import CropGeometry, crop_geometry, extract_crop, network_images
from hoi_perception.pipeline.gates import GateMeasures, gate_problem, hand_measures, object_measures
from hoi_perception.pipeline.hand_side import with_voted_sides
from hoi_perception.pipeline.image_decoding import camera_matrix_problem
from hoi_perception.pipeline.mediapipe_frontend import FrontendHandEstimate, MediaPipeHandStage
from hoi_perception.pipeline.results import FrameResult, HandEstimate, TrackedHand, TrackedObject
from hoi_perception.pipeline.tracking import BoxTracker, Track
from hoi_perception.tracking import (
    FilteredHand,
    HandFrame,
    HandTrackFilter,
    ObjectFrame,
    ObjectTrackFilter,
    load_filter_config,
)

log = logging.getLogger(__name__)

CROP_INPUTS: tuple[str, ...] = ("crop", "hand_box", "object_box")
CROP_OUTPUTS: tuple[str, ...] = ("hand_joints2d", "hand_joint_confidence", "hand_pose", "hand_betas",
                                 "hand_vertices", "hand_joints3d", "object_votes", "object_confidence")
DETECTOR_INPUT = "frame"
MIN_IMAGE_SIDE_PX = 16
MILLIMETRES = 0.001


# ----------------------------------------------------------------------------- input checks


def frame_problem(image: Any, K: Any, stamp: Any, depth: Any) -> tuple[str, str] | None:
    """(kind, reason) when a frame cannot be processed, else None."""
    if not isinstance(image, np.ndarray):
        return "image", f"image must be a numpy array, got {type(image).__name__}"
    if image.size == 0:
        return "image", f"image is empty (shape {image.shape})"
    if image.dtype != np.uint8:
        return "image", f"image must be uint8 RGB, got dtype {image.dtype}"
    if image.ndim != 3 or image.shape[2] != 3:
        return "image", f"image must be (H, W, 3) RGB, got shape {image.shape}"
    if min(image.shape[:2]) < MIN_IMAGE_SIDE_PX:
        return "image", f"image of {image.shape[1]}x{image.shape[0]} is smaller than {MIN_IMAGE_SIDE_PX} px"
    problem = camera_matrix_problem(K) if isinstance(K, np.ndarray) else "camera matrix K must be a numpy array"
    if problem:
        return "camera_matrix", problem
    if isinstance(stamp, bool) or not isinstance(stamp, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(stamp)):
        return "stamp", f"stamp must be a finite number of seconds, got {stamp!r}"
    if depth is not None:
        if not isinstance(depth, np.ndarray) or depth.dtype not in (np.uint16, np.float32):
            kind = depth.dtype if isinstance(depth, np.ndarray) else type(depth).__name__
            return "depth", f"depth must be uint16 millimetres or float32 metres, got {kind}"
        if depth.shape != image.shape[:2]:
            return "depth", f"depth of shape {depth.shape} is not aligned with the {image.shape[:2]} image"
    return None


# ----------------------------------------------------------------------------- engines and objects


def build_engines(config: EstimatorConfig) -> tuple[InferenceEngine, InferenceEngine]:
    """The crop network and the detector engines that ``config`` names."""
    config.check_model_files()
    if config.engine.kind == "torch":
        from hoi_perception.engines.export import network_graphs
        from hoi_perception.models.checkpoint import load_network_checkpoint

        assert config.checkpoint is not None  # check_model_files() above
        graphs = network_graphs(load_network_checkpoint(config.checkpoint))
        return tuple(create_engine(config.engine, module=graphs[name].module,  # type: ignore[return-value]
                                   example_inputs=graphs[name].example_inputs) for name in ("crop", "detector"))
    from hoi_perception.engines.export import ModelMetadata

    engines = []
    identity = None
    for graph, path in (("crop", config.crop_model), ("detector", config.detector_model)):
        engine = create_engine(replace(config.engine, model_path=path))
        metadata = ModelMetadata.from_props(engine.metadata, str(path))
        metadata.check(str(path), graph=graph)
        if identity is not None and (metadata.model_name, metadata.input_size) != identity:
            raise ValueError(f"{path}: model {metadata.model_name!r} at {metadata.input_size} px does not match the "
                             f"crop model {identity[0]!r} at {identity[1]} px; export both from one checkpoint")
        identity = (metadata.model_name, metadata.input_size)
        engines.append(engine)
    return engines[0], engines[1]




def trained_box_expansion(config: EstimatorConfig, crop_engine: InferenceEngine) -> float | None:
    """The crop enlargement the crop network was trained with, from its exported metadata or its
    checkpoint (torch engine); None where neither records it."""
    from hoi_perception.engines.export import METADATA_PREFIX, ModelMetadata

    metadata = getattr(crop_engine, "metadata", None) or {}
    if any(key.startswith(METADATA_PREFIX) for key in metadata):
        return ModelMetadata.from_props(metadata, crop_engine.describe()).crop_box_expansion
    if config.engine.kind == "torch" and config.checkpoint is not None:
        from hoi_perception.models.checkpoint import read_training_checkpoint

        return checkpoint_box_expansion(read_training_checkpoint(config.checkpoint))
    return None


def refine_model_paths(crop_model: Path) -> dict[str, Path]:
    """The refine graphs exported beside ``<model>_crop.onnx``: ``<model>_refine.onnx`` and
    ``<model>_refine_mirrored.onnx`` (``hoi-perception export`` writes all of them into one folder)."""
    name = crop_model.name
    if not name.endswith("_crop.onnx"):
        raise ConfigError(f"crop_model '{crop_model}': a refine: dma model's refine graphs are found beside the crop "
                          "graph by name, which needs the exported name <model>_crop.onnx")
    stem = name[: -len("_crop.onnx")]
    return {graph: crop_model.with_name(f"{stem}_{graph}.onnx") for graph in REFINE_GRAPHS}


def build_refine_engines(config: EstimatorConfig) -> dict[str, InferenceEngine]:
    """The refine graphs of a ``refine: dma`` model for ``config.object_name``, by graph name.

    ``torch``: from the checkpoint; ``onnxruntime``/``tensorrt``: the files beside
    ``crop_model`` (:func:`refine_model_paths`), whose metadata must name the same model
    and object.
    """
    from hoi_perception.engines.export import OBJECT_NAME_KEY, ModelMetadata, read_onnx_metadata
    from hoi_perception.models.checkpoint import load_network_checkpoint

    if config.object_name is None:
        raise ConfigError("a refine: dma model refines a hand together with the object: set object_name")
    if config.engine.kind == "torch":
        from hoi_perception.engines.export import refinement_graphs

        object_model = load_object_model(config.object_name, config.objects)
        assert config.checkpoint is not None  # check_model_files() in build_engines
        graphs = refinement_graphs(load_network_checkpoint(config.checkpoint), object_model)
        return {name: create_engine(config.engine, module=graph.module, example_inputs=graph.example_inputs)
                for name, graph in graphs.items()}
    assert config.crop_model is not None  # check_model_files() in build_engines
    crop = ModelMetadata.from_props(read_onnx_metadata(config.crop_model), str(config.crop_model))
    engines = {}
    for graph, path in refine_model_paths(Path(config.crop_model)).items():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the crop model {config.crop_model} has a refinement stage, so its "
                                    f"refine graphs must lie beside it (hoi-perception export with the object "
                                    f"'{config.object_name}')")
        engine = create_engine(replace(config.engine, model_path=path))
        ModelMetadata.from_props(engine.metadata, str(path)).check(str(path), graph=graph, model_name=crop.model_name,
                                                                   input_size=crop.input_size)
        exported_for = engine.metadata.get(OBJECT_NAME_KEY)
        if exported_for != config.object_name:
            raise ValueError(f"{path}: refine graph exported for object {exported_for!r}, but object_name is "
                             f"{config.object_name!r}; export it for this object")
        engines[graph] = engine
    return engines


def describe_targets(config: EstimatorConfig) -> str:
    """One line for the commands to print: which hands, and which object (or none, and how to choose one)."""
    hands = " and ".join(config.hand_sides)
    if config.object_name is not None:
        return f"estimating: {hands} hand(s) and the object '{config.object_name}'"
    names = load_object_library_names(config.objects)
    return (f"estimating: {hands} hand(s) only - no object_name is set, so no object pose; choose the object in view "
            f"with --set object_name=NAME (the library has: {', '.join(names)})")


def _square_input_size(engine: InferenceEngine, name: str) -> int:
    spec = {s.name: s for s in engine.inputs}[name]
    shape = spec.shape
    if len(shape) != 4 or shape[1] != 3 or not isinstance(shape[2], int) or shape[2] != shape[3]:
        raise ValueError(f"{engine.describe()}: input '{name}' must be (batch, 3, S, S), got {spec.describe()}")
    return int(shape[2])


def _check_engine(engine: InferenceEngine, role: str, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> None:
    missing_in = [n for n in inputs if n not in engine.input_names]
    missing_out = [n for n in outputs if n not in engine.output_names]
    if missing_in or missing_out:
        raise ValueError(f"{role} engine {engine.describe()} lacks inputs {missing_in} / outputs {missing_out}; "
                         f"it has inputs {list(engine.input_names)} and outputs {list(engine.output_names)}")


# ----------------------------------------------------------------------------- the estimator


@dataclass
class _CropJob:
    """One crop of a frame: the hand track it is for (None: object only) and the object track."""

    hand: Track | None
    object: Track | None
    geometry: CropGeometry


@dataclass
class _ObjectEstimate:
    """The object's per-frame estimate before filtering; ``crop_index``: the crop PnP used."""

    track: Track
    pnp: PnPResult
    control_points_2d: np.ndarray
    inlier_points: int
    confidence: float
    crop_index: int = -1
    rejection: str = ""  # why a plausibility gate refused the pose (pnp is then a failure)
    # The factor the object's box applied to PnP's translation (pnp holds the product).
    depth_scale: float = 1.0


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class Estimator:
    """Hands and object from full camera frames; keeps tracks and filters between calls.

    ``crop_engine`` and ``detector_engine`` replace the engines the config names (any
    :class:`InferenceEngine` with the crop network's or the detector's inputs and outputs).
    A crop engine with refinement outputs (a ``refine: dma`` model) needs the refine
    graphs; ``refine_engines`` (by name, :data:`REFINE_GRAPHS`) replaces the config's.
    """

    def __init__(self, config: EstimatorConfig, *, crop_engine: InferenceEngine | None = None,
                 detector_engine: InferenceEngine | None = None,
                 refine_engines: Mapping[str, InferenceEngine] | None = None,
                 hand_frontend: MediaPipeHands | None = None) -> None:
        config.validate()
        self.config = config
        mediapipe = config.hand_frontend == "mediapipe"
        # With the MediaPipe front-end the network is optional: it only estimates the object.
        self.uses_network = not mediapipe or config.has_network or crop_engine is not None
        if not self.uses_network and config.mediapipe_hands_from == "network":
            raise ConfigError("mediapipe_hands_from network: the hands come from the network on MediaPipe's boxes; "
                              "configure its model files (checkpoint, or crop_model and detector_model)")
        if not self.uses_network and config.object_name is not None:
            raise ConfigError(f"object_name {config.object_name!r}: with hand_frontend mediapipe the object still "
                              "comes from the network; configure its model files (checkpoint, or crop_model and "
                              "detector_model), or set object_name to null for hands only")
        self.crop_engine: InferenceEngine | None = None
        self.detector_engine: InferenceEngine | None = None
        if self.uses_network:
            if crop_engine is None or detector_engine is None:
                built_crop, built_detector = build_engines(config)
                crop_engine = crop_engine or built_crop
                detector_engine = detector_engine or built_detector
            _check_engine(crop_engine, "crop network", CROP_INPUTS, CROP_OUTPUTS)
            _check_engine(detector_engine, "detector", (DETECTOR_INPUT,), DETECTION_OUTPUT_NAMES)
            self.crop_engine = crop_engine
            self.detector_engine = detector_engine
            self.crop_size = _square_input_size(crop_engine, "crop")
            trained = trained_box_expansion(config, crop_engine)
            self.box_expansion = resolve_box_expansion(config.crop_box_expansion, trained, crop_engine.describe())
            self.detector_size = _square_input_size(detector_engine, DETECTOR_INPUT)
        self.object_model = (load_object_model(config.object_name, config.objects)
                             if config.object_name is not None else None)
        self.hand_model = HandModel("right", HandModelConfig(mano_dir=config.mano_dir)).eval()
        self.hand_poser = NumpyHandPoser(self.hand_model)
        self.refine_engines = self._refine_engines(refine_engines) if self.uses_network and not mediapipe else None
        self.filter_config = load_filter_config(config.filter_config)
        # The front-end tracks its hands itself; the box tracker then follows only the object.
        self.tracker = BoxTracker(config.tracking, () if mediapipe else tuple(config.hand_sides),
                                  self.object_model is not None)
        self.hand_stage: MediaPipeHandStage | None = None
        if mediapipe:
            self.hand_stage = MediaPipeHandStage(hand_frontend or create_mediapipe_hands(config.mediapipe),
                                                 self.hand_model, tuple(config.hand_sides), config.mano_fit,
                                                 config.hand_translation, self.tracker.new_track_id)
        self._hand_filters: dict[int, HandTrackFilter] = {}
        self._object_filters: dict[int, ObjectTrackFilter] = {}
        self._object_depth_scales: dict[int, float] = {}  # per object track, from its last detected box
        self._last_stamp: float | None = None
        self.frames_processed = 0
        self.skipped: Counter[str] = Counter()

    def _refine_engines(self, given: Mapping[str, InferenceEngine] | None) -> dict[str, InferenceEngine] | None:
        """The refine graphs when the crop model has a refinement stage, else None."""
        assert self.crop_engine is not None  # only called with a network
        if REFINEMENT_GLOBAL_OUTPUT not in self.crop_engine.output_names:
            if given:
                raise ValueError(f"refine_engines given, but the crop network {self.crop_engine.describe()} has no "
                                 f"refinement outputs ('{REFINEMENT_GLOBAL_OUTPUT}'): its model has refine: none")
            return None
        if self.object_model is None:
            log.warning("the model has a refinement stage, which refines hand and object together; with no "
                        "object_name the hands are not refined")
            return None
        engines = dict(given) if given is not None else build_refine_engines(self.config)
        missing = [name for name in REFINE_GRAPHS if name not in engines]
        if missing:
            raise ValueError(f"refine_engines: missing {missing}; expected {list(REFINE_GRAPHS)}")
        for name in REFINE_GRAPHS:
            engine = engines[name]
            levels = [n for n in LEVEL_INPUTS.values() if n in engine.input_names]
            if REFINEMENT_P2_OUTPUT not in self.crop_engine.output_names and "p2" in levels:
                raise ValueError(f"{name} engine {engine.describe()} samples P2, which the crop network does not "
                                 f"output ('{REFINEMENT_P2_OUTPUT}'); export both graphs from one checkpoint")
            _check_engine(engine, name, ("camera_matrix", "coarse_hand_vertices", "coarse_object_rotation",
                                         "coarse_object_translation", "global_feature"), REFINED_OUTPUT_NAMES)
        return engines

    # -- public

    def hand_faces(self, side: str) -> np.ndarray:
        """Mesh faces (1538, 3) for a hand of ``side``; a left (mirrored) mesh has reversed winding."""
        faces = self.hand_model.faces
        return faces[:, ::-1].copy() if side == "left" else faces.copy()

    def reset(self) -> None:
        """Drop every track and filter; the next frame starts a new stream with the detector."""
        self._end_tracks(self.tracker.lose_all("reset"))
        if self.hand_stage is not None:
            self._end_tracks(self.hand_stage.reset())
        self.tracker.reset()
        self._last_stamp = None

    def process(self, image: np.ndarray, K: np.ndarray, stamp: float,  # noqa: N803
                depth: np.ndarray | None = None) -> FrameResult:
        """Estimate one frame: ``image`` (H, W, 3) uint8 RGB, ``K`` (3, 3), ``stamp`` seconds,
        ``depth`` (H, W) aligned with the image, uint16 millimetres or float32 metres, or None."""
        problem = frame_problem(image, K, stamp, depth)
        if problem is not None:
            return self._skip(stamp, *problem)
        stamp = float(stamp)
        if self._last_stamp is not None:
            if stamp == self._last_stamp:
                return self._skip(stamp, "stamp", f"stamp {stamp:.9f} s repeats the previous frame's")
            if stamp < self._last_stamp:
                log.warning("stamp %.6f s is earlier than the previous %.6f s: new stream, tracks reset", stamp,
                            self._last_stamp)
                self.reset()
        self._last_stamp = stamp
        K = np.asarray(K, dtype=np.float64)
        height, width = image.shape[:2]
        timings: dict[str, float] = {}
        depth_scale = MILLIMETRES if depth is not None and depth.dtype == np.uint16 else 1.0

        frontend_hands: list[FrontendHandEstimate] | None = None  # step 0: hands estimated by the front-end
        frontend_tracks: list[Track] | None = None  # its hands' boxes
        if self.hand_stage is not None:
            if self.config.mediapipe_hands_from == "landmarks":
                frontend_hands, ended = self.hand_stage.process(image, K, depth, depth_scale, timings)
                frontend_tracks = [h.track for h in frontend_hands]
            else:  # the network estimates the hands on the front-end's boxes (steps 2-4)
                found, ended = self.hand_stage.track_hands(image, timings)
                frontend_tracks = [track for track, _ in found]
            self._end_tracks(ended)

        if self.uses_network and self.tracker.needs_detection() and (frontend_tracks is None
                                                                     or self.object_model is not None):
            start = time.perf_counter()
            self._end_tracks(self.tracker.update_from_detections(self.detect(image)))
            timings["detect"] = _ms(start)

        start = time.perf_counter()
        jobs = self._crop_jobs(width, frontend_tracks)
        if not jobs and not frontend_hands:
            state, frames = self.tracker.end_frame()
            self.frames_processed += 1
            return FrameResult(stamp, [], [], state, frames, timings)
        outputs: dict[str, np.ndarray] = {}
        inputs: dict[str, np.ndarray] = {}
        if jobs:
            assert self.crop_engine is not None  # _crop_jobs makes crops only with a network
            crops = [extract_crop(image, job.geometry) for job in jobs]
            inputs = {"crop": network_images(crops),
                      "hand_box": np.stack([j.geometry.hand_box for j in jobs]).astype(np.float32),
                      "object_box": np.stack([j.geometry.object_box for j in jobs]).astype(np.float32)}
            timings["crop"] = _ms(start)

            start = time.perf_counter()
            outputs = self.crop_engine.run(inputs)
            timings["network"] = _ms(start)
            bad = [name for name in CROP_OUTPUTS if not np.all(np.isfinite(outputs[name]))]
            if bad:
                self._end_tracks(self.tracker.lose_all("non-finite network outputs"))
                self.tracker.end_frame()
                return self._skip(stamp, "network_output", f"the network produced NaN or infinity in {bad}",
                                  timings)

        if frontend_hands is not None:  # step 0 placed them already
            hands = [h.hand for h in frontend_hands]
        else:
            start = time.perf_counter()
            hands = [self._hand_estimate(job, outputs, i, K, depth, depth_scale, (width, height))
                     for i, job in enumerate(jobs) if job.hand is not None]
            timings["translation"] = _ms(start)

        object_estimate = None
        if jobs:
            start = time.perf_counter()
            object_estimate = self._object_estimate(jobs, outputs, K)
            if object_estimate is not None and object_estimate.pnp.success and self.config.object_depth.from_box:
                object_estimate = self._object_depth(object_estimate, K, (width, height))
            timings["pnp"] = _ms(start)

        if self.refine_engines is not None and object_estimate is not None and object_estimate.pnp.success \
                and any(h.translation is not None for h in hands):
            start = time.perf_counter()
            object_estimate = self._refine(jobs, inputs, outputs, hands, object_estimate, K)
            timings["refine"] = _ms(start)

        measures: dict[str, GateMeasures] = {}
        hand_failures: dict[str, str] = {}
        for hand in hands:
            self._gate_hand(hand, K, (width, height), measures, hand_failures)
        if object_estimate is not None and object_estimate.pnp.success:
            object_estimate = self._gate_object(object_estimate, K, (width, height), measures)

        start = time.perf_counter()
        filtered = [(hand, self._filter_hand(hand, stamp)) for hand in hands]
        tracked_objects = [] if object_estimate is None else [self._filter_object(object_estimate, stamp)]
        self._follow(hands, object_estimate, K, width, height)
        timings["filter"] = _ms(start)

        start = time.perf_counter()
        tracked_hands = self._mesh_hands([(h, f) for h, f in filtered if f is not None and f.hand is not None])
        timings["hand_model"] = _ms(start)

        state, frames = self.tracker.end_frame()
        self.frames_processed += 1
        return FrameResult(stamp, tracked_hands, tracked_objects, state, frames, timings, hand_failures=hand_failures,
                           gate_measures=measures)

    def detect(self, image: np.ndarray) -> FrameDetections:
        """Run the detector on the letterboxed full frame and pick the best hands and object; the
        crop network says which side each hand is (``hand_side_from``)."""
        if self.detector_engine is None:
            raise ValueError("detect: this estimator has no network (hand_frontend mediapipe without model files)")
        frame, letterbox = letterbox_image(image, self.detector_size, self.detector_size)
        out = self.detector_engine.run({DETECTOR_INPUT: network_images([frame])})
        detections = select_detections(out["boxes"][0], out["scores"][0], out["classes"][0], letterbox,
                                       self.config.detection)
        if self.config.hand_side_from == "crop_network" and self.hand_stage is None:
            assert self.crop_engine is not None  # a detector comes with its crop network
            detections = with_voted_sides(detections, image, self.crop_engine.run, self.crop_size,
                                          self.box_expansion)
        return detections

    # -- stages

    def _skip(self, stamp: Any, kind: str, reason: str, timings: Mapping[str, float] | None = None) -> FrameResult:
        self.skipped[kind] += 1
        if self.skipped[kind] == 1:  # later ones of this kind are counted, not logged per frame
            log.warning("frame at %s skipped: %s (further '%s' skips are counted, not logged)", stamp, reason, kind)
        else:
            log.debug("frame at %s skipped: %s", stamp, reason)
        value = float(stamp) if isinstance(stamp, (int, float, np.number)) and not isinstance(stamp, bool) \
            else float("nan")
        return FrameResult(value, tracking_state="tracking" if self.tracker.tracks else "lost",
                           frames_since_detection=self.tracker.frames_since_detection,
                           timings_ms=dict(timings or {}), skipped=reason)

    def _crop_jobs(self, width: int, frontend_tracks: list[Track] | None) -> list[_CropJob]:
        """The network's crops: one per hand (the tracker's, or the front-end's boxes, which
        only the object needs then), else one around the object alone."""
        if not self.uses_network:
            return []
        obj = self.tracker.tracks.get("object")
        if frontend_tracks is not None and obj is None and self.config.mediapipe_hands_from == "landmarks":
            return []  # the front-end's hands are estimated already; no object to crop for
        hand_tracks = ({t.key: t for t in frontend_tracks} if frontend_tracks is not None
                       else self.tracker.tracks)
        jobs = []
        for side in self.config.hand_sides:
            hand = hand_tracks.get(side)
            if hand is None:
                continue
            object_box = obj.box if obj is not None else hand.box
            geometry = crop_geometry(hand.box, object_box, width, self.crop_size, side == "left",
                                     self.box_expansion)
            jobs.append(_CropJob(hand, obj, geometry))
        if not jobs and obj is not None:
            geometry = crop_geometry(obj.box, obj.box, width, self.crop_size, False, self.box_expansion)
            jobs.append(_CropJob(None, obj, geometry))
        return jobs

    def _hand_estimate(self, job: _CropJob, outputs: Mapping[str, np.ndarray], i: int, K: np.ndarray,
                       depth: np.ndarray | None, depth_scale: float, image_size: tuple[int, int]) -> HandEstimate:
        g = job.geometry
        assert job.hand is not None  # only crops made for a hand give hand estimates
        joints_crop = box_units_to_points(outputs["hand_joints2d"][i:i + 1].astype(np.float64), g.hand_box[None])[0]
        joints_rel = outputs["hand_joints3d"][i].astype(np.float64)
        vertices_rel = outputs["hand_vertices"][i].astype(np.float64)
        pose = outputs["hand_pose"][i].astype(np.float64)
        if g.mirrored:  # the network saw a right hand in the mirrored camera
            joints_rel, vertices_rel, pose = mirror_points_3d(joints_rel), mirror_points_3d(vertices_rel), \
                mirror_axis_angle(pose)
        joints2d = g.to_image(joints_crop)
        confidence = outputs["hand_joint_confidence"][i].astype(np.float64)
        # Only a detected box may place the hand: a followed box is the previous estimate enlarged by the
        # tracking margin, and fitting the mesh to it would move the hand toward the camera every frame.
        box = job.hand.box if job.hand.box_detected else None
        fit = locate_hand(joints2d, joints_rel, vertices_rel, box, K, confidence, depth=depth,
                          depth_scale=depth_scale, image_size=image_size, config=self.config.hand_translation)
        return HandEstimate(job.hand, job.hand.box.copy(), joints2d, joints_rel, vertices_rel, pose,
                             outputs["hand_betas"][i].astype(np.float64), confidence,
                             fit.translation if fit.success else None, fit.reason, crop_index=i)

    def _object_estimate(self, jobs: list[_CropJob], outputs: Mapping[str, np.ndarray],
                         K: np.ndarray) -> _ObjectEstimate | None:
        """PnP on the crop whose votes are most confident (with two hands, two crops see the object)."""
        if self.object_model is None or jobs[0].object is None:
            return None
        confidence = outputs["object_confidence"]
        flat = confidence.reshape(confidence.shape[0], confidence.shape[1], -1)
        k = min(self.config.pnp.votes_per_point, flat.shape[2])
        top = torch.topk(torch.from_numpy(np.ascontiguousarray(flat)), k, dim=2)  # k most confident votes
        scores = top.values.double().mean(dim=(1, 2)).numpy()
        i = int(np.argmax(scores))
        g = jobs[i].geometry
        # Select in box units, then map only the chosen votes to full-image pixels (the map is affine).
        votes_units, point_confidence = outputs["object_votes"][i], confidence[i]  # (21, 2, H, W), (21, H, W)
        top_cells = top.indices[i].numpy()
        if g.mirrored:  # back in the model's point order (geometry/mirror.py)
            order = mirrored_crop_point_order(self.object_model.control_points, self.object_model.mirror_axis)
            votes_units, point_confidence, top_cells = votes_units[order], point_confidence[order], top_cells[order]
        selected = select_votes(votes_units, point_confidence, self.config.pnp)
        origin, size = g.object_box[:2], g.object_box[2:] - g.object_box[:2]
        selected.points_2d = g.to_image(origin + selected.points_2d * size)
        voted = g.to_image(origin + _voted_points(votes_units, point_confidence, top_cells) * size)
        points_3d = self.object_model.control_points
        pnp = solve_pnp(points_3d[selected.point_ids], selected.points_2d, K, self.config.pnp,
                        point_ids=selected.point_ids)
        inlier_points = len(np.unique(selected.point_ids[pnp.inliers])) if pnp.success else 0
        return _ObjectEstimate(jobs[i].object, pnp, voted,  # type: ignore[arg-type]
                               inlier_points, float(scores[i]), crop_index=i)

    def _object_depth(self, estimate: _ObjectEstimate, K: np.ndarray,  # noqa: N803
                      image_size: tuple[int, int]) -> _ObjectEstimate:
        """Step 4: the object's depth from its box when the detector gave the box (the factor is kept
        for the track), else the factor the track's last detected box gave (none yet: PnP's depth).
        A tracked box was made from the previous pose, so it measures nothing new."""
        track = estimate.track
        if track.box_detected:
            assert self.object_model is not None  # an object estimate needs the object model
            found = box_depth_scale(self.object_model.vertices, estimate.pnp.rotation, estimate.pnp.translation,
                                    track.box, K, image_size, self.config.object_depth)
            if not found.success:
                log.debug("object depth from its box: %s; PnP's depth kept", found.reason)
                self._object_depth_scales.pop(track.track_id, None)
                return estimate
            self._object_depth_scales[track.track_id] = found.scale
        scale = self._object_depth_scales.get(track.track_id)
        if scale is None:
            return estimate
        return replace(estimate, pnp=replace(estimate.pnp, translation=estimate.pnp.translation * scale),
                       depth_scale=scale)

    def _refine(self, jobs: list[_CropJob], inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray],
                hands: list[HandEstimate], estimate: _ObjectEstimate, K: np.ndarray) -> _ObjectEstimate:  # noqa: N803
        """Refine every solved hand with the object (module docstring, step 4b); updates ``hands`` in place
        and returns the object estimate, refined when its crop was refined."""
        refined_object = None
        for name, mirrored in (("refine", False), ("refine_mirrored", True)):
            group = [h for h in hands if h.translation is not None and jobs[h.crop_index].geometry.mirrored == mirrored]
            if not group:
                continue
            engine = self.refine_engines[name]  # type: ignore[index]
            rows = [h.crop_index for h in group]
            rotation, translation = estimate.pnp.rotation, estimate.pnp.translation
            translations = np.stack([h.translation for h in group if h.translation is not None])
            if mirrored:
                rotation, translation = mirror_pose(rotation, translation)
                translations = translations @ MIRROR_X
            feed = {
                "camera_matrix": np.stack([crop_camera_matrix(jobs[i].geometry.image_to_crop, K, mirrored)
                                           for i in rows]).astype(np.float32),
                # The network's (mirrored, for mirrored crops) root-relative mesh + the wrist in that frame.
                "coarse_hand_vertices": (outputs["hand_vertices"][rows] + translations[:, None]).astype(np.float32),
                "coarse_object_rotation": np.repeat(rotation[None], len(rows), 0).astype(np.float32),
                "coarse_object_translation": np.repeat(translation[None], len(rows), 0).astype(np.float32),
                "global_feature": outputs[REFINEMENT_GLOBAL_OUTPUT][rows],
            }
            if "crop" in engine.input_names:
                feed["crop"] = inputs["crop"][rows]
            if "p2" in engine.input_names:
                feed["p2"] = outputs[REFINEMENT_P2_OUTPUT][rows]
            out = engine.run(feed)
            for k, hand in enumerate(group):
                values = {n: out[n][k].astype(np.float64) for n in REFINED_OUTPUT_NAMES}
                if not all(np.all(np.isfinite(v)) for v in values.values()):
                    log.warning("refinement produced NaN or infinity for the %s hand; keeping the coarse estimate",
                                hand.track.key)
                    continue
                vertices, joints = values["refined_hand_vertices"], values["refined_hand_joints"]
                object_pose = values["refined_object_rotation"], values["refined_object_translation"]
                if mirrored:
                    vertices, joints = vertices @ MIRROR_X, joints @ MIRROR_X
                    object_pose = mirror_pose(*object_pose)
                root = joints[0]
                hand.vertex_offsets = vertices - root - hand.vertices_rel
                hand.vertices_rel, hand.joints_rel, hand.translation = vertices - root, joints - root, root
                if hand.crop_index == estimate.crop_index:
                    refined_object = object_pose
        if refined_object is None:
            return estimate
        return replace(estimate, pnp=replace(estimate.pnp, rotation=refined_object[0],
                                             translation=refined_object[1]))

    def _gate_hand(self, hand: HandEstimate, K: np.ndarray, image_size: tuple[int, int],  # noqa: N803
                   measures: dict[str, GateMeasures], failures: dict[str, str]) -> None:
        """Step 4c: a hand whose posed mesh contradicts its box or 2D joints is not published (gates.py).
        The measures are recorded even with the gates off (for choosing thresholds)."""
        if hand.translation is None:
            return
        key = hand.track.key
        measures[key] = hand_measures(hand.vertices_rel + hand.translation, hand.joints_rel + hand.translation,
                                      hand.track.box, hand.joints2d, hand.joint_confidence, K,
                                      box_detected=hand.track.box_detected, margin=self.config.tracking.box_margin,
                                      image_size=image_size)
        problem = gate_problem(measures[key], self.config.gates.hand) if self.config.gates.enabled else None
        if problem is not None:
            hand.translation, hand.failure = None, problem
            failures[key] = problem

    def _gate_object(self, estimate: _ObjectEstimate, K: np.ndarray, image_size: tuple[int, int],  # noqa: N803
                     measures: dict[str, GateMeasures]) -> _ObjectEstimate:
        """Step 4c: an object pose that contradicts its box or its votes becomes a reported failure."""
        model = self.object_model
        measures["object"] = object_measures(model.vertices, model.control_points, estimate.pnp.rotation,  # type: ignore[union-attr]
                                             estimate.pnp.translation, estimate.track.box,
                                             estimate.control_points_2d, K, box_detected=estimate.track.box_detected,
                                             margin=self.config.tracking.box_margin, image_size=image_size,
                                             depth_scale=estimate.depth_scale)
        problem = gate_problem(measures["object"], self.config.gates.object) if self.config.gates.enabled else None
        if problem is None:
            return estimate
        return replace(estimate, pnp=PnPResult.failure(problem, estimate.pnp.num_correspondences), rejection=problem)

    def _filter_hand(self, hand: HandEstimate, stamp: float) -> FilteredHand | None:
        if hand.translation is None:
            return None
        track_filter = self._hand_filters.setdefault(hand.track.track_id,
                                                     HandTrackFilter(self.filter_config.hand))
        frame = HandFrame(stamp=stamp, joints_2d=hand.joints2d, joints_3d=hand.joints_rel,
                          translation=hand.translation, mano_pose=hand.pose, betas=hand.betas,
                          confidence=float(hand.joint_confidence.mean()))
        return track_filter.update(frame)

    def _filter_object(self, estimate: _ObjectEstimate, stamp: float) -> TrackedObject:
        name = self.object_model.name  # type: ignore[union-attr]
        track = estimate.track

        box = track.box.copy()

        def result(rotation, translation, success: bool, reason: str = "") -> ObjectResult:
            return ObjectResult(name=name, rotation=rotation, translation=translation,
                                control_points_2d=estimate.control_points_2d, box=box,
                                pnp_inliers=estimate.inlier_points, confidence=estimate.confidence,
                                success=success, failure_reason=reason)

        if not estimate.pnp.success:
            return TrackedObject(result(np.full((3, 3), np.nan), np.full(3, np.nan), False,
                                        estimate.rejection or f"PnP: {estimate.pnp.reason}"), track.track_id, None)
        track_filter = self._object_filters.setdefault(track.track_id, ObjectTrackFilter(self.filter_config.object))
        filtered = track_filter.update(ObjectFrame(stamp, estimate.pnp.rotation, estimate.pnp.translation,
                                                   estimate.confidence))
        if filtered.pose is None:
            reasons = ", ".join(r.value for r in filtered.state.reasons)
            return TrackedObject(result(np.full((3, 3), np.nan), np.full(3, np.nan), False,
                                        f"temporal filter rejected the pose ({reasons})"), track.track_id,
                                 filtered.state)
        return TrackedObject(result(filtered.pose.rotation, filtered.pose.translation, True), track.track_id,
                             filtered.state)

    def _follow(self, hands: list[HandEstimate], estimate: _ObjectEstimate | None, K: np.ndarray, width: int,
                height: int) -> None:
        """Carry each track's box to the next frame from this frame's (unfiltered) estimates."""
        for hand in hands if self.hand_stage is None else []:  # the front-end follows its hands itself
            key = hand.track.key
            if hand.translation is None:
                self._end_tracks([self.tracker.lose(key, f"hand translation: {hand.failure}")])
                continue
            points = np.concatenate([hand.joints2d, project(hand.vertices_rel + hand.translation, K)])
            if not self.tracker.follow(key, points, float(hand.joint_confidence.mean()), width, height):
                self._end_tracks([hand.track.track_id])
        if estimate is not None:
            if not estimate.pnp.success:
                # No pose (PnP failed or a gate refused it): the box stays as it is, still the
                # detected silhouette box the gates check the next poses against, until the
                # detector runs again on schedule; only votes nobody trusts end the track.
                if not self.tracker.hold("object", estimate.confidence):
                    self._end_tracks([estimate.track.track_id])
                return
            assert self.object_model is not None  # an object estimate needs the object model
            # The silhouette's box, as the detector boxes an object (and the crop network was trained).
            posed = self.object_model.vertices @ estimate.pnp.rotation.T + estimate.pnp.translation
            if not self.tracker.follow("object", project(posed, K), estimate.confidence, width, height):
                self._end_tracks([estimate.track.track_id])

    def _mesh_hands(self, filtered: list[tuple[HandEstimate, FilteredHand]]) -> list[TrackedHand]:
        """Re-pose the mesh from each filtered hand's pose and shape (MANO layer, right-hand model;
        left hands through the mirror, as the network does)."""
        if not filtered:
            return []
        poses, betas = [], []
        for hand, result in filtered:
            assert result.hand is not None  # the caller passes only the hands the filter kept
            pose = result.hand.mano_pose
            poses.append(mirror_axis_angle(pose) if hand.track.key == "left" else pose)
            betas.append(result.hand.betas)
        vertices_all, joints_all = self.hand_poser(np.stack(poses), np.stack(betas))
        vertices_all = vertices_all - joints_all[:, :1]
        tracked = []
        for (hand, result), vertices in zip(filtered, vertices_all):
            smoothed = result.hand
            assert smoothed is not None
            if hand.track.key == "left":
                vertices = mirror_points_3d(vertices)
            if hand.vertex_offsets is not None:
                vertices = vertices + hand.vertex_offsets
            hand_result = HandResult(
                side=hand.track.key, pose=smoothed.mano_pose, betas=smoothed.betas,  # type: ignore[arg-type]
                joints_cam=smoothed.joints_3d + smoothed.translation, vertices_cam=vertices + smoothed.translation,
                joints2d=smoothed.joints_2d, box=hand.box,
                joint_confidence=np.clip(hand.joint_confidence, 0.0, 1.0), confidence=smoothed.confidence)
            tracked.append(TrackedHand(hand_result, hand.track.track_id, result.state))
        return tracked

    def _end_tracks(self, track_ids: Sequence[int | None]) -> None:
        for track_id in track_ids:
            if track_id is None:
                continue
            self._hand_filters.pop(track_id, None)
            self._object_filters.pop(track_id, None)
            self._object_depth_scales.pop(track_id, None)


def _voted_points(votes: np.ndarray, confidence: np.ndarray, top: np.ndarray) -> np.ndarray:
    """Each control point's position (21, 2): the confidence-weighted mean of its most confident
    votes, ``top`` (21, k) their cell indices."""
    n = votes.shape[0]
    xy = votes.reshape(n, 2, -1)
    conf = confidence.reshape(n, -1)
    weights = np.take_along_axis(conf, top, axis=1).astype(np.float64)
    weights = np.where(weights.sum(1, keepdims=True) > 0, weights, 1.0)
    points = np.take_along_axis(xy, top[:, None, :], axis=2).astype(np.float64)  # (21, 2, k)
    return (points * weights[:, None, :]).sum(-1) / weights.sum(-1)[:, None]
