"""Metrics agree with scikit-learn; thresholds and calibration behave as documented."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from cxrkit.evaluation.metrics import choose_threshold, evaluate_probabilities, expected_calibration_error

CLASSES = ["NORMAL", "PNEUMONIA"]


def _binary_data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.35 * y + rng.normal(0.35, 0.2, n), 0.001, 0.999)  # informative, overlapping
    return y, np.stack([1 - p, p], axis=1)


def test_binary_metrics_match_sklearn_at_tuned_threshold():
    y, probs = _binary_data()
    p = probs[:, 1]
    t = 0.43
    m = evaluate_probabilities(y, probs, CLASSES, threshold=t, n_boot=0)
    pred = (p >= t).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert m["n"] == len(y)
    assert m["threshold"] == t
    assert m["classes"] == CLASSES and m["positive_class"] == "PNEUMONIA"
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
    assert m["specificity"] == pytest.approx(tn / (tn + fp))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, p))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, p))
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    # the naive cut-off is reported beside the tuned one, and it differs here
    pred05 = (p >= 0.5).astype(int)
    assert m["at_0.5"]["accuracy"] == pytest.approx(skm.accuracy_score(y, pred05))
    assert m["at_0.5"]["sensitivity"] == pytest.approx(skm.recall_score(y, pred05))
    assert m["at_0.5"]["sensitivity"] != pytest.approx(m["sensitivity"])
    rep = skm.classification_report(y, pred, output_dict=True)
    assert m["per_class"]["PNEUMONIA"]["recall"] == pytest.approx(rep["1"]["recall"])
    assert m["per_class"]["NORMAL"]["support"] == (y == 0).sum()


def test_bootstrap_ci_brackets_point_estimate():
    y, probs = _binary_data(n=200, seed=1)
    m = evaluate_probabilities(y, probs, CLASSES, threshold=0.4, n_boot=300, seed=0)
    keys = ["accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc", "pr_auc", "brier",
            "balanced_accuracy"]
    for key in keys:
        lo, hi = m["ci95"][key]
        assert lo <= m[key] <= hi, key
        assert lo < hi, key  # a real interval, not a point
        assert hi - lo < 0.3, key
    again = evaluate_probabilities(y, probs, CLASSES, threshold=0.4, n_boot=300, seed=0)
    assert again["ci95"] == m["ci95"]


def test_multiclass_matches_sklearn():
    rng = np.random.default_rng(2)
    n, k = 240, 3
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k)) + 1.2 * np.eye(k)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    m = evaluate_probabilities(y, probs, ["NORMAL", "BACTERIA", "VIRUS"], n_boot=50)
    pred = probs.argmax(axis=1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    assert "at_0.5" not in m
    lo, hi = m["ci95"]["accuracy"]
    assert lo <= m["accuracy"] <= hi


def test_youden_separates_separable_classes():
    rng = np.random.default_rng(3)
    neg, pos = rng.uniform(0.05, 0.4, 30), rng.uniform(0.6, 0.95, 20)
    y = np.r_[np.zeros(30, int), np.ones(20, int)]
    t = choose_threshold(y, np.r_[neg, pos], "youden")
    assert neg.max() < t <= pos.min()
    m = evaluate_probabilities(y, np.stack([1 - np.r_[neg, pos], np.r_[neg, pos]], 1), CLASSES, t, n_boot=0)
    assert m["accuracy"] == 1.0


def test_fixed_threshold_rule():
    y, probs = _binary_data()
    assert choose_threshold(y, probs[:, 1], "fixed:0.3") == pytest.approx(0.3)
    assert choose_threshold(y, probs[:, 1], "fixed:0.75") == pytest.approx(0.75)


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95])
def test_sensitivity_rule_reaches_target(target):
    y, probs = _binary_data(seed=4)
    p = probs[:, 1]
    t = choose_threshold(y, p, f"sensitivity:{target}")
    sens = np.mean(p[y == 1] >= t)
    assert sens >= target
    assert np.mean(p[y == 0] < t) > 0, "a useful threshold, not 'everyone positive'"


def test_sensitivity_rule_higher_target_lower_threshold():
    y, probs = _binary_data(seed=5)
    t80 = choose_threshold(y, probs[:, 1], "sensitivity:0.8")
    t95 = choose_threshold(y, probs[:, 1], "sensitivity:0.95")
    assert t95 < t80


def test_unknown_threshold_rule():
    y, probs = _binary_data()
    for rule in ("median", "fixed:half", "sensitivity:1.2", "sensitivity", "youden:0.3"):
        with pytest.raises(ValueError, match="unknown threshold rule"):
            choose_threshold(y, probs[:, 1], rule)


def test_ece_zero_when_perfect_and_positive_when_overconfident():
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    onehot = np.eye(2)[y]
    assert expected_calibration_error(onehot, onehot.copy()) == pytest.approx(0.0)
    wrong = np.eye(2)[1 - y]  # certain and always wrong
    assert expected_calibration_error(onehot, wrong) == pytest.approx(1.0)
    half_wrong = np.eye(2)[np.where(np.arange(8) % 2 == 0, y, 1 - y)]  # confidence 1, accuracy 0.5
    assert expected_calibration_error(onehot, half_wrong) == pytest.approx(0.5)
    m = evaluate_probabilities(y, wrong * 0.98 + 0.01, CLASSES, n_boot=0)
    assert m["ece"] > 0.9
    assert evaluate_probabilities(y, onehot, CLASSES, n_boot=0)["ece"] == pytest.approx(0.0)


def test_single_class_data_does_not_crash():
    y = np.ones(10, int)
    p = np.linspace(0.2, 0.9, 10)
    assert choose_threshold(y, p, "youden") == 0.5
    m = evaluate_probabilities(y, np.stack([1 - p, p], 1), CLASSES, 0.5, n_boot=20)
    assert np.isnan(m["roc_auc"]) and np.isnan(m["specificity"])
    assert m["sensitivity"] == pytest.approx(np.mean(p >= 0.5))


def test_curves_of_a_one_class_folder_draw_a_note_without_warnings(tmp_path):
    """A folder of NORMAL films only has no ROC or PR curve: the figure says so instead of matplotlib warning about
    an empty legend on the user's terminal."""
    import warnings

    from cxrkit.evaluation.plots import plot_pr, plot_roc

    y = np.zeros(8, dtype=int)
    probs = np.column_stack([np.linspace(0.9, 0.6, 8), np.linspace(0.1, 0.4, 8)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for plot in (plot_roc, plot_pr):
            path = plot(y, probs, ["NORMAL", "PNEUMONIA"], tmp_path / f"{plot.__name__}.png")
            assert path.stat().st_size > 1000
    y_both = np.r_[y, np.ones(8, dtype=int)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_roc(y_both, np.r_[probs, probs[::-1]], ["NORMAL", "PNEUMONIA"], tmp_path / "both.png", threshold=0.3)


def _experiment(name):
    """A script of experiments/ as a module (the folder is not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cutoff_ceiling_is_the_most_films_any_cut_off_gets_right():
    """experiments/cutoff_ceiling.py (issue 5's diagnostic in docs/robustness.md): its count equals a brute force over
    every cut-off, ties in the scores included, and no cut-off does better."""
    ceiling = _experiment("cutoff_ceiling").ceiling
    for seed in range(5):
        y, probs = _binary_data(n=200, seed=seed)
        p = np.round(probs[:, 1], 2)  # ties
        brute = max(int(((p >= c) == (y == 1)).sum()) for c in np.concatenate([np.unique(p), [1.01]]))
        most, cut = ceiling(p, y)
        assert most == brute == int(((p >= cut) == (y == 1)).sum())
