"""Find training films whose label the data itself contradicts (``cxrkit data audit``).

Why: Kermany's training labels were graded once, its test labels twice; a
film labelled PNEUMONIA that looks like the NORMALs teaches a network to call
such NORMALs pneumonia. Confident learning (Northcutt et al. 2021, the
``cleanlab`` library) names the likely label errors from out-of-fold
probabilities: each film is scored by a model that never trained on it.

The folds are patient-grouped and drawn inside the recipe's training portion
only, and every fold model validates on the recipe's own validation films:
the audit never sees those films, so a run trained without the flagged films
(``cxrkit train --exclude``) is judged on the same, untouched validation.
"""
from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from .. import jsonio
from ..data.cache import decode_samples
from ..data.exclusions import list_digest, relative_name
from ..data.folder import DatasetError
from ..inference.bundle import load_bundle
from ..inference.predictor import predict_resized
from ..recipes import Recipe
from . import rundir
from .trainer import split_training_pool, train

ISSUES_FILE = "label_issues.csv"


@dataclass
class AuditResult:
    out_dir: Path
    classes: tuple[str, ...]
    names: list[str]  # audited films, paths under the data folder
    labels: np.ndarray  # (N,) given labels
    probs: np.ndarray  # (N, C) out-of-fold probabilities
    folds: np.ndarray  # (N,) the fold each film was held out in
    flagged: list[int]  # indices into names, most suspect first


def _check_reusable(run: Path, recipe: Recipe, held_out: list[str]) -> None:
    """A fold run already in ``run`` must be this recipe's model without exactly these films: an audit folder
    reused with another recipe, seed or fold count would otherwise mix two audits' scores without a word."""
    recorded = json.loads((run / "run.json").read_text())
    if rundir.changed_fields(run, recipe)[0] or recorded.get("excluded", {}).get("sha256") != list_digest(held_out):
        raise ValueError(f"{run.parent}: holds an audit with another recipe, seed, split seed or fold count "
                         "(its fold runs differ from this command's); give a new --out")


def _fold_model(recipe: Recipe, data_dir: Path, run: Path, held_out: list[str], train_kwargs: dict):
    """Train (or reuse, or resume) the model that never sees ``held_out``."""
    started = (run / "run.json").is_file() and (run / "config.yaml").is_file()
    if started:
        _check_reusable(run, recipe, held_out)
    if (run / "model.safetensors").is_file():
        return load_bundle(run / "model.safetensors")
    resume = (run / "checkpoint.pt").is_file()
    return train(recipe, data_dir, run, resume=resume, exclude=held_out, **train_kwargs).bundle


def audit_labels(recipe: Recipe, data_dir: str | Path, out_dir: str | Path, folds: int = 5,
                 progress: bool = True, verbose: bool = True, max_steps: int | None = None,
                 command: str | None = None,
                 on_fold: Callable[[int, int], None] | None = None) -> AuditResult:
    """Score every film of ``recipe``'s training portion out of fold and flag the likely label errors.

    Writes ``out_dir/fold{i}/`` (one ordinary run directory each, so an interrupted audit resumes where it
    stopped), ``oof.csv`` (every film's out-of-fold probabilities), ``label_issues.csv`` (the flagged films,
    most suspect first: the list ``cxrkit train --exclude`` reads) and ``audit.json``.
    """
    from cleanlab.filter import find_label_issues

    if folds < 2:
        raise ValueError(f"folds must be 2 or more, got {folds}")
    data_dir, out = Path(data_dir), Path(out_dir)
    classes, train_s, _ = split_training_pool(recipe, data_dir)
    labels = np.array([s.label for s in train_s])
    groups = np.array([s.patient for s in train_s])
    if len(set(groups)) < folds or np.bincount(labels, minlength=len(classes)).min() < folds:
        raise DatasetError(f"{data_dir}: too few patients or films of some class for {folds} folds")
    out.mkdir(parents=True, exist_ok=True)
    names = [relative_name(s, data_dir) for s in train_s]
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=recipe.seed)
    fold_of = np.empty(len(train_s), dtype=int)
    probs = np.full((len(train_s), len(classes)), np.nan)
    kwargs = {"progress": progress, "verbose": verbose, "max_steps": max_steps, "command": command}
    for i, (_, held) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        if on_fold is not None:
            on_fold(i, folds)
        fold_of[held] = i
        bundle = _fold_model(recipe, data_dir, out / f"fold{i}", [names[j] for j in held], kwargs)
        films = decode_samples([train_s[j] for j in held], bundle.preprocess.size, bundle.preprocess.resize,
                               data_dir, f"decode fold {i}", progress)
        readable = {id(s) for s in films.samples}
        rows = [j for j in held if id(train_s[j]) in readable]
        probs[rows] = predict_resized(bundle, films.images, progress=progress)
    scored = ~np.isnan(probs).any(axis=1)  # unreadable films get no score and are never flagged
    idx = np.flatnonzero(scored)
    ranked = find_label_issues(labels[idx], probs[idx], filter_by="prune_by_noise_rate",
                               return_indices_ranked_by="self_confidence")
    flagged = [int(idx[r]) for r in ranked]
    result = AuditResult(out, tuple(classes), names, labels, probs, fold_of, flagged)
    _write(result, recipe, data_dir, command)
    return result


def _write(r: AuditResult, recipe: Recipe, data_dir: Path, command: str | None) -> None:
    header = ["path", "label", "fold"] + [f"p_{c}" for c in r.classes]
    with open(r.out_dir / "oof.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for j, name in enumerate(r.names):
            w.writerow([name, r.classes[r.labels[j]], r.folds[j]] + [f"{p:.6f}" for p in r.probs[j]])
    with open(r.out_dir / ISSUES_FILE, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "suggested", "p_label"])
        for j in r.flagged:
            w.writerow([r.names[j], r.classes[r.labels[j]], r.classes[int(np.nanargmax(r.probs[j]))],
                        f"{r.probs[j, r.labels[j]]:.6f}"])
    flagged_by_class = {c: sum(r.labels[j] == k for j in r.flagged) for k, c in enumerate(r.classes)}
    audited_by_class = {c: int((r.labels == k).sum()) for k, c in enumerate(r.classes)}
    jsonio.write(r.out_dir / "audit.json", {
        "recipe": recipe.name, "seed": recipe.seed, "validation_split": recipe.validation_split,
        "data_dir": str(data_dir), "folds": int(r.folds.max()) + 1,
        "audited": audited_by_class, "flagged": flagged_by_class,
        "method": "cleanlab.filter.find_label_issues(filter_by='prune_by_noise_rate', "
                  "return_indices_ranked_by='self_confidence') on out-of-fold probabilities",
        "command": command,
    })
