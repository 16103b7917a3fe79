"""From image files to predictions, for any model that brings its own forward pass.

NumPy and Pillow only: ``cxrkit predict`` with an exported model, the
torch-free runtime (``python -m cxrkit.runtime``) and the PyTorch predictor
read, resize, decide and flag films by this one loop, so the three cannot
drift apart; :func:`cxrkit.inference.predictor.predict_paths` hands it
PyTorch's forward pass.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.io import ImageReadError, MissingDecoderError, read_image
from ..data.preprocess import resize_gray
from .decision import decide, uncertain_mask


@dataclass
class Prediction:
    path: str
    label: str
    probabilities: dict[str, float]
    uncertain: bool = False  # confidence in ``label`` below the model's validation-chosen confidence threshold

    def to_dict(self) -> dict:
        return {"path": self.path, "label": self.label, "probabilities": self.probabilities,
                "uncertain": self.uncertain}


def films_at_size(arrays: Sequence[np.ndarray], pre) -> np.ndarray:
    """Grayscale uint8 films of any size → uint8 ``(N, S, S)`` at the model's input size (``pre``: its
    ``Preprocess``)."""
    return np.stack([resize_gray(a, pre.size, pre.resize) for a in arrays])


def predict_files(model, paths: Sequence[str | Path], forward: Callable[[np.ndarray], np.ndarray],
                  batch_size: int = 64, progress: bool = False) -> tuple[list[Prediction], list[str]]:
    """Predictions for the readable files and one error line per unreadable one.

    ``model`` carries ``classes``, ``preprocess``, ``threshold`` and ``confidence_threshold``; ``forward`` maps
    uint8 ``(N, S, S)`` films at the model's size to ``(N, C)`` probabilities. A missing DICOM decoder is raised,
    not listed: it is the install's fault, and every DICOM would fail alike."""
    preds: list[Prediction] = []
    errors: list[str] = []
    pre = model.preprocess
    starts = range(0, len(paths), batch_size)
    if progress:  # tqdm is the full package's; the torch-free runtime has no bars and need not install it
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="predict", unit="batch")
    for start in starts:
        chunk, arrays = [], []
        for p in paths[start:start + batch_size]:
            try:
                arrays.append(resize_gray(read_image(p), pre.size, pre.resize))
                chunk.append(p)
            except MissingDecoderError:
                raise
            except ImageReadError as exc:
                errors.append(str(exc))
        if not arrays:
            continue
        probs = forward(np.stack(arrays))
        for p, row, label, unsure in zip(chunk, probs, decide(model, probs), uncertain_mask(model, probs)):
            preds.append(Prediction(str(p), label, {c: round(float(v), 6) for c, v in zip(model.classes, row)},
                                    bool(unsure)))
    return preds, errors
