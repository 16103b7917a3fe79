"""N classes from folders: `cxrkit data derive --task kermany3`, and seed 003's 6-class layout end to end."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import sample_images
from cxrkit.cli.main import main
from cxrkit.data.derive import derive
from cxrkit.data.folder import DatasetError, index_folder
from cxrkit.evaluation.evaluate import evaluate_folder, write_report
from cxrkit.inference.bundle import load_bundle
from cxrkit.recipes import load_recipe
from cxrkit.training import train

SEED003_CLASSES = ("COVID-19", "Emphysema", "Normal", "Pneumonia-Bacterial", "Pneumonia-Viral", "Tuberculosis")


def _kermany_tree(root, extra: dict[str, str] | None = None):
    """Tiny Kermany-named tree from the bundled real sample: train/test × NORMAL/PNEUMONIA."""
    for split in ("train", "test"):
        for cls in ("NORMAL", "PNEUMONIA"):
            (root / split / cls).mkdir(parents=True)
            for src in sample_images(split, cls):
                shutil.copy(src, root / split / cls / src.name)
    for rel, text in (extra or {}).items():
        (root / rel).write_text(text)
    return root


def test_derive_kermany3_counts_and_symlinks(tmp_path):
    src = _kermany_tree(tmp_path / "src", {"train/NORMAL/notes.txt": "not an image"})
    result = derive("kermany3", src, tmp_path / "out")
    assert result.link == "symlink"
    assert result.counts == {"train": {"BACTERIAL": 8, "NORMAL": 16, "VIRAL": 8},
                             "test": {"BACTERIAL": 6, "NORMAL": 12, "VIRAL": 6}}
    assert len(result.skipped) == 1
    viral = sorted((tmp_path / "out" / "train" / "VIRAL").iterdir())
    assert all(p.is_symlink() and "_virus_" in p.name for p in viral)
    index = index_folder(tmp_path / "out")
    assert index.classes == ("BACTERIAL", "NORMAL", "VIRAL") and index.splits == ["train", "test"]
    assert {s.patient for s in index.samples if "person" in s.path.name} <= {
        p.name.split("_")[0] for p in (src / "train" / "PNEUMONIA").iterdir()} | {
        p.name.split("_")[0] for p in (src / "test" / "PNEUMONIA").iterdir()}


def test_derive_copy_mode_makes_real_files(tmp_path):
    src = _kermany_tree(tmp_path / "src")
    result = derive("kermany3", src, tmp_path / "out", link="copy")
    files = list((tmp_path / "out").rglob("*.jpeg"))
    assert result.link == "copy" and len(files) == 56 and not any(p.is_symlink() for p in files)


def test_derive_refuses_unclassifiable_files_and_writes_nothing(tmp_path):
    src = _kermany_tree(tmp_path / "src")
    shutil.copy(sample_images("test", "NORMAL")[0], src / "train" / "PNEUMONIA" / "scan_0001.jpeg")
    with pytest.raises(DatasetError, match="1 files cannot be classified.*scan_0001.jpeg"):
        derive("kermany3", src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_interrupted_derive_leaves_nothing_behind(tmp_path, monkeypatch):
    """Built beside OUT and renamed at the end: Ctrl-C used to leave a half tree with a half-copied film."""
    import cxrkit.data.derive as derive_module

    src = _kermany_tree(tmp_path / "src")
    place, placed = derive_module._place, []

    def interrupted(*args):
        if len(placed) == 5:
            raise KeyboardInterrupt
        placed.append(place(*args))
        return placed[-1]

    monkeypatch.setattr(derive_module, "_place", interrupted)
    (tmp_path / "out").mkdir()  # an empty OUT is allowed, and stays as it was
    with pytest.raises(KeyboardInterrupt):
        derive("kermany3", src, tmp_path / "out", link="copy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"] and not any((tmp_path / "out").iterdir())
    monkeypatch.setattr(derive_module, "_place", place)
    assert sum(derive("kermany3", src, tmp_path / "out").counts["train"].values()) == 32


def test_derive_refuses_non_empty_out_and_other_classes(tmp_path, capsys):
    src = _kermany_tree(tmp_path / "src")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert main(["data", "derive", "--task", "kermany3", str(src), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not an empty folder" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
    (src / "test" / "COVID").mkdir()
    with pytest.raises(DatasetError, match="NORMAL and PNEUMONIA"):
        derive("kermany3", src, tmp_path / "other")


def test_kermany3_end_to_end_cli(tmp_path, fast_recipe, capsys):
    src = _kermany_tree(tmp_path / "src")
    data, run = tmp_path / "k3", tmp_path / "run"
    assert main(["data", "derive", "--task", "kermany3", str(src), str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["test"]["VIRAL"] == 6
    recipe = tmp_path / "r.yaml"
    fast_recipe.replace(epochs=1).save(recipe)
    assert main(["train", "--recipe", str(recipe), "--data", str(data), "--out", str(run), "--quiet"]) == 0
    assert "calibration: temperature" in capsys.readouterr().out
    bundle = load_bundle(run / "model.safetensors")
    assert bundle.classes == ("BACTERIAL", "NORMAL", "VIRAL") and bundle.confidence_threshold > 0
    assert bundle.info["calibration"]["uncertain_rule"] == "coverage:0.95"
    assert main(["evaluate", "--model", str(run), "--data", str(data), "--json", "--bootstrap", "20"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert set(m["roc_auc_ovr"]) == {"BACTERIAL", "NORMAL", "VIRAL"} and m["bacterial_vs_viral"]["n"] == 12
    assert m["selective"]["columns"][-1] == "UNCERTAIN" and np.sum(m["selective"]["confusion_matrix"]) == 24
    assert m["calibration"]["temperature"] == pytest.approx(bundle.temperature)
    assert main(["predict", str(data / "test" / "VIRAL"), "--model", str(run), "--json", "--quiet"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 6 and all(isinstance(r["uncertain"], bool) and len(r["probabilities"]) == 3 for r in rows)


def _seed003_tree(root, n_train: int = 6, n_test: int = 2):
    """Six class folders of tiny synthetic radiograph-like images, each class with its own brightness band."""
    rng = np.random.default_rng(3)
    for split, n in (("train", n_train), ("test", n_test)):
        for c, cls in enumerate(SEED003_CLASSES):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                img = rng.normal(40 + 30 * c, 12, (48, 48)).clip(0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / cls / f"{cls}_{split}_{i}.png")
    return root


def test_seed003_six_classes_by_folder(tmp_path, capsys):
    data = _seed003_tree(tmp_path / "data")
    recipe = load_recipe("seed003")
    assert (recipe.model, recipe.image_size, recipe.lr, recipe.epochs) == ("mobilenetv2_035", 160, 5e-4, 15)
    result = train(recipe.replace(epochs=1, batch_size=8), data, tmp_path / "run", progress=False, verbose=False,
                   max_steps=2)
    assert result.bundle.classes == SEED003_CLASSES and result.bundle.preprocess.channels == 3
    ev = evaluate_folder(result.bundle, data, progress=False, n_boot=0)
    m = ev.metrics
    assert m["n"] == 12 and len(m["roc_auc_ovr"]) == 6 and len(m["selective"]["columns"]) == 7
    assert m["bacterial_vs_viral"]["classes"] == ["Pneumonia-Bacterial", "Pneumonia-Viral"]
    report = write_report(ev, tmp_path / "report").read_text()
    assert "UNCERTAIN" in report and "One-vs-rest ROC-AUC" in report
    assert main(["predict", str(data / "test"), "--model", str(tmp_path / "run"), "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 12 and all(line.split()[0] in SEED003_CLASSES for line in lines)
