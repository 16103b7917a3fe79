"""From probabilities to decisions and UNCERTAIN flags, for every kind of model.

NumPy only, so the torch-free runtime decides exactly as ``cxrkit predict``
does: a model here is anything with ``classes``, ``threshold`` and
``confidence_threshold`` (``ModelBundle``, ``runtime.OnnxModel``,
``bnn.PackedModel``).
"""
from __future__ import annotations

import numpy as np


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
