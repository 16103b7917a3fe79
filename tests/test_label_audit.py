"""`cxrkit data audit` (out-of-fold label audit) and `cxrkit train --exclude`."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from conftest import CLASSES, sample_images
from cxrkit.cli.main import main
from cxrkit.data.augment import Augment
from cxrkit.data.exclusions import read_exclusions, relative_name
from cxrkit.training import train
from cxrkit.training.label_audit import audit_labels
from cxrkit.training.trainer import split_training_pool

FLIPPED = 3  # films of each class copied into the other class's folder


@pytest.fixture(scope="module")
def mislabelled_dir(tmp_path_factory):
    """Every bundled film as one training pool, with FLIPPED films of each class filed under the other class."""
    root = tmp_path_factory.mktemp("mislabelled")
    flipped = []
    for cls, other in zip(CLASSES, reversed(CLASSES)):
        films = sample_images("train", cls) + sample_images("test", cls)
        for i, src in enumerate(films):
            dst_cls = other if i < FLIPPED else cls
            (root / "train" / dst_cls).mkdir(parents=True, exist_ok=True)
            shutil.copy(src, root / "train" / dst_cls / src.name)
            if i < FLIPPED:
                flipped.append(f"train/{dst_cls}/{src.name}")
    return root, flipped


@pytest.fixture(scope="module")
def audit(fast_recipe, mislabelled_dir, tmp_path_factory):
    root, flipped = mislabelled_dir
    recipe = fast_recipe.replace(epochs=12, augment=Augment(), label_smoothing=0.0, keep_best=False,
                                 threshold_rule="youden", val_fraction=0.2, seed=3, calibrate=False,
                                 uncertain_rule="none")
    out = tmp_path_factory.mktemp("audit") / "a"
    return recipe, root, flipped, audit_labels(recipe, root, out, folds=3, progress=False, verbose=False)


def test_audit_scores_every_training_film_out_of_fold_and_never_a_validation_film(audit):
    recipe, root, _, result = audit
    _, train_s, val_s = split_training_pool(recipe, root)
    assert sorted(result.names) == sorted(relative_name(s, root) for s in train_s)
    assert not set(result.names) & {relative_name(s, root) for s in val_s}
    assert np.isfinite(result.probs).all() and np.allclose(result.probs.sum(axis=1), 1, atol=1e-4)
    assert sorted(set(result.folds)) == [0, 1, 2]
    for i in range(3):  # each fold's model left out exactly the films it scored
        run = json.loads((result.out_dir / f"fold{i}" / "run.json").read_text())
        assert run["excluded"]["removed"] == int((result.folds == i).sum())
        assert run["split"]["val"] == len(val_s)


def test_audit_finds_the_flipped_labels(audit):
    _, _, flipped, result = audit
    p_label = result.probs[np.arange(len(result.names)), result.labels]
    is_flipped = np.array([n in flipped for n in result.names])
    assert is_flipped.sum() >= 4  # most flipped films fall in the training portion
    # a film filed under the wrong class is one the other folds' models disagree with
    assert p_label[is_flipped].mean() < p_label[~is_flipped].mean() - 0.15, (p_label[is_flipped], p_label[~is_flipped])
    listed = read_exclusions(result.out_dir / "label_issues.csv")
    assert listed == {result.names[j] for j in result.flagged}
    assert len(listed & set(flipped)) / max(len(listed), 1) > is_flipped.mean()  # flagged beats a random pick


def test_rerunning_an_audit_reuses_its_fold_models(audit):
    recipe, root, _, result = audit
    before = {p: p.stat().st_mtime_ns for p in result.out_dir.glob("fold*/model.safetensors")}
    again = audit_labels(recipe, root, result.out_dir, folds=3, progress=False, verbose=False)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    np.testing.assert_allclose(again.probs, result.probs, atol=1e-6)
    with open(result.out_dir / "oof.csv") as f:
        assert len(list(csv.DictReader(f))) == len(result.names)


def test_an_audit_folder_of_another_recipe_or_fold_count_is_refused(audit):
    recipe, root, _, result = audit
    for changed, folds in ((recipe.replace(seed=4), 3), (recipe, 2)):
        with pytest.raises(ValueError, match="give a new --out"):
            audit_labels(changed, root, result.out_dir, folds=folds, progress=False, verbose=False)


def test_exclude_leaves_validation_unchanged_and_is_recorded(audit, tmp_path):
    recipe, root, flipped, result = audit
    listed = tmp_path / "list.txt"
    listed.write_text("# flipped films\n" + "\n".join(flipped) + "\n")
    plain = train(recipe.replace(epochs=1), root, tmp_path / "plain", progress=False, verbose=False, max_steps=1)
    cut = train(recipe.replace(epochs=1), root, tmp_path / "cut", progress=False, verbose=False, max_steps=1,
                exclude=read_exclusions(listed))
    a, b = (json.loads((r.run_dir / "run.json").read_text()) for r in (plain, cut))
    in_train = sum(n in flipped for n in result.names)
    assert b["split"]["train"] == a["split"]["train"] - in_train
    assert b["data_fingerprint"]["val"] == a["data_fingerprint"]["val"]
    assert b["excluded"]["removed"] == in_train and b["excluded"]["validation_kept"] == len(flipped) - in_train


def test_exclude_cli_errors_are_one_line(audit, tmp_path, capsys):
    _, root, _, _ = audit
    (tmp_path / "other.txt").write_text("train/NORMAL/not-here.jpeg\n")
    (tmp_path / "empty.csv").write_text("path,label\n")
    cases = [(tmp_path / "missing.csv", "no such exclusion list"), (tmp_path / "empty.csv", "lists no films"),
             (tmp_path / "other.txt", "none of the 1 listed films is in the training portion")]
    for listed, message in cases:
        rc = main(["train", "--recipe", "cxr_cnn", "--data", str(root), "--out", str(tmp_path / "run"),
                   "--exclude", str(listed), "--quiet"])
        err = capsys.readouterr().err
        assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "run").exists()


def test_resume_without_the_runs_exclusion_list_says_so(audit, tmp_path, monkeypatch):
    recipe, root, flipped, _ = audit
    out = tmp_path / "run"
    train(recipe.replace(epochs=2), root, out, progress=False, verbose=False, max_steps=1, exclude=set(flipped))
    (out / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="pass the same list again"):
        train(recipe.replace(epochs=2), root, out, resume=True, progress=False, verbose=False, max_steps=1)


def test_audit_cli_writes_the_list_and_says_how_to_use_it(fast_recipe, mislabelled_dir, tmp_path, capsys):
    root, _ = mislabelled_dir
    recipe_file = tmp_path / "tiny.yaml"
    fast_recipe.replace(epochs=1).save(recipe_file)
    rc = main(["data", "audit", "--recipe", str(recipe_file), "--data", str(root), "--out", str(tmp_path / "a"),
               "--folds", "2", "--split-seed", "1", "--max-steps", "1", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "in 2 patient-grouped folds" in out and "--split-seed 1 --exclude" in out, out
    audit = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert audit["folds"] == 2 and audit["validation_split"]["seed"] == 1
    assert sum(audit["flagged"].values()) == len(list(csv.DictReader(
        (tmp_path / "a" / "label_issues.csv").read_text().splitlines())))
    rc = main(["data", "audit", "--recipe", str(recipe_file), "--data", str(root), "--out", str(tmp_path / "a"),
               "--folds", "3", "--split-seed", "1", "--max-steps", "1", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "give a new --out" in err and len(err.strip().splitlines()) == 1, err
