"""Carve a validation split out of train, grouped by patient and stratified by class.

The official Kermany val split has 16 images: far too few to pick a threshold
or stop early. A patient-grouped split of train keeps every child's films on
one side, so validation scores are honest.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from .folder import Sample


def grouped_split(samples: Sequence[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Return ``(train, val)``; no patient appears on both sides."""
    if not 0.0 < val_fraction < 0.5:
        raise ValueError(f"val_fraction must be in (0, 0.5), got {val_fraction}")
    labels = np.array([s.label for s in samples])
    groups = np.array([s.patient for s in samples])
    n_splits = max(2, round(1.0 / val_fraction))
    min_class = np.bincount(labels).min() if len(labels) else 0
    if len(set(groups)) < n_splits or min_class < n_splits:
        n_splits = 2  # tiny data: still grouped, just coarser
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train_idx, val_idx = next(splitter.split(np.zeros(len(labels)), labels, groups))
    return [samples[i] for i in train_idx], [samples[i] for i in val_idx]
