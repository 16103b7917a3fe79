"""What a study leaves in its folder: the best recipe, a trial table, two figures.

``best_recipe.yaml`` is a complete recipe (``cxrkit train --recipe
OUT/best_recipe.yaml``); ``trials.csv`` / ``trials.md`` list every trial with
its state, value, parameters and run directory; the figures are Optuna's
matplotlib ones (no plotly needed), written only when they can say something.
"""
from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .study import TuneResult


def trial_rows(study: optuna.Study) -> tuple[list[str], list[list]]:
    params = sorted({p for t in study.trials for p in t.params})
    header = ["trial", "state", "value", "epochs", "seconds", *params, "worker", "run_dir"]
    rows = []
    for t in study.trials:
        seconds = round(t.duration.total_seconds(), 1) if t.duration else None
        rows.append([t.number, t.state.name, t.value, len(t.intermediate_values), seconds,
                     *[t.params.get(p) for p in params], t.user_attrs.get("worker", ""),
                     t.user_attrs.get("run_dir", "")])
    return header, rows


def _cell(v) -> str:
    if v is None:
        return ""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_outputs(result: TuneResult) -> dict[str, Path]:
    """Write the files; return {kind: path} for those written."""
    out, study = result.out_dir, result.study
    written: dict[str, Path] = {}
    header, rows = trial_rows(study)
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *rows])
    (out / "trials.csv").write_text(buf.getvalue())
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    (out / "trials.md").write_text("\n".join(md) + "\n")
    written.update(table=out / "trials.md", csv=out / "trials.csv")
    if result.best_recipe is not None:
        result.best_recipe.save(out / "best_recipe.yaml")
        written["best_recipe"] = out / "best_recipe.yaml"
    written.update(_plots(study, out))
    return written


def _plots(study: optuna.Study, out: Path) -> dict[str, Path]:
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if not complete:
        return {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    figures = {"history": ("optimization_history.png", ovm.plot_optimization_history)}
    if len(complete) >= 2 and len({tuple(sorted(t.params.items())) for t in complete}) >= 2:
        figures["importances"] = ("param_importances.png", ovm.plot_param_importances)
    written = {}
    for kind, (name, plot) in figures.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
            ax = plot(study)
        ax.figure.set_size_inches(7, 4)
        ax.figure.tight_layout()
        ax.figure.savefig(out / name, dpi=100)
        plt.close(ax.figure)
        written[kind] = out / name
    return written
