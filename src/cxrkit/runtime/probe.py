"""Peak memory of a fresh, torch-free process that loads one model file and classifies one image.

``cxrkit bench`` runs ``python -m cxrkit.runtime.probe FILE THREADS`` once per
format: a process of its own is the only honest way to read peak RSS (the
bench process itself has PyTorch and every other format loaded). PyTorch is
blocked, so an accidental import fails loudly instead of inflating the figure.
Prints one JSON object: the peak resident set after the imports, and after
loading and one batch-1 inference (kB, Linux ``VmHWM``: unlike ``getrusage``'s
``ru_maxrss``, it starts afresh at ``exec`` instead of inheriting the parent's peak).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def _peak_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise OSError("no VmHWM in /proc/self/status (peak RSS is measured on Linux only)")


def main(argv: list[str]) -> None:
    path, threads = argv[0], int(argv[1])
    if path.endswith(".npz"):
        from ..bnn import load_packed

        after_import = _peak_kb()
        model = load_packed(path)
        size = model.preprocess.size
        model.predict_proba(np.zeros((1, size, size), dtype=np.uint8))
    else:
        import onnxruntime  # noqa: F401  (loaded here so the library counts in the baseline, not the model)

        from .onnx_model import load_onnx

        after_import = _peak_kb()
        model = load_onnx(path, threads=threads)
        size = model.preprocess.size
        model.predict_resized(np.zeros((1, size, size), dtype=np.uint8))
    print(json.dumps({"rss_after_import_kb": after_import, "peak_rss_kb": _peak_kb()}))


if __name__ == "__main__":
    sys.modules["torch"] = None  # type: ignore[assignment]  # any torch import from here on raises ImportError
    main(sys.argv[1:])
