#!/usr/bin/env python3
"""How many films does a site need to adapt a model? Labelled: refit the threshold (`cxrkit calibrate --site`);
unlabelled: re-estimate the BatchNorm statistics (`cxrkit calibrate --unlabeled`, with ``--unlabeled``).

Plays a deployment site with a labelled folder the model never saw (the Kermany test split, whose NORMAL films come
from another block of the acquisition than the training data). The site's films are split in two halves by patient;
``n`` films drawn (whole patients at a time) from one half fit the temperature and a Youden threshold exactly as
``cxrkit calibrate --site`` does, and the other half measures the decisions. Both halves take both roles, ``--draws``
times per size. The films that fit a threshold are never the ones it is scored on, but these are figures *after
local recalibration on site data*: they answer a deployment question and are not comparable with cxrkit's
headline test figures, whose threshold comes from validation carved from the training data alone.

With ``--unlabeled``, ``n`` films of one half (labels not given to the method) re-estimate the model's BatchNorm
statistics exactly as ``cxrkit calibrate --unlabeled`` does (resampled to the training data's class mix by the
model's own decisions; a whole half and the mixes also by the true share, ``--positive-share``, and as they are,
``--no-rebalance``), the stored threshold is
kept, and the other half measures; further rows draw ``--fixed`` films with a chosen share of pneumonia (the labels
only compose the mix), because a site's batch is not always an ordinary one, and one row re-estimates on a whole
half, then refits the threshold on ``--fixed`` labelled films of it (both flags together).

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
from cxrkit.evaluation.batchnorm_adaptation import adapt_batchnorm, training_class_mix
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


def pick_films(rng: np.random.Generator, fit_idx: np.ndarray, patients: np.ndarray, y: np.ndarray, size: str,
               mix: float | None = None) -> np.ndarray | None:
    """Indices of the films of one half (``fit_idx``) that adapt the model: all of them (``size == "all"``),
    ``size`` films of whole patients, or ``size`` films with a share ``mix`` of positives (``None`` if impossible)."""
    if size == "all":
        return fit_idx
    if mix is None:
        pick = draw_patients(rng, patients[fit_idx], y[fit_idx], int(size))
        return None if pick is None else fit_idx[pick]
    k = round(mix * int(size))
    pos, neg = fit_idx[y[fit_idx] == 1], fit_idx[y[fit_idx] == 0]
    return np.concatenate([rng.choice(pos, k, replace=False), rng.choice(neg, int(size) - k, replace=False)])


def scores(p_pos: np.ndarray, y: np.ndarray, threshold: float) -> tuple[float, float, float]:
    pred = p_pos >= threshold
    return float((pred == y).mean()), float(pred[y == 1].mean()), float((~pred[y == 0]).mean())


def refit_and_score(probs_fit, y_fit, probs_eval, y_eval, threshold) -> tuple[tuple[float, float, float], float]:
    """Temperature + Youden threshold fitted as `cxrkit calibrate --site` does, scored on the other films."""
    cal = calibrate(probs_fit, y_fit, threshold, rule="none", threshold_rule="youden")
    return scores(rescale(probs_eval, cal.temperature)[:, 1], y_eval, cal.threshold), float(cal.threshold)


def summary_row(label: str, results: list, thresholds: list) -> tuple:
    acc = np.array([r[0] for r in results])
    return (f"{label} ({len(results)} fits)", acc.mean(), np.mean([r[1] for r in results]),
            np.mean([r[2] for r in results]), np.percentile(acc, 5), np.percentile(acc, 95),
            float(np.median(thresholds)))


def unlabelled_rows(bundle, images, y, patients, halves, rng, sizes: list[str], mixes: list[float],
                    draws: int, fixed: int = 64) -> list[tuple]:
    """BatchNorm statistics re-estimated on films of one half, the stored threshold scored on the other: resampled
    to the training data's class mix by the model's decisions (`calibrate --unlabeled`'s default); for a whole half
    and the chosen mixes also resampled by the true share of pneumonia (`--positive-share`) and on the films as they
    are (`--no-rebalance`); and for the first mix with that share misstated by a factor of two either way."""
    training_mix = training_class_mix(bundle)

    def adapted(fit_films, variant):
        resample, told = variant
        share = None if told is None else min(1.0, told * float(y[fit_films].mean()))
        return adapt_batchnorm(bundle, images[fit_films], training_mix if resample else None, share, min_films=1)

    # (name, (resample, factor on the true positive share told to --positive-share, or None))
    variants = [("resampled by decisions", (True, None)), ("told the share", (True, 1.0)),
                ("as they are", (False, None))] if training_mix else [("as they are", (False, None))]
    plans = [(f"BatchNorm re-estimated on {s} unlabelled films, {variants[0][0]}", s, None, variants[0][1])
             for s in sizes if s and s != "all"]
    plans += [(f"BatchNorm re-estimated on a whole half, {name}", "all", None, v) for name, v in variants]
    plans += [(f"BatchNorm re-estimated on {fixed} unlabelled films, {m:.0%} pneumonia, {name}", str(fixed), m, v)
              for m in mixes for name, v in variants]
    if training_mix and mixes:
        plans += [((f"BatchNorm re-estimated on {fixed} unlabelled films, {mixes[0]:.0%} pneumonia, told "
                    f"{factor * mixes[0]:.0%}"), str(fixed), mixes[0], (True, factor)) for factor in (0.5, 2.0)]
    rows = []
    for label, size, mix, variant in plans:
        results = []
        for fit_idx, eval_idx in halves:
            for _ in range(1 if size == "all" else draws):
                pick = pick_films(rng, fit_idx, patients, y, size, mix)
                if pick is None:
                    continue
                probs = predict_resized(adapted(pick, variant), images[eval_idx])
                results.append(scores(probs[:, 1], y[eval_idx], bundle.threshold))
        rows.append(summary_row(label, results, [bundle.threshold]))
    results, thresholds = [], []
    for fit_idx, eval_idx in halves:  # both: adapt on the whole half, then refit on labelled films of it
        model = adapted(fit_idx, variants[0][1])
        probs_fit, probs_eval = predict_resized(model, images[fit_idx]), predict_resized(model, images[eval_idx])
        for _ in range(draws):
            pick = draw_patients(rng, patients[fit_idx], y[fit_idx], fixed)
            if pick is None:
                continue
            result, thr = refit_and_score(probs_fit[pick], y[fit_idx][pick], probs_eval, y[eval_idx], model.threshold)
            results.append(result)
            thresholds.append(thr)
    rows.append(summary_row(f"BatchNorm re-estimated on a whole half, {variants[0][0]}, then refit on {fixed} "
                            "labelled films", results, thresholds))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="cxr_cnn", help="binary model: shipped name, run directory or .safetensors")
    ap.add_argument("--site", required=True, help="labelled films playing the site: SITE/CLASS/*")
    ap.add_argument("--sizes", default="16,32,64,128,all", help="films per fit (comma-separated; all = a whole half)")
    ap.add_argument("--draws", type=int, default=50, help="random draws per size and half (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--unlabeled", action="store_true",
                    help="add rows for BatchNorm statistics re-estimated on unlabelled films of the other half")
    ap.add_argument("--unlabeled-sizes", default="16,32,64,128",
                    help="films per re-estimation; a whole half is always measured (default: %(default)s)")
    ap.add_argument("--mixes", default="0.1,0.5,0.9",
                    help="pneumonia shares of --fixed unlabelled films (default: %(default)s)")
    ap.add_argument("--fixed", type=int, default=64,
                    help="films per draw for the --mixes rows and the labelled refit after re-estimation "
                         "(default: %(default)s)")
    ap.add_argument("--unlabeled-draws", type=int, default=10,
                    help="random draws per size and half for the unlabelled rows (default: %(default)s)")
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
                pick = pick_films(rng, fit_idx, patients, y, size)
                if pick is None:
                    continue
                result, thr = refit_and_score(probs[pick], y[pick], probs[eval_idx], y[eval_idx], bundle.threshold)
                results.append(result)
                thresholds.append(thr)
        rows.append(summary_row(f"refit on {'a whole half' if size == 'all' else f'{size} site films'}", results,
                                thresholds))
    if args.unlabeled:
        rows += unlabelled_rows(bundle, data.images, y, patients, halves, rng, args.unlabeled_sizes.split(","),
                                [float(m) for m in args.mixes.split(",") if m], args.unlabeled_draws, args.fixed)

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
