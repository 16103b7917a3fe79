"""Build an ensemble bundle from trained models, its threshold and calibration chosen on validation data.

With ``views`` every member also sees the film mirrored or re-framed and the
probabilities are averaged over views too: test-time augmentation, for one
model or several.

With ``average="weights"`` the members' parameters are averaged instead of
their outputs (a "model soup"): one network at one network's cost. That only
works for networks fine-tuned from the same start, which stay in one basin
of the loss where the midpoint is itself a good network; two networks
trained from different initialisations average to noise. The averaged
BatchNorm statistics are only the mean of the members' and need not describe
the averaged network's own features: ``refresh_batchnorm`` measures them
again on the training films (the validation split excluded, so the cut-off
fitted afterwards is still fitted on unseen films). On the two pairs measured
here it lowered the clean validation score, so it is an option, off by default
(docs/transfer.md).

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

import torch

from ..data.preprocess import Preprocess
from ..data.views import parse_views
from ..evaluation.batchnorm_adaptation import batchnorm_layers, reestimate_batchnorm
from ..evaluation.calibration import calibrate
from ..evaluation.geometry import GEOMETRY_RULE, calibrate_across_views
from ..evaluation.metrics import choose_threshold, evaluate_probabilities
from ..evaluation.recalibrate import carve_training, carve_validation, validation_split_of
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
                                f"{validation_split_of(b)} than {names[0]} {validation_split_of(first)}: train "
                                "members with the same --seed, or the same --split-seed")


AVERAGES = ("probabilities", "weights")


def average_weights(members: Sequence[ModelBundle], names: Sequence[str]) -> torch.nn.Module:
    """A fresh network of the members' architecture whose parameters and BatchNorm statistics are their mean.

    Integer buffers (BatchNorm's batch counters) are the first member's: they count steps, not values. A binary
    network's latent weights are averaged before its sign is taken, so where two members disagree the one further
    from zero wins."""
    first = members[0]
    for name, b in zip(names, members):
        if (b.arch, b.model_kwargs) != (first.arch, first.model_kwargs):
            raise EnsembleError(f"{name} is a {b.arch} {b.model_kwargs or ''}, {names[0]} a {first.arch} "
                                f"{first.model_kwargs or ''}: weights average only within one architecture")
        if b.preprocess != first.preprocess:
            raise EnsembleError(f"{name} reads its films differently ({b.preprocess}) from {names[0]} "
                                f"({first.preprocess}): weights average only between networks fed alike")
    states = [b.model.state_dict() for b in members]
    mean = {k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v.clone()
            for k, v in states[0].items()}
    model = create_model(first.arch, num_classes=len(first.classes), **first.model_kwargs)
    model.load_state_dict(mean)
    return model.eval()


def _refreshed(bundle: ModelBundle, data_dir, val_fraction: float, seed: int, progress: bool) -> ModelBundle:
    """``bundle`` with BatchNorm statistics measured on the training films its members learnt from (as they are,
    not augmented: the films it will be shown are not augmented either)."""
    if not batchnorm_layers(bundle.model):
        raise EnsembleError(f"{bundle.arch} has no BatchNorm layers: there are no statistics to refresh")
    train = carve_training(data_dir, bundle.classes, bundle.preprocess, val_fraction, seed, progress)
    refreshed = reestimate_batchnorm(bundle, train.images)
    note = f"re-estimated on {len(train.images)} training films (the validation split excluded), not augmented"
    return dataclasses.replace(refreshed, info={**bundle.info, "batchnorm": note})


def build_ensemble(models: Sequence[str], data_dir: str | Path, threshold_rule: str = "youden",
                   uncertain_rule: str = "coverage:0.95", progress: bool = False,
                   views: str | None = None, average: str = "probabilities",
                   refresh_batchnorm: bool = False) -> ModelBundle:
    """One bundle averaging ``models``' calibrated probabilities (over ``views`` of each film, e.g. ``"flip"``,
    ``"geometry"`` or ``"geometry,flip"``: :func:`cxrkit.data.views.parse_views`), or with ``average="weights"``
    one network with their mean weights (its BatchNorm statistics measured again on ``data_dir``'s training films
    with ``refresh_batchnorm``); threshold (binary tasks), temperature and UNCERTAIN cut-off fitted on
    ``data_dir``'s validation split."""
    if average not in AVERAGES:
        raise EnsembleError(f"average must be one of {', '.join(AVERAGES)}, got {average!r}")
    if average == "weights" and views:
        raise EnsembleError("--views averages over views of each film at prediction time; a weight average is one "
                            "network: build it first, then its test-time ensemble from the file")
    if average == "weights" and len(models) < 2:
        raise EnsembleError("a weight average needs at least two models")
    if refresh_batchnorm and average != "weights":
        raise EnsembleError("--refresh-batchnorm measures a weight average's BatchNorm statistics again; an average "
                            "of probabilities runs every member with its own (add --average weights)")
    try:
        view_list = [v.to_dict() for v in parse_views(views)] if views else None
    except ValueError as exc:
        raise EnsembleError(str(exc)) from None
    members = [resolve_model(m) for m in models]
    _check(members, list(models), len(view_list or ()))
    first = members[0]
    val_fraction, seed = validation_split_of(first)
    info = {"members": list(models), "average": average, "threshold_rule": threshold_rule,
            "validation_split": {"fraction": val_fraction, "seed": seed}, **({"views": views} if views else {})}
    shares = [b.info.get("train_class_shares") for b in members]
    if shares[0] and all(s == shares[0] for s in shares):  # one training set: `calibrate --unlabeled` resamples to it
        info["train_class_shares"] = shares[0]
    if average == "weights":
        bundle = ModelBundle(average_weights(members, list(models)), first.arch, first.classes, first.preprocess,
                             model_kwargs=dict(first.model_kwargs), info=info, source="weight average")
        if refresh_batchnorm:
            bundle = _refreshed(bundle, data_dir, val_fraction, seed, progress)
    else:
        specs = [_member_spec(b) for b in members]
        kwargs = {"members": specs, **({"views": view_list} if view_list else {})}
        model = create_model("ensemble", num_classes=len(first.classes), **kwargs)
        for net, b in zip(model.members, members):
            net.load_state_dict(b.model.state_dict())
        model.eval()
        pre = Preprocess(size=first.preprocess.size, resize=first.preprocess.resize, channels=1, mean=0.0, std=1.0)
        bundle = ModelBundle(model, "ensemble", first.classes, pre, model_kwargs=kwargs, info=info, source="ensemble")
    val = carve_validation(data_dir, first.classes, bundle.preprocess, val_fraction, seed, progress)
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
