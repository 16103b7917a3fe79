"""A PyTorch model's forward pass run by ONNX Runtime, in memory, behind a tensor-in, tensor-out call.

Why: on both 2-core CPUs measured here ONNX Runtime runs the small float CNNs faster than the
frozen TorchScript copy (seed_cnn 1.38x at batch 32 and 1.8x at batch 1 on the AVX-512 EPYC, 1.36x / 3.7x on
the AVX2 one; benchmarks/README.md). No file is written: the model is exported to bytes by :func:`onnx_bytes`,
the exporter ``cxrkit export`` uses too, and opened on the CPU. ONNX Runtime's memory arena and memory-pattern planner are
off: with them a batch-32 seed_cnn run held 92 MB more, without them 43 MB, at
the same speed (measured here), and peak RSS is one of the columns the seed-001
benchmark compares.
"""
from __future__ import annotations

import io
import warnings

import torch

from ..runtime.onnx_model import INPUT_NAME, OUTPUT_NAME

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
        array = x.detach().contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])


def onnx_bytes(model: torch.nn.Module, example: torch.Tensor) -> bytes:
    """``model`` (eval mode, CPU, float32) as an ONNX graph traced at ``example``'s shape, batch axis dynamic.

    The TorchScript exporter (``dynamo=False``): measured here with torch 2.14 on ``cxr_cnn``, 0.4 s, one
    self-contained opset-17 graph with BatchNorm folded into the convolutions and no extra dependency; the dynamo
    exporter took 5 s, needs ``onnxscript``, writes the weights to a separate ``.data`` file by default and failed
    to down-convert its opset-18 graph to 17.
    """
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, on every call
        torch.onnx.export(model, (example.contiguous(),), buf, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          opset_version=OPSET, dynamo=False, do_constant_folding=True,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    return buf.getvalue()


def onnxruntime_forward(model: torch.nn.Module, example: torch.Tensor,
                        threads: int | None = None) -> OnnxRuntimeForward:
    """:func:`onnx_bytes` of ``model`` opened in an ONNX Runtime session on the CPU.

    Raises whatever the exporter or ONNX Runtime raise for a model they cannot take; the caller falls back to
    another path.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes(model, example), options, providers=["CPUExecutionProvider"])
    return OnnxRuntimeForward(session)
