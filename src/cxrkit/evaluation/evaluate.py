"""Evaluate a model on a labelled folder and write a readable report."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import jsonio
from ..data.cache import DecodedSet, decode_samples
from ..data.folder import DatasetError, index_folder
from ..data.pseudonyms import pseudonym
from ..inference.bundle import ModelBundle
from ..inference.predictor import predict_resized
from . import plots
from .calibration import rescale
from .metrics import evaluate_probabilities, expected_calibration_error


@dataclass
class Evaluation:
    metrics: dict
    probabilities: np.ndarray
    labels: np.ndarray
    paths: list[str]  # where each film is read from, aligned with probabilities
    names: list[str]  # what the report calls it: its path, or its pseudonym (cxrkit.data.pseudonyms)


def evaluate_folder(bundle: ModelBundle, data_dir: str | Path, split: str = "test", progress: bool = True,
                    n_boot: int = 1000, hide_names: bool = False) -> Evaluation:
    """Score ``bundle`` on ``data_dir/split`` (or on ``data_dir`` itself when it has no split folders).

    The threshold is the one stored in the bundle, chosen on validation data at
    training time: the test set never influences a decision. ``hide_names``: the
    metrics and report name films by pseudonym, never by path.
    """
    data, has_splits = decode_split(data_dir, bundle.classes, bundle.preprocess, split, progress, hide_names)
    probs = predict_resized(bundle, data.images, progress=progress)
    y = data.labels.numpy()
    metrics = evaluate_probabilities(y, probs, bundle.classes, bundle.threshold, n_boot=n_boot,
                                     confidence_threshold=bundle.confidence_threshold)
    metrics.update({"model": bundle.source or bundle.arch, "arch": bundle.arch, "data": str(data_dir),
                    "split": split if has_splits else None, "data_fingerprint": data.fingerprint,
                    "threshold_rule": bundle.info.get("threshold_rule", "stored"),
                    "unreadable": data.failures, "film_names": "hidden" if hide_names else "paths"})
    if "site_adaptation" in bundle.info:
        metrics["site_adaptation"] = bundle.info["site_adaptation"]
    metrics["calibration"] = calibration_summary(bundle, y, probs)
    paths = [str(s.path) for s in data.samples]
    return Evaluation(metrics, probs, y, paths, [pseudonym(d) for d in data.digests] if hide_names else paths)


def decode_split(data_dir: str | Path, classes, pre, split: str, progress: bool = False,
                 hide_names: bool = False) -> tuple[DecodedSet, bool]:
    """``data_dir/split`` (or ``data_dir`` itself when it has no split folders) decoded for ``pre``, and whether
    the folder has splits; a split with no readable image is a one-line error."""
    index = index_folder(data_dir, classes=classes)
    samples = index.split(split) if index.has_splits else list(index.samples)
    if not samples:
        raise DatasetError(f"{data_dir}: no '{split}' images (splits present: {index.splits})")
    data = decode_samples(samples, pre.size, pre.resize, Path(data_dir), f"decode {split}", progress,
                          hide_names=hide_names)
    if len(data.images) == 0:
        raise DatasetError(f"{data_dir}: none of the {len(samples)} images could be read")
    return data, index.has_splits


def calibration_summary(bundle, y: np.ndarray, probs: np.ndarray) -> dict:
    """The stored temperature and UNCERTAIN rule, with this set's ECE with and without the temperature."""
    temperature = bundle.temperature
    onehot = np.eye(probs.shape[1])[y]
    fitted = bundle.info.get("calibration", {})
    return {"temperature": temperature,
            "uncertain_rule": fitted.get("uncertain_rule", "none (model has no confidence threshold)"),
            **({"site_films": fitted["refit_on"]} if fitted.get("site") else {}),
            "ece": expected_calibration_error(onehot, probs),
            "ece_without_temperature": expected_calibration_error(onehot, rescale(probs, 1.0 / temperature))}


_ROWS = [("accuracy", "Accuracy"), ("balanced_accuracy", "Balanced accuracy"), ("sensitivity", "Sensitivity (recall)"),
         ("specificity", "Specificity"), ("precision", "Precision (PPV)"), ("f1", "F1"), ("roc_auc", "ROC-AUC"),
         ("pr_auc", "PR-AUC"), ("brier", "Brier score"), ("ece", "Expected calibration error")]


_NAMES_HIDDEN = ("\n- **Film names hidden:** a film is `film-` and the first 12 hex digits of its file's SHA-256 "
                 "(find it with `sha256sum`)")


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


def _matrix(rows: list[str], columns: list[str], cm: list[list[int]]) -> str:
    lines = ["| true \\ predicted | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    return "\n".join(lines + [f"| {r} | " + " | ".join(str(v) for v in row) + " |" for r, row in zip(rows, cm)])


def class_sections(m: dict) -> str:
    """N-class tasks: one-vs-rest AUCs with their macro mean, and the bacterial-vs-viral figures where they apply."""
    if "roc_auc_ovr" not in m:
        return ""
    rows = [f"| {c} | {auc:.3f} |" for c, auc in m["roc_auc_ovr"].items()]
    text = ("## One-vs-rest ROC-AUC\n\n| class | ROC-AUC |\n|---|---:|\n" + "\n".join(rows)
            + f"\n| **macro** | **{m['macro_auc']:.3f}** |\n")
    bv = m.get("bacterial_vs_viral")
    if bv:
        ci = bv.get("ci95", {})
        ci_s = {k: f" (95% CI {a:.3f} – {b:.3f})" for k, (a, b) in ci.items()}
        text += (f"\n## {bv['classes'][0]} vs {bv['classes'][1]}\n\nThe {bv['n']} truly bacterial or viral cases "
                 f"({bv['n_viral']} viral), scored by P(viral) / (P(bacterial) + P(viral)), decided at 0.5: "
                 f"accuracy **{bv['accuracy']:.3f}**{ci_s.get('accuracy', '')}, ROC-AUC "
                 f"**{bv['roc_auc']:.3f}**{ci_s.get('roc_auc', '')}. Kermany et al. 2018 (a dedicated binary model "
                 f"on the same test images): accuracy 0.907, AUC 0.940.\n")
    return text


def uncertain_section(m: dict) -> str:
    """Temperature, ECE with and without it, and seed 003's confusion matrix with an UNCERTAIN column."""
    cal, sel = m["calibration"], m["selective"]
    text = (f"## Calibration and UNCERTAIN\n\n- Temperature **{cal['temperature']:.3f}** (fitted on validation): "
            f"ECE {cal['ece_without_temperature']:.3f} without it, **{cal['ece']:.3f}** with it on this set.\n"
            f"- UNCERTAIN when the decided class's probability is below **{sel['confidence_threshold']:.3f}** "
            f"(rule `{cal['uncertain_rule']}`, chosen on validation): coverage **{sel['coverage']:.3f}** "
            f"({sel['n_covered']} decided, {sel['n_uncertain']} UNCERTAIN), accuracy on covered cases "
            f"**{sel['covered_accuracy']:.3f}** (all cases: {m['accuracy']:.3f}).\n")
    if sel["confidence_threshold"] > 0:
        text += "\n" + _matrix(m["classes"], sel["columns"], sel["confusion_matrix"]) + "\n"
    return text


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
    sel = m["selective"]
    if sel["confidence_threshold"] > 0:
        plots.plot_confusion(sel["confusion_matrix"], classes, out / "confusion_uncertain.png", sel["columns"])
        figures.insert(3, "confusion_uncertain.png")
    if run_dir is not None and (run_dir / "training_curves.png").is_file():
        shutil.copy(run_dir / "training_curves.png", out / "training_curves.png")
        figures.append("training_curves.png")
    jsonio.write(out / "metrics.json", m)
    counts = np.bincount(ev.labels, minlength=len(classes))
    per_class = ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    per_class += [f"| {c} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1-score']:.3f} | {int(v['support'])} |"
                  for c, v in m["per_class"].items()]
    site = m.get("calibration", {}).get("site_films")
    origin = (f"fitted on the site films in `{Path(site).name}`: if this folder holds those films, the figures "
              "below are optimistic" if site else "chosen on validation data, never on this set")
    decision = (f"P({classes[1]}) ≥ **{m['threshold']:.3f}** (rule: `{m['threshold_rule']}`, {origin}); the last "
                f"column shows the naive 0.5 cut-off." if len(classes) == 2 else "the most probable class.")
    adapted = m.get("site_adaptation")
    adaptation = (f"\n- **Site adaptation:** BatchNorm statistics re-estimated on {adapted['films']} unlabelled films "
                  f"in `{Path(adapted['folder']).name}` (no labels used; if those are the films evaluated here, "
                  "the figures are transductive)" if adapted else "")
    explanations = ""
    if explain is not None:
        from ..explain.errors import errors_section

        explanations = errors_section(explain, ev.probabilities, ev.labels, ev.paths, out, names=ev.names) + "\n"
    text = f"""# Evaluation report

- **Model:** `{m['model']}` (architecture `{m['arch']}`)
- **Data:** `{m['data']}`{f" split `{m['split']}`" if m['split'] else ""} — {m['n']} images
  ({", ".join(f"{c}: {n}" for c, n in zip(classes, counts))}); fingerprint `{m['data_fingerprint'][:16]}`
- **Decision:** {decision}{adaptation}
- Unreadable files skipped: {len(m['unreadable'])}{_NAMES_HIDDEN if m.get('film_names') == 'hidden' else ''}

## Metrics

95% confidence intervals: percentile bootstrap, 1,000 resamples of the images.

{metrics_table(m)}

## Confusion matrix

{_matrix(classes, classes, m["confusion_matrix"])}

## Per class

{chr(10).join(per_class)}

{class_sections(m)}
{uncertain_section(m)}
{explanations}## Figures

""" + "\n".join(f"![{f[:-4]}]({f})" for f in figures) + "\n"
    (out / "report.md").write_text(text)
    return out / "report.md"
