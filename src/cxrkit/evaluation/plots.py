"""Report figures as PNG files (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn import metrics as skm  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _one_vs_rest(y: np.ndarray, probs: np.ndarray, classes: list[str]):
    """(name, y_binary, score) per curve: the disease class for binary, every class otherwise."""
    if len(classes) == 2:
        return [(classes[1], (y == 1).astype(int), probs[:, 1])]
    return [(c, (y == i).astype(int), probs[:, i]) for i, c in enumerate(classes)]


def _legend_or_note(ax, loc: str) -> None:
    """A curve needs films of both sides; a folder of one class gets a note where the curves would be, not an
    empty legend (and matplotlib's warning about it)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc=loc, fontsize=8)
    else:
        ax.text(0.5, 0.5, "one class only in these films:\nno curve to draw", ha="center", va="center",
                transform=ax.transAxes)


def plot_roc(y, probs, classes, path: Path, threshold: float | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(4.4, 4.2))
    for name, yb, s in _one_vs_rest(y, probs, classes):
        if len(np.unique(yb)) < 2:
            continue
        fpr, tpr, _ = skm.roc_curve(yb, s)
        ax.plot(fpr, tpr, label=f"{name} (AUC {skm.roc_auc_score(yb, s):.3f})")
        if threshold is not None and len(classes) == 2:
            pred = s >= threshold
            ax.plot(np.mean(pred[yb == 0]), np.mean(pred[yb == 1]), "ko", label=f"threshold {threshold:.3f}")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="1 − specificity", ylabel="sensitivity", title="ROC")
    _legend_or_note(ax, "lower right")
    return _save(fig, path)


def plot_pr(y, probs, classes, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(4.4, 4.2))
    for name, yb, s in _one_vs_rest(y, probs, classes):
        if len(np.unique(yb)) < 2:
            continue
        prec, rec, _ = skm.precision_recall_curve(yb, s)
        ax.plot(rec, prec, label=f"{name} (AP {skm.average_precision_score(yb, s):.3f})")
    ax.set(xlabel="recall", ylabel="precision", title="Precision–recall", ylim=(0, 1.02))
    _legend_or_note(ax, "lower left")
    return _save(fig, path)


def plot_confusion(cm: list[list[int]], classes: list[str], path: Path, columns: list[str] | None = None) -> Path:
    """Rows: true ``classes``; columns: predicted ``columns`` (default the classes; seed 003 adds UNCERTAIN)."""
    cm = np.asarray(cm)
    columns = columns or classes
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(columns), 1.4 + 1.0 * len(classes)))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true",
           title="Confusion matrix" if columns == classes else "Confusion matrix, UNCERTAIN set aside")
    return _save(fig, path)


def plot_reliability(y, probs, path: Path, n_bins: int = 10) -> Path:
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.minimum(np.digitize(conf, edges) - 1, n_bins - 1)
    xs, ys, ns = [], [], []
    for b in range(n_bins):
        m = idx == b
        if m.any():
            xs.append(conf[m].mean()), ys.append(correct[m].mean()), ns.append(m.sum())
    fig, ax = plt.subplots(figsize=(4.4, 4.2))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    ax.plot(xs, ys, "o-", label="model")
    for x, yv, n in zip(xs, ys, ns):
        ax.annotate(str(n), (x, yv), fontsize=7, textcoords="offset points", xytext=(3, -9))
    ax.set(xlabel="confidence (top probability)", ylabel="accuracy", title="Reliability", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)
