"""Temperature scaling and the UNCERTAIN confidence threshold, both fitted on validation predictions.

A network trained with cross-entropy is usually over-confident; dividing its
logits by one scalar temperature T (Guo et al. 2017) fixes most of that without
changing any decision (the ranking and the argmax stay). A prediction whose
confidence — the calibrated probability of the class it decides — is below a
threshold is reported UNCERTAIN, as in seed 003, so a reader can route it to a
human. The threshold is chosen on validation data for a target coverage
(``coverage:0.95``: flag the 5% least confident) or a target error rate on the
covered cases (``error:0.05``), and the rule is stored beside it.

Everything works from probabilities, not raw logits, so the same code serves a
PyTorch bundle, an exported ONNX model or a packed BNN: softmax is invariant
to adding a constant per row, so ``log p`` are logits for N classes, and
``log p1 - log p0`` is the one logit of a binary model (sigmoid or 2-way softmax).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_expit, log_softmax, logit, softmax

from ..inference.decision import indices_at, parse_uncertain_rule
from .metrics import choose_threshold, expected_calibration_error

_EPS = 1e-7
_LOG_T_BOUNDS = (np.log(0.05), np.log(20.0))


def logits_from_probabilities(probs: np.ndarray) -> np.ndarray:
    """``(N, 2)`` → ``(N, 1)`` binary logit; ``(N, C)`` → ``log p`` (logits up to a per-row constant)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0)
    if p.shape[1] == 2:
        return (np.log(p[:, 1]) - np.log(p[:, 0]))[:, None]
    return np.log(p)


def probabilities_from_logits(logits: np.ndarray) -> np.ndarray:
    """Inverse of :func:`logits_from_probabilities`: ``(N, 1)`` → sigmoid as ``(N, 2)``; ``(N, C)`` → softmax."""
    if logits.shape[1] == 1:
        p = expit(logits[:, 0])
        return np.stack([1 - p, p], axis=1)
    return softmax(logits, axis=1)


def rescale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """The probabilities the same model gives with its logits divided by ``temperature``."""
    return probabilities_from_logits(logits_from_probabilities(probs) / temperature).astype(np.float32)


def nll(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of labels ``y`` under sigmoid (one logit) or softmax logits."""
    if logits.shape[1] == 1:
        z = logits[:, 0]
        return float(-np.mean(np.where(y == 1, log_expit(z), log_expit(-z))))
    return float(-np.mean(log_softmax(logits, axis=1)[np.arange(len(y)), y]))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T in [0.05, 20] minimising the NLL of ``logits / T`` (bounded Brent search on log T: one parameter,
    convex in practice, no gradient bookkeeping). ``logits``: ``(N, 1)`` sigmoid or ``(N, C)`` softmax."""
    logits, y = np.asarray(logits, dtype=np.float64), np.asarray(y, dtype=int)
    if logits.ndim != 2 or len(logits) != len(y) or len(y) == 0:
        raise ValueError(f"fit_temperature needs (N, C) logits and N labels, got {logits.shape} and {y.shape}")
    if _all_right_with_a_margin(logits, y):  # the NLL falls as T -> 0 and has no minimum: the search would return
        return 1.0  # its bound, 0.05, and probabilities of exactly 0 and 1 (a few validation films, all right)
    res = minimize_scalar(lambda s: nll(logits / np.exp(s), y), bounds=_LOG_T_BOUNDS, method="bounded",
                          options={"xatol": 1e-5})
    return float(np.exp(res.x))


def _all_right_with_a_margin(logits: np.ndarray, y: np.ndarray) -> bool:
    """Every case's true class strictly ahead (sigmoid: the logit's sign; softmax: the largest logit)."""
    if logits.shape[1] == 1:
        return bool(np.all(np.where(y == 1, logits[:, 0] > 0, logits[:, 0] < 0)))
    true = logits[np.arange(len(y)), y]
    others = np.where(np.eye(logits.shape[1], dtype=bool)[y], -np.inf, logits).max(axis=1)
    return bool(np.all(true > others))


def decision_confidence(probs: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Decided class indices and their probabilities, before a model exists to carry the threshold."""
    pred = indices_at(probs, threshold)
    return pred, probs[np.arange(len(probs)), pred]


def choose_confidence_threshold(conf: np.ndarray, correct: np.ndarray, rule: str) -> tuple[float, bool]:
    """Cut-off on confidence from *validation* cases; returns ``(threshold, target_reached)``.

    ``coverage:C`` keeps the ⌈C·N⌉ most confident cases (ties may keep a few more);
    ``error:E`` takes the lowest cut-off (largest coverage) whose covered cases err at most E, or, when no cut-off
    reaches E, the one with the smallest error; ``none`` flags nothing.
    """
    kind, target = parse_uncertain_rule(rule)
    if kind == "none":
        return 0.0, True
    order = np.argsort(-conf, kind="mergesort")
    sorted_conf = conf[order]
    if kind == "coverage":
        return float(sorted_conf[int(np.ceil(target * len(conf))) - 1]), True
    last = np.r_[np.flatnonzero(np.diff(sorted_conf)), len(conf) - 1]  # error:E, covering down to each distinct value
    errors = np.cumsum(1 - correct[order])[last] / (last + 1)
    ok = np.flatnonzero(errors <= target)
    best = ok[-1] if len(ok) else int(np.argmin(errors))
    return float(sorted_conf[last[best]]), bool(len(ok))


@dataclass
class Calibration:
    temperature: float
    confidence_threshold: float
    threshold: float  # the binary decision threshold mapped onto the calibrated scale (same decisions)
    probs: np.ndarray = field(repr=False)  # the validation probabilities after temperature scaling
    report: dict = field(default_factory=dict)  # rule and validation figures, stored in the model's info


def calibrate(probs: np.ndarray, y: np.ndarray, threshold: float = 0.5, rule: str = "coverage:0.95",
              fit: bool = True, threshold_rule: str | None = None) -> Calibration:
    """Fit the temperature (unless ``fit`` is False) and the confidence threshold on validation ``probs``.

    ``threshold`` is a binary model's decision cut-off on the uncalibrated P(classes[1]); it is returned moved
    through the temperature, so every decision stays exactly what it was, unless ``threshold_rule`` (``youden``,
    ``sensitivity:S``, ``fixed:T``) asks for a new cut-off chosen on these predictions.
    """
    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(y, dtype=int)
    logits = logits_from_probabilities(probs)
    temperature = fit_temperature(logits, y) if fit else 1.0
    cal = rescale(probs, temperature)
    if probs.shape[1] == 2 and threshold_rule:
        threshold = choose_threshold(y, cal[:, 1].astype(np.float64), threshold_rule)
    elif probs.shape[1] == 2:
        threshold = float(expit(logit(np.clip(threshold, _EPS, 1 - _EPS)) / temperature))
    pred, conf = decision_confidence(cal, threshold)
    correct = (pred == y).astype(float)
    cut, reached = choose_confidence_threshold(conf, correct, rule)
    covered = conf >= cut
    onehot = np.eye(probs.shape[1])[y]
    report = {"temperature": temperature, "uncertain_rule": rule, "confidence_threshold": cut,
              **({"threshold_rule": threshold_rule, "threshold": threshold} if threshold_rule else {}),
              "target_reached": reached, "val_n": int(len(y)),
              "val_nll_before": nll(logits, y), "val_nll_after": nll(logits / temperature, y),
              "val_ece_before": expected_calibration_error(onehot, probs),
              "val_ece_after": expected_calibration_error(onehot, cal),
              "val_coverage": float(covered.mean()),
              "val_covered_accuracy": float(correct[covered].mean()) if covered.any() else float("nan")}
    return Calibration(temperature, cut, threshold, cal, report)
