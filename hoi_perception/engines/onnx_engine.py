"""ONNX Runtime engine: the default on CPUs (about 2x PyTorch eager on 2 cores), CUDA when its provider is installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hoi_perception.engines.base import (
    BATCH_AXIS,
    EngineUnavailableError,
    InferenceEngine,
    TensorSpec,
    available_engines,
    cuda_device_index,
)

# ONNX Runtime's type strings for the tensor types our graphs use.
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


class OnnxRuntimeEngine(InferenceEngine):
    """An ONNX file in an ONNX Runtime session (all graph optimisations on, no spin-waiting threads).

    ``device`` ``cpu`` uses the CPU execution provider with ``threads`` intra-op threads
    (0 = ONNX Runtime's default, one per physical core); ``cuda``/``cuda:N`` needs the
    CUDA execution provider (the ``onnxruntime-gpu`` package) and fails at start without it.
    The file's metadata properties (see :mod:`hoi_perception.engines.export`) are in
    :attr:`metadata`.
    """

    def __init__(self, model_path: str | Path, device: str = "cpu", threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EngineUnavailableError(f"onnxruntime engine: the onnxruntime package is not installed "
                                         f"(pip install onnxruntime); available here: "
                                         f"{', '.join(available_engines())}") from exc
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"onnxruntime engine: model file '{path}' does not exist")
        if threads < 0:
            raise ValueError(f"onnxruntime engine: threads must be >= 0, got {threads}")
        if device == "cpu":
            providers: list = ["CPUExecutionProvider"]
        elif device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise EngineUnavailableError(
                    f"onnxruntime engine on {device}: this onnxruntime has no CUDAExecutionProvider (providers: "
                    f"{ort.get_available_providers()}; install onnxruntime-gpu); available here: "
                    f"{', '.join(available_engines())}")
            providers = [("CUDAExecutionProvider", {"device_id": cuda_device_index(device)}), "CPUExecutionProvider"]
        else:
            raise ValueError(f"onnxruntime engine: device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        # No busy-waiting between runs: the estimator alternates sessions (detector, crop network,
        # refiner), each with its own thread pool, and a pool spinning after its run takes the cores
        # from the next one (measured in the README's Benchmarks section, stage_breakdown.py row).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise ValueError(f"onnxruntime engine: cannot load '{path}': {exc}") from exc
        self.name = "onnxruntime"
        self.device = device
        self.precision = "fp32"
        self.model_path = path
        self.inputs = tuple(_spec(arg) for arg in self._session.get_inputs())
        self.outputs = tuple(_spec(arg) for arg in self._session.get_outputs())
        self.metadata = dict(self._session.get_modelmeta().custom_metadata_map)

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self._session.run(list(self.output_names), inputs)
        return dict(zip(self.output_names, results))


def _spec(arg) -> TensorSpec:
    """TensorSpec of an onnxruntime NodeArg; unnamed dynamic axes are called ``batch`` on axis 0."""
    if arg.type not in _ORT_TYPES:
        raise ValueError(f"onnxruntime engine: '{arg.name}' has type {arg.type}, which this package does not use")
    shape = tuple(d if isinstance(d, int) else (d or (BATCH_AXIS if axis == 0 else f"dim{axis}"))
                  for axis, d in enumerate(arg.shape))
    return TensorSpec(arg.name, shape, _ORT_TYPES[arg.type])
