"""`cxrkit compare`: train, cache by configuration, evaluate, table + plot; seed figures beside ours."""
from __future__ import annotations

import json
import subprocess
import sys

import dataclasses

from cxrkit.evaluation.compare import run_key
from cxrkit.recipes import Recipe, load_recipe


def test_compare_trains_once_then_reuses(sample_dir, tmp_path, fast_recipe):
    a = fast_recipe.replace(name="small_a", epochs=2, calibrate=False)
    b = load_recipe("seed000").replace(name="small_b", image_size=64, epochs=1, model_kwargs={"img_size": 64},
                                       calibrate=False)
    a.save(tmp_path / "a.yaml")
    b.save(tmp_path / "b.yaml")
    cmd = [sys.executable, "-m", "cxrkit", "compare", "--recipes", f"{tmp_path / 'a.yaml'},{tmp_path / 'b.yaml'}",
           "--data", str(sample_dir), "--out", str(tmp_path / "cmp"), "--max-steps", "3", "--bootstrap", "50",
           "--device", "cpu", "--json", "--quiet"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    rows = json.loads(first.stdout)
    assert [r["recipe"] for r in rows] == ["small_a", "small_b"] and not any(r["reused"] for r in rows)
    for r in rows:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["n"] > 0 and r["parameters"] > 0 and r["latency_ms"] > 0
        assert r["ci95"]["accuracy"][0] <= r["accuracy"] <= r["ci95"]["accuracy"][1]
    assert rows[1]["reference"] == {"accuracy": 0.6298}  # seed 000's published figure travels with its recipe
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert "small_a" in table and "accuracy 0.63" in table
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 1000

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    rows2 = json.loads(again.stdout)
    assert all(r["reused"] for r in rows2)
    assert [r["accuracy"] for r in rows2] == [r["accuracy"] for r in rows]


def test_run_key_changes_with_any_field(tmp_path):
    r = load_recipe("seed001")
    assert run_key(r, tmp_path) == run_key(r, tmp_path)
    assert run_key(r, tmp_path) != run_key(r.replace(lr=2e-3), tmp_path)
    assert run_key(r, tmp_path) != run_key(r, tmp_path / "other")
    assert run_key(r, tmp_path) != run_key(r.replace(augment=dataclasses.replace(r.augment, blur=1.0)), tmp_path)


def test_run_key_survives_a_field_added_later_at_its_default(tmp_path, monkeypatch):
    """A cached run keeps its key when cxrkit gains a recipe or augmentation field that changes nothing."""
    r = load_recipe("cxr_cnn")
    before = run_key(r, tmp_path)
    plain = Recipe.to_dict

    def with_new_fields(self):
        d = plain(self)
        return {**d, "added_later": 0.5, "augment": {**d["augment"], "added_later": 0}}
    monkeypatch.setattr(Recipe, "to_dict", with_new_fields)
    assert run_key(r, tmp_path) == before
    assert run_key(r.replace(epochs=3), tmp_path) != before


def test_compare_bad_recipe_is_one_line(tmp_path, sample_dir):
    proc = subprocess.run([sys.executable, "-m", "cxrkit", "compare", "--recipes", "seed001,nope", "--data",
                           str(sample_dir), "--out", str(tmp_path / "c")], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "nope" in proc.stderr
