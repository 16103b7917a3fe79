"""Batched prediction on decoded images, files and folders."""
from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..data.preprocess import to_model_input
from ..models import model_info
from ..models._binary import BinaryConv2d, BinaryLinear
from ..models.transfer import TransferNet
from .bundle import ModelBundle, probabilities
from .files import Prediction, films_at_size, predict_files


def _device_of(model: torch.nn.Module) -> torch.device:
    """Where the model's weights are (the trainer validates on the GPU it trains on)."""
    return next(model.parameters(), torch.empty(0)).device


PRECISIONS = ("fp32", "bf16")
ENGINES = ("auto", "torchscript")  # auto: ONNX Runtime where it is installed and takes the model, else TorchScript


def use_precision(bundle: ModelBundle, precision: str, engine: str = "auto") -> ModelBundle:
    """Run ``bundle``'s inference in ``precision``: ``fp32`` (default) or ``bf16``, a frozen bfloat16 copy;
    ``engine`` picks what runs fp32 (``ENGINES``; ``torchscript`` reproduces figures recorded before ONNX Runtime).

    Why opt-in: on the AVX512-BF16 CPU of sessions 4-11 bf16 runs cxr_cnn 1.8x and seed_cnn 1.4x faster at batch 32 with the
    same 624 test decisions (largest probability change 0.007), but its outputs depend on the CPU's bf16
    support, and a recorded evaluation should give the same numbers on any CPU (benchmarks/README.md).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose {' or '.join(PRECISIONS)}")
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if precision != "fp32" and not isinstance(bundle, ModelBundle):
        raise ValueError(f"{bundle.source}: --precision {precision} is for PyTorch models, not exported files")
    if precision != "fp32" and model_info(bundle.arch).family == "bnn":  # measured: 0.15 probability shifts
        raise ValueError(f"{bundle.source or bundle.arch}: bf16 moves a binarized network's signs; its fast path is "
                         "the packed engine (`cxrkit export --format bnn-packed`)")
    if isinstance(bundle, ModelBundle):
        bundle.precision, bundle.engine = precision, engine
    return bundle


def frozen_for_inference(bundle: ModelBundle) -> torch.nn.Module:
    """The bundle's model compiled for CPU inference in ``bundle.precision``, cached on the bundle.

    fp32 with ``bundle.engine`` ``auto`` runs the model in ONNX Runtime when it is
    installed and the export gives the same outputs: seed_cnn's batch-32 inference 1.38x and batch-1 latency 1.8x
    faster than the frozen TorchScript copy on an AVX-512 EPYC, 1.36x and 3.7x on an AVX2 one
    (``inference.onnxruntime_forward``). Otherwise, and for bf16, the model
    is traced and frozen with TorchScript, which folds BatchNorm into convolutions, fuses Conv+ReLU and pre-packs
    the weights for oneDNN once instead of at every call: seed_cnn inference went from 2,050 to 2,794 img/s at
    batch 32 and from 1.04 to 0.70 ms at batch 1 (benchmarks/README.md). A model that neither path takes, or whose
    compiled copy disagrees with it, is used as it is. So are ImageNet backbones and models on a GPU: freezing
    DenseNet-121 took 62 s and ResNet-50 28 s here, more than it saves in any realistic run.
    """
    if bundle.engine not in ENGINES:
        raise ValueError(f"engine {bundle.engine!r}: choose one of {', '.join(ENGINES)}")
    cache = bundle.frozen if bundle.frozen is not None else {}
    key = (bundle.precision, bundle.engine)
    if key in cache:
        return cache[key]
    bundle.frozen = cache
    model, pre = bundle.model.eval(), bundle.preprocess
    dtype = torch.bfloat16 if bundle.precision == "bf16" else torch.float32
    if dtype != torch.float32:
        model = copy.deepcopy(model).to(dtype, memory_format=torch.channels_last)  # NCHW bf16 ran 5x slower
    device = _device_of(model)
    if device.type != "cpu" or any(isinstance(m, TransferNet) for m in model.modules()):
        cache[key] = model
        return model
    gen = torch.Generator().manual_seed(0)  # the same probe every time: the same engine for the same model
    example, probe = (torch.rand(n, pre.channels, pre.size, pre.size, generator=gen).to(device, dtype).contiguous(
        memory_format=torch.channels_last) for n in (2, 3))
    tol = (1e-3, 1e-4) if dtype == torch.float32 else (5e-2, 5e-2)  # bf16 keeps 8 bits of mantissa
    compiled: torch.nn.Module = model
    for compile_ in _compilers(bundle, dtype):
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                candidate = compile_(model, example)
                if torch.allclose(candidate(probe).float(), model(probe).float(), rtol=tol[0], atol=tol[1]):
                    compiled = candidate
                    break
        except Exception:  # noqa: BLE001 - a model this path cannot take: try the next one, then run it eagerly
            continue
    cache[key] = compiled
    return compiled


def _torchscript(model: torch.nn.Module, example: torch.Tensor):
    # check_trace=False: the caller's probe is the check; trace's own imports torch.distributed.tensor and
    # sympy (via torch.testing) and raised a seed_cnn benchmark process's RSS for nothing
    return torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, example, check_trace=False)))


def _compilers(bundle: ModelBundle, dtype: torch.dtype) -> list:
    """The compilers to try, in order. Binarized networks stay on TorchScript: a float difference of 1e-7 before a
    sign flips it, and their fast path is the packed engine anyway."""
    from . import onnxruntime_forward as ort_forward

    binary = any(isinstance(m, (BinaryConv2d, BinaryLinear)) for m in bundle.model.modules())
    use_ort = dtype == torch.float32 and bundle.engine == "auto" and not binary and ort_forward.available()
    return ([ort_forward.onnxruntime_forward] if use_ort else []) + [_torchscript]


def predict_resized(bundle: ModelBundle, images: torch.Tensor, batch_size: int = 64,
                    optimize: bool = True, progress: bool = False) -> np.ndarray:
    """uint8 ``(N, S, S)`` images already at the model's size → ``(N, C)`` probabilities.

    ``optimize`` runs the frozen TorchScript copy (:func:`frozen_for_inference`);
    the trainer turns it off, since its model changes after every epoch.

    ``bundle`` may also be a runtime model (``cxrkit.runtime.OnnxModel``, from
    ``resolve_model("x.onnx")``), which brings its own forward pass.
    """
    if not isinstance(bundle, ModelBundle):
        return bundle.predict_resized(np.asarray(images), batch_size)
    out = []
    bundle.model.eval()
    forward = frozen_for_inference(bundle) if optimize else bundle.model
    dtype = torch.bfloat16 if optimize and bundle.precision == "bf16" else torch.float32
    device = _device_of(bundle.model)
    with torch.inference_mode():
        starts = range(0, len(images), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="predict", unit="batch", leave=False)
        for i in starts:
            x = to_model_input(images[i:i + batch_size].to(device), bundle.preprocess).to(dtype)
            out.append(probabilities(forward(x), bundle.temperature).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(bundle.classes)), dtype=np.float32)


def predict_arrays(bundle: ModelBundle, arrays: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
    """Grayscale uint8 arrays of any size → ``(N, C)`` probabilities."""
    pre = bundle.preprocess
    if not arrays:
        return np.zeros((0, len(bundle.classes)), dtype=np.float32)
    resized = torch.from_numpy(films_at_size(arrays, pre))
    return predict_resized(bundle, resized, batch_size)


def predict_paths(bundle: ModelBundle, paths: Sequence[str | Path], batch_size: int = 64,
                  progress: bool = False) -> tuple[list[Prediction], list[str]]:
    """Return predictions for the readable files and one error line per unreadable one."""
    return predict_files(bundle, paths, lambda films: predict_resized(bundle, torch.from_numpy(films), batch_size),
                         batch_size, progress)
