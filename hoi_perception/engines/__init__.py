"""Inference engines behind one interface (PyTorch, ONNX Runtime, TensorRT) and ONNX export.

Typical use::

    from hoi_perception.engines import EngineConfig, create_engine

    engine = create_engine(EngineConfig(kind="onnxruntime", model_path=Path("hfl_r50_crop.onnx")))
    outputs = engine.run({"crop": crop, "hand_box": hand_box, "object_box": object_box})

The runtime modules are imported on demand, so this package imports without
onnxruntime or tensorrt installed.
"""

from hoi_perception.engines.base import (
    EngineConfig,
    EngineInputError,
    EngineUnavailableError,
    InferenceEngine,
    TensorSpec,
    available_engines,
    create_engine,
    file_sha256,
    flatten_outputs,
)

__all__ = [
    "EngineConfig",
    "EngineInputError",
    "EngineUnavailableError",
    "InferenceEngine",
    "TensorSpec",
    "available_engines",
    "create_engine",
    "file_sha256",
    "flatten_outputs",
]
