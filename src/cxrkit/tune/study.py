"""``cxrkit tune``: an Optuna study whose trials are ordinary cxrkit training runs.

Why these choices:

* **TPE sampler, median or Hyperband pruning** on the validation metric the
  trainer reports after every epoch (``train(on_epoch=...)``); the test split
  is never read.
* **Storage is a database**, by default ``sqlite:///OUT/study.db``: every
  finished trial is committed, so a killed study rerun with the same command
  keeps its trials and runs only the missing ones (``--trials`` counts
  finished trials of the whole study, not of this call). A PostgreSQL URL lets
  several ``cxrkit tune`` processes share one study.
* **Heartbeats**: a trial whose process died (kill, OOM) stops beating; after
  :data:`GRACE_S` the next worker marks it failed and re-queues its
  parameters once, so no sampled point is silently lost.
* Each trial is a full run directory under ``OUT/trials/`` (config, history,
  model), so the best trial's model is usable as is.
"""
from __future__ import annotations

import logging
import math
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from tqdm.auto import tqdm

from ..data.folder import index_folder
from ..recipes import Recipe
from ..recipes.spaces import apply_params, check_space_fits
from ..training import train

METRICS = {"val_auc": "maximize", "val_loss": "minimize"}
HEARTBEAT_S, GRACE_S = 20, 60
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class TuneResult:
    study: optuna.Study
    out_dir: Path
    best_recipe: Recipe | None  # None while no trial has completed
    new_trials: int  # finished by this call


def suggest(trial: optuna.Trial, space: dict) -> dict:
    """Sample one point of a (validated) space."""
    params = {}
    for path, spec in space.items():
        if "float" in spec:
            lo, hi = spec["float"]
            params[path] = trial.suggest_float(path, lo, hi, log=bool(spec.get("log", False)))
        elif "int" in spec:
            lo, hi = spec["int"]
            params[path] = trial.suggest_int(path, lo, hi, step=int(spec.get("step", 1)), log=bool(spec.get("log", False)))
        else:
            params[path] = trial.suggest_categorical(path, spec["choice"])
    return params


def _pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r} (median | hyperband | none)")


class _NoTracebacks(logging.Filter):
    """Optuna logs a failed trial with its traceback: the line stays (trials.md has the state), the traceback goes,
    and an interrupt, which is the user's Ctrl-C rather than a failure, is not logged at all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is not None and issubclass(record.exc_info[0], KeyboardInterrupt):
            return False
        record.exc_info, record.exc_text = None, None
        return True


def default_storage(out_dir: str | Path) -> str:
    return f"sqlite:///{Path(out_dir).resolve() / 'study.db'}"


def open_study(recipe: Recipe, data_dir: str | Path, storage: str, study_name: str, metric: str = "val_auc",
               pruner: str = "median", seed: int | None = None) -> optuna.Study:
    """Create the study, or load it to resume; refuse to mix a different recipe, data folder or metric into it."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r} ({' | '.join(METRICS)})")
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # cxrkit prints its own progress
    for handler in logging.getLogger("optuna").handlers:
        if not any(isinstance(f, _NoTracebacks) for f in handler.filters):
            handler.addFilter(_NoTracebacks())
    for attempt in range(3):  # workers started together race to create a fresh database's tables; the loser retries
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable in use
                rdb = RDBStorage(storage, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                 heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))
            break
        except ImportError:
            raise ValueError(f"storage {storage.split(':')[0]!r} needs its database driver (PostgreSQL: "
                             f"pip install 'cxrkit[postgres]')") from None
        except Exception as exc:  # SQLAlchemy's errors are many classes; the user needs one line
            if attempt == 2:
                raise ValueError(f"cannot open storage {storage.split('@')[-1]!r}: "
                                 f"{str(exc).splitlines()[0][:160]}") from None
            time.sleep(1.0 + attempt)
    study = optuna.create_study(storage=rdb, study_name=study_name, direction=METRICS[metric], load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=seed), pruner=_pruner(pruner))
    identity = {"recipe": recipe.name, "data": str(Path(data_dir).resolve()), "metric": metric}
    for key, value in identity.items():
        if study.user_attrs.get(key) is None:
            study.set_user_attr(key, value)  # two workers at once: the first write wins, the other compares below
        known = study.user_attrs.get(key)
        if known != value:
            raise ValueError(f"study {study_name!r} in {storage} was run with {key} {known!r}, not {value!r}: "
                             f"pick another --study or --out")
    return study


def tune(recipe: Recipe, space: dict, data_dir: str | Path, out_dir: str | Path, n_trials: int,
         timeout: float | None = None, storage: str | None = None, study_name: str | None = None,
         metric: str = "val_auc", pruner: str = "median", seed: int | None = None, epochs: int | None = None,
         max_steps: int | None = None, progress: bool = True) -> TuneResult:
    """Run trials until the study holds ``n_trials`` finished (completed or pruned) ones, or ``timeout`` s pass."""
    if epochs:
        recipe = recipe.replace(epochs=epochs)
    check_space_fits(recipe, space)
    index_folder(data_dir)  # a wrong --data is one error line now, not a failed trial in the study
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    study_name = study_name or recipe.name
    study = open_study(recipe, data_dir, storage or default_storage(out), study_name, metric, pruner, seed)
    sign = 1.0 if METRICS[metric] == "maximize" else -1.0

    def objective(trial: optuna.Trial) -> float:
        trial_recipe = apply_params(recipe, suggest(trial, space)).replace(name=f"{recipe.name}_trial{trial.number}")
        run_dir = out / "trials" / f"{study_name}-{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        best = -math.inf

        def report(epoch: int, record: dict) -> None:
            nonlocal best
            value = record[metric]
            if not math.isfinite(value):  # diverged, or a one-class validation split: no use going on
                raise optuna.TrialPruned(f"epoch {epoch}: {metric} is {value}")
            best = max(best, sign * value)
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: {metric} {value:.4f}")

        train(trial_recipe, data_dir, run_dir, progress=False, verbose=False, max_steps=max_steps, on_epoch=report)
        return sign * best

    finished = _n_finished(study)
    todo = max(0, n_trials - finished)
    bar = tqdm(total=n_trials, initial=finished, desc=f"tune {study_name}", unit="trial", disable=not progress)

    def on_trial(st: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        bar.n = _n_finished(st)
        if any(t.state == TrialState.COMPLETE for t in st.trials):
            bar.set_postfix({f"best {metric}": f"{st.best_value:.4f}"})
        if _n_finished(st) >= n_trials:
            st.stop()

    if todo:
        study.optimize(objective, timeout=timeout, callbacks=[on_trial])
    bar.close()
    best_recipe = None
    if any(t.state == TrialState.COMPLETE for t in study.trials):
        best_recipe = apply_params(recipe, study.best_trial.params).replace(
            name=f"{recipe.name}_tuned",
            description=f"{recipe.name} with the best of {len(study.trials)} Optuna trials (study {study_name!r}, "
                        f"{metric} {study.best_value:.4f} on the patient-grouped validation split): "
                        + ", ".join(f"{k}={_fmt(v)}" for k, v in study.best_trial.params.items()))
    return TuneResult(study, out, best_recipe, _n_finished(study) - finished)


def _n_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
