"""From probabilities to decisions and UNCERTAIN flags, for every kind of model.

NumPy only, so the torch-free runtime decides exactly as ``cxrkit predict``
does: a model here is anything with ``classes``, ``threshold`` and
``confidence_threshold`` (``ModelBundle``, ``runtime.OnnxModel``,
``bnn.PackedModel``). The syntax of the rules that choose the cut-offs on
validation is read here too, so that a recipe checks its rules when it is
read without importing scikit-learn and SciPy, which choose them.
"""
from __future__ import annotations

import numpy as np


THRESHOLD_RULES = "youden | youden-geometry | fixed:T | sensitivity:S, T and S in [0, 1]"
UNCERTAIN_RULES = "none | coverage:C | error:E"


def parse_threshold_rule(rule: str) -> tuple[str, float]:
    """``"sensitivity:0.95"`` → ``("sensitivity", 0.95)``; a one-line ``ValueError`` for anything else, so a
    recipe with a mistyped rule fails when it is read, not after its training."""
    kind, sep, arg = str(rule).partition(":")
    if kind in ("youden", "youden-geometry") and not sep:
        return kind, 0.0
    if kind == "fixed" and not arg:
        return kind, 0.5
    try:
        value = float(arg)
    except ValueError:
        value = float("nan")
    if kind in ("fixed", "sensitivity") and 0.0 <= value <= 1.0:
        return kind, value
    raise ValueError(f"unknown threshold rule {rule!r} ({THRESHOLD_RULES})")


def parse_uncertain_rule(rule: str) -> tuple[str, float]:
    """``"coverage:0.9"`` → ``("coverage", 0.9)``; a one-line ``ValueError`` for anything else."""
    kind, _, arg = str(rule).partition(":")
    if kind == "none" and not arg:
        return kind, 0.0
    try:
        target = float(arg)
    except ValueError:
        raise ValueError(f"bad uncertain rule {rule!r} ({UNCERTAIN_RULES})") from None
    if kind == "coverage" and 0.0 < target <= 1.0 or kind == "error" and 0.0 <= target < 1.0:
        return kind, target
    raise ValueError(f"bad uncertain rule {rule!r} ({UNCERTAIN_RULES}; coverage in (0, 1], error in [0, 1))")


def indices_at(probs: np.ndarray, threshold: float) -> np.ndarray:
    """The one decision rule: two columns: P(second class) ≥ ``threshold``; more: the most probable class."""
    if probs.shape[1] == 2:
        return (probs[:, 1] >= threshold).astype(int)
    return probs.argmax(axis=1)


def decide_indices(model, probs: np.ndarray) -> np.ndarray:
    """:func:`indices_at` with the model's (validation-chosen) threshold. Class indices."""
    return indices_at(probs, model.threshold)


def decide(model, probs: np.ndarray) -> list[str]:
    """Class names of :func:`decide_indices`."""
    return [model.classes[i] for i in decide_indices(model, probs)]


def confidence(model, probs: np.ndarray) -> np.ndarray:
    """Probability of the decided class: the top probability, except for a binary model whose validation
    threshold is not 0.5, where it is the probability of the label actually given (the one a user trusts)."""
    return probs[np.arange(len(probs)), decide_indices(model, probs)]


def uncertain_mask(model, probs: np.ndarray) -> np.ndarray:
    """True where the confidence is below the model's ``confidence_threshold`` (0: nothing is uncertain)."""
    return confidence(model, probs) < model.confidence_threshold
