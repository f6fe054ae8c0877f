"""TensorRT engine built from the exported ONNX file and cached on disk.

Building a TensorRT plan takes minutes, and a plan runs only on the TensorRT version
and GPU it was built for. Plans are therefore cached under a key made of everything
that determines them: the ONNX file's SHA-256, the TensorRT version, the GPU's name
and compute capability, the precision and the batch profile (:class:`EngineCacheKey`).
When any of these changes the key changes, and the plan is rebuilt automatically
instead of failing on a stale file (the failure mode of caches keyed by file name).
Plans are written atomically, so a build killed half-way leaves no plan behind.

Inference binds PyTorch CUDA tensors to the engine's I/O tensors by address
(``set_tensor_address`` + ``execute_async_v3`` on a PyTorch stream), so only ``torch``
and ``tensorrt`` are needed; no pycuda or cuda-python.

Precision: ``fp32`` builds with TF32 disabled, so results match PyTorch fp32 closely;
``fp16`` lets TensorRT choose FP16 kernels (``BuilderFlag.FP16``, TensorRT 10.x). TensorRT
11 removed that flag (networks must be strongly typed), so ``fp16`` there fails with
an explanation; ``fp32`` works on both.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from hoi_perception.atomic import atomic_write_bytes, atomic_write_json
from hoi_perception.engines.base import (
    BATCH_AXIS,
    EngineUnavailableError,
    InferenceEngine,
    TensorSpec,
    available_engines,
    cuda_device_index,
    file_sha256,
)

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Batch size TensorRT tunes kernels for: one crop (or one frame) per call is the common case.
OPTIMISATION_BATCH = 1


@dataclass(frozen=True)
class EngineCacheKey:
    """Everything a serialised TensorRT plan depends on; its :attr:`digest` names the plan file."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    precision: str
    max_batch: int

    def __post_init__(self) -> None:
        if not _SHA256.match(self.onnx_sha256):
            raise ValueError(f"EngineCacheKey.onnx_sha256: expected 64 lowercase hex digits, got {self.onnx_sha256!r}")
        if not self.tensorrt_version or not self.gpu_name:
            raise ValueError("EngineCacheKey: tensorrt_version and gpu_name must be non-empty")
        cc = self.compute_capability
        if len(cc) != 2 or not all(isinstance(v, int) and v >= 0 for v in cc):
            raise ValueError(f"EngineCacheKey.compute_capability: expected (major, minor), got {cc!r}")
        if self.precision not in ("fp32", "fp16"):
            raise ValueError(f"EngineCacheKey.precision: expected fp32 or fp16, got {self.precision!r}")
        if self.max_batch < 1:
            raise ValueError(f"EngineCacheKey.max_batch: expected >= 1, got {self.max_batch}")

    @property
    def digest(self) -> str:
        """16 hex digits of the SHA-256 of the key's canonical JSON."""
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]

    def plan_path(self, cache_dir: str | Path, model_stem: str) -> Path:
        """``<cache_dir>/<model_stem>.<precision>.<digest>.plan``: readable, and unique per key."""
        return Path(cache_dir) / f"{model_stem}.{self.precision}.{self.digest}.plan"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/hoi_perception/tensorrt`` (``~/.cache/...`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hoi_perception" / "tensorrt"


def import_tensorrt(device: str = "cuda"):
    """The tensorrt module, after checking that it and a CUDA GPU are present; else a clear error."""
    missing = []
    try:
        import tensorrt
    except ImportError:
        tensorrt = None
        missing.append("the 'tensorrt' Python package (pip install 'hoi_perception[tensorrt]')")
    if not torch.cuda.is_available():
        missing.append(f"a CUDA GPU visible to PyTorch (torch {torch.__version__} sees none)")
    elif device.startswith("cuda") and cuda_device_index(device) >= torch.cuda.device_count():
        missing.append(f"GPU {device} (PyTorch sees {torch.cuda.device_count()})")
    if missing:
        raise EngineUnavailableError(f"tensorrt engine needs {' and '.join(missing)}; available here: "
                                     f"{', '.join(available_engines())}")
    return tensorrt


_LOGGER = None


def _trt_logger(trt):
    """One TensorRT logger per process (TensorRT expects a single logger instance)."""
    global _LOGGER
    if _LOGGER is None:
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
             "INT64": torch.int64, "INT8": torch.int8, "UINT8": torch.uint8, "BOOL": torch.bool}
    for name, torch_dtype in table.items():
        if hasattr(trt.DataType, name) and dtype == getattr(trt.DataType, name):
            return torch_dtype
    raise ValueError(f"tensorrt engine: tensor type {dtype} is not supported by this package")


def build_plan(trt, onnx_path: Path, precision: str, max_batch: int) -> bytes:
    """Parse ``onnx_path`` and build a serialised plan with a 1..max_batch profile on every dynamic batch axis."""
    logger = _trt_logger(trt)
    builder = trt.Builder(logger)
    # Explicit batch is the only mode from TensorRT 10 on; older versions need the flag.
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"tensorrt engine: cannot parse '{onnx_path}': {errors}")
    config = builder.create_builder_config()
    if precision == "fp16":
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise EngineUnavailableError(
                f"tensorrt engine: precision fp16 needs TensorRT 10.x (BuilderFlag.FP16); TensorRT {trt.__version__} "
                "only builds strongly typed networks, which would need an ONNX file converted to mixed precision. "
                "Use precision fp32, or TensorRT 10.x for fp16")
        config.set_flag(trt.BuilderFlag.FP16)
    elif hasattr(trt.BuilderFlag, "TF32"):
        # fp32 means fp32: TF32 matrix maths (on by default on Ampere and newer) costs ~1e-3 relative error.
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        shape = tuple(tensor.shape)
        if any(d < 0 for d in shape[1:]):
            raise ValueError(f"tensorrt engine: input '{tensor.name}' of '{onnx_path}' has dynamic axes other than "
                             f"the batch: {shape}")
        if shape and shape[0] < 0:
            rest = shape[1:]
            profile.set_shape(tensor.name, (1, *rest), (min(OPTIMISATION_BATCH, max_batch), *rest),
                              (max_batch, *rest))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"tensorrt engine: building '{onnx_path}' ({precision}) failed; see TensorRT's log above")
    return bytes(serialized)


class TensorRTEngine(InferenceEngine):
    """An ONNX file as a TensorRT plan, built once per cache key and loaded from the cache afterwards.

    Attributes beyond :class:`InferenceEngine`: ``plan_path`` (the cached plan),
    ``cache_key`` and ``loaded_from_cache`` (False when this construction built the plan).
    """

    def __init__(self, onnx_path: str | Path, device: str = "cuda", precision: str = "fp32",
                 cache_dir: str | Path | None = None, max_batch: int = 4) -> None:
        if not device.startswith("cuda"):
            raise ValueError(f"tensorrt engine: device must be 'cuda' or 'cuda:N', got {device!r}")
        trt = import_tensorrt(device)
        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise FileNotFoundError(f"tensorrt engine: model file '{onnx_path}' does not exist")
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"tensorrt engine: precision must be fp32 or fp16, got {precision!r}")
        if max_batch < 1:
            raise ValueError(f"tensorrt engine: max_batch must be >= 1, got {max_batch}")
        self._trt = trt
        self._torch_device = torch.device(device if ":" in device else "cuda:0")
        index = self._torch_device.index
        if precision == "fp16" and hasattr(trt.Builder, "platform_has_fast_fp16"):
            with torch.cuda.device(self._torch_device):
                fast_fp16 = trt.Builder(_trt_logger(trt)).platform_has_fast_fp16
            if not fast_fp16:
                log.warning("tensorrt engine: %s has no fast FP16; building fp32 instead",
                            torch.cuda.get_device_name(index))
                precision = "fp32"
        self.name = "tensorrt"
        self.device = str(self._torch_device)
        self.precision = precision
        self.model_path = onnx_path
        self.cache_key = EngineCacheKey(
            onnx_sha256=file_sha256(onnx_path), tensorrt_version=trt.__version__,
            gpu_name=torch.cuda.get_device_name(index),
            compute_capability=torch.cuda.get_device_capability(index), precision=precision,
            max_batch=max_batch)
        self.plan_path = self.cache_key.plan_path(cache_dir if cache_dir is not None else default_cache_dir(),
                                                  onnx_path.stem)
        import onnx

        model = onnx.load(str(onnx_path), load_external_data=False)
        self.metadata = {p.key: p.value for p in model.metadata_props}
        # I/O in the ONNX graph's order, so every engine lists the same names in the same order.
        graph_order = [v.name for v in (*model.graph.input, *model.graph.output)]
        del model
        self.max_batch = max_batch
        with torch.cuda.device(self._torch_device):
            self._engine, self.loaded_from_cache = self._load_or_build(onnx_path, max_batch)
            self._context = self._engine.create_execution_context()
            if self._context is None:
                raise RuntimeError(f"tensorrt engine: cannot create an execution context for '{self.plan_path}' "
                                   "(out of GPU memory?)")
            self._stream = torch.cuda.Stream(self._torch_device)
        inputs, outputs = self._io_specs()
        self.inputs = tuple(sorted(inputs, key=lambda spec: graph_order.index(spec.name)))
        self.outputs = tuple(sorted(outputs, key=lambda spec: graph_order.index(spec.name)))

    def _load_or_build(self, onnx_path: Path, max_batch: int):
        trt = self._trt
        # The runtime must outlive the engines it deserialised.
        self._runtime = runtime = trt.Runtime(_trt_logger(trt))
        if self.plan_path.is_file():
            try:
                engine = runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
            except (RuntimeError, TypeError):  # some versions raise instead of returning None
                engine = None
            if engine is not None:
                log.info("tensorrt engine: loaded cached plan %s", self.plan_path)
                return engine, True
            log.warning("tensorrt engine: cached plan %s does not deserialise; rebuilding", self.plan_path)
        stale = sorted(p.name for p in self.plan_path.parent.glob(f"{onnx_path.stem}.*.plan") if p != self.plan_path)
        log.info("tensorrt engine: building %s for %s (%s, TensorRT %s); this takes a while%s", onnx_path.name,
                 self.cache_key.gpu_name, self.precision, trt.__version__,
                 f" (plans for other keys in the cache: {stale})" if stale else "")
        plan = build_plan(trt, onnx_path, self.precision, max_batch)
        atomic_write_bytes(self.plan_path, plan)
        # The key in readable form beside the plan, for people clearing the cache.
        atomic_write_json(self.plan_path.with_suffix(".json"),
                          {"onnx_file": str(onnx_path.resolve()), **asdict(self.cache_key)})
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise RuntimeError(f"tensorrt engine: the plan just built for '{onnx_path}' does not deserialise")
        return engine, False

    def _io_specs(self) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        trt = self._trt
        inputs: list[TensorSpec] = []
        outputs: list[TensorSpec] = []
        self._dtypes: dict[str, torch.dtype] = {}
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            dtype = _torch_dtype(trt, self._engine.get_tensor_dtype(name))
            self._dtypes[name] = dtype
            shape = tuple(BATCH_AXIS if (d < 0 and axis == 0) else (f"dim{axis}" if d < 0 else int(d))
                          for axis, d in enumerate(self._engine.get_tensor_shape(name)))
            spec = TensorSpec(name, shape, str(dtype).removeprefix("torch."))
            (inputs if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(spec)
        return tuple(inputs), tuple(outputs)

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = next((a.shape[0] for s, a in zip(self.inputs, inputs.values()) if s.shape and s.shape[0] == BATCH_AXIS),
                     None)
        if batch is not None and batch > self.max_batch:
            raise ValueError(f"{self.describe()}: batch {batch} exceeds the engine's max_batch {self.max_batch} "
                             "(raise max_batch in the engine config; the plan is rebuilt for the new key)")
        context = self._context
        with torch.cuda.device(self._torch_device), torch.cuda.stream(self._stream):
            device_tensors = {}
            for spec in self.inputs:
                tensor = torch.from_numpy(np.ascontiguousarray(inputs[spec.name])).to(self._torch_device,
                                                                                       non_blocking=False)
                device_tensors[spec.name] = tensor
                context.set_input_shape(spec.name, tuple(tensor.shape))
                context.set_tensor_address(spec.name, tensor.data_ptr())
            outputs = {}
            for spec in self.outputs:
                shape = tuple(context.get_tensor_shape(spec.name))
                if any(d < 0 for d in shape):
                    raise RuntimeError(f"{self.describe()}: output '{spec.name}' has unresolved shape {shape}")
                tensor = torch.empty(shape, dtype=self._dtypes[spec.name], device=self._torch_device)
                outputs[spec.name] = tensor
                context.set_tensor_address(spec.name, tensor.data_ptr())
            if not context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError(f"{self.describe()}: execute_async_v3 failed; see TensorRT's log")
            self._stream.synchronize()
        return {name: t.float().cpu().numpy() if t.dtype in (torch.float16, torch.bfloat16) else t.cpu().numpy()
                for name, t in outputs.items()}
