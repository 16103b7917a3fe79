"""Load a cxrkit ``.onnx`` file and turn uint8 images into class probabilities, without PyTorch.

The file is self-describing: ``cxrkit export`` writes the bundle metadata
(classes, preprocessing, threshold, temperature, confidence threshold, ...) as JSON under the ``cxrkit`` key of the
ONNX ``metadata_props``, so a user needs nothing but the file. Pixels go
through the same ``resize_gray`` and a bit-identical NumPy twin of
``to_model_input`` (``data/preprocess.py``), so PyTorch and ONNX models see the
same input.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.preprocess import Preprocess, to_model_array

METADATA_KEY = "cxrkit"
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
FORMAT_VERSION = 1  # of the metadata JSON; same meaning as inference.bundle.FORMAT_VERSION


class RuntimeModelError(ValueError):
    """An ``.onnx`` file that cannot be used; one line for the user."""


def softmax_or_sigmoid(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``(B, 1)`` binary logits → ``(B, 2)``; ``(B, C)`` → softmax; both of ``logits / temperature``.
    Mirrors ``inference.bundle.probabilities``.

    The sigmoid is written with tanh so that large logits neither overflow nor warn.
    """
    x = logits.astype(np.float32)
    if temperature != 1.0:
        x = x / np.float32(temperature)
    if x.shape[1] == 1:
        p = np.float32(0.5) * (np.float32(1) + np.tanh(np.float32(0.5) * x))
        return np.concatenate([1 - p, p], axis=1)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class OnnxModel:
    """Duck-types the parts of ``inference.bundle.ModelBundle`` that prediction and evaluation read."""

    session: object  # onnxruntime.InferenceSession
    arch: str
    classes: tuple[str, ...]
    preprocess: Preprocess
    threshold: float = 0.5
    info: dict = field(default_factory=dict)
    export: dict = field(default_factory=dict)  # format, opset, calibration, export-time check
    source: str = ""
    temperature: float = 1.0  # calibration, as ``ModelBundle``'s: logits / T before the softmax/sigmoid
    confidence_threshold: float = 0.0  # confidence in the decided class below this: UNCERTAIN

    @property
    def is_binary(self) -> bool:
        return len(self.classes) == 2

    def metadata(self) -> dict:
        return {"format_version": FORMAT_VERSION, "arch": self.arch, "classes": list(self.classes),
                "preprocess": self.preprocess.to_dict(), "threshold": self.threshold,
                "temperature": self.temperature, "confidence_threshold": self.confidence_threshold,
                "info": self.info, "export": self.export}

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Normalised float32 ``(B, C, H, W)`` → raw model outputs."""
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]

    def predict_resized(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """uint8 ``(N, S, S)`` images already at the model's size → ``(N, C)`` probabilities."""
        images = np.asarray(images, dtype=np.uint8)
        out = [softmax_or_sigmoid(self.logits(to_model_array(images[i:i + batch_size], self.preprocess)),
                                  self.temperature)
               for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), dtype=np.float32)


def read_metadata(session, label: str) -> dict:
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        raise RuntimeModelError(f"{label}: ONNX file without cxrkit metadata (export models with `cxrkit export`)")
    try:
        meta = json.loads(raw)
    except ValueError:
        raise RuntimeModelError(f"{label}: cxrkit metadata is not valid JSON") from None
    if not isinstance(meta, dict) or not {"classes", "preprocess"} <= set(meta):
        raise RuntimeModelError(f"{label}: cxrkit metadata lacks classes or preprocessing")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise RuntimeModelError(f"{label}: written by a newer cxrkit (format {meta['format_version']})")
    return meta


def load_onnx(path: str | Path, threads: int | None = None) -> OnnxModel:
    """Open ``path`` with ONNX Runtime on the CPU; ``threads`` caps intra-op threads (None: ORT's default)."""
    path = Path(path)
    if not path.is_file():
        raise RuntimeModelError(f"{path}: no such model file")
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeModelError(f"{path}: running .onnx models needs onnxruntime "
                                "(pip install 'cxrkit[runtime]')") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only: ORT's warnings are not the user's concern
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own pybind types (InvalidProtobuf, Fail, ...) with long messages
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RuntimeModelError(f"{path}: not a loadable ONNX model ({first[:160]})") from None
    meta = read_metadata(session, str(path))
    names = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    if names != ([INPUT_NAME], [OUTPUT_NAME]):
        raise RuntimeModelError(f"{path}: expected one input {INPUT_NAME!r} and one output {OUTPUT_NAME!r}, "
                                f"found {names[0]} → {names[1]}")
    try:
        pre = Preprocess(**meta["preprocess"])
    except (TypeError, ValueError) as exc:
        raise RuntimeModelError(f"{path}: bad preprocessing in cxrkit metadata ({exc})") from None
    return OnnxModel(session, str(meta.get("arch", "onnx")), tuple(meta["classes"]), pre,
                     float(meta.get("threshold", 0.5)), meta.get("info", {}), meta.get("export", {}), str(path),
                     float(meta.get("temperature", 1.0)), float(meta.get("confidence_threshold", 0.0)))
