"""The models a server holds: loaded once at start-up, warmed up, shared by every request.

PyTorch models get one private copy per worker thread for Grad-CAM: the CAM
library hooks the target layer of the model it is given, so two requests
explaining on one shared model would read each other's activations. The
copies stop the backward pass at the explained layer (``explain.explainer_copies``).
Plain prediction goes through the bundle's frozen TorchScript copy, which is
safe to call from several threads at once. Exported ONNX (and packed BNN)
models predict but have no gradients, so they serve without heatmaps and say so;
a server of exported models only never imports PyTorch (a sixth of the
memory: docs/serve.md).
"""
from __future__ import annotations

import dataclasses
import queue
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..inference.files import films_at_size
from ..runtime.shipped import load_exported

INTENDED_USE = ("Research and teaching: showing students and clinicians how an image classifier trained on one "
                "public pediatric dataset (Kermany et al. 2018) reacts to a frontal chest X-ray. Not for diagnosis, "
                "triage or any decision about a patient.")
NOT_A_DEVICE = "Not a medical device."
NO_HEATMAP = "heatmaps need a PyTorch model (name, run directory or .safetensors); this model is an exported file"


@dataclasses.dataclass
class ServedModel:
    id: str
    bundle: object  # ModelBundle, or a runtime OnnxModel / PackedModel from resolve_model
    card: dict
    explainers: queue.Queue | None  # per-thread copies of a PyTorch bundle; None: no heatmaps

    def explain(self, image: np.ndarray, label: str) -> np.ndarray:
        """Grad-CAM heatmap of ``label`` in the image's frame, on a copy no other thread is using."""
        from ..explain import explain_image

        bundle = self.explainers.get()
        try:
            return explain_image(bundle, image, target=label).heatmap
        finally:
            self.explainers.put(bundle)


def is_pytorch(bundle) -> bool:
    """A ``ModelBundle`` exists only once its module is imported; asking this way keeps a server of exported
    models torch-free."""
    module = sys.modules.get("cxrkit.inference.bundle")
    return module is not None and isinstance(bundle, module.ModelBundle)


def probabilities(bundle, arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Grayscale uint8 films of any size → ``(N, C)`` probabilities, for a PyTorch or an exported model."""
    if is_pytorch(bundle):
        from ..inference.predictor import predict_arrays

        return predict_arrays(bundle, arrays)
    if not arrays:
        return np.zeros((0, len(bundle.classes)), dtype=np.float32)
    return bundle.predict_resized(films_at_size(arrays, bundle.preprocess), 64)


def _load(spec):
    """An exported file loads without PyTorch; anything else (a name, run directory, .safetensors) through
    ``resolve_model``."""
    model = load_exported(spec)
    if model is not None:
        return model
    from ..inference.bundle import resolve_model

    return resolve_model(spec)


def _model_id(source: str, taken: set[str]) -> str:
    """The shipped model's name, or the file / run directory name; made unique with ``-2``, ``-3``, ..."""
    base = Path(source).name
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def _card_text(source: str, pytorch: bool) -> str | None:
    """The markdown model card shipped next to the weights (``weights/NAME.md``, or ``FILE.md`` beside a file).
    Only a PyTorch model can go by a shipped model's name; asking for those names would import torch."""
    shipped = {}
    if pytorch:
        from ..models import shipped_models

        shipped = shipped_models()
    weights = shipped.get(source) or (Path(source) if Path(source).is_file() else None)
    path = weights.with_suffix(".md") if weights else None
    return path.read_text(encoding="utf-8") if path and path.is_file() else None


def _recipe_of(info: dict) -> str | None:
    """The training recipe, or for a model built from others (``cxrkit ensemble``) what it was built from."""
    if info.get("recipe") or not info.get("members"):
        return info.get("recipe")
    how = "weight average" if info.get("average") == "weights" else "ensemble"
    return f"{how} of {'; '.join(map(str, info['members']))}"


def model_card(model_id: str, source: str, bundle, heatmap_note: str | None) -> dict:
    """What ``GET /api/models`` and the page show about a model; ``heatmap_note``: why it has no heatmaps."""
    pre = bundle.preprocess
    info = getattr(bundle, "info", {}) or {}
    return {"id": model_id, "arch": bundle.arch, "classes": list(bundle.classes),
            "positive_class": bundle.classes[1] if bundle.is_binary else None,
            "threshold": round(float(bundle.threshold), 6) if bundle.is_binary else None,
            "threshold_rule": info.get("threshold_rule"),
            "input": f"{pre.size}x{pre.size} {'grayscale' if pre.channels == 1 else 'RGB'}",
            "format": "pytorch" if is_pytorch(bundle) else type(bundle).__name__,
            "heatmap": heatmap_note is None, "heatmap_note": heatmap_note,
            "recipe": _recipe_of(info), "validation_metrics": info.get("val_metrics"),
            "intended_use": INTENDED_USE, "disclaimer": NOT_A_DEVICE, "card_markdown": _card_text(source, is_pytorch(bundle))}


def _warm_up(model: ServedModel, copies: list) -> None:
    """Trace/freeze and run every path once, so the first request is as fast as the others."""
    if is_pytorch(model.bundle):
        from ..inference.predictor import frozen_for_inference

        frozen_for_inference(model.bundle)
    film = np.full((model.bundle.preprocess.size,) * 2, 128, dtype=np.uint8)
    for _ in range(3):  # TorchScript's profiling executor optimises a graph after its first runs
        probabilities(model.bundle, [film])
    if copies:
        from ..explain import explain_image

        for bundle in copies:
            explain_image(bundle, film)


def load_models(specs: Sequence, workers: int) -> list[ServedModel]:
    """Resolve each spec (name, path, or an already loaded bundle) once; the first one is the default."""
    served: list[ServedModel] = []
    taken: set[str] = set()
    for spec in specs:
        bundle = spec if hasattr(spec, "preprocess") else _load(spec)
        source = str(getattr(bundle, "source", "") or (spec if isinstance(spec, (str, Path)) else bundle.arch))
        model_id = _model_id(str(spec) if isinstance(spec, (str, Path)) else source, taken)  # run dir: its name
        taken.add(model_id)
        copies: list = []
        explainers, note = None, NO_HEATMAP
        if is_pytorch(bundle):
            from ..explain import ExplainError, explainer_copies

            try:
                copies = explainer_copies(bundle, workers)
            except ExplainError as exc:  # e.g. no layer with a spatial output: serve it without heatmaps
                note = str(exc)
            else:
                explainers, note = queue.Queue(), None
                for c in copies:
                    explainers.put(c)
        model = ServedModel(model_id, bundle, model_card(model_id, source, bundle, note), explainers)
        _warm_up(model, copies)
        served.append(model)
    return served
