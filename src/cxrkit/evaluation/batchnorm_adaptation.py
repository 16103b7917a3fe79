"""Adapt a model to a site from its *unlabelled* films: re-estimate the BatchNorm statistics there.

A network with BatchNorm normalises every layer's features with means and
variances measured on the training films. A site whose films differ (scanner,
exposure, post-processing) moves those features, and the decision threshold
chosen on validation data no longer sits between the classes: every Kermany
model here calls 25-50 % of the official test NORMALs pneumonia at it
(docs/deploy.md). Measuring the statistics again on the site's own films
("AdaBN", Li et al. 2016, arXiv:1603.04779) moves the features back to where
the classifier expects them, and needs no labels, only films the site has
anyway. The weights, the threshold and the temperature are kept.

The statistics describe whatever films they are measured on, so they also
absorb the site's *class mix*: measured on a batch of mostly normal films, a
normal film lands where an average training film (mostly pneumonia) sat, and
every model then over-called pneumonia (docs/deploy.md). The training
statistics were measured on the training data's mix, so by default the site's
films are resampled to that mix first, using the model's own decisions as
labels (recomputed a few times as the adapted model improves), or its ranking
and the share of positives the site expects. On an ordinary batch every model
measured gained; on a batch of 10 % pneumonia only the told share kept every
model above its unadapted accuracy (docs/deploy.md).
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.cache import decode_samples
from ..data.folder import DatasetError, Sample, expand_paths
from ..data.patients import patient_id
from ..data.preprocess import to_model_input
from ..inference.bundle import ModelBundle
from ..inference.decision import decide_indices
from ..inference.predictor import predict_resized

# Fewer films give statistics that are mostly noise: with 16, one model gained and another lost accuracy, and the
# spread between draws was wide; from 128 on every model measured gained (docs/deploy.md).
MIN_FILMS = 32
REBALANCE_ROUNDS = 3  # decisions → resample → re-estimate, repeated as the adapted model decides better; not tuned
MIN_RESAMPLED = 256  # the resampled batch: large enough that a rare class still appears many times


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def training_class_mix(bundle: ModelBundle) -> dict[str, float] | None:
    """The share of each class among the films the model was trained on, when its file records it."""
    mix = bundle.info.get("train_class_shares")
    if not isinstance(mix, dict) or not set(bundle.classes) <= set(mix):
        return None
    return {c: float(mix[c]) for c in bundle.classes}


def adapt_batchnorm(bundle: ModelBundle, images: torch.Tensor, class_mix: dict[str, float] | None = None,
                    positive_share: float | None = None, batch_size: int = 64, min_films: int = MIN_FILMS,
                    seed: int = 0) -> ModelBundle:
    """A copy of ``bundle`` whose BatchNorm running statistics are measured on ``images`` (uint8 ``(N, S, S)`` at
    the model's input size), resampled to ``class_mix`` when it is given.

    The resampling needs each film's class, and there are no labels: the model's
    own decisions stand in for them. On a skewed batch those decisions are
    skewed too (a model that over-calls pneumonia sees its usual mix in a batch
    of normals), so a binary model can be told instead what share of the films
    is of its second class, ``positive_share``, and the films it ranks highest
    are taken as those: its ranking holds up at a new site, its threshold does
    not (docs/deploy.md).

    ``min_films`` is lowered only by experiments that measure what too few films do.
    """
    if not isinstance(bundle, ModelBundle):
        raise ValueError(f"{bundle.source}: adapt the PyTorch model (name, run directory or .safetensors), "
                         "then export it")
    if not batchnorm_layers(bundle.model):
        raise ValueError(f"{bundle.source or bundle.arch}: {bundle.arch} has no BatchNorm layers, so there are no "
                         "statistics to re-estimate (refit its threshold on labelled site films instead: --site)")
    if positive_share is not None and not (bundle.is_binary and 0.0 <= positive_share <= 1.0 and class_mix):
        raise ValueError("a share of positive films applies to binary models whose file records the training class "
                         "mix, and lies between 0 and 1")
    if len(images) < min_films:
        raise ValueError(f"{len(images)} readable films: at least {min_films} are needed to re-estimate the "
                         "BatchNorm statistics (128 or more is better)")
    adapted = reestimate_batchnorm(bundle, images, batch_size)
    if class_mix is None:
        return adapted
    target = np.array([class_mix[c] for c in bundle.classes], dtype=np.float64)
    rng = np.random.default_rng(seed)
    for _ in range(REBALANCE_ROUNDS):
        decided = _pseudo_labels(adapted, predict_resized(adapted, images), positive_share)
        share = np.clip(np.bincount(decided, minlength=len(target)) / len(decided), 0.02, None)
        weights = (target / share)[decided]
        chosen = rng.choice(len(images), size=max(len(images), MIN_RESAMPLED), p=weights / weights.sum())
        adapted = reestimate_batchnorm(bundle, images[torch.from_numpy(np.sort(chosen))], batch_size)
    return adapted


def _pseudo_labels(bundle: ModelBundle, probs: np.ndarray, positive_share: float | None) -> np.ndarray:
    """Class indices: the model's decisions, or with ``positive_share`` its top-ranked share as the second class."""
    if positive_share is None:
        return decide_indices(bundle, probs)
    labels = np.zeros(len(probs), dtype=int)
    labels[np.argsort(-probs[:, 1], kind="stable")[:round(positive_share * len(probs))]] = 1
    return labels


def reestimate_batchnorm(bundle: ModelBundle, images: torch.Tensor, batch_size: int = 64) -> ModelBundle:
    """A copy of ``bundle`` whose BatchNorm running statistics are the average over ``images``' batches (uint8
    ``(N, S, S)`` at the model's input size). Only BatchNorm layers run in training mode (dropout stays off);
    nothing else changes."""
    model = copy.deepcopy(bundle.model).eval()
    layers = batchnorm_layers(model)
    device = next(model.parameters()).device
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over all batches, not an exponential one
        layer.train()
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            model(to_model_input(images[i:i + batch_size].to(device), bundle.preprocess))
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum  # so fine-tuning the adapted model behaves as before
    return dataclasses.replace(bundle, model=model.eval(), frozen=None)


def adapt_batchnorm_to_films(bundle: ModelBundle, films: str | Path, rebalance: bool = True,
                             positive_share: float | None = None, progress: bool = False) -> ModelBundle:
    """:func:`adapt_batchnorm` on every readable image under ``films`` (any layout; sub-folder names ignored),
    resampled to the training data's class mix when ``rebalance`` and the model file records that mix (with
    ``positive_share``, the share of films of the second class the site expects).

    The adapted bundle records what was done in ``info["site_adaptation"]``, which evaluation reports show.
    """
    films = Path(films)
    if not films.is_dir():
        raise DatasetError(f"{films}: no such folder")
    paths = expand_paths([films])
    if not paths:
        raise DatasetError(f"{films}: no JPEG, PNG or DICOM images found")
    pre = bundle.preprocess
    samples = [Sample(p, 0, None, patient_id(p) or p.stem) for p in paths]
    data = decode_samples(samples, pre.size, pre.resize, films, "decode site films", progress)
    mix = training_class_mix(bundle) if rebalance else None
    if positive_share is not None and mix is None:
        raise ValueError("--positive-share resamples the films to the training class mix: "
                         + ("drop --no-rebalance" if not rebalance else "this model file records no such mix"))
    adapted = adapt_batchnorm(bundle, data.images, mix, positive_share)
    record = {"method": "BatchNorm statistics re-estimated on unlabelled site films", "films": len(data.images),
              "folder": str(films), "unreadable": len(data.failures),
              "positive_share": positive_share,
              "resampled_to": mix if mix else ("not asked" if not rebalance else
                                               "not possible: the model file records no training class mix"),
              "decisions_before": decision_shares(bundle, data.images),
              "decisions_after": decision_shares(adapted, data.images)}
    return dataclasses.replace(adapted, info={**bundle.info, "site_adaptation": record})


def decision_shares(bundle: ModelBundle, images: torch.Tensor) -> dict[str, float]:
    """Share of ``images`` given each class: a site that knows roughly how many of its films are pneumonia can
    see whether the adapted model agrees (a batch unlike the site's usual mix shows up here)."""
    counts = np.bincount(decide_indices(bundle, predict_resized(bundle, images)), minlength=len(bundle.classes))
    return {c: round(float(n) / len(images), 4) for c, n in zip(bundle.classes, counts)}
