"""The shipped models that run without PyTorch, by name, and one loader for every runtime format.

``weights/NAME.int8.onnx`` is the int8 ONNX export of the shipped model NAME and ``weights/NAME.bnn.npz`` a
packed binarized network, so ``python -m cxrkit.runtime FILMS`` works on a torch-free install with nothing
exported first. ``tests/test_export.py`` checks that each one still decides as its PyTorch original.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from .onnx_model import RuntimeModelError, load_onnx

DEFAULT_MODEL = "cxr_cnn"  # the same default as the full package's (inference.bundle.DEFAULT_MODEL; tested)
_SUFFIXES = (".int8.onnx", ".bnn.npz")


def runtime_models() -> dict[str, Path]:
    """``{name: file}`` for the models inside the package that the torch-free runtime can run."""
    root = Path(str(resources.files("cxrkit") / "weights"))
    return {p.name[:-len(s)]: p for s in _SUFFIXES for p in sorted(root.glob(f"*{s}"))}


def runtime_files() -> dict[str, Path]:
    """``{file name: file}`` of the same models, e.g. ``cxr_cnn.int8.onnx``: the names the full package's
    ``resolve_model`` (and so ``--model`` of every command) takes for them."""
    return {p.name: p for p in runtime_models().values()}


def exported_file(spec) -> Path | None:
    """The file behind ``spec`` when it names an exported model the full package would load too: one the package
    ships, by file name (``cxr_cnn.int8.onnx``), or an existing ``.onnx`` / packed ``.npz`` file; else ``None``.
    Commands that take such a model load it here and need not import PyTorch."""
    if not isinstance(spec, (str, Path)):
        return None
    path = Path(spec)
    if path.exists():  # a file of that name here comes first, as in the full package's resolve_model
        return path if path.suffix.lower() in (".onnx", ".npz") and path.is_file() else None
    return runtime_files().get(str(spec))


def load_exported(spec):
    """The model behind :func:`exported_file`, loaded without PyTorch, or ``None`` when ``spec`` names none."""
    path = exported_file(spec)
    return load_runtime_model(str(path)) if path is not None else None


def load_runtime_model(spec: str | None = None, threads: int | None = None):
    """A shipped name, an ``.onnx`` file (ONNX Runtime) or a packed ``.npz`` BNN (NumPy engine) → a model with
    ``classes``, ``preprocess``, ``threshold``, ``confidence_threshold`` and ``predict_resized``."""
    spec = spec or DEFAULT_MODEL
    shipped = runtime_models()
    path = shipped.get(spec, Path(spec))
    if path.suffix.lower() == ".npz":
        from ..bnn import PackedFormatError, load_packed  # NumPy only

        if not path.is_file():
            raise RuntimeModelError(f"{path}: no such model file")
        try:
            return load_packed(path, threads=threads or 1)
        except PackedFormatError as exc:
            raise RuntimeModelError(str(exc)) from None
    if path.suffix.lower() != ".onnx" and spec not in shipped:
        raise RuntimeModelError(f"{spec}: not a shipped runtime model ({', '.join(shipped)}), .onnx or packed .npz "
                                "file (export others with `cxrkit export`)")
    return load_onnx(path, threads=threads)
