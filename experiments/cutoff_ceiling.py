#!/usr/bin/env python3
"""How far could a cut-off alone take a model? The most films any single cut-off gets right on a labelled folder.

A diagnostic, never a claim: the best cut-off is found on the very films it is scored on, which cxrkit's figures
never do (their cut-off comes from validation carved from the training data). It separates the two ways a binary
model falls short of an accuracy goal on the shifted test split: if even the hindsight cut-off stays under the goal,
the model ranks the films too poorly and no threshold rule can reach it; if it clears the goal, the rule is to blame.

    python experiments/cutoff_ceiling.py --data ../shared/data/kermany_224/test --models cxr_cnn,runs/fast_veil
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
from sklearn.metrics import roc_curve

from cxrkit.evaluation.evaluate import evaluate_folder
from cxrkit.inference.bundle import resolve_model


def ceiling(positive_prob: np.ndarray, y: np.ndarray) -> tuple[int, float]:
    """The most films right at any one cut-off on ``positive_prob`` >= cut, and that cut-off."""
    fpr, tpr, cuts = roc_curve(y, positive_prob)
    right = tpr * (y == 1).sum() + (1 - fpr) * (y == 0).sum()
    best = int(np.argmax(right))
    return int(round(right[best])), float(min(cuts[best], 1.0))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="labelled folder: ROOT/CLASS/* (e.g. the test split), or ROOT/test/CLASS/*")
    ap.add_argument("--models", required=True, help="comma-separated model names, run directories or files")
    args = ap.parse_args(argv)
    print("| model | ROC-AUC | films right at its own cut-off | most films right at any cut-off (hindsight) |")
    print("|---|---:|---:|---:|")
    for name in args.models.split(","):
        bundle = resolve_model(name)
        if not bundle.is_binary:
            sys.exit(f"cutoff_ceiling: {name} is not a binary model")
        ev = evaluate_folder(bundle, args.data, progress=False, n_boot=0)
        p, y = ev.probabilities[:, 1], ev.labels
        own = int(((p >= bundle.threshold) == (y == 1)).sum())
        most, cut = ceiling(p, y)
        print(f"| {name} | {ev.metrics['roc_auc']:.3f} | {own}/{len(y)} ({own / len(y):.3f}) at {bundle.threshold:.3f} "
              f"| {most}/{len(y)} ({most / len(y):.3f}) at {cut:.3f} |", flush=True)


if __name__ == "__main__":
    main()
