"""Float32 ONNX → int8 ONNX by static post-training quantization (ONNX Runtime).

Static by default: QDQ format with per-channel int8 weights and uint8
activations, ONNX Runtime's documented choice for x86 CPUs, with the weights
in 7 bits (``reduce_range``). Why 7: without VNNI (AVX2-only x86, e.g. AMD Zen 3)
ONNX Runtime multiplies uint8 x int8 with VPMADDUBSW, whose 16-bit pair sums
saturate on full-range weights. The default cxr_cnn's int8 file exported with
8-bit weights on an AVX512-VNNI EPYC scored 92.6 % there and 84.8 % on an
AVX2-only EPYC (mean |ΔP| 0.09 against PyTorch); an edge file must give the same
answers on any CPU it lands on. Dynamic quantization of every op
re-measures activation ranges at each call and was 6.4x *slower* than float32
on seed_cnn here (docs/edge.md), so it is only offered for Gemm/MatMul
(:func:`quantize_dense`): on a small dense-heavy model, where static int8 lost
to float32, that was the fastest.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np

from ..data.preprocess import Preprocess, to_model_array
from ..runtime.onnx_model import INPUT_NAME

CALIB_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}  # → CalibrationMethod
# quantize_static builds its entropy calibrator with 128 histogram bins and 128 quantized bins, which leaves the KL
# search one candidate, the full range: its "entropy" files were bit-identical to minmax here. cxrkit calibrates
# itself with 2048 bins (TensorRT's choice) and hands the ranges over through ORT's calibration cache.
CALIB_OPTIONS = {"minmax": {}, "entropy": {"num_bins": 2048, "num_quantized_bins": 128},
                 "percentile": {"num_bins": 2048, "percentile": 99.999}}
CALIB_BATCH = 1  # ORT's histogram calibrators (entropy, percentile) stack batches, so all must be one shape


def _reader(images: np.ndarray, pre: Preprocess):
    """ONNX Runtime's ``CalibrationDataReader`` over pre-normalised batches of ``images``."""
    from onnxruntime.quantization import CalibrationDataReader

    batches = iter([to_model_array(images[i:i + CALIB_BATCH], pre) for i in range(0, len(images), CALIB_BATCH)])

    class Batches(CalibrationDataReader):
        def get_next(self):
            x = next(batches, None)
            return None if x is None else {INPUT_NAME: x}

    return Batches()


def quantize(float_model, images: np.ndarray, pre: Preprocess, method: str = "minmax"):
    """Return the int8 ``onnx.ModelProto`` of ``float_model``, calibrated on uint8 ``images`` by ``method``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calib = getattr(CalibrationMethod, CALIB_METHODS[method])
    with tempfile.TemporaryDirectory(prefix="cxrkit-int8-") as tmp:
        src, prepared, out = Path(tmp, "float.onnx"), Path(tmp, "prepared.onnx"), Path(tmp, "int8.onnx")
        onnx.save_model(float_model, str(src))
        quant_pre_process(str(src), str(prepared))  # shape inference + graph clean-up, as ORT recommends
        calibrator = create_calibrator(prepared, [], augmented_model_path=str(Path(tmp, "augmented.onnx")),
                                       calibrate_method=calib, extra_options=CALIB_OPTIONS[method])
        with contextlib.redirect_stdout(io.StringIO()):  # ORT's histogram calibrators print progress to stdout
            calibrator.collect_data(_reader(images, pre))
            ranges = calibrator.compute_data()
        cache = Path(tmp, "ranges.json")
        save_tensors_data(ranges, cache)
        quantize_static(str(prepared), str(out), None, quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=calib,
                        calibration_cache_path=cache)
        return onnx.load_model(str(out))


def quantize_dense(float_model):
    """Dynamic int8 for the weights of Gemm/MatMul only; convolutions and activations stay float32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="cxrkit-int8-") as tmp:
        src, prepared, out = Path(tmp, "float.onnx"), Path(tmp, "prepared.onnx"), Path(tmp, "int8.onnx")
        onnx.save_model(float_model, str(src))
        quant_pre_process(str(src), str(prepared))
        quantize_dynamic(str(prepared), str(out), op_types_to_quantize=["Gemm", "MatMul"],
                         weight_type=QuantType.QInt8)
        return onnx.load_model(str(out))
