"""Build an ensemble bundle from trained models, its threshold and calibration chosen on validation data.

With ``views`` every member also sees the film mirrored or re-framed and the
probabilities are averaged over views too: test-time augmentation, for one
model or several.

The members must have been trained on the same data folder with the same
validation split (cxrkit's recipes all carve 10 % of train by patient with
seed 0): the ensemble's threshold, temperature and UNCERTAIN cut-off are then
fitted on images none of its members trained on, and the test split is never
read.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from ..data.preprocess import Preprocess
from ..data.views import parse_views
from ..evaluation.calibration import calibrate
from ..evaluation.geometry import GEOMETRY_RULE, calibrate_across_views
from ..evaluation.metrics import choose_threshold, evaluate_probabilities
from ..evaluation.recalibrate import carve_validation, validation_split_of
from ..models import create_model
from .bundle import ModelBundle, resolve_model
from .predictor import predict_resized


class EnsembleError(ValueError):
    """Members that cannot form an ensemble; one line for the user."""


def _member_spec(bundle: ModelBundle) -> dict:
    return {"arch": bundle.arch, "model_kwargs": dict(bundle.model_kwargs), "preprocess": bundle.preprocess.to_dict(),
            "temperature": bundle.temperature, "source": bundle.source}


def _check(members: Sequence[ModelBundle], names: Sequence[str], n_views: int) -> None:
    if len(members) < 2 and n_views < 2:
        raise EnsembleError("an ensemble needs at least two models, or one model and --views (test-time "
                            "augmentation)")
    first = members[0]
    for name, b in zip(names, members):
        if not isinstance(b, ModelBundle):
            raise EnsembleError(f"{name}: ensembles are built from PyTorch models (name, run directory or "
                                ".safetensors), not exported files")
        if b.classes != first.classes:
            raise EnsembleError(f"{name} has classes {list(b.classes)}, {names[0]} {list(first.classes)}")
        if (b.preprocess.size, b.preprocess.resize) != (first.preprocess.size, first.preprocess.resize):
            raise EnsembleError(f"{name} takes {b.preprocess.size} px ({b.preprocess.resize}), {names[0]} "
                                f"{first.preprocess.size} px ({first.preprocess.resize}): members must share "
                                "input size and resize policy")
        if validation_split_of(b) != validation_split_of(first):
            raise EnsembleError(f"{name} was trained with another validation split (fraction, seed) "
                                f"{validation_split_of(b)} than {names[0]} {validation_split_of(first)}")


def build_ensemble(models: Sequence[str], data_dir: str | Path, threshold_rule: str = "youden",
                   uncertain_rule: str = "coverage:0.95", progress: bool = False,
                   views: str | None = None) -> ModelBundle:
    """One bundle averaging ``models``' calibrated probabilities (over ``views`` of each film, e.g. ``"flip"``,
    ``"geometry"`` or ``"geometry,flip"``: :func:`cxrkit.data.views.parse_views`); threshold (binary tasks),
    temperature and UNCERTAIN cut-off fitted on ``data_dir``'s validation split."""
    try:
        view_list = [v.to_dict() for v in parse_views(views)] if views else None
    except ValueError as exc:
        raise EnsembleError(str(exc)) from None
    members = [resolve_model(m) for m in models]
    _check(members, list(models), len(view_list or ()))
    first = members[0]
    specs = [_member_spec(b) for b in members]
    kwargs = {"members": specs, **({"views": view_list} if view_list else {})}
    model = create_model("ensemble", num_classes=len(first.classes), **kwargs)
    for net, b in zip(model.members, members):
        net.load_state_dict(b.model.state_dict())
    model.eval()
    pre = Preprocess(size=first.preprocess.size, resize=first.preprocess.resize, channels=1, mean=0.0, std=1.0)
    val_fraction, seed = validation_split_of(first)
    bundle = ModelBundle(model, "ensemble", first.classes, pre, model_kwargs=kwargs,
                         info={"members": list(models), "views": views or "none", "threshold_rule": threshold_rule,
                               "validation_split": {"fraction": val_fraction, "seed": seed}}, source="ensemble")
    val = carve_validation(data_dir, first.classes, pre, val_fraction, seed, progress)
    probs, labels = predict_resized(bundle, val.images), val.labels.numpy()
    if bundle.is_binary and threshold_rule == GEOMETRY_RULE:  # the cut-off the shape-penalised members ship with
        cal = calibrate_across_views(bundle, probs, labels, val.images, uncertain_rule)
    else:
        threshold = choose_threshold(labels, probs[:, 1], threshold_rule) if bundle.is_binary else 0.5
        cal = calibrate(probs, labels, threshold, uncertain_rule, fit=True)
    split = f"val carved from train (patient-grouped, fraction {val_fraction}, seed {seed})"
    val_metrics = evaluate_probabilities(labels, cal.probs, list(first.classes), cal.threshold, n_boot=0)
    info = {**bundle.info, "val_metrics": {k: val_metrics[k] for k in ("n", "accuracy", "roc_auc")},
            "calibration": {**cal.report, "split": split}}
    return dataclasses.replace(bundle, threshold=cal.threshold, temperature=cal.temperature,
                               confidence_threshold=cal.confidence_threshold, info=info, frozen=None)
