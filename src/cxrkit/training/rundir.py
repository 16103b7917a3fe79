"""What a run directory holds, written in one place.

``config.yaml`` is the resolved recipe (usable as ``--recipe``); ``run.json``
holds what the recipe cannot: data fingerprint, split sizes, library versions
and the exact command, so a reader can reproduce or distrust a number.
"""
from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import yaml

from .. import jsonio
from ..data.cache import DecodedSet
from ..recipes import Recipe


# what a run holds before its first epoch ends: a directory of these alone has nothing to resume
START_FILES = frozenset({"config.yaml", "run.json"})


def _versions() -> dict:
    import numpy
    import sklearn
    import torch

    import cxrkit

    return {"cxrkit": cxrkit.__version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "numpy": numpy.__version__, "scikit-learn": sklearn.__version__, "platform": platform.platform()}


def write_json(path: Path, obj) -> None:
    jsonio.write(path, obj)


def write_config(out: Path, recipe: Recipe, data_dir, classes, train: DecodedSet, val: DecodedSet,
                 command: str | None, precision: str = "fp32", device: str = "cpu", world_size: int = 1,
                 exclusions: dict | None = None) -> None:
    (out / "config.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    write_json(out / "run.json", {
        "recipe": recipe.name, "seed": recipe.seed, "data_dir": str(data_dir), "classes": list(classes),
        "data_fingerprint": {"train": train.fingerprint, "val": val.fingerprint},
        "split": {"train": len(train.samples), "val": len(val.samples), "seed": recipe.validation_seed,
                  "val_patients": len({s.patient for s in val.samples}), "rule": "patient-grouped, stratified"},
        "unreadable": train.failures + val.failures,
        **({"excluded": exclusions} if exclusions else {}),  # films left out of training (--exclude): count, sha256
        "precision": precision,  # what `auto` resolved to on this machine
        # a GPU's or several processes' numbers match a CPU rerun only within tolerance, so say where it ran
        "device": device, "world_size": world_size,
        "versions": _versions(), "command": command,
    })


def changed_fields(out: Path, recipe: Recipe) -> tuple[list[str], dict, dict]:
    """The recipe fields in which ``recipe`` differs from the run in ``out`` (its config.yaml), and both recipes as
    plain dicts; tuples and lists, as YAML gives them back, compare equal."""
    from ..recipes import load_recipe

    def plain(r: Recipe) -> dict:
        return json.loads(json.dumps(r.to_dict()))

    recorded, given = plain(load_recipe(out)), plain(recipe)
    return [k for k in given if given[k] != recorded.get(k)], recorded, given


def check_resumable(out: Path, recipe: Recipe) -> None:
    """``--resume`` continues a run exactly as it was started: a checkpoint holds the optimizer, schedule and
    weights of the recorded recipe, and a changed one would either fail to load or quietly train something that
    neither command describes."""
    changed, recorded, given = changed_fields(out, recipe)
    if changed:
        shown = ", ".join(f"{k} {recorded.get(k)!r} -> {given[k]!r}" for k in changed[:3])
        raise ValueError(f"{out}: --resume continues the run as it was started, and this command changes its recipe "
                         f"({shown}{', ...' if len(changed) > 3 else ''}); resume with `--recipe {out}` or start "
                         f"a new --out")


def check_same_data(out: Path, train: DecodedSet, val: DecodedSet, exclusions: dict | None = None) -> None:
    """The films a resumed run reads are the ones it started on (its data fingerprint in run.json)."""
    run = json.loads((out / "run.json").read_text())
    recorded = run.get("data_fingerprint", {})
    if recorded and recorded != {"train": train.fingerprint, "val": val.fingerprint}:
        listed = run.get("excluded")
        hint = ""
        if listed and (exclusions or {}).get("sha256") != listed.get("sha256"):
            hint = f"; it started with an --exclude list of {listed['listed']} films: pass the same list again"
        raise ValueError(f"{out}: --resume needs the data the run started on, and these films differ from it "
                         f"(data fingerprint in {out / 'run.json'}){hint}")


def plot_history(history: list[dict], path: Path) -> None:
    """Loss and validation AUC/accuracy per epoch, one PNG."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = list(range(1, len(history) + 1))  # transfer runs: head-only epochs on cached features come first
    xlabel = "epoch (head-only epochs first)" if any(h.get("stage") == "head" for h in history) else "epoch"
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.plot(ep, [h["train_loss"] for h in history], "o-", label="train loss")
    a.plot(ep, [h.get("val_loss", float("nan")) for h in history], "o-", label="validation loss")
    a.set_xlabel(xlabel), a.legend(), a.grid(alpha=0.3)
    b.plot(ep, [h["val_auc"] for h in history], "o-", label="validation ROC-AUC")
    b.plot(ep, [h["val_acc"] for h in history], "o-", label="validation accuracy @0.5")
    b.set_xlabel(xlabel), b.legend(), b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
