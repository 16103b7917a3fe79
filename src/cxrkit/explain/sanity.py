"""Sanity checks for saliency maps: is the heatmap about the model and about the object?

* :func:`randomization_test` — Adebayo et al. 2018, "Sanity Checks for Saliency
  Maps": re-initialise every weight of the model and compare heatmaps. A map
  that survives randomization (high Spearman rank correlation) shows the
  image's edges, not what the model learnt.
* :func:`pointing_game` — Zhang et al. 2016: the fraction of images whose
  heatmap maximum falls inside the known object box.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from scipy.stats import spearmanr

from ..inference.bundle import ModelBundle
from .cam import explain_image


@dataclass
class RandomizationResult:
    spearman: list[float]  # per image, original vs randomized model; NaN where either map is constant
    median: float  # over the informative pairs (NaN if there are none)
    bound: float

    @property
    def uninformative(self) -> int:
        """Pairs where a map is constant (e.g. an all-zero CAM): no ranking to compare, so they say nothing."""
        return int(np.isnan(self.spearman).sum())

    @property
    def passed(self) -> bool:
        """At least one informative pair, and their median below the bound. Why not count a constant map as
        rho 0: a randomized network often finds no evidence at all for one class (all-zero Grad-CAM), and zeros
        for those films would pass the check without comparing anything."""
        return bool(np.isfinite(self.median) and self.median < self.bound)


def randomized_copy(bundle: ModelBundle, seed: int = 0) -> ModelBundle:
    """The same architecture with every parameter and BatchNorm statistic re-initialised (full randomization)."""
    model = copy.deepcopy(bundle.model)
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Module) and hasattr(m, "reset_parameters") and m is not model:
            m.reset_parameters()
    return ModelBundle(model.eval(), bundle.arch, bundle.classes, bundle.preprocess, bundle.threshold,
                       bundle.model_kwargs, bundle.info, bundle.source, temperature=bundle.temperature,
                       confidence_threshold=bundle.confidence_threshold)


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho; NaN when a map is constant (no ranking at all, e.g. an all-zero CAM)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def randomization_test(bundle: ModelBundle, images: Sequence[np.ndarray], bound: float = 0.5, seed: int = 0,
                       method: str = "gradcam", target: str | int | None = None) -> RandomizationResult:
    """Explain the same class with the trained and the randomized model; pass if the median rho < ``bound``
    over the pairs where both maps have a ranking (``RandomizationResult.passed``).

    The class explained is ``target``, or else the trained model's decision,
    kept fixed for the randomized copy, so only the weights differ between the
    two maps. A strongly *negative* median also passes ("the correlation
    drops") but says the trained map is close to the complement of a
    weight-free one; read it in ``spearman``.
    """
    rand = randomized_copy(bundle, seed)
    rhos = []
    for img in images:
        ref = explain_image(bundle, img, target=target, method=method)
        other = explain_image(rand, img, target=ref.explained, method=method, layer=ref.layer)
        rhos.append(_rank_correlation(ref.heatmap, other.heatmap))
    informative = [r for r in rhos if np.isfinite(r)]
    return RandomizationResult(rhos, float(np.median(informative)) if informative else float("nan"), bound)


def pointing_game(bundle: ModelBundle, images: Sequence[np.ndarray], boxes: Sequence[tuple[int, int, int, int]],
                  target: str | int | None = None, method: str = "gradcam") -> float:
    """Fraction of images whose heatmap peak lies in its box ``(top, left, bottom, right)``, bottom/right exclusive."""
    hits = 0
    for img, (top, left, bottom, right) in zip(images, boxes, strict=True):
        heat = explain_image(bundle, img, target=target, method=method).heatmap
        y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        hits += top <= y < bottom and left <= x < right
    return hits / len(images)
