"""Geometric stress test: does a decision survive a change of the film's shape alone?

The Kermany films were squashed to square, so a wider original shows a
narrower chest, and in the training pool the PNEUMONIA originals are wider and
more tightly cropped than the NORMAL ones. A model can score 0.99 on validation
by reading that shape instead of the lungs, and then call most NORMAL films of
another acquisition PNEUMONIA. Validation cannot show it as it is; warping the
same validation films as differently shaped or cropped originals would look
does (docs/robustness.md). The score is the mean balanced accuracy over the
views, at the model's own threshold: a model that reads the lungs keeps it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score, recall_score, roc_auc_score

from ..inference.decision import decide_indices
from ..inference.predictor import predict_resized
from .evaluate import decode_split
from .recalibrate import carve_validation, validation_split_of


@dataclass(frozen=True)
class View:
    """Content magnified ``sx`` times across and ``sy`` times down (cropped, or edge pixels repeated)."""

    name: str
    sx: float
    sy: float


GEOMETRY_VIEWS = (
    View("as is", 1.0, 1.0),
    View("narrower: squeezed across to 0.8 (an original 1.25x wider)", 1.0, 1.25),
    View("wider: stretched across to 1.25 (an original 1.25x narrower)", 1.25, 1.0),
    View("zoomed in 1.3 (a tighter crop)", 1.3, 1.3),
    View("zoomed out to 0.8 (a wider field)", 0.8, 0.8),
)


def warp(images: torch.Tensor, view: View) -> torch.Tensor:
    """uint8 ``(N, S, S)`` films → the same films as ``view`` sees them, uint8."""
    if view.sx == 1.0 and view.sy == 1.0:
        return images
    x = images.float()[:, None] / 255.0
    theta = torch.tensor([[1.0 / view.sx, 0.0, 0.0], [0.0, 1.0 / view.sy, 0.0]]).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return (out[:, 0] * 255.0).round().clamp(0, 255).to(torch.uint8)


@dataclass(frozen=True)
class ViewResult:
    view: str
    balanced_accuracy: float
    recall: dict[str, float]  # per class: the share of its films still given their own label
    roc_auc: float  # binary: of the positive class; N classes: one-vs-rest macro


@dataclass(frozen=True)
class StressResult:
    model: str
    n: int
    threshold: float
    views: tuple[ViewResult, ...]

    @property
    def score(self) -> float:
        """Mean balanced accuracy over the views."""
        return float(np.mean([v.balanced_accuracy for v in self.views]))

    def to_dict(self) -> dict:
        return {"model": self.model, "n": self.n, "threshold": self.threshold, "score": self.score,
                "views": [asdict(v) for v in self.views]}


def _auc(labels: np.ndarray, probs: np.ndarray) -> float:
    if len(np.unique(labels)) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    return float(roc_auc_score(labels, probs, multi_class="ovr", average="macro", labels=range(probs.shape[1])))


def stress_test(model, images: torch.Tensor, labels: np.ndarray, views=GEOMETRY_VIEWS,
                name: str = "") -> StressResult:
    """``model``: any cxrkit model (PyTorch bundle, ONNX, packed BNN); ``images`` uint8 at its input size."""
    labels = np.asarray(labels)
    classes = list(model.classes)
    rows = []
    for view in views:
        probs = predict_resized(model, warp(images, view))
        pred = decide_indices(model, probs)
        recalls = recall_score(labels, pred, labels=range(len(classes)), average=None, zero_division=np.nan)
        rows.append(ViewResult(view.name, float(balanced_accuracy_score(labels, pred)),
                               {c: float(r) for c, r in zip(classes, recalls)}, _auc(labels, probs)))
    return StressResult(name, len(labels), float(model.threshold), tuple(rows))


def stress_table(result: StressResult) -> str:
    """Markdown table, one row per view."""
    classes = list(result.views[0].recall)
    head = "| view | balanced accuracy | " + " | ".join(f"{c} kept" for c in classes) + " | ROC-AUC |"
    lines = [head, "|" + "---|" + "---:|" * (len(classes) + 2)]
    for v in result.views:
        lines.append(f"| {v.view} | {v.balanced_accuracy:.3f} | "
                     + " | ".join(f"{v.recall[c]:.3f}" for c in classes) + f" | {v.roc_auc:.3f} |")
    lines.append(f"| **score (mean balanced accuracy)** | **{result.score:.3f}** |" + " |" * (len(classes) + 1))
    return "\n".join(lines)


def stress_folder(model, data_dir, split: str = "val", progress: bool = False) -> StressResult:
    """:func:`stress_test` on ``data_dir``: ``split="val"`` carves the validation split from its ``train/`` as the
    model's recipe did (never the test split); another name takes that split folder, or the whole folder when it
    has no split folders."""
    pre = model.preprocess
    if split == "val":
        fraction, seed = validation_split_of(model)
        data = carve_validation(data_dir, model.classes, pre, fraction, seed, progress)
    else:
        data, _ = decode_split(data_dir, model.classes, pre, split, progress)
    return stress_test(model, data.images, data.labels.numpy(), name=str(getattr(model, "source", "") or ""))
