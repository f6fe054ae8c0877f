"""PyTorch engine: runs the network module itself (training checkpoints, debugging, CUDA without TensorRT)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from hoi_perception.engines.base import (
    EngineUnavailableError,
    InferenceEngine,
    available_engines,
    batch_spec,
    flatten_outputs,
)


class TorchEngine(InferenceEngine):
    """Run ``module(**inputs)`` and name its outputs with :func:`flatten_outputs`.

    The engine takes the module over: it is put in eval mode and moved to ``device``
    (and to half precision for ``fp16``). ``example_inputs`` fix the input names, the
    shapes after the (dynamic) batch axis and the dtypes, exactly as :func:`export_onnx`
    uses them; one warm-up run on them fixes the output names and shapes. fp16 outputs are
    returned as float32 so downstream code sees the same dtypes from every engine.
    ``metadata`` plays the role of an ONNX file's metadata properties (e.g.
    ``ModelMetadata.to_props()``), so model checks work the same for every engine.
    """

    def __init__(self, module: nn.Module, example_inputs: Mapping[str, torch.Tensor], device: str = "cpu",
                 precision: str = "fp32", threads: int = 0, metadata: Mapping[str, str] | None = None) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"TorchEngine: module must be a torch.nn.Module, got {type(module).__name__}")
        if not example_inputs:
            raise ValueError("TorchEngine: example_inputs must name at least one input tensor")
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"TorchEngine: precision must be fp32 or fp16, got {precision!r}")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineUnavailableError(f"torch engine on {device}: PyTorch sees no CUDA GPU (torch "
                                         f"{torch.__version__}); available here: {', '.join(available_engines())}")
        if precision == "fp16" and not device.startswith("cuda"):
            raise ValueError("TorchEngine: fp16 needs a CUDA device; PyTorch runs fp32 on the CPU")
        if threads > 0:
            torch.set_num_threads(threads)
        self.name = "torch"
        self.device = device
        self.precision = precision
        self.metadata = dict(metadata or {})
        self._torch_device = torch.device(device)
        self._half = precision == "fp16"
        self.module = module.eval().to(self._torch_device)
        if self._half:
            self.module.half()
        self.inputs = tuple(batch_spec(name, tuple(t.shape), _numpy_dtype(t.dtype))
                            for name, t in example_inputs.items())
        warmup = self._forward({name: t.detach().cpu().numpy() for name, t in example_inputs.items()})
        self.outputs = tuple(batch_spec(name, a.shape, a.dtype) for name, a in warmup.items())

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._forward(inputs)
        names = tuple(outputs)
        if names != self.output_names:
            raise RuntimeError(f"torch engine: the module returned outputs {list(names)}, but the warm-up run "
                               f"returned {list(self.output_names)}; its outputs must not depend on the input values")
        return outputs

    def _forward(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = {}
        for name, array in arrays.items():
            tensor = torch.from_numpy(np.ascontiguousarray(array)).to(self._torch_device)
            if self._half and tensor.is_floating_point():
                tensor = tensor.half()
            tensors[name] = tensor
        with torch.inference_mode():
            flat = flatten_outputs(self.module(**tensors))
        return {name: _to_numpy(t) for name, t in flat.items()}


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    return tensor.detach().cpu().numpy()


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    """NumPy dtype of a torch dtype (via an empty tensor, so every dtype NumPy knows is covered)."""
    if dtype == torch.bfloat16:
        raise ValueError("bfloat16 inputs have no NumPy dtype; use float32 example inputs")
    return torch.empty(0, dtype=dtype).numpy().dtype
