"""Seed 001's prediction viewer as one grid PNG: image, true label, prediction, probability."""
from __future__ import annotations

from pathlib import Path

from ..data.io import read_image
from .files import Prediction


def _true_label(path: str, classes: tuple[str, ...]) -> str | None:
    parent = Path(path).parent.name
    return parent if parent in classes else None


def save_grid(predictions: list[Prediction], classes: tuple[str, ...], out: str | Path, cols: int = 6) -> Path:
    """Green title when the prediction matches the folder label, red when not, black when unknown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(predictions)
    cols = max(1, min(cols, n))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, pred in zip(axes.flat, predictions):
        ax.imshow(read_image(pred.path), cmap="gray")
        truth = _true_label(pred.path, classes)
        p = pred.probabilities[pred.label]
        color = "black" if truth is None else ("green" if truth == pred.label else "red")
        flag = " UNCERTAIN" if pred.uncertain else ""
        ax.set_title(f"{pred.label} {p:.2f}{flag}" + (f"\ntrue: {truth}" if truth else ""), fontsize=8, color=color)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)
