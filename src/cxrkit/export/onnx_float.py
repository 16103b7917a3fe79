"""PyTorch bundle → float32 ONNX file carrying the cxrkit metadata.

The graph comes from ``inference.onnxruntime_forward.onnx_bytes``, the same
exporter the default fp32 inference engine runs in memory (why the TorchScript
exporter: see there).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..inference.bundle import ModelBundle
from ..inference.onnxruntime_forward import OPSET, onnx_bytes
from ..runtime.onnx_model import METADATA_KEY

__all__ = ["OPSET", "save", "set_metadata", "to_onnx"]


def set_metadata(model, meta: dict) -> None:
    """Store ``meta`` as JSON under the ``cxrkit`` key of ``model.metadata_props`` (replacing any old one)."""
    import onnx

    props = {p.key: p.value for p in model.metadata_props if p.key != METADATA_KEY}
    props[METADATA_KEY] = json.dumps(meta)
    onnx.helper.set_model_props(model, props)


def to_onnx(bundle: ModelBundle, meta: dict):
    """Trace ``bundle.model`` at batch 2 with a dynamic batch axis; return the ``onnx.ModelProto``."""
    import onnx

    pre = bundle.preprocess
    example = torch.zeros(2, pre.channels, pre.size, pre.size)
    proto = onnx.load_from_string(onnx_bytes(bundle.model.eval(), example))
    proto.producer_name = "cxrkit"
    proto.doc_string = f"cxrkit {bundle.arch}: classes {list(bundle.classes)}; metadata under '{METADATA_KEY}'"
    set_metadata(proto, meta)
    return proto


def save(model, path: Path) -> None:
    import onnx

    onnx.save_model(model, str(path))
