"""Selective prediction: what a model scores when its UNCERTAIN cases are handed to a human.

Seed 003 reports its confusion matrix with an extra UNCERTAIN column; the
figures that go with it are the coverage (share of cases the model decides)
and the accuracy on those covered cases. Both depend on the confidence
threshold stored in the model, which was chosen on validation data.
"""
from __future__ import annotations

import numpy as np

UNCERTAIN = "UNCERTAIN"


def selective_metrics(y: np.ndarray, pred: np.ndarray, conf: np.ndarray, classes: list[str],
                      confidence_threshold: float) -> dict:
    """Coverage, accuracy on covered cases and the ``K x (K + 1)`` confusion matrix whose last column counts the
    UNCERTAIN cases (confidence below ``confidence_threshold``) of each true class."""
    k = len(classes)
    covered = conf >= confidence_threshold
    cm = np.zeros((k, k + 1), dtype=int)
    np.add.at(cm, (y, np.where(covered, pred, k)), 1)
    return {
        "confidence_threshold": float(confidence_threshold),
        "coverage": float(covered.mean()) if len(y) else float("nan"),
        "n_covered": int(covered.sum()),
        "n_uncertain": int((~covered).sum()),
        "covered_accuracy": float((pred == y)[covered].mean()) if covered.any() else float("nan"),
        "columns": [*classes, UNCERTAIN],
        "confusion_matrix": cm.tolist(),
    }
