"""One interface for every way of running the network: PyTorch, ONNX Runtime, TensorRT.

The pipeline talks to an :class:`InferenceEngine` in NumPy arrays keyed by name, so the
same code runs a checkpoint in PyTorch on a laptop, the exported ONNX file on a robot's
CPU and a cached TensorRT plan on a Jetson or a workstation GPU. Names come from
:func:`flatten_outputs`, which both the PyTorch engine and the ONNX exporter use, so an
output is called the same in every engine.

Inputs are checked before they reach a runtime: a wrong array fails with a message that
names the input and the expected shape and dtype instead of a runtime's internal error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from hoi_perception.config import ConfigError

EngineKind = Literal["torch", "onnxruntime", "tensorrt"]
Precision = Literal["fp32", "fp16"]
ENGINE_KINDS: tuple[str, ...] = ("torch", "onnxruntime", "tensorrt")
DEVICE_PATTERN = re.compile(r"^(cpu|cuda(:\d+)?)$")
# Symbolic name of the dynamic first axis in exported graphs and engine specs.
BATCH_AXIS = "batch"


class EngineInputError(ValueError):
    """An input array is missing, unexpected, or of the wrong shape or dtype."""


class EngineUnavailableError(RuntimeError):
    """The requested engine cannot run here (missing package, no GPU, unsupported precision)."""


@dataclass
class EngineConfig:
    """Which runtime runs a graph, where, and how.

    ``model_path`` is the ONNX file that ``onnxruntime`` and ``tensorrt`` load; the
    ``torch`` engine runs an in-memory module instead (see :func:`create_engine`). The
    pipeline runs two graphs (crop network and detector) with one runtime config and a
    ``model_path`` per graph (``dataclasses.replace(config, model_path=...)``).
    """

    kind: EngineKind = "onnxruntime"
    # "cpu", "cuda" or "cuda:N".
    device: str = "cpu"
    # fp16 is a GPU mode: PyTorch half precision, or TensorRT's FP16 kernels.
    precision: Precision = "fp32"
    model_path: Path | None = None
    # TensorRT plan cache; None means default_cache_dir().
    cache_dir: Path | None = None
    # CPU intra-op threads for ONNX Runtime and PyTorch (process-wide for PyTorch); 0 = runtime default.
    threads: int = 0
    # Largest batch the TensorRT optimisation profile accepts (crops per frame).
    max_batch: int = 4

    def validate(self) -> None:
        if not DEVICE_PATTERN.match(self.device):
            raise ConfigError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.threads < 0:
            raise ConfigError(f"threads: expected >= 0 (0 = runtime default), got {self.threads}")
        if self.max_batch < 1:
            raise ConfigError(f"max_batch: expected >= 1, got {self.max_batch}")
        if self.kind == "tensorrt" and self.device == "cpu":
            raise ConfigError("kind tensorrt runs on an NVIDIA GPU: set device to 'cuda' (or use kind onnxruntime "
                              "on a CPU)")
        if self.precision == "fp16":
            if self.kind == "onnxruntime":
                raise ConfigError("precision fp16 is not available with kind onnxruntime (the exported ONNX file is "
                                  "fp32); use fp32, or kind tensorrt for fp16")
            if self.device == "cpu":
                raise ConfigError(f"precision fp16 needs a GPU (device 'cuda'); kind {self.kind} on the CPU runs fp32")


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one engine input or output.

    A shape entry is an ``int`` for a fixed size or a ``str`` naming a dynamic axis
    (``"batch"``); all inputs sharing a dynamic axis name must agree on its size.
    """

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    def describe(self) -> str:
        return f"({', '.join(str(d) for d in self.shape)}) {self.dtype}"


def batch_spec(name: str, array_shape: tuple[int, ...], dtype: Any) -> TensorSpec:
    """Spec for an array whose first axis is the dynamic batch (a scalar stays a scalar)."""
    shape: tuple[int | str, ...] = tuple(int(d) for d in array_shape)
    if shape:
        shape = (BATCH_AXIS, *shape[1:])
    return TensorSpec(name, shape, np.dtype(dtype).name)


def check_inputs(specs: tuple[TensorSpec, ...], inputs: Mapping[str, Any], engine: str) -> dict[str, np.ndarray]:
    """Validate ``inputs`` against ``specs``; return them as a name -> array dict in spec order."""
    if not isinstance(inputs, Mapping):
        raise EngineInputError(f"{engine}: inputs must be a dict of name -> numpy array, got {type(inputs).__name__}")
    expected = {s.name for s in specs}
    unknown = sorted(set(inputs) - expected)
    if unknown:
        raise EngineInputError(f"{engine}: unexpected input(s) {unknown}; this model takes "
                               + ", ".join(f"{s.name} {s.describe()}" for s in specs))
    dynamic_sizes: dict[str, tuple[int, str]] = {}
    checked = {}
    for spec in specs:
        if spec.name not in inputs:
            raise EngineInputError(f"{engine}: missing input '{spec.name}', expected {spec.describe()}")
        array = inputs[spec.name]
        if not isinstance(array, np.ndarray):
            raise EngineInputError(f"{engine}: input '{spec.name}' must be a numpy array {spec.describe()}, "
                                   f"got {type(array).__name__}")
        if array.dtype != np.dtype(spec.dtype):
            raise EngineInputError(f"{engine}: input '{spec.name}' has dtype {array.dtype}, expected {spec.describe()}")
        if array.ndim != len(spec.shape) or any(isinstance(d, int) and d != n for d, n in zip(spec.shape, array.shape)):
            raise EngineInputError(f"{engine}: input '{spec.name}' has shape {array.shape}, expected {spec.describe()}")
        for axis_name, size in zip(spec.shape, array.shape):
            if isinstance(axis_name, str):
                if size < 1:
                    raise EngineInputError(f"{engine}: input '{spec.name}' has an empty '{axis_name}' axis "
                                           f"(shape {array.shape})")
                seen = dynamic_sizes.setdefault(axis_name, (size, spec.name))
                if seen[0] != size:
                    raise EngineInputError(f"{engine}: '{axis_name}' is {seen[0]} in input '{seen[1]}' but {size} in "
                                           f"input '{spec.name}'")
        checked[spec.name] = array
    return checked


class InferenceEngine(ABC):
    """A loaded graph that maps named NumPy inputs to named NumPy outputs.

    Subclasses set ``name``, ``device``, ``precision``, ``inputs`` and ``outputs`` (and,
    when the model file carries them, ``metadata``) and implement :meth:`_run`.
    """

    name: str
    device: str
    precision: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metadata: dict[str, str]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.outputs)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check ``inputs`` against :attr:`inputs` and run the graph; outputs in :attr:`output_names` order."""
        return self._run(check_inputs(self.inputs, inputs, self.describe()))

    @abstractmethod
    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run validated inputs."""

    def describe(self) -> str:
        """One line for logs and diagnostics, e.g. ``onnxruntime (cpu, fp32)``."""
        return f"{self.name} ({self.device}, {self.precision})"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.describe()}, inputs={[s.name for s in self.inputs]}, "
                f"outputs={[s.name for s in self.outputs]})")


def flatten_outputs(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flatten nested dataclasses, dicts, tuples and lists of torch tensors into named tensors.

    Names join the path with ``_``: a dataclass ``out.hand.pose`` becomes ``hand_pose``,
    dict keys are used as they are, sequence items by index (``0``, ``1``, ...); a bare
    tensor at the top is ``output``. Order follows field/key/index order, so names and
    order are stable for a given output type. ``None`` values (optional outputs) are
    left out: a graph cannot output nothing.
    """
    flat: dict[str, torch.Tensor] = {}
    _flatten_into(obj, prefix, flat)
    return flat


def _flatten_into(obj: Any, path: str, flat: dict[str, torch.Tensor]) -> None:
    def child(key: str) -> str:
        return f"{path}_{key}" if path else key

    if isinstance(obj, torch.Tensor):
        name = path or "output"
        if name in flat:
            raise ValueError(f"flatten_outputs: two outputs would both be named '{name}'")
        flat[name] = obj
    elif obj is None:
        return
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for field in dataclasses.fields(obj):
            _flatten_into(getattr(obj, field.name), child(field.name), flat)
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"flatten_outputs: dict keys must be strings, got {key!r} at '{path or '<root>'}'")
            _flatten_into(value, child(key), flat)
    elif isinstance(obj, (tuple, list)):
        for index, value in enumerate(obj):
            _flatten_into(value, child(str(index)) if path else f"output_{index}", flat)
    else:
        raise TypeError(f"flatten_outputs: '{path or '<root>'}' is a {type(obj).__name__}; expected tensors in "
                        "dataclasses, dicts, tuples or lists")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in chunks: checkpoints can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_model_file(path: str | Path | None, kind: str) -> Path:
    """An existing ONNX file for ``kind``, or a clear error saying what is wrong."""
    if path is None:
        raise ConfigError(f"kind {kind} needs model_path: the exported .onnx file (hoi-perception export)")
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{kind} model file '{p}' does not exist (export one with hoi-perception export)")
    if p.suffix != ".onnx":
        raise ConfigError(f"{kind} model_path '{p}': expected an .onnx file")
    return p


def cuda_device_index(device: str) -> int:
    """Index of a ``cuda``/``cuda:N`` device string."""
    if not device.startswith("cuda"):
        raise ValueError(f"expected a CUDA device ('cuda' or 'cuda:N'), got {device!r}")
    return int(device.split(":", 1)[1]) if ":" in device else 0


def available_engines() -> list[str]:
    """The engines that can run on this machine, as ``kind (devices)`` strings, for error messages."""
    cuda = torch.cuda.is_available()
    found = [f"torch ({'cpu, cuda' if cuda else 'cpu'})"]
    try:
        import onnxruntime
    except ImportError:
        pass
    else:
        has_cuda_provider = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        found.append(f"onnxruntime ({'cpu, cuda' if has_cuda_provider else 'cpu'})")
    if cuda:
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            pass
        else:
            found.append("tensorrt (cuda)")
    return found


def create_engine(config: EngineConfig, module: torch.nn.Module | None = None,
                  example_inputs: Mapping[str, torch.Tensor] | None = None) -> InferenceEngine:
    """Build the engine ``config`` asks for.

    ``torch`` runs ``module`` (with ``example_inputs`` giving input names, shapes and
    dtypes, as for export); ``onnxruntime`` and ``tensorrt`` load ``config.model_path``.
    """
    config.validate()
    if config.kind == "torch":
        if module is None or example_inputs is None:
            raise ConfigError("kind torch runs an in-memory network: pass module and example_inputs "
                              "(or use kind onnxruntime with an exported model_path)")
        from hoi_perception.engines.torch_engine import TorchEngine

        return TorchEngine(module, example_inputs, device=config.device, precision=config.precision,
                           threads=config.threads)
    if module is not None or example_inputs is not None:
        raise ConfigError(f"kind {config.kind} loads model_path; module and example_inputs are for kind torch")
    if config.kind == "onnxruntime":
        from hoi_perception.engines.onnx_engine import OnnxRuntimeEngine

        return OnnxRuntimeEngine(check_model_file(config.model_path, config.kind), device=config.device,
                                 threads=config.threads)
    from hoi_perception.engines.tensorrt_engine import TensorRTEngine

    return TensorRTEngine(check_model_file(config.model_path, config.kind), device=config.device,
                          precision=config.precision, cache_dir=config.cache_dir, max_batch=config.max_batch)
