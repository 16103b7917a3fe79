"""``cxrkit compare``: train (or reuse) several recipes and put their test results in one table.

A run is cached under a key made of the resolved recipe and the data folder, so
rerunning a comparison after adding one recipe trains only that one, and
changing any recipe field retrains it. Figures a seed paper published for the
same recipe are set beside ours (``Recipe.reference``), which is the point of
reproducing them.
"""
from __future__ import annotations

import hashlib
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import jsonio
from ..data.folder import DatasetError, index_folder
from ..inference.bundle import ModelBundle, load_bundle
from ..inference.predictor import predict_resized
from ..recipes import Recipe, load_recipe
from ..training.distributed import resolve_device
from .evaluate import evaluate_folder

COLUMNS = ("accuracy", "precision", "sensitivity", "f1", "roc_auc")


def run_key(recipe: Recipe, data_dir: str | Path) -> str:
    """Recipe name + a short hash of the recipe's fields that differ from their defaults and the data folder's
    resolved path. Why only those: a field added to cxrkit later comes at a default that changes nothing, so a run
    cached before it must keep its key (hashing every field made each new field retrain every cached run)."""
    blob = json.dumps({"recipe": _changed_fields(recipe.to_dict(), Recipe(recipe.name, recipe.model).to_dict()),
                       "data": str(Path(data_dir).resolve())}, sort_keys=True)
    return f"{recipe.name}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def _changed_fields(values: dict, defaults: dict) -> dict:
    """``values`` without the entries equal to ``defaults``', nested dicts (the augmentations) entry by entry."""
    changed = {}
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(defaults.get(key), dict):
            value = _changed_fields(value, defaults[key])
            if value:
                changed[key] = value
        elif key not in defaults or value != defaults[key]:
            changed[key] = value
    return changed


def batch1_latency_ms(bundle: ModelBundle, repeats: int = 20) -> float:
    """Median batch-1 latency on one CPU thread, in milliseconds.

    One thread because a single small image gains little from more, and because
    several threads on a shared machine wait for each other: on 2 busy cores,
    cxr_cnn measured 190 ms with 2 threads where it needs about 10 with one.
    """
    pre = bundle.preprocess
    image = torch.randint(0, 256, (1, pre.size, pre.size), dtype=torch.uint8)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        predict_resized(bundle, image)  # trace, freeze, warm up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            predict_resized(bundle, image)
            times.append((time.perf_counter() - t) * 1000)
    finally:
        torch.set_num_threads(threads)
    return statistics.median(times)


@dataclass
class CompareRow:
    recipe: str
    run_dir: str
    reused: bool
    metrics: dict
    parameters: int
    train_seconds: float
    latency_ms: float
    pretrained: str
    reference: dict

    def to_dict(self) -> dict:
        return {"recipe": self.recipe, "run_dir": self.run_dir, "reused": self.reused,
                "parameters": self.parameters, "train_seconds": round(self.train_seconds, 1),
                "latency_ms": round(self.latency_ms, 2), "pretrained": self.pretrained,
                "reference": self.reference,
                **{k: self.metrics.get(k) for k in COLUMNS}, "ci95": self.metrics.get("ci95", {}),
                "threshold": self.metrics.get("threshold"), "n": self.metrics.get("n")}


def compare(recipes: list[str], data_dir: str | Path, out_dir: str | Path, cache_dir: str | Path | None = None,
            device: str = "auto", progress: bool = True, max_steps: int | None = None,
            n_boot: int = 1000) -> list[CompareRow]:
    """Train what is not cached, evaluate every recipe on the test split, write table + JSON + plot to ``out_dir``."""
    from ..training import train

    out = Path(out_dir)
    cache = Path(cache_dir) if cache_dir else out / "runs"
    resolved = [load_recipe(r) for r in recipes]  # fail on a bad name before hours of training
    splits = index_folder(data_dir).splits
    if "train" not in splits or "test" not in splits:  # else the "test" figures would be of training films
        raise DatasetError(f"{data_dir}: compare needs train/ and test/ splits (found: "
                           f"{', '.join(s for s in splits if s) or 'class folders only'})")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for recipe in resolved:
        run_dir = cache / run_key(recipe, data_dir)
        reused = (run_dir / "model.safetensors").is_file()
        if not reused:
            t0 = time.perf_counter()
            train(recipe, data_dir, run_dir, resume=(run_dir / "checkpoint.pt").is_file(), progress=progress,
                  max_steps=max_steps, device=device,
                  command=f"cxrkit compare --recipes {recipe.name} --data {data_dir}")
            jsonio.write(run_dir / "train_time.json", {"seconds": time.perf_counter() - t0})
        bundle = load_bundle(run_dir / "model.safetensors")
        bundle.source = recipe.name
        bundle.model.to(resolve_device(device))  # test-set inference where training ran; latency below on CPU
        ev = evaluate_folder(bundle, data_dir, progress=progress, n_boot=n_boot)
        bundle.model.cpu()
        bundle.frozen = None
        timing = run_dir / "train_time.json"
        seconds = json.loads(timing.read_text())["seconds"] if timing.is_file() else float("nan")
        rows.append(CompareRow(recipe.name, str(run_dir), reused, ev.metrics,
                               sum(p.numel() for p in bundle.model.parameters()), seconds,
                               batch1_latency_ms(bundle), bundle.info.get("pretrained", "-"), dict(recipe.reference)))
    jsonio.write(out / "compare.json", [r.to_dict() for r in rows])
    (out / "compare.md").write_text(markdown_table(rows) + "\n")
    plot(rows, out / "compare.png")
    return rows


def _fmt(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    ci = metrics.get("ci95", {}).get(key)
    return f"{value:.3f} ({ci[0]:.3f}-{ci[1]:.3f})" if ci else f"{value:.3f}"


def markdown_table(rows: list[CompareRow]) -> str:
    head = ("| recipe | accuracy (95% CI) | precision | recall | F1 | ROC-AUC (95% CI) | paper | params | "
            "train time | batch-1 latency (1 thread) | ImageNet weights |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        m = r.metrics
        paper = ", ".join(f"{k} {v:.3g}" for k, v in r.reference.items()) or "-"
        lines.append(f"| {r.recipe} | {_fmt(m, 'accuracy')} | {_fmt(m, 'precision')} | {_fmt(m, 'sensitivity')} | "
                     f"{_fmt(m, 'f1')} | {_fmt(m, 'roc_auc')} | {paper} | {r.parameters / 1e6:.1f}M | "
                     f"{r.train_seconds / 60:.1f} min | {r.latency_ms:.1f} ms | {r.pretrained} |")
    return "\n".join(lines)


def plot(rows: list[CompareRow], path: Path) -> None:
    """Accuracy and ROC-AUC with 95% CIs per recipe, the seed's published accuracy as a marker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(rows) + 2), 3.6))
    for offset, key, label in ((-0.18, "accuracy", "accuracy"), (0.18, "roc_auc", "ROC-AUC")):
        vals = np.array([r.metrics.get(key) or np.nan for r in rows], dtype=float)
        ci = np.array([r.metrics.get("ci95", {}).get(key, [v, v]) for r, v in zip(rows, vals)], dtype=float)
        ax.bar(x + offset, vals, 0.36, label=label, yerr=[vals - ci[:, 0], ci[:, 1] - vals], capsize=3)
    ref = [r.reference.get("accuracy") for r in rows]
    if any(v is not None for v in ref):
        ax.scatter(x[[v is not None for v in ref]] - 0.18, [v for v in ref if v is not None], marker="_", s=400,
                   color="black", label="seed paper's accuracy", zorder=3)
    ax.set_xticks(x, [r.recipe for r in rows], rotation=20, ha="right")
    ax.set_ylim(0.4, 1.0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("official test split")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
