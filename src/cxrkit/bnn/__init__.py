"""Bit-packed binarized networks: export from PyTorch, run with XNOR + popcount (C kernels or NumPy).

``load_packed`` and the engine never import torch, so a packed model runs on
a device with only NumPy and Pillow (plus a C compiler for the faster native
kernels, which it builds on first use); ``export_packed`` imports torch when called.
"""
from __future__ import annotations

from pathlib import Path

from .engine import PackedModel, load_packed
from .packing import PackedFormatError, pack_signs, unpack_signs

__all__ = ["export_packed", "load_packed", "PackedModel", "PackedFormatError", "pack_signs", "unpack_signs"]


def export_packed(bundle, path: str | Path, real_dtype: str = "float32") -> Path:
    """Write a BNN ``ModelBundle`` as a packed file (see :mod:`cxrkit.bnn.export`)."""
    from .export import export_packed as _export

    return _export(bundle, path, real_dtype)
