"""Temperature scaling, the UNCERTAIN threshold rule, selective metrics and their trip through ONNX."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import CLASSES, sample_images
from cxrkit.data.io import read_image
from cxrkit.data.preprocess import Preprocess, resize_gray
from cxrkit.evaluation.calibration import (calibrate, choose_confidence_threshold, fit_temperature, nll,
                                           probabilities_from_logits, rescale)
from cxrkit.evaluation.metrics import evaluate_probabilities
from cxrkit.cli.main import main
from cxrkit.inference.bundle import ModelBundle
from cxrkit.inference.decision import parse_uncertain_rule, uncertain_mask
from cxrkit.inference.predictor import predict_resized
from cxrkit.models import create_model
from cxrkit.recipes import RecipeError, load_recipe


def _draw(rng, logits: np.ndarray, true_t: float) -> np.ndarray:
    """Labels drawn from the model ``logits / true_t``: the logits are miscalibrated by exactly ``true_t``."""
    p = probabilities_from_logits(logits / true_t)
    return (rng.random(len(p))[:, None] > np.cumsum(p, axis=1)).sum(axis=1)


@pytest.mark.parametrize("k,true_t", [(3, 2.0), (6, 0.7), (1, 0.5), (1, 3.0)])
def test_fit_temperature_recovers_known_temperature_and_lowers_nll(k, true_t):
    rng = np.random.default_rng(k)
    logits = rng.normal(0, 3, (20000, k))
    y = _draw(rng, logits, true_t)
    t = fit_temperature(logits, y)
    assert t == pytest.approx(true_t, rel=0.05)
    assert nll(logits / t, y) < nll(logits, y) - 1e-3


@pytest.mark.parametrize("k", [1, 3])
def test_fit_temperature_leaves_an_all_right_validation_set_alone(k):
    """Four validation films, all right: the NLL falls all the way to T -> 0, and the bounded search used to return
    T = 0.05, probabilities of exactly 0 and 1 and a cut-off of 1.0. No minimum, no evidence: T stays 1. One wrong
    case gives the NLL a minimum again."""
    y = np.array([0, 1, 0, 1]) if k == 1 else np.array([0, 1, 2, 1])
    logits = np.array([[-3.0], [2.5], [-0.4], [4.0]]) if k == 1 else 3.0 * np.eye(3)[y] + 0.1
    assert fit_temperature(logits, y) == 1.0
    wrong = logits.copy()
    wrong[0] = -wrong[0] if k == 1 else wrong[0][::-1]
    assert fit_temperature(wrong, y) > 1.0  # the wrong case pulls towards softer probabilities


def test_calibrate_from_probabilities_keeps_binary_decisions():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 4, (5000, 1))
    y = _draw(rng, z, 2.5)
    probs = probabilities_from_logits(z)
    cal = calibrate(probs, y, threshold=0.3, rule="coverage:0.9")
    assert cal.temperature == pytest.approx(2.5, rel=0.05)
    assert np.array_equal(probs[:, 1] >= 0.3, cal.probs[:, 1] >= cal.threshold)  # threshold moved with T
    assert cal.report["val_ece_after"] < cal.report["val_ece_before"]
    assert cal.report["val_nll_after"] < cal.report["val_nll_before"]


@pytest.mark.parametrize("target", [0.5, 0.9, 0.95, 1.0])
def test_coverage_rule_hits_target_on_validation(target):
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.34, 1.0, 1001)
    cut, reached = choose_confidence_threshold(conf, np.ones_like(conf), f"coverage:{target}")
    covered = (conf >= cut).mean()
    assert reached and target <= covered < target + 1 / len(conf) + 1e-12


def test_error_rule_takes_largest_coverage_within_target():
    conf = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    correct = np.array([1, 1, 1, 1, 0, 1, 0, 0], dtype=float)
    # covering down to 0.6: 1 error in 6 (0.167); down to 0.8: 0 in 4; down to 0.7: 1 in 5 (0.2)
    assert choose_confidence_threshold(conf, correct, "error:0.17") == (0.6, True)
    assert choose_confidence_threshold(conf, correct, "error:0.1") == (0.8, True)
    assert choose_confidence_threshold(conf, correct, "none") == (0.0, True)
    assert choose_confidence_threshold(conf, 1 - np.ones_like(conf), "error:0.1")[1] is False


@pytest.mark.parametrize("rule", ["coverage:0", "coverage:1.5", "error:1", "cov:0.9", "coverage", "none:1"])
def test_bad_rules_are_one_line_errors(rule):
    with pytest.raises(ValueError, match="uncertain rule"):
        parse_uncertain_rule(rule)
    with pytest.raises(RecipeError):
        load_recipe("cxr_cnn").replace(uncertain_rule=rule)


def test_selective_metrics_by_hand():
    classes = ["A", "B", "C"]
    y = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array([[0.9, 0.05, 0.05],   # A, sure, right
                      [0.5, 0.3, 0.2],     # A, unsure
                      [0.1, 0.8, 0.1],     # B, sure, right
                      [0.7, 0.2, 0.1],     # A, sure, wrong
                      [0.3, 0.35, 0.35],   # B (first max), unsure
                      [0.0, 0.1, 0.9]])    # C, sure, right
    m = evaluate_probabilities(y, probs, classes, n_boot=0, confidence_threshold=0.6)["selective"]
    assert m["columns"] == ["A", "B", "C", "UNCERTAIN"]
    assert m["confusion_matrix"] == [[1, 0, 0, 1], [1, 1, 0, 0], [0, 0, 1, 1]]
    assert (m["n_covered"], m["n_uncertain"]) == (4, 2)
    assert m["coverage"] == pytest.approx(4 / 6)
    assert m["covered_accuracy"] == pytest.approx(3 / 4)
    everything = evaluate_probabilities(y, probs, classes, n_boot=0)["selective"]
    assert everything["coverage"] == 1.0 and everything["confusion_matrix"][1] == [1, 1, 0, 0]


def test_nclass_aucs_and_bacterial_vs_viral_by_hand():
    classes = ["BACTERIAL", "NORMAL", "VIRAL"]
    y = np.array([0, 0, 1, 2, 2])
    probs = np.array([[0.6, 0.1, 0.3], [0.2, 0.5, 0.3], [0.1, 0.8, 0.1], [0.3, 0.1, 0.6], [0.5, 0.2, 0.3]])
    m = evaluate_probabilities(y, probs, classes, n_boot=0)
    assert m["macro_auc"] == pytest.approx(np.mean(list(m["roc_auc_ovr"].values())))
    assert m["roc_auc_ovr"]["NORMAL"] == 1.0
    bv = m["bacterial_vs_viral"]
    # P(V)/(P(B)+P(V)): bacterial 0.333, 0.6; viral 0.667, 0.375 → at 0.5: right, wrong, right, wrong
    assert (bv["n"], bv["n_viral"], bv["accuracy"]) == (4, 2, 0.5)
    assert bv["roc_auc"] == pytest.approx(0.75)  # (viral, bacterial) pairs ranked right: 3 of 4
    assert "bacterial_vs_viral" not in evaluate_probabilities(y, probs, ["X", "Y", "Z"], n_boot=0)


def _bundle(temperature: float, confidence: float) -> ModelBundle:
    torch.manual_seed(0)
    pre = Preprocess(size=64, mean=0.5, std=0.25)
    return ModelBundle(create_model("seed_cnn", img_size=64).eval(), "seed_cnn", CLASSES, pre,
                       model_kwargs={"img_size": 64}, temperature=temperature, confidence_threshold=confidence,
                       source="calibrated")


def test_onnx_carries_and_applies_calibration(tmp_path):
    pytest.importorskip("onnxruntime")
    from cxrkit.export import export_model
    from cxrkit.runtime import load_onnx

    files = sample_images("test", "NORMAL")[:4] + sample_images("test", "PNEUMONIA")[:4]
    images = np.stack([resize_gray(read_image(p), 64) for p in files])
    bundle = _bundle(3.0, 0.0)
    ref = predict_resized(bundle, torch.from_numpy(images))
    bundle.confidence_threshold = float(np.median(ref.max(axis=1)))  # some flagged, some not
    out = export_model(bundle, "onnx", tmp_path / "m.onnx").path
    onnx_model = load_onnx(out)
    assert (onnx_model.temperature, onnx_model.confidence_threshold) == (3.0, bundle.confidence_threshold)
    got = onnx_model.predict_resized(images)
    assert np.abs(got - ref).max() < 1e-5
    assert not np.allclose(ref, predict_resized(_bundle(1.0, 0.0), torch.from_numpy(images)))  # T matters
    flags = uncertain_mask(bundle, ref)
    assert 0 < flags.sum() < len(flags)
    assert uncertain_mask(onnx_model, got).tolist() == flags.tolist()
    run = subprocess.run([sys.executable, "-m", "cxrkit.runtime", "--model", str(out), "--json", *map(str, files)],
                         capture_output=True, text=True, check=True)
    assert [r["uncertain"] for r in json.loads(run.stdout)] == flags.tolist()


def test_cxrkit_calibrate_refits_without_changing_decisions(sample_dir, tmp_path, capsys):
    from cxrkit.inference.bundle import load_bundle, save_bundle
    from cxrkit.inference.predictor import predict_paths

    src = save_bundle(_bundle(1.0, 0.0), tmp_path / "m.safetensors")
    out = tmp_path / "m_cal.safetensors"
    args = ["calibrate", "--model", str(src), "--data", str(sample_dir), "--out", str(out), "--quiet"]
    assert main(args + ["--uncertain-rule", "coverage:0.75", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert f"fitted on only {report['val_n']} films" in captured.err  # the sample's handful: said, not hidden
    new = load_bundle(out)
    assert new.temperature == pytest.approx(report["temperature"]) and new.temperature != 1.0
    assert new.confidence_threshold == report["confidence_threshold"] > 0
    assert report["val_nll_after"] <= report["val_nll_before"] and report["val_coverage"] >= 0.75
    files = sample_images("test", "NORMAL") + sample_images("test", "PNEUMONIA")
    old_preds, _ = predict_paths(load_bundle(src), files)
    new_preds, _ = predict_paths(new, files)
    assert [p.label for p in old_preds] == [p.label for p in new_preds]
    assert main(args) == 2 and "exists" in capsys.readouterr().err  # never overwrites


def test_cxrkit_calibrate_youden_geometry_refits_the_threshold_on_warped_validation(sample_dir, tmp_path, capsys):
    from cxrkit.evaluation.geometry import geometry_threshold
    from cxrkit.evaluation.recalibrate import carve_validation, validation_split_of
    from cxrkit.inference.bundle import load_bundle, save_bundle

    src = save_bundle(_bundle(1.0, 0.0), tmp_path / "m.safetensors")
    out = tmp_path / "geo.safetensors"
    assert main(["calibrate", "--model", str(src), "--data", str(sample_dir), "--out", str(out),
                 "--threshold-rule", "youden-geometry", "--uncertain-rule", "none", "--quiet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    new = load_bundle(out)
    assert report["threshold_rule"] == "youden-geometry" and new.threshold == pytest.approx(report["threshold"])
    fraction, seed = validation_split_of(new)
    val = carve_validation(sample_dir, new.classes, new.preprocess, fraction, seed)
    assert new.threshold == pytest.approx(geometry_threshold(new, val.images, val.labels.numpy()))
    assert main(["evaluate", "--model", str(out), "--data", str(sample_dir), "--json", "--quiet"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["threshold_rule"] == f"youden-geometry, refit on {len(val.labels)} validation films"
    assert main(["calibrate", "--model", str(src), "--data", str(sample_dir), "--out", str(tmp_path / "x.safetensors"),
                 "--threshold-rule", "youden-geo", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "unknown threshold rule 'youden-geo'" in err


def test_site_threshold_rule_refits_the_cut_off_for_a_shifted_site():
    """A site whose negatives score higher than the training data's: the old cut-off over-calls them; a Youden
    cut-off fitted on some of the site's films does better on other films of that site."""
    from cxrkit.evaluation.metrics import choose_threshold

    rng = np.random.default_rng(3)

    def site(n):
        y = rng.integers(0, 2, n)
        z = np.where(y == 1, rng.normal(3.0, 1.0, n), rng.normal(0.5, 1.0, n))  # negatives shifted up from -3
        return probabilities_from_logits(z[:, None]), y

    (p_fit, y_fit), (p_new, y_new) = site(400), site(4000)
    cal = calibrate(p_fit, y_fit, threshold=0.2, rule="none", threshold_rule="youden")
    assert cal.threshold == pytest.approx(choose_threshold(y_fit, cal.probs[:, 1], "youden"))
    assert cal.report["threshold_rule"] == "youden" and cal.report["threshold"] == cal.threshold
    acc_old = ((p_new[:, 1] >= 0.2) == y_new).mean()
    acc_site = ((rescale(p_new, cal.temperature)[:, 1] >= cal.threshold) == y_new).mean()
    assert acc_site > acc_old + 0.05


def test_cxrkit_calibrate_site_refits_the_threshold_on_the_sites_films(sample_dir, tmp_path, capsys):
    from sklearn.metrics import balanced_accuracy_score

    from cxrkit.inference.bundle import load_bundle, resolve_model
    from cxrkit.inference.predictor import predict_paths

    out = tmp_path / "site.safetensors"
    site = sample_dir / "test"
    assert main(["calibrate", "--site", str(site), "--out", str(out), "--quiet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    new = load_bundle(out)
    assert report["threshold_rule"] == "youden" and new.threshold == pytest.approx(report["threshold"])
    assert report["val_n"] == len(sample_images("test", "NORMAL") + sample_images("test", "PNEUMONIA"))
    files = sample_images("test", "NORMAL") + sample_images("test", "PNEUMONIA")
    y = [0] * len(sample_images("test", "NORMAL")) + [1] * len(sample_images("test", "PNEUMONIA"))
    old_preds, _ = predict_paths(resolve_model("cxr_cnn"), files)
    new_preds, _ = predict_paths(new, files)
    score = lambda preds: balanced_accuracy_score(y, [CLASSES.index(p.label) for p in preds])  # noqa: E731
    assert score(new_preds) >= score(old_preds)  # Youden maximises balanced accuracy on the films it is fitted on
    # an evaluation of the adapted model says where its threshold came from, not "chosen on validation"
    assert main(["evaluate", "--model", str(out), "--data", str(site), "--json", "--quiet"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["threshold_rule"] == f"youden, refit on {len(files)} site films"
    assert m["calibration"]["site_films"] == str(site)


def test_cxrkit_calibrate_site_errors_are_one_line(sample_dir, tmp_path, capsys):
    out = str(tmp_path / "x.safetensors")
    assert main(["calibrate", "--site", str(sample_dir), "--out", out, "--quiet"]) == 2
    assert "split folders" in capsys.readouterr().err
    one_class = tmp_path / "site" / "NORMAL"
    one_class.mkdir(parents=True)
    for p in sample_images("test", "NORMAL")[:3]:
        (one_class / p.name).write_bytes(p.read_bytes())
    assert main(["calibrate", "--site", str(tmp_path / "site"), "--out", out, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no readable films of class PNEUMONIA" in err and err.count("\n") == 1


def test_site_recalibration_experiment_runs_on_the_sample(sample_dir, tmp_path):
    """experiments/site_recalibration.py (docs/deploy.md's tables) still runs, labelled and unlabelled rows alike, and
    scores every fit on the other half. A small random cxr_cnn at 64 px keeps the dozens of re-estimations quick."""
    from pathlib import Path

    from cxrkit.inference.bundle import ModelBundle, save_bundle
    from cxrkit.models import create_model

    torch.manual_seed(0)
    small = {"widths": (8, 16, 16, 32, 32)}
    model = save_bundle(ModelBundle(create_model("cxr_cnn", num_classes=2, **small).eval(), "cxr_cnn", CLASSES,
                                    Preprocess(size=64), model_kwargs=small,
                                    info={"train_class_shares": {"NORMAL": 0.26, "PNEUMONIA": 0.74}}),
                        tmp_path / "small.safetensors")
    script = Path(__file__).resolve().parents[1] / "experiments" / "site_recalibration.py"
    run = subprocess.run([sys.executable, str(script), "--model", str(model), "--site", str(sample_dir / "train"),
                          "--sizes", "8,all",
                          "--draws", "3", "--unlabeled", "--unlabeled-sizes", "", "--mixes", "0.5", "--fixed", "16",
                          "--unlabeled-draws", "2"], capture_output=True, text=True, check=True)
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in run.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| threshold")}
    assert set(rows) == {"stored (validation carved from train)", "refit on 8 site films (6 fits)",
                         "refit on a whole half (2 fits)",
                         *(f"BatchNorm re-estimated on {films}, {how} ({fits} fits)"
                           for films, fits in (("a whole half", 2), ("16 unlabelled films, 50% pneumonia", 4))
                           for how in ("resampled by decisions", "told the share", "as they are")),
                         "BatchNorm re-estimated on 16 unlabelled films, 50% pneumonia, told 25% (4 fits)",
                         "BatchNorm re-estimated on 16 unlabelled films, 50% pneumonia, told 100% (4 fits)",
                         "BatchNorm re-estimated on a whole half, resampled by decisions, then refit on 16 labelled "
                         "films (4 fits)"}
    for cells in rows.values():
        assert 0.0 <= float(cells[0]) <= 1.0
