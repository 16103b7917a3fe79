"""``export_model``: one entry point for every deployment format, each export checked before it is kept.

Every ONNX export is re-loaded through the torch-free runtime and compared with
the PyTorch model on the bundled real test radiographs; a file that fails the
stated tolerance is never written (export goes to ``OUT.partial`` first).
"""
from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..inference.bundle import ModelBundle
from ..inference.predictor import predict_resized
from ..runtime.onnx_model import load_onnx
from . import int8, onnx_float
from .calibration import calibration_images, check_images
from .result import ExportError, ExportResult

FORMATS = ("onnx", "onnx-int8", "onnx-int8-dense", "bnn-packed")
SUFFIX = {"onnx": ".onnx", "onnx-int8": ".int8.onnx", "onnx-int8-dense": ".int8dense.onnx", "bnn-packed": ".bnn.npz"}
DEFAULT_N_CALIB = 200

# Stated tolerances of the export-time check, on P(class) per image:
# float32 ONNX must reproduce PyTorch to rounding error;
FLOAT_MAX_ABS = 1e-4
# int8 may move probabilities, but on average by at most 0.05 and flip at most 1 decision in 10.
INT8_MEAN_ABS = 0.05
INT8_MIN_AGREEMENT = 0.9


def default_output(bundle: ModelBundle, fmt: str) -> Path:
    """``NAME`` + ``SUFFIX[fmt]`` in the working directory; a run's model is named after the run."""
    src = Path(bundle.source or bundle.arch)
    stem = src.parent.name if src.name == "model.safetensors" else src.stem
    return Path(f"{stem}{SUFFIX[fmt]}")


def compare(bundle: ModelBundle, exported, images: np.ndarray) -> dict:
    """How far the exported model's probabilities and decisions are from PyTorch's on ``images``."""
    ref = predict_resized(bundle, torch.from_numpy(images))
    got = exported.predict_resized(images)
    diff = np.abs(ref - got)
    if bundle.is_binary:
        agree = (ref[:, 1] >= bundle.threshold) == (got[:, 1] >= bundle.threshold)
    else:
        agree = ref.argmax(axis=1) == got.argmax(axis=1)
    return {"images": int(len(images)), "max_abs_prob_diff": float(diff.max()),
            "mean_abs_prob_diff": float(diff.mean()), "decision_agreement": float(agree.mean())}


def _within_tolerance(fmt: str, check: dict) -> str | None:
    """``None`` when ``check`` passes, else the reason."""
    if fmt == "onnx" and check["max_abs_prob_diff"] > FLOAT_MAX_ABS:
        return f"max |ΔP| {check['max_abs_prob_diff']:.2e} > {FLOAT_MAX_ABS:.0e}"
    if fmt.startswith("onnx-int8") and (check["mean_abs_prob_diff"] > INT8_MEAN_ABS
                               or check["decision_agreement"] < INT8_MIN_AGREEMENT):
        return (f"mean |ΔP| {check['mean_abs_prob_diff']:.3f} (limit {INT8_MEAN_ABS}), decision agreement "
                f"{check['decision_agreement']:.2f} (limit {INT8_MIN_AGREEMENT})")
    return None


def _require(*modules: str) -> None:
    for name in modules:
        try:
            __import__(name)
        except ImportError:
            raise ExportError(f"ONNX export needs the {name} package: pip install 'cxrkit[export]'") from None


def _export_bnn(bundle: ModelBundle, out: Path) -> ExportResult:
    try:
        from ..bnn import export_packed
    except ImportError:
        raise ExportError("bnn-packed export needs cxrkit.bnn.export_packed, which this cxrkit does not have "
                          "yet") from None
    from ..models import is_model, list_models, model_info

    if not is_model(bundle.arch) or model_info(bundle.arch).family != "bnn":
        raise ExportError(f"bnn-packed needs a binarized model ({', '.join(list_models('bnn')) or 'none registered'}); "
                          f"{bundle.arch} is not one")
    export_packed(bundle, out)
    return ExportResult(out, "bnn-packed", out.stat().st_size)


def export_model(bundle: ModelBundle, fmt: str, out: str | Path | None = None, calib_dir: str | Path | None = None,
                 calib_method: str = "minmax", n_calib: int = DEFAULT_N_CALIB, seed: int = 0) -> ExportResult:
    """Write ``bundle`` as ``fmt`` (onnx | onnx-int8 | onnx-int8-dense | bnn-packed) to ``out``; return the check.

    ``onnx-int8`` needs ``calib_dir``: training images (its ``train/`` split when
    it has splits) of which ``n_calib`` are drawn with ``seed`` to calibrate
    activation ranges by ``calib_method`` (minmax | entropy | percentile).
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r} ({' | '.join(FORMATS)})")
    if not isinstance(bundle, ModelBundle):
        raise ExportError(f"{bundle.source}: already exported; export from the PyTorch model (name, run directory "
                          "or .safetensors)")
    out = Path(out) if out else default_output(bundle, fmt)
    if fmt == "bnn-packed":
        return _export_bnn(bundle, out)
    if fmt == "onnx-int8" and calib_dir is None:
        raise ExportError("onnx-int8 needs calibration images: pass training images (e.g. --calib data/kermany_224, "
                          "whose train/ split is used)")
    if fmt == "onnx-int8" and calib_method not in int8.CALIB_METHODS:
        raise ExportError(f"unknown calibration method {calib_method!r} ({' | '.join(int8.CALIB_METHODS)})")
    if n_calib < 1:
        raise ExportError(f"n_calib must be at least 1, got {n_calib}")
    _require("onnx", "onnxruntime")
    meta = bundle.metadata()
    meta["export"] = {"format": fmt, "opset": onnx_float.OPSET, "cxrkit_version": __version__,
                      "torch_version": torch.__version__, "machine": platform.machine(),
                      "source": bundle.source or bundle.arch}
    model = onnx_float.to_onnx(bundle, meta)
    if fmt == "onnx-int8":
        images = calibration_images(calib_dir, bundle.preprocess, n_calib, seed)
        meta["export"]["calibration"] = {"method": calib_method, "images": int(len(images)), "seed": seed,
                                         "folder": Path(calib_dir).name}
        model = int8.quantize(model, images, bundle.preprocess, calib_method)
    elif fmt == "onnx-int8-dense":
        model = int8.quantize_dense(model)
    partial = out.with_name(out.name + ".partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        onnx_float.set_metadata(model, meta)
        onnx_float.save(model, partial)
        check = compare(bundle, load_onnx(partial, threads=1), check_images(bundle.preprocess))
        failure = _within_tolerance(fmt, check)
        if failure:
            raise ExportError(f"{fmt} export of {bundle.source or bundle.arch} disagrees with PyTorch on the sample "
                              f"test images: {failure}; nothing written")
        meta["export"]["check"] = check
        onnx_float.set_metadata(model, meta)
        onnx_float.save(model, partial)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return ExportResult(out, fmt, out.stat().st_size, check)
