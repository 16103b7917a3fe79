"""A PyTorch model's forward pass run by ONNX Runtime, in memory, behind a tensor-in, tensor-out call.

Why: on this 2-core CPU ONNX Runtime runs the small float CNNs faster than the
frozen TorchScript copy (seed_cnn 1.38x at batch 32 and 1.8x at batch 1,
cxr_cnn 1.08x / 1.5x; benchmarks/README.md). No file is written: the model is
exported to bytes with the TorchScript exporter (as ``cxrkit export`` does) and
opened on the CPU. ONNX Runtime's memory arena and memory-pattern planner are
off: with them a batch-32 seed_cnn run held 92 MB more, without them 43 MB, at
the same speed (measured here), and peak RSS is one of the columns the seed-001
benchmark compares.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import torch

OPSET = 17


def available() -> bool:
    """ONNX Runtime and the exporter's ``onnx`` are installed (the ``export`` extra; the README's install has it)."""
    try:
        import onnx  # noqa: F401 - torch.onnx.export needs it
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxRuntimeForward:
    """Callable like the model it was made from: float32 ``(B, C, H, W)`` tensor → output tensor, on the CPU."""

    def __init__(self, session) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # ONNX Runtime reads plain NCHW memory; a channels_last batch is copied once (~1 % of a seed_cnn batch)
        array = np.ascontiguousarray(x.detach().float().contiguous().numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])


def onnxruntime_forward(model: torch.nn.Module, example: torch.Tensor,
                        threads: int | None = None) -> OnnxRuntimeForward:
    """Export ``model`` (eval mode, CPU, float32) at ``example``'s shape with a dynamic batch axis and open it.

    Raises whatever the exporter or ONNX Runtime raise for a model they cannot take (custom autograd functions,
    for one); the caller falls back to another path.
    """
    import onnxruntime as ort

    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, on every call
        torch.onnx.export(model, (example.contiguous(),), buf, input_names=["x"], output_names=["y"],
                          opset_version=OPSET, dynamo=False, do_constant_folding=True,
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
    return OnnxRuntimeForward(session)
