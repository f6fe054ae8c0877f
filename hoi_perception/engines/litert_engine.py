"""LiteRT engine: runs ``.tflite`` files (MediaPipe Hands' models) on the CPU with XNNPACK.

Not one of :data:`~hoi_perception.engines.base.ENGINE_KINDS`: those run the project's own
network from its ONNX export, while the ``.tflite`` graphs come as they are from MediaPipe.
It answers the same :class:`~hoi_perception.engines.base.InferenceEngine` interface, with
the input checks, so the front-end calls it like every other engine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hoi_perception.engines.base import EngineUnavailableError, InferenceEngine, TensorSpec


class LiteRTEngine(InferenceEngine):
    """A ``.tflite`` file in a LiteRT interpreter with ``threads`` CPU threads (0: LiteRT's default)."""

    def __init__(self, model_path: str | Path, threads: int = 0) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise EngineUnavailableError("litert engine: the ai-edge-litert package is not installed "
                                         "(pip install 'hoi_perception[mediapipe]' or pip install ai-edge-litert)"
                                         ) from exc
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"litert engine: model file '{path}' does not exist")
        if threads < 0:
            raise ValueError(f"litert engine: threads must be >= 0, got {threads}")
        try:
            self._interpreter = Interpreter(model_path=str(path), num_threads=threads or None)
            self._interpreter.allocate_tensors()
        except ValueError as exc:
            raise ValueError(f"litert engine: cannot load '{path}': {exc}") from exc
        self.name = "litert"
        self.device = "cpu"
        self.precision = "fp32"
        self.model_path = path
        self.metadata = {}
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        self._input_index = {d["name"]: d["index"] for d in inputs}
        self._output_index = {d["name"]: d["index"] for d in outputs}
        self.inputs = tuple(_spec(d) for d in inputs)
        self.outputs = tuple(_spec(d) for d in outputs)

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, array in inputs.items():
            self._interpreter.set_tensor(self._input_index[name], np.ascontiguousarray(array))
        self._interpreter.invoke()
        return {name: self._interpreter.get_tensor(index).copy() for name, index in self._output_index.items()}


def _spec(detail: dict) -> TensorSpec:
    return TensorSpec(str(detail["name"]), tuple(int(d) for d in detail["shape"]), np.dtype(detail["dtype"]).name)
