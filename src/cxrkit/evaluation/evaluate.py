"""Evaluate a model on a labelled folder and write a readable report."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import jsonio
from ..data.cache import decode_samples
from ..data.folder import DatasetError, index_folder
from ..inference.bundle import ModelBundle
from ..inference.predictor import predict_resized
from . import plots
from .metrics import evaluate_probabilities


@dataclass
class Evaluation:
    metrics: dict
    probabilities: np.ndarray
    labels: np.ndarray
    paths: list[str]


def evaluate_folder(bundle: ModelBundle, data_dir: str | Path, split: str = "test", progress: bool = True,
                    n_boot: int = 1000) -> Evaluation:
    """Score ``bundle`` on ``data_dir/split`` (or on ``data_dir`` itself when it has no split folders).

    The threshold is the one stored in the bundle, chosen on validation data at
    training time: the test set never influences a decision.
    """
    index = index_folder(data_dir, classes=bundle.classes)
    samples = index.split(split) if index.has_splits else list(index.samples)
    if not samples:
        raise DatasetError(f"{data_dir}: no '{split}' images (splits present: {index.splits})")
    pre = bundle.preprocess
    data = decode_samples(samples, pre.size, pre.resize, Path(data_dir), f"decode {split}", progress)
    if len(data.images) == 0:
        raise DatasetError(f"{data_dir}: none of the {len(samples)} images could be read")
    probs = predict_resized(bundle, data.images)
    y = data.labels.numpy()
    metrics = evaluate_probabilities(y, probs, bundle.classes, bundle.threshold, n_boot=n_boot)
    metrics.update({"model": bundle.source or bundle.arch, "arch": bundle.arch, "data": str(data_dir),
                    "split": split if index.has_splits else None, "data_fingerprint": data.fingerprint,
                    "threshold_rule": bundle.info.get("threshold_rule", "stored"),
                    "unreadable": data.failures})
    return Evaluation(metrics, probs, y, [str(s.path) for s in data.samples])


_ROWS = [("accuracy", "Accuracy"), ("balanced_accuracy", "Balanced accuracy"), ("sensitivity", "Sensitivity (recall)"),
         ("specificity", "Specificity"), ("precision", "Precision (PPV)"), ("f1", "F1"), ("roc_auc", "ROC-AUC"),
         ("pr_auc", "PR-AUC"), ("brier", "Brier score"), ("ece", "Expected calibration error")]


def metrics_table(m: dict) -> str:
    """Markdown table: metric, value, 95% CI, and the value at threshold 0.5 for binary tasks."""
    binary = "at_0.5" in m
    head = "| metric | value | 95% CI |" + (" at 0.5 |" if binary else "")
    lines = [head, "|---|---:|---|" + ("---:|" if binary else "")]
    for key, name in _ROWS:
        if key not in m or m[key] != m[key]:  # absent or NaN
            continue
        ci = m.get("ci95", {}).get(key)
        ci_s = f"{ci[0]:.3f} – {ci[1]:.3f}" if ci else ""
        row = f"| {name} | {m[key]:.3f} | {ci_s} |"
        if binary:
            at = m["at_0.5"].get(key)
            row += f" {at:.3f} |" if at is not None else " |"
        lines.append(row)
    return "\n".join(lines)


def write_report(ev: Evaluation, out_dir: str | Path, run_dir: Path | None = None,
                 explain: ModelBundle | None = None) -> Path:
    """``out_dir/report.md`` with PNG figures and ``metrics.json`` beside it.

    ``explain``: the evaluated model, to add Grad-CAM heatmaps of its most
    confident mistakes (:mod:`cxrkit.explain.errors`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = ev.metrics
    classes = m["classes"]
    plots.plot_roc(ev.labels, ev.probabilities, classes, out / "roc.png", m["threshold"] if len(classes) == 2 else None)
    plots.plot_pr(ev.labels, ev.probabilities, classes, out / "pr.png")
    plots.plot_confusion(m["confusion_matrix"], classes, out / "confusion.png")
    plots.plot_reliability(ev.labels, ev.probabilities, out / "reliability.png")
    figures = ["roc.png", "pr.png", "confusion.png", "reliability.png"]
    if run_dir is not None and (run_dir / "training_curves.png").is_file():
        shutil.copy(run_dir / "training_curves.png", out / "training_curves.png")
        figures.append("training_curves.png")
    jsonio.write(out / "metrics.json", m)
    counts = np.bincount(ev.labels, minlength=len(classes))
    cm_rows = ["| true \\ predicted | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
    cm_rows += [f"| {c} | " + " | ".join(str(v) for v in row) + " |" for c, row in zip(classes, m["confusion_matrix"])]
    per_class = ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    per_class += [f"| {c} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1-score']:.3f} | {int(v['support'])} |"
                  for c, v in m["per_class"].items()]
    decision = (f"P({classes[1]}) ≥ **{m['threshold']:.3f}** (rule: `{m['threshold_rule']}`, chosen on validation "
                f"data, never on this set); the last column shows the naive 0.5 cut-off."
                if len(classes) == 2 else "the most probable class.")
    explanations = ""
    if explain is not None:
        from ..explain.errors import errors_section

        explanations = errors_section(explain, ev.probabilities, ev.labels, ev.paths, out) + "\n"
    text = f"""# Evaluation report

- **Model:** `{m['model']}` (architecture `{m['arch']}`)
- **Data:** `{m['data']}`{f" split `{m['split']}`" if m['split'] else ""} — {m['n']} images
  ({", ".join(f"{c}: {n}" for c, n in zip(classes, counts))}); fingerprint `{m['data_fingerprint'][:16]}`
- **Decision:** {decision}
- Unreadable files skipped: {len(m['unreadable'])}

## Metrics

95% confidence intervals: percentile bootstrap, 1,000 resamples of the images.

{metrics_table(m)}

## Confusion matrix

{chr(10).join(cm_rows)}

## Per class

{chr(10).join(per_class)}

{explanations}## Figures

""" + "\n".join(f"![{f[:-4]}]({f})" for f in figures) + "\n"
    (out / "report.md").write_text(text)
    return out / "report.md"
