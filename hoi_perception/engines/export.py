"""ONNX export of the network's two graphs, with metadata a runtime can check.

:func:`export_onnx` is generic: any module whose outputs :func:`flatten_outputs`
understands, inputs named by the keys of ``example_inputs``, a dynamic batch axis, and
an atomic write (a temporary file is exported, checked with ``onnx.checker`` and only
then renamed into place), so a failed or interrupted export never leaves a file that
looks finished. :func:`export_main` is the ``hoi-perception export`` command: a training
checkpoint in, the crop network and the detector out as ONNX files (and, for
``tensorrt``, their cached TensorRT plans beside them). A ``refine: dma`` model given an
object also gets its two refine graphs, ``refine`` and ``refine_mirrored``
(:func:`refinement_graphs`; the object's name is stored in their metadata).

Export uses PyTorch's TorchScript-based exporter (``dynamo=False``): the network's input
checks are written for the tracer (``torch.jit.is_tracing()``), and the tracer's
expected warnings about those checks are silenced. Every export by :func:`export_main`
is verified against PyTorch at a batch size other than the traced one, which catches
a batch size baked into the graph.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from hoi_perception.atomic import atomic_write_bytes
from hoi_perception.engines.base import BATCH_AXIS, file_sha256, flatten_outputs
from hoi_perception.geometry.crop import checkpoint_box_expansion
from hoi_perception.models.checkpoint import code_version, load_network_checkpoint, read_training_checkpoint
from hoi_perception.objects.models import ObjectModel, load_object_model

if TYPE_CHECKING:
    from hoi_perception.models.dma.graph import MeshGraph
    from hoi_perception.models.network import HOINet

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
METADATA_PREFIX = "hoi_perception."
GraphName = Literal["crop", "detector", "refine", "refine_mirrored"]
REFINE_GRAPHS: tuple[str, ...] = ("refine", "refine_mirrored")
# Metadata key of the refine graphs: the object whose graph they hold.
OBJECT_NAME_KEY = METADATA_PREFIX + "object_name"
OPTIONAL_FIELDS = ("crop_box_expansion",)  # ModelMetadata fields older exports lack


class FlatOutputModule(nn.Module):
    """``module(**inputs)`` with positional inputs and its outputs flattened to a tuple.

    The exporter passes inputs positionally and needs a tuple of tensors back; this
    wrapper restores the names and applies :func:`flatten_outputs`, so the ONNX output
    order is the flattened order.
    """

    def __init__(self, module: nn.Module, input_names: tuple[str, ...]) -> None:
        super().__init__()
        self.module = module
        self.input_names = input_names

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(flatten_outputs(self.module(**dict(zip(self.input_names, args)))).values())


class MethodModule(nn.Module):
    """A module whose ``forward`` is another method of ``module`` (e.g. ``HOINet.detect_top_k``),
    so a second entry point of one network can be exported or run as its own graph."""

    def __init__(self, module: nn.Module, method: str) -> None:
        super().__init__()
        if not callable(getattr(module, method, None)):
            raise ValueError(f"MethodModule: {type(module).__name__} has no method '{method}'")
        self.module = module
        self.method = method

    def forward(self, **inputs: torch.Tensor) -> Any:
        return getattr(self.module, self.method)(**inputs)


def _check_output_path(output_path: str | Path) -> Path:
    path = Path(output_path).expanduser()
    if path.suffix != ".onnx":
        raise ValueError(f"export_onnx output_path '{path}': expected a file name ending in .onnx")
    if path.is_dir():
        raise IsADirectoryError(f"export_onnx output_path '{path}' is a directory; give a .onnx file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"export_onnx output_path '{path}': '{parent}' is a file, not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise PermissionError(f"export_onnx output_path '{path}': directory '{parent}' is not writable")
            break
    return path


def export_onnx(module: nn.Module, example_inputs: Mapping[str, torch.Tensor], output_path: str | Path,
                opset: int = DEFAULT_OPSET, dynamic_batch: bool = True,
                metadata: Mapping[str, str] | None = None) -> Path:
    """Export ``module(**example_inputs)`` to ``output_path`` (.onnx), atomically.

    Input names are the keys of ``example_inputs``; output names and order are those of
    :func:`flatten_outputs` on the module's output. With ``dynamic_batch`` the first
    axis of every input and output is the symbolic ``batch``. ``metadata`` is stored as
    the model's metadata properties (strings), e.g. :meth:`ModelMetadata.to_props`.
    """
    path = _check_output_path(output_path)
    if not example_inputs:
        raise ValueError("export_onnx: example_inputs must name at least one input tensor")
    for name, tensor in example_inputs.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"export_onnx: example input '{name}' must be a torch.Tensor, got {type(tensor).__name__}")
        if dynamic_batch and tensor.dim() == 0:
            raise ValueError(f"export_onnx: example input '{name}' is a scalar; a dynamic batch needs a first axis")
    props = dict(metadata or {})
    for key, value in props.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"export_onnx metadata: keys and values must be strings, got {key!r}: {value!r}")
    module = module.eval()
    input_names = tuple(example_inputs)
    with torch.inference_mode():
        output_names = tuple(flatten_outputs(module(**example_inputs)))
    if not output_names:
        raise ValueError(f"export_onnx: {type(module).__name__} returned no tensors")
    overlap = sorted(set(input_names) & set(output_names))
    if overlap:
        raise ValueError(f"export_onnx: names {overlap} are both inputs and outputs; ONNX needs distinct names")
    dynamic_axes = {name: {0: BATCH_AXIS} for name in (*input_names, *output_names)} if dynamic_batch else None

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, raw_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".export.tmp", dir=path.parent)
    os.close(fd)
    raw = Path(raw_name)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", message=r"Constant folding - Only steps=1")
            # The wrapper must be in eval mode too: the exporter restores the mode it found on
            # the module it is given, recursively, which would put ``module`` back in training.
            torch.onnx.export(FlatOutputModule(module, input_names).eval(), tuple(example_inputs.values()), str(raw),
                              dynamo=False, opset_version=opset, input_names=list(input_names),
                              output_names=list(output_names), dynamic_axes=dynamic_axes, do_constant_folding=True)
        _finish_onnx(raw, path, props)
    finally:
        raw.unlink(missing_ok=True)
    return path


def _finish_onnx(raw: Path, path: Path, props: dict[str, str]) -> None:
    """Add metadata to the raw export, check it, and rename it into place."""
    import onnx

    model = onnx.load(str(raw))
    existing = {p.key for p in model.metadata_props}
    for key, value in props.items():
        if key in existing:
            raise ValueError(f"export_onnx metadata: key '{key}' is already set by the exporter")
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ValueError(f"export_onnx: the exported graph for '{path}' is not valid ONNX: {exc}") from exc
    atomic_write_bytes(path, model.SerializeToString())


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The metadata properties of an ONNX file (without loading external weight files)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


# ----------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class ModelMetadata:
    """What an exported graph is: which network graph, architecture, input size, weights and code.

    Stored in the ONNX file's metadata properties under ``hoi_perception.*`` so that a
    runtime given the wrong file (another architecture, input size or graph) refuses it
    at start instead of producing nonsense.
    """

    graph: GraphName
    model_name: str
    input_size: int
    checkpoint_sha256: str
    code_version: str
    # The crop enlargement the model was trained with (None: the checkpoint predates the record).
    crop_box_expansion: float | None = None

    def to_props(self) -> dict[str, str]:
        return {METADATA_PREFIX + f.name: str(getattr(self, f.name)) for f in fields(self)
                if getattr(self, f.name) is not None}

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str) -> ModelMetadata:
        """Parse :meth:`to_props` output; ``source`` (a file name) is named in errors."""
        missing = [f.name for f in fields(cls)
                   if METADATA_PREFIX + f.name not in props and f.name not in OPTIONAL_FIELDS]
        if missing:
            raise ValueError(f"{source}: not exported by hoi-perception export (metadata lacks "
                             f"{[METADATA_PREFIX + m for m in missing]})")
        values: dict[str, Any] = {f.name: props[METADATA_PREFIX + f.name] for f in fields(cls)
                                  if METADATA_PREFIX + f.name in props}
        try:
            values["input_size"] = int(values["input_size"])
            if "crop_box_expansion" in values:
                values["crop_box_expansion"] = float(values["crop_box_expansion"])
        except ValueError:
            raise ValueError(f"{source}: metadata input_size {values['input_size']!r} or crop_box_expansion "
                             f"{values.get('crop_box_expansion')!r} is not a number") from None
        return cls(**values)

    def check(self, source: str, graph: str | None = None, model_name: str | None = None,
              input_size: int | None = None) -> None:
        """Raise ValueError naming every expected value this metadata does not match."""
        expected = {"graph": graph, "model_name": model_name, "input_size": input_size}
        wrong = [f"{key} is {getattr(self, key)!r}, expected {value!r}"
                 for key, value in expected.items() if value is not None and getattr(self, key) != value]
        if wrong:
            raise ValueError(f"{source}: wrong model file: " + "; ".join(wrong))


# ----------------------------------------------------------------------------- verification


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected| (0 when both are all zeros)."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        raise ValueError(f"relative_error: shapes differ, {a.shape} vs {e.shape}")
    diff = float(np.max(np.abs(a - e))) if a.size else 0.0
    scale = float(np.max(np.abs(e))) if e.size else 0.0
    if diff == 0.0:
        return 0.0
    return diff / scale if scale > 0 else float("inf")


def compare_engines(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Relative error of every ``candidate`` output against ``reference`` (same names required)."""
    if tuple(reference) != tuple(candidate):
        raise ValueError(f"output names differ: {list(reference)} vs {list(candidate)}")
    return {name: relative_error(candidate[name], reference[name]) for name in reference}


@dataclass(frozen=True)
class RankedOutputs:
    """Top-k outputs: ``score`` (B, k) sorted descending, and ``ranked`` outputs (B, k, ...) in the same order.

    Where scores are (nearly) tied, two correct runtimes may order the tied entries
    differently, so the ranked outputs are compared only at entries whose score is
    clear of both neighbours by ``margin`` times the largest score. The last entry is
    never compared: the (k+1)-th candidate it competes with is not in the output.
    """

    score: str
    ranked: tuple[str, ...]
    margin: float = 1e-3


def compare_ranked(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
                   spec: RankedOutputs) -> dict[str, float]:
    """Relative errors like :func:`compare_engines`, with ``spec.ranked`` outputs compared at unambiguous ranks only."""
    errors = compare_engines({k: v for k, v in reference.items() if k not in spec.ranked},
                             {k: v for k, v in candidate.items() if k not in spec.ranked})
    scores = np.asarray(reference[spec.score], dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"compare_ranked: '{spec.score}' must be (B, k), got shape {scores.shape}")
    gap = spec.margin * max(float(np.max(np.abs(scores))), np.finfo(np.float64).tiny)
    padded = np.pad(scores, ((0, 0), (1, 1)), constant_values=np.inf)
    clear = (np.abs(padded[:, 1:-1] - padded[:, :-2]) > gap) & (np.abs(padded[:, 1:-1] - padded[:, 2:]) > gap)
    clear[:, -1] = False
    for name in spec.ranked:
        if not clear.any():
            errors[name] = 0.0
            continue
        errors[name] = relative_error(candidate[name][clear], reference[name][clear])
    return errors


def verify_onnx(module: nn.Module, example_inputs: Mapping[str, torch.Tensor], onnx_path: str | Path,
                tolerance: float = 1e-4, ranked: RankedOutputs | None = None) -> dict[str, float]:
    """Run ``onnx_path`` in ONNX Runtime and ``module`` in PyTorch on the example inputs
    grown by one batch item (so a batch size baked in at export shows); raise if any
    output's relative error exceeds ``tolerance``. Top-k outputs named in ``ranked`` are
    compared as :func:`compare_ranked` does. Returns the errors."""
    from hoi_perception.engines.onnx_engine import OnnxRuntimeEngine
    from hoi_perception.engines.torch_engine import TorchEngine

    grown = {name: torch.cat((t, t[:1])).detach().cpu() for name, t in example_inputs.items()}
    arrays = {name: t.numpy() for name, t in grown.items()}
    reference = TorchEngine(module, example_inputs).run(arrays)
    candidate = OnnxRuntimeEngine(onnx_path).run(arrays)
    errors = compare_engines(reference, candidate) if ranked is None else compare_ranked(reference, candidate, ranked)
    bad = {name: err for name, err in errors.items() if not err <= tolerance}
    if bad:
        raise ValueError(f"{onnx_path}: ONNX Runtime differs from PyTorch beyond relative error {tolerance}: {bad}")
    return errors


# ----------------------------------------------------------------------------- the network's graphs


@dataclass
class ExportGraph:
    """One exportable graph: a module called with keyword inputs, example inputs, and its top-k outputs if any."""

    name: GraphName
    module: nn.Module
    example_inputs: dict[str, torch.Tensor]
    ranked: RankedOutputs | None = None


def network_graphs(network: HOINet, batch: int = 2) -> dict[str, ExportGraph]:
    """The crop network (``HOINet.forward``) and the detector (``HOINet.detect_top_k``) of a HOINet.

    Example inputs are a random crop/frame in [0, 1] and overlapping hand and object
    boxes inside the crop; ``batch`` > 1 keeps the tracer from treating the batch as a
    constant 1.
    """
    size = network.config.input_size
    generator = torch.Generator().manual_seed(0)
    crop = torch.rand(batch, 3, size, size, generator=generator)
    hand_box = torch.tensor([[0.10, 0.15, 0.60, 0.70]] * batch) * size
    object_box = torch.tensor([[0.35, 0.30, 0.90, 0.85]] * batch) * size
    detector_size = network.config.detector_input_size
    frame = torch.rand(batch, 3, detector_size, detector_size, generator=generator)
    return {
        "crop": ExportGraph("crop", network, {"crop": crop, "hand_box": hand_box, "object_box": object_box}),
        "detector": ExportGraph("detector", MethodModule(network, "detect_top_k"), {"frame": frame},
                                ranked=RankedOutputs(score="scores", ranked=("boxes", "classes"))),
    }


def refinement_graphs(network: HOINet, object_model: ObjectModel, batch: int = 2) -> dict[str, ExportGraph]:
    """The refine graphs of a ``refine: dma`` HOINet for one object (an ``ObjectModel``):
    ``refine`` for crops of the camera image and ``refine_mirrored`` for mirrored crops
    (left hands), each a copy of the refiner on that object's graph
    (:mod:`hoi_perception.models.refinement`)."""
    from hoi_perception.models.refinement import (
        ObjectGraphCache,
        RefinementGraph,
        refinement_example_inputs,
        refiner_for_graph,
    )

    if network.refiner is None:
        raise ValueError(f"model '{network.config.name}' has no refinement stage (refine: none)")
    graphs = ObjectGraphCache(network.config.dma.object_nodes).get(object_model)
    out: dict[str, ExportGraph] = {}
    named: tuple[tuple[GraphName, MeshGraph], ...] = (("refine", graphs.graph), ("refine_mirrored", graphs.mirrored))
    for name, graph in named:
        refiner = refiner_for_graph(network.refiner, graph).eval()
        out[name] = ExportGraph(name, RefinementGraph(refiner), refinement_example_inputs(network, refiner, batch))
    return out


def export_main(checkpoint: str | Path, fmt: Literal["onnx", "tensorrt"], out: str | Path, *,
                device: str = "cuda", precision: Literal["fp32", "fp16"] = "fp32", max_batch: int = 4,
                opset: int = DEFAULT_OPSET, object_name: str | None = None,
                objects: str | Path | None = None) -> dict[str, Path]:
    """``hoi-perception export``: write ``<model>_crop.onnx`` and ``<model>_detector.onnx`` into
    the directory ``out``; for ``tensorrt`` also build their plans into ``out`` (the plan
    cache, keyed as in :mod:`hoi_perception.engines.tensorrt_engine`, so a runtime with
    ``cache_dir: out`` on the same GPU and TensorRT loads them without building).

    A ``refine: dma`` model also needs ``object_name`` (from the object library
    ``objects``, default the shipped one): its refine graphs are written as
    ``<model>_refine.onnx`` and ``<model>_refine_mirrored.onnx``.

    ``device``, ``precision`` and ``max_batch`` apply to ``tensorrt`` only. Returns the
    written files by ``<graph>`` (ONNX) and ``<graph>_plan`` (TensorRT).
    """
    if fmt not in ("onnx", "tensorrt"):
        raise ValueError(f"export format must be 'onnx' or 'tensorrt', got {fmt!r}")
    out_dir = Path(out).expanduser()
    if out_dir.suffix == ".onnx" or out_dir.is_file():
        raise ValueError(f"export --out '{out_dir}': expected a directory (two graphs are written into it)")
    if fmt == "tensorrt":
        from hoi_perception.engines.tensorrt_engine import import_tensorrt

        import_tensorrt(device)  # fail before the export work when TensorRT cannot run here
    network = load_network_checkpoint(checkpoint)
    config = network.config
    graphs = network_graphs(network)
    extra_props: dict[str, str] = {}
    if network.refiner is not None:
        if object_name is None:
            raise ValueError(f"model '{config.name}' has a refinement stage (refine: dma), whose graphs hold an "
                             "object's graph: name the object (object_name, from the object library objects)")
        graphs.update(refinement_graphs(network, load_object_model(object_name, objects)))
        extra_props[OBJECT_NAME_KEY] = object_name
    elif object_name is not None:
        raise ValueError(f"object_name '{object_name}' given, but model '{config.name}' has no refinement stage "
                         "(refine: none); its graphs do not depend on the object")
    checkpoint_hash = file_sha256(checkpoint)
    version = code_version()
    box_expansion = checkpoint_box_expansion(read_training_checkpoint(checkpoint))
    written: dict[str, Path] = {}
    for name, graph in graphs.items():
        metadata = ModelMetadata(graph=graph.name, model_name=config.name, input_size=config.input_size,
                                 checkpoint_sha256=checkpoint_hash, code_version=version,
                                 crop_box_expansion=box_expansion)
        props = metadata.to_props()
        if name in REFINE_GRAPHS:
            props.update(extra_props)
        path = export_onnx(graph.module, graph.example_inputs, out_dir / f"{config.name}_{name}.onnx", opset=opset,
                           metadata=props)
        errors = verify_onnx(graph.module, graph.example_inputs, path, ranked=graph.ranked)
        log.info("wrote %s (ONNX Runtime vs PyTorch: max relative error %.1e)", path, max(errors.values()))
        written[name] = path
        if fmt == "tensorrt":
            from hoi_perception.engines.tensorrt_engine import TensorRTEngine

            engine = TensorRTEngine(path, device=device, precision=precision, cache_dir=out_dir, max_batch=max_batch)
            written[f"{name}_plan"] = engine.plan_path
            log.info("wrote %s (%s, TensorRT for %s)", engine.plan_path, engine.precision, engine.cache_key.gpu_name)
    return written
