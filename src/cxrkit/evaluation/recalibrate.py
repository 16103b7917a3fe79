"""(Re)fit an existing model's temperature and UNCERTAIN threshold on validation data, or adapt it to a site.

Models trained before calibration existed (the shipped ``cxr_cnn``) carry
temperature 1 and no confidence threshold. Refitting needs only the
validation predictions, so it costs one pass over a few hundred images instead
of a training run. The validation split is carved from the folder's ``train/``
exactly as training carves it (patient-grouped, same fraction and seed as the
model's recipe when it is a built-in), so the test split is never looked at;
on the model's own training data the carved split is the one it never trained on.

:func:`adapt_to_site` is for deployment: a hospital's films differ from the
training data (scanner, exposure, processing, population), and a threshold
chosen on validation carved from the training data can be far off there; every
Kermany model here calls 25-50 % of the official test NORMALs pneumonia at it.
About 64 labelled films from the site itself are enough to refit the
temperature, the decision threshold and the UNCERTAIN cut-off
(docs/deploy.md measures how many). A site without labels can still
re-estimate the BatchNorm statistics on its films
(:mod:`cxrkit.evaluation.batchnorm_adaptation`); the two combine.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..data.cache import DecodedSet, decode_samples
from ..data.folder import DatasetError, index_folder
from ..data.preprocess import Preprocess
from ..data.splits import grouped_split
from ..inference.bundle import ModelBundle
from ..inference.predictor import predict_resized
from ..recipes import RECIPES
from .calibration import calibrate
from .geometry import GEOMETRY_RULE, calibrate_across_views


def validation_split_of(bundle) -> tuple[float, int]:
    """``(val_fraction, seed)`` the model was trained with: as recorded in the model, else its built-in recipe's,
    else the recipe defaults.

    The record comes first because ``cxrkit train --seed N`` carves another validation split than the recipe's
    own seed would: re-carving by the recipe would score such a model partly on its own training films.
    """
    info = getattr(bundle, "info", None) or {}  # exported models may carry no info
    split = info.get("validation_split")
    if split:
        return float(split["fraction"]), int(split["seed"])
    recipe = RECIPES.get(info.get("recipe", ""))
    return (recipe.val_fraction, recipe.validation_seed) if recipe else (0.1, 0)


def carve_validation(data_dir: str | Path, classes, pre: Preprocess, val_fraction: float, seed: int,
                     progress: bool = False) -> DecodedSet:
    """``data_dir``'s validation split, carved from its ``train/`` as training carves it, decoded for ``pre``."""
    return _carve(data_dir, classes, pre, val_fraction, seed, "val", progress)


def carve_training(data_dir: str | Path, classes, pre: Preprocess, val_fraction: float, seed: int,
                   progress: bool = False) -> DecodedSet:
    """The films training learnt from: ``data_dir``'s ``train/`` less the validation split, decoded for ``pre``."""
    return _carve(data_dir, classes, pre, val_fraction, seed, "train", progress)


def _carve(data_dir, classes, pre: Preprocess, val_fraction: float, seed: int, part: str,
           progress: bool) -> DecodedSet:
    index = index_folder(data_dir, classes=classes)
    pool = index.split("train") if index.has_splits else list(index.samples)
    if not pool:
        raise DatasetError(f"{data_dir}: no training images to carve the validation split from")
    train, val = grouped_split(pool, val_fraction, seed)
    chosen = val if part == "val" else train
    data = decode_samples(chosen, pre.size, pre.resize, Path(data_dir), f"decode {part}", progress)
    if len(data.images) == 0:
        name = "validation" if part == "val" else "training"
        raise DatasetError(f"{data_dir}: none of the {len(chosen)} {name} images could be read")
    return data


def recalibrate(bundle: ModelBundle, data_dir: str | Path, rule: str = "coverage:0.95", fit_temperature: bool = True,
                val_fraction: float | None = None, seed: int | None = None, progress: bool = False,
                threshold_rule: str | None = None) -> ModelBundle:
    """A copy of ``bundle`` with temperature and confidence threshold fitted on ``data_dir``'s validation split.

    The binary threshold is moved through the new temperature, so decisions stay the same, unless
    ``threshold_rule`` (``youden``, ``youden-geometry``, ``sensitivity:S``, ``fixed:T``) chooses a new one there.
    """
    _require_torch_bundle(bundle)
    default_fraction, default_seed = validation_split_of(bundle)
    val_fraction = default_fraction if val_fraction is None else val_fraction
    seed = default_seed if seed is None else seed
    data = carve_validation(data_dir, bundle.classes, bundle.preprocess, val_fraction, seed, progress)
    n = len(data.samples)
    origin = ({"threshold_rule": f"{threshold_rule}, refit on {n} validation films"}
              if threshold_rule and bundle.is_binary else {})
    return _refit(bundle, data, rule, fit_temperature, threshold_rule,
                  {"refit_on": str(data_dir),
                   "split": f"val carved from train (patient-grouped, fraction {val_fraction}, seed {seed})"}, origin)


def adapt_to_site(bundle: ModelBundle, site_dir: str | Path, threshold_rule: str = "youden",
                  rule: str = "coverage:0.95", fit_temperature: bool = True, progress: bool = False) -> ModelBundle:
    """A copy of ``bundle`` whose temperature, binary decision threshold (by ``threshold_rule``) and UNCERTAIN
    cut-off are fitted on every film of ``site_dir`` (``SITE/CLASS/*``: the site's own labelled films)."""
    _require_torch_bundle(bundle)
    index = index_folder(site_dir, classes=bundle.classes)
    if index.has_splits:
        raise DatasetError(f"{site_dir}: has split folders ({', '.join(map(str, index.splits))}); give the one "
                           f"folder of site films to fit on, e.g. {Path(site_dir) / str(index.splits[0])}")
    pre = bundle.preprocess
    data = decode_samples(list(index.samples), pre.size, pre.resize, Path(site_dir), "decode site", progress)
    missing = [c for i, c in enumerate(bundle.classes) if not (data.labels == i).any()]
    if missing:
        raise DatasetError(f"{site_dir}: no readable films of class {', '.join(missing)}; fitting a threshold needs "
                           "films of every class")
    n = len(data.samples)
    origin = {"threshold_rule": f"{threshold_rule}, refit on {n} site films"} if bundle.is_binary else {}
    return _refit(bundle, data, rule, fit_temperature, threshold_rule,
                  {"refit_on": str(site_dir), "split": f"all {n} readable site films", "site": True}, origin)


def _require_torch_bundle(bundle) -> None:
    if not isinstance(bundle, ModelBundle):
        raise ValueError(f"{bundle.source}: calibrate the PyTorch model (name, run directory or .safetensors), "
                         "then export it")


def _refit(bundle: ModelBundle, data: DecodedSet, rule: str, fit_temperature: bool, threshold_rule: str | None,
           where: dict, info: dict | None = None) -> ModelBundle:
    """``where``: what the data was, into ``info.calibration``; ``info``: other ``info`` keys to replace."""
    probs, y = predict_resized(bundle, data.images), data.labels.numpy()
    threshold_rule = threshold_rule if bundle.is_binary else None
    if threshold_rule == GEOMETRY_RULE:  # needs the films, not only their probabilities
        cal = calibrate_across_views(bundle, probs, y, data.images, rule, fit=fit_temperature)
    else:
        cal = calibrate(probs, y, bundle.threshold, rule, fit=fit_temperature, threshold_rule=threshold_rule)
    temperature = bundle.temperature * cal.temperature  # the probabilities were already at the old temperature
    report = {**cal.report, "temperature": temperature, **where,
              **({"threshold_rule": threshold_rule} if threshold_rule else {})}
    return dataclasses.replace(bundle, threshold=cal.threshold, temperature=temperature,
                               confidence_threshold=cal.confidence_threshold,
                               info={**bundle.info, **(info or {}), "calibration": report}, frozen=None)
