"""Hyperparameter search: Optuna studies over recipes (``cxrkit tune``)."""
from .report import write_outputs
from .study import METRICS, TuneResult, default_storage, open_study, suggest, tune

__all__ = ["METRICS", "TuneResult", "default_storage", "open_study", "suggest", "tune", "write_outputs"]
