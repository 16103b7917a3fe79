#!/usr/bin/env python3
"""How many labelled films does a site need to refit a model's decision threshold? (`cxrkit calibrate --site`)

Plays a deployment site with a labelled folder the model never saw (the Kermany test split, whose NORMAL films come
from another block of the acquisition than the training data). The site's films are split in two halves by patient;
``n`` films drawn (whole patients at a time) from one half fit the temperature and a Youden threshold exactly as
``cxrkit calibrate --site`` does, and the other half measures the decisions. Both halves take both roles, ``--draws``
times per size. The films that fit a threshold are never the ones it is scored on, but these are figures *after
local recalibration on labelled site data*: they answer a deployment question and are not comparable with
cxrkit's headline test figures, whose threshold comes from validation carved from the training data alone.

    python experiments/site_recalibration.py --model cxr_cnn --site ../shared/data/kermany_224/test
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from cxrkit.data.cache import decode_samples
from cxrkit.data.folder import index_folder
from cxrkit.evaluation.calibration import calibrate, rescale
from cxrkit.inference.bundle import resolve_model
from cxrkit.inference.predictor import predict_resized


def draw_patients(rng: np.random.Generator, patients: np.ndarray, y: np.ndarray, n: int) -> np.ndarray | None:
    """Indices of about ``n`` films, whole patients at a time, with both classes present (``None`` if impossible)."""
    ids = np.unique(patients)
    for _ in range(100):
        chosen, count = [], 0
        for pid in rng.permutation(ids):
            films = np.flatnonzero(patients == pid)
            chosen.extend(films)
            count += len(films)
            if count >= n:
                break
        chosen = np.array(chosen)
        if len(np.unique(y[chosen])) == 2:
            return chosen
    return None


def scores(p_pos: np.ndarray, y: np.ndarray, threshold: float) -> tuple[float, float, float]:
    pred = p_pos >= threshold
    return float((pred == y).mean()), float(pred[y == 1].mean()), float((~pred[y == 0]).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="cxr_cnn", help="binary model: shipped name, run directory or .safetensors")
    ap.add_argument("--site", required=True, help="labelled films playing the site: SITE/CLASS/*")
    ap.add_argument("--sizes", default="16,32,64,128,all", help="films per fit (comma-separated; all = a whole half)")
    ap.add_argument("--draws", type=int, default=50, help="random draws per size and half (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    bundle = resolve_model(args.model)
    if not bundle.is_binary:
        sys.exit("site_recalibration: a binary model is needed")
    index = index_folder(args.site, classes=bundle.classes)
    pre = bundle.preprocess
    data = decode_samples(list(index.samples), pre.size, pre.resize, progress=False)
    probs = predict_resized(bundle, data.images)
    y = data.labels.numpy()
    patients = np.array([s.patient for s in data.samples])
    halves = list(StratifiedGroupKFold(2, shuffle=True, random_state=args.seed).split(probs, y, patients))
    rng = np.random.default_rng(args.seed)

    rows = [("stored (validation carved from train)", *[np.mean(v) for v in zip(
        *(scores(probs[ev, 1], y[ev], bundle.threshold) for _, ev in halves))], 0.0, 0.0, bundle.threshold)]
    for size in args.sizes.split(","):
        results, thresholds = [], []
        for fit_idx, eval_idx in halves:
            for _ in range(1 if size == "all" else args.draws):
                pick = fit_idx if size == "all" else draw_patients(rng, patients[fit_idx], y[fit_idx], int(size))
                if pick is None:
                    continue
                pick = pick if size == "all" else fit_idx[pick]
                cal = calibrate(probs[pick], y[pick], bundle.threshold, rule="none", threshold_rule="youden")
                results.append(scores(rescale(probs[eval_idx], cal.temperature)[:, 1], y[eval_idx], cal.threshold))
                thresholds.append(float(cal.threshold))
        acc = np.array([r[0] for r in results])
        label = f"refit on {'a whole half' if size == 'all' else f'{size} site films'} ({len(results)} fits)"
        rows.append((label, acc.mean(), np.mean([r[1] for r in results]), np.mean([r[2] for r in results]),
                     np.percentile(acc, 5), np.percentile(acc, 95), float(np.median(thresholds))))

    auc = np.mean([roc_auc_score(y[ev], probs[ev, 1]) for _, ev in halves])
    print(f"{bundle.arch} ({args.model}) on {args.site}: {len(y)} films, {len(np.unique(patients))} patients, "
          f"two patient-grouped halves, ROC-AUC per half {auc:.3f} (mean); Youden threshold refit as "
          f"`cxrkit calibrate --site` does; scored on the other half\n")
    print("| threshold | accuracy (mean) | accuracy 5th–95th pct | sensitivity | specificity | threshold (median) |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, acc, sens, spec, lo, hi, thr in rows:
        spread = "" if lo == hi == 0.0 else f"{lo:.3f}–{hi:.3f}"
        print(f"| {label} | {acc:.3f} | {spread} | {sens:.3f} | {spec:.3f} | {thr:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
