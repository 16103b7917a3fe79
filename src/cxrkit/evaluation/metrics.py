"""Classification metrics with 95% bootstrap confidence intervals (scikit-learn underneath).

Point estimates on 624 test images swing by ±2 points between equally good
models; every figure therefore carries a percentile-bootstrap interval so a
reader can tell a real gain from noise.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn import metrics as skm

from ..inference.decision import parse_threshold_rule
from .selective import selective_metrics

N_BOOTSTRAP = 1000




def choose_threshold(y_true: np.ndarray, p_pos: np.ndarray, rule: str) -> float:
    """Pick a cut-off on P(positive) from *validation* predictions.

    Rules: ``youden`` (max sensitivity + specificity − 1), ``fixed:T``,
    ``sensitivity:S`` (highest threshold reaching sensitivity ≥ S).
    """
    kind, value = parse_threshold_rule(rule)
    if kind == "fixed":
        return value
    if kind == "youden-geometry":
        raise ValueError("threshold rule youden-geometry needs the films, not only their probabilities: give it in "
                         "a recipe or to cxrkit calibrate")
    if len(np.unique(y_true)) < 2:
        return 0.5  # one class only: no ROC to read a threshold from
    fpr, tpr, thr = skm.roc_curve(y_true, p_pos)
    thr = np.clip(thr, 0.0, 1.0)
    if kind == "youden":
        j = tpr - fpr
        best = np.flatnonzero(j == j.max())
        # several cut-offs tie on a small validation set: take the middle of the tied range
        return float((thr[best[0]] + thr[best[-1]]) / 2)
    ok = np.flatnonzero(tpr >= value)  # sensitivity:S
    return float(thr[ok[0]])


def expected_calibration_error(y_onehot: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_onehot.argmax(axis=1)).astype(float)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def _ranking_scores(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """ROC-AUC and average precision exactly as scikit-learn computes them (ties grouped).

    Inlined because the bootstrap calls it 1,000 times and scikit-learn's input
    validation would make that take seconds instead of a fraction of one.
    """
    order = np.argsort(-p, kind="mergesort")
    ps, ys = p[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]  # end of each tie group
    tps = np.cumsum(ys)[last].astype(float)
    fps = (last + 1) - tps
    tpr, fpr = np.r_[0.0, tps / tps[-1]], np.r_[0.0, fps / fps[-1]]
    auc = float(np.trapezoid(tpr, fpr))
    precision = tps / (tps + fps)
    ap = float(np.sum(np.diff(tpr) * precision))
    return auc, ap


def _binary_point(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    # counts in numpy, not via sklearn: this runs 1,000 times per bootstrap
    pred = p >= threshold
    pos = y == 1
    tp, fn = int(np.sum(pred & pos)), int(np.sum(~pred & pos))
    fp, tn = int(np.sum(pred & ~pos)), int(np.sum(~pred & ~pos))
    sens = tp / (tp + fn) if tp + fn else float("nan")
    spec = tn / (tn + fp) if tn + fp else float("nan")
    both = tp + fn > 0 and tn + fp > 0
    auc, ap = _ranking_scores(y, p) if both else (float("nan"), float("nan"))
    return {
        "accuracy": (tp + tn) / len(y),
        "balanced_accuracy": (sens + spec) / 2 if both else float("nan"),
        "sensitivity": sens,
        "specificity": spec,
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
        "roc_auc": auc,
        "pr_auc": ap,
        "brier": float(np.mean((p - y) ** 2)),
    }


def _multiclass_point(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    pred = probs.argmax(axis=1)
    k = probs.shape[1]
    present = len(np.unique(y)) == k
    onehot = np.eye(k)[y]
    with warnings.catch_warnings():  # a bootstrap resample may lack a class the model predicts: expected, not news
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
        balanced = skm.balanced_accuracy_score(y, pred)
    return {
        "accuracy": skm.accuracy_score(y, pred),
        "balanced_accuracy": balanced,
        "f1": skm.f1_score(y, pred, average="macro", zero_division=0.0),
        "roc_auc": skm.roc_auc_score(y, probs, multi_class="ovr", labels=list(range(k))) if present else float("nan"),
        "brier": float(np.mean(np.sum((probs - onehot) ** 2, axis=1))),
    }


def bootstrap_ci(fn, n: int, n_boot: int = N_BOOTSTRAP, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile 95% intervals of every key ``fn(index_array)`` returns."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(n_boot):
        for key, value in fn(rng.integers(0, n, n)).items():
            draws.setdefault(key, []).append(value)
    out = {}
    for key, values in draws.items():
        v = np.asarray(values, dtype=float)
        v = v[~np.isnan(v)]
        out[key] = (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) if len(v) else (np.nan, np.nan)
    return out


def one_vs_rest_auc(y: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, float]:
    """ROC-AUC of P(class) for class vs all others, per class (NaN where the class is absent or alone)."""
    out = {}
    for i, c in enumerate(classes):
        pos = y == i
        out[c] = float(skm.roc_auc_score(pos, probs[:, i])) if 0 < pos.sum() < len(y) else float("nan")
    return out


def _subtype_pair(classes: list[str]) -> tuple[int, int] | None:
    """Indices of the bacterial and the viral pneumonia class (kermany3's BACTERIAL/VIRAL, seed 003's
    Pneumonia-Bacterial/Pneumonia-Viral), or None."""
    upper = [c.upper() for c in classes]
    bact = [i for i, c in enumerate(upper) if "BACTERI" in c]
    vir = [i for i, c in enumerate(upper) if "VIRAL" in c or "VIRUS" in c]
    return (bact[0], vir[0]) if len(bact) == 1 and len(vir) == 1 else None


def _pair_point(is_viral: np.ndarray, score: np.ndarray) -> dict[str, float]:
    both = 0 < is_viral.sum() < len(is_viral)
    return {"accuracy": float(np.mean((score >= 0.5) == is_viral)),
            "roc_auc": _ranking_scores(is_viral.astype(int), score)[0] if both else float("nan")}


def bacterial_vs_viral(y: np.ndarray, probs: np.ndarray, classes: list[str], n_boot: int = N_BOOTSTRAP,
                       seed: int = 0) -> dict | None:
    """Kermany et al.'s second task read off an N-class model: only the truly bacterial or viral cases, scored by
    P(viral) / (P(bacterial) + P(viral)) and decided at 0.5 (their figures: accuracy 90.7%, AUC 0.940).
    None when the classes hold no such pair."""
    pair = _subtype_pair(classes)
    if pair is None:
        return None
    b, v = pair
    keep = (y == b) | (y == v)
    if not keep.any():
        return None
    is_viral = y[keep] == v
    score = probs[keep, v] / np.clip(probs[keep, b] + probs[keep, v], 1e-12, None)
    ci = bootstrap_ci(lambda i: _pair_point(is_viral[i], score[i]), len(score), n_boot, seed) if n_boot else {}
    return {"n": int(keep.sum()), "n_viral": int(is_viral.sum()), "classes": [classes[b], classes[v]],
            **_pair_point(is_viral, score), "ci95": {k: [float(a), float(c)] for k, (a, c) in ci.items()}}


def evaluate_probabilities(y_true, probs, classes, threshold: float = 0.5, n_boot: int = N_BOOTSTRAP,
                           seed: int = 0, confidence_threshold: float = 0.0) -> dict:
    """Every metric of the report, from labels and ``(N, C)`` probabilities.

    For two classes the positive (disease) class is ``classes[1]`` and the
    decision is ``P(classes[1]) >= threshold``; figures at 0.5 are added under
    ``at_0.5`` so a tuned threshold can be compared with the naive one. For
    more classes: one-vs-rest AUCs, their mean (``macro_auc``, equal to
    ``roc_auc``) and, where a bacterial and a viral class exist, the
    bacterial-vs-viral figures. ``selective`` holds coverage, accuracy on
    covered cases and the confusion matrix with an UNCERTAIN column, at
    ``confidence_threshold`` on the probability of the decided class.
    """
    y = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=float)
    classes = list(classes)
    k = len(classes)
    if k == 2:
        p = probs[:, 1]
        point = _binary_point(y, p, threshold)
        pred = (p >= threshold).astype(int)
        ci = bootstrap_ci(lambda i: _binary_point(y[i], p[i], threshold), len(y), n_boot, seed) if n_boot else {}
        extra = {"at_0.5": {k_: float(v) for k_, v in _binary_point(y, p, 0.5).items()},
                 "positive_class": classes[1]}
    else:
        point = _multiclass_point(y, probs)
        pred = probs.argmax(axis=1)
        ci = bootstrap_ci(lambda i: _multiclass_point(y[i], probs[i]), len(y), n_boot, seed) if n_boot else {}
        extra = {"roc_auc_ovr": one_vs_rest_auc(y, probs, classes), "macro_auc": float(point["roc_auc"])}
        pair = bacterial_vs_viral(y, probs, classes, n_boot, seed)
        if pair is not None:
            extra["bacterial_vs_viral"] = pair
    point["ece"] = expected_calibration_error(np.eye(k)[y], probs)
    report = skm.classification_report(y, pred, labels=list(range(k)), target_names=classes, output_dict=True,
                                       zero_division=0.0)
    per_class = {c: {m: float(report[c][m]) for m in ("precision", "recall", "f1-score", "support")} for c in classes}
    return {
        "n": int(len(y)),
        "classes": classes,
        "threshold": float(threshold),
        **{key: float(v) for key, v in point.items()},
        "ci95": {key: [float(a), float(b)] for key, (a, b) in ci.items()},
        "confusion_matrix": skm.confusion_matrix(y, pred, labels=list(range(k))).tolist(),
        "per_class": per_class,
        "selective": selective_metrics(y, pred, probs[np.arange(len(y)), pred], classes, confidence_threshold),
        **extra,
    }
