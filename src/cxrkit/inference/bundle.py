"""A trained model in one file: safetensors weights + everything needed to use them.

The metadata header carries architecture, classes, preprocessing, the
validation-chosen threshold and the calibration (softmax/sigmoid temperature and
the confidence below which a prediction is UNCERTAIN, both fitted on validation
data by :mod:`cxrkit.evaluation.calibration`), so ``predict``/``evaluate`` need only the file and
never unpickle anything (safetensors cannot execute code).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from ..data.preprocess import Preprocess
from ..models import create_model, is_model, shipped_models

FORMAT_VERSION = 1
DEFAULT_MODEL = "cxr_cnn"


class ModelLoadError(ValueError):
    """A model name or file that cannot be loaded; one line for the user."""


@dataclass
class ModelBundle:
    model: nn.Module
    arch: str
    classes: tuple[str, ...]
    preprocess: Preprocess
    threshold: float = 0.5  # on P(classes[1]) for binary tasks
    model_kwargs: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)  # recipe, threshold rule, validation metrics, ...
    source: str = ""
    frozen: dict | None = field(default=None, repr=False, compare=False)  # predictor.frozen_for_inference's cache
    precision: str = field(default="fp32", compare=False)  # inference arithmetic, see predictor.use_precision
    engine: str = field(default="auto", compare=False)  # what runs the fp32 forward pass, see predictor.ENGINES
    # Calibration, fitted on validation data (evaluation/calibration.py); the defaults mean "none", which is what
    # files written before these fields existed get: logits are divided by ``temperature`` before the
    # softmax/sigmoid, and a prediction whose confidence is below ``confidence_threshold`` is UNCERTAIN.
    temperature: float = 1.0
    confidence_threshold: float = 0.0

    @property
    def is_binary(self) -> bool:
        return len(self.classes) == 2

    def metadata(self) -> dict:
        return {"format_version": FORMAT_VERSION, "arch": self.arch, "classes": list(self.classes),
                "preprocess": self.preprocess.to_dict(), "threshold": self.threshold,
                "temperature": self.temperature, "confidence_threshold": self.confidence_threshold,
                "model_kwargs": self.model_kwargs, "info": self.info}


def save_bundle(bundle: ModelBundle, path: str | Path) -> Path:
    path = Path(path)
    state = {k: v.detach().contiguous().clone() for k, v in bundle.model.state_dict().items()}
    save_file(state, str(path), metadata={"cxrkit": json.dumps(bundle.metadata())})
    return path


def read_metadata(path: str | Path) -> dict:
    """A model file's cxrkit header (architecture, classes, preprocessing, info) without loading its weights."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("cxrkit", "null"))
    except (SafetensorError, OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
        raise ModelLoadError(f"{path}: not a cxrkit model file ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(meta, dict) or "arch" not in meta:
        raise ModelLoadError(f"{path}: safetensors file without cxrkit metadata")
    return meta


def _check_shapes(path: Path, meta: dict, state: dict[str, torch.Tensor]) -> None:
    """Refuse a file whose header asks for a network other than its tensors before that network is allocated.

    The header is the file's text: without this, ``model_kwargs`` of a tampered (or foreign) file could ask for
    tens of gigabytes of weights, which would be allocated before ``load_state_dict`` found them missing. The
    skeleton is built on the meta device, which allocates nothing."""
    with torch.device("meta"):
        skeleton = create_model(meta["arch"], num_classes=len(meta["classes"]), **meta.get("model_kwargs", {}))
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        missing, extra = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
        wrong = [k for k in expected.keys() & found.keys() if expected[k] != found[k]]
        why = (f"missing {missing[0]}" if missing else f"unexpected {extra[0]}" if extra else
               f"{wrong[0]} is {list(found[wrong[0]])}, the architecture wants {list(expected[wrong[0]])}")
        raise ModelLoadError(f"{path}: weights do not fit {meta['arch']} ({why})")


def load_bundle(path: str | Path) -> ModelBundle:
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such model file")
    meta = read_metadata(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: not a cxrkit model file ({str(exc).splitlines()[0][:120]})") from None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ModelLoadError(f"{path}: written by a newer cxrkit (format {meta['format_version']})")
    if not is_model(meta["arch"]):
        raise ModelLoadError(f"{path}: unknown architecture {meta['arch']!r}")
    try:  # the metadata is the file's text: a field of the wrong type or name is a bad file, not a traceback
        _check_shapes(path, meta, state)
        model = create_model(meta["arch"], num_classes=len(meta["classes"]), **meta.get("model_kwargs", {}))
        bundle = ModelBundle(model, meta["arch"], tuple(meta["classes"]), Preprocess(**meta["preprocess"]),
                             float(meta.get("threshold", 0.5)), meta.get("model_kwargs", {}), meta.get("info", {}),
                             str(path), temperature=float(meta.get("temperature", 1.0)),
                             confidence_threshold=float(meta.get("confidence_threshold", 0.0)))
    except ModelLoadError:
        raise
    except (KeyError, TypeError, ValueError, RecursionError) as exc:  # RecursionError: ensembles nested too deep
        raise ModelLoadError(f"{path}: malformed cxrkit metadata ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:120] if str(exc) else ''})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelLoadError(f"{path}: weights do not fit {meta['arch']} ({str(exc).splitlines()[0][:120]})") from None
    model.eval()
    return bundle


def resolve_model(spec: str | Path | None = None) -> ModelBundle:
    """Load by registry name (shipped weights), run directory, ``.safetensors``, ``.onnx`` or packed ``.npz`` file,
    or by the file name of a runtime model inside the package (``cxr_cnn.int8.onnx``, ``cxr_bnn.bnn.npz``).

    An ``.onnx`` file gives a ``cxrkit.runtime.OnnxModel`` and a packed BNN a
    ``cxrkit.bnn.PackedModel``; prediction and evaluation accept both in place
    of a :class:`ModelBundle`.

    ``None`` means the shipped default model.
    """
    spec = str(spec or DEFAULT_MODEL)
    shipped = shipped_models()
    if spec in shipped:
        bundle = load_bundle(shipped[spec])
        bundle.source = spec
        return bundle
    if is_model(spec):
        raise ModelLoadError(f"model {spec!r} ships no trained weights; train it (`cxrkit train`) and pass "
                             f"the run directory (shipped: {', '.join(shipped)})")
    path = Path(spec)
    if not path.exists():
        from ..runtime.shipped import runtime_files

        packaged = runtime_files()
        if spec not in packaged:
            raise ModelLoadError(f"{spec}: not a shipped model ({', '.join([*shipped, *packaged])}), run directory "
                                 f"or file")
        path = packaged[spec]  # the package's int8 ONNX or packed BNN, by its file name
    if path.is_dir():
        path = path / "model.safetensors"
        if not path.is_file():
            raise ModelLoadError(f"{spec}: run directory has no model.safetensors (did training finish?)")
    elif path.suffix.lower() == ".onnx":  # exported by `cxrkit export`; runs on ONNX Runtime, not PyTorch
        from ..runtime.onnx_model import RuntimeModelError, load_onnx

        try:
            return load_onnx(path)
        except RuntimeModelError as exc:
            raise ModelLoadError(str(exc)) from None
    elif path.suffix.lower() == ".npz":  # bit-packed BNN from `cxrkit export --format bnn-packed`: NumPy engine
        from ..bnn import PackedFormatError, load_packed

        try:
            return load_packed(path)
        except PackedFormatError as exc:
            raise ModelLoadError(str(exc)) from None
    return load_bundle(path)


def probabilities(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(B, 1) binary logits → (B, 2); (B, C) → softmax; both of ``logits / temperature``."""
    x = logits.float() / temperature if temperature != 1.0 else logits.float()
    if x.shape[1] == 1:
        p = torch.sigmoid(x)
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(x, dim=1)
