"""Wall-clock time from raw JPEGs to a trained model, and that model's test accuracy.

Issue 5's goal is a model with >= 92% test accuracy within 10 minutes on 2 cores. This script times
``cxrkit.train`` end to end (indexing, decoding, embedding, training, validation threshold, calibration, saving)
for each recipe (and each ``--seeds`` seed: the seed draws the validation split, the initial weights and the
augmentation), then scores the model once on the test split with its validation-chosen threshold:

    python benchmarks/time_to_accuracy.py --data ../shared/data/kermany_224 --recipes cxr_mobilenetv2_frozen

Run it on an otherwise idle machine: the figure is the wall clock.
"""
from __future__ import annotations

import sys

from cxrkit.machine import reexec_with_fast_malloc

reexec_with_fast_malloc([sys.executable, *sys.argv])  # measure with the allocator the cxrkit command uses

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from cxrkit.evaluation.evaluate import evaluate_folder  # noqa: E402
from cxrkit.recipes import load_recipe  # noqa: E402
from cxrkit.training import train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--recipes", default="cxr_mobilenetv2_frozen")
    ap.add_argument("--seeds", help="comma-separated seeds, one run each, and a median row (default: the "
                                    "recipe's own seed)")
    ap.add_argument("--out", help="keep the runs here (default: a temporary folder)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="cxrkit_tta_"))
    print("| recipe | seed | minutes to a model | test accuracy | test ROC-AUC | threshold (rule) |")
    print("|---|---:|---:|---:|---:|---|")
    for name in args.recipes.split(","):
        base = load_recipe(name)
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [base.seed]
        rows = []
        for seed in seeds:
            recipe = base.replace(seed=seed)
            t0 = time.perf_counter()
            result = train(recipe, args.data, out / f"{name}_seed{seed}", progress=False, verbose=False)
            minutes = (time.perf_counter() - t0) / 60
            m = evaluate_folder(result.bundle, args.data, progress=False, n_boot=0).metrics
            rows.append((minutes, m["accuracy"], m["roc_auc"]))
            print(f"| {name} | {seed} | {minutes:.1f} | {m['accuracy']:.3f} | {m['roc_auc']:.3f} | "
                  f"{result.bundle.threshold:.3f} ({recipe.threshold_rule}) |", flush=True)
        if len(rows) > 1:
            med = np.median(np.array(rows), axis=0)
            print(f"| {name} | median of {len(rows)} | {med[0]:.1f} | {med[1]:.3f} | {med[2]:.3f} | |", flush=True)


if __name__ == "__main__":
    main()
