"""(Re)fit an existing model's temperature and UNCERTAIN threshold on a data folder's validation split.

Models trained before calibration existed (the shipped ``cxr_cnn``) carry
temperature 1 and no confidence threshold. Refitting needs only the
validation predictions, so it costs one pass over a few hundred images instead
of a training run. The validation split is carved from the folder's ``train/``
exactly as training carves it (patient-grouped, same fraction and seed as the
model's recipe when it is a built-in), so the test split is never looked at;
on the model's own training data the carved split is the one it never trained on.
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


def validation_split_of(bundle: ModelBundle) -> tuple[float, int]:
    """``(val_fraction, seed)`` of the built-in recipe the model was trained with, else the recipe defaults."""
    recipe = RECIPES.get(bundle.info.get("recipe", ""))
    return (recipe.val_fraction, recipe.seed) if recipe else (0.1, 0)


def carve_validation(data_dir: str | Path, classes, pre: Preprocess, val_fraction: float, seed: int,
                     progress: bool = False) -> DecodedSet:
    """``data_dir``'s validation split, carved from its ``train/`` as training carves it, decoded for ``pre``."""
    index = index_folder(data_dir, classes=classes)
    pool = index.split("train") if index.has_splits else list(index.samples)
    if not pool:
        raise DatasetError(f"{data_dir}: no training images to carve the validation split from")
    _, val = grouped_split(pool, val_fraction, seed)
    data = decode_samples(val, pre.size, pre.resize, Path(data_dir), "decode val", progress)
    if len(data.images) == 0:
        raise DatasetError(f"{data_dir}: none of the {len(val)} validation images could be read")
    return data


def recalibrate(bundle: ModelBundle, data_dir: str | Path, rule: str = "coverage:0.95", fit_temperature: bool = True,
                val_fraction: float | None = None, seed: int | None = None, progress: bool = False) -> ModelBundle:
    """A copy of ``bundle`` with temperature, confidence threshold (and the binary threshold moved through the new
    temperature, so decisions stay the same) fitted on ``data_dir``'s validation split."""
    if not isinstance(bundle, ModelBundle):
        raise ValueError(f"{bundle.source}: calibrate the PyTorch model (name, run directory or .safetensors), "
                         "then export it")
    default_fraction, default_seed = validation_split_of(bundle)
    val_fraction = default_fraction if val_fraction is None else val_fraction
    seed = default_seed if seed is None else seed
    data = carve_validation(data_dir, bundle.classes, bundle.preprocess, val_fraction, seed, progress)
    cal = calibrate(predict_resized(bundle, data.images), data.labels.numpy(), bundle.threshold, rule,
                    fit=fit_temperature)
    temperature = bundle.temperature * cal.temperature  # the probabilities were already at the old temperature
    report = {**cal.report, "temperature": temperature, "refit_on": str(data_dir),
              "split": f"val carved from train (patient-grouped, fraction {val_fraction}, seed {seed})"}
    return dataclasses.replace(bundle, threshold=cal.threshold, temperature=temperature,
                               confidence_threshold=cal.confidence_threshold,
                               info={**bundle.info, "calibration": report}, frozen=None)
