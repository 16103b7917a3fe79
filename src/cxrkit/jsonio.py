"""Strict JSON out: NaN and infinities (e.g. sensitivity on a one-class folder) become ``null``.

Python's ``json`` writes bare ``NaN``, which most JSON parsers reject.
"""
from __future__ import annotations

import json
import math
from pathlib import Path


def _clean(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item"):  # numpy / torch scalars
        return _clean(obj.item())
    return obj


def dumps(obj, indent: int | None = 2) -> str:
    return json.dumps(_clean(obj), indent=indent, allow_nan=False)


def write(path: str | Path, obj) -> None:
    """Atomic: a reader never sees half a file, even if training is killed mid-write."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(dumps(obj))
    tmp.replace(path)
