"""Leave listed films out of a run's training portion (``cxrkit train --exclude FILE``).

Why: a label audit (``cxrkit data audit``) names training films whose label
the other folds' models contradict; training without them tests whether they
were noise. Films are removed after the patient-grouped validation split is
drawn, so validation holds exactly the films it held before and two runs, with
and without the list, are judged on the same films.
"""
from __future__ import annotations

import csv
import hashlib
from collections.abc import Collection, Sequence
from pathlib import Path

from .folder import DatasetError, Sample


def read_exclusions(path: str | Path) -> frozenset[str]:
    """Film paths relative to the data folder (``train/NORMAL/x.jpeg``): the ``path`` column of a CSV (what
    ``cxrkit data audit`` writes), else one path per line; blank lines and ``#`` comments are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such exclusion list (a CSV with a 'path' column, or one path per line)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not a text file (a CSV with a 'path' column, or one path per line)") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if lines and "path" in next(csv.reader([lines[0]])):
        names = [row.get("path", "") for row in csv.DictReader(lines)]
    else:
        names = lines
    names = {Path(n.strip()).as_posix() for n in names if n and n.strip()}
    if not names:
        raise DatasetError(f"{path}: lists no films")
    return frozenset(names)


def list_digest(names: Collection[str]) -> str:
    """SHA-256 of a list's film names, order and repeats ignored: what run.json records of an --exclude list."""
    return hashlib.sha256("\n".join(sorted(set(names))).encode()).hexdigest()


def relative_name(sample: Sample, root: Path) -> str:
    """The name a list gives a film: its path under the data folder, with forward slashes."""
    p = Path(sample.path)
    return (p.relative_to(root) if p.is_relative_to(root) else Path(p.name)).as_posix()


def drop_listed(train: Sequence[Sample], val: Sequence[Sample], listed: Collection[str],
                root: Path) -> tuple[list[Sample], dict]:
    """``train`` without the listed films, and what happened to the list (recorded in run.json).

    A list that names none of the training portion's films is refused: it was written for another folder, or
    with other paths, and training on everything under its name would be a silent mistake."""
    listed = frozenset(listed)
    kept = [s for s in train if relative_name(s, root) not in listed]
    removed = len(train) - len(kept)
    in_val = sum(relative_name(s, root) in listed for s in val)
    if not removed:
        example = relative_name(train[0], root) if train else "train/CLASS/film.jpeg"
        raise DatasetError(f"none of the {len(listed)} listed films is in the training portion of {root} "
                           f"(paths relative to the data folder, e.g. {example})"
                           + (f"; {in_val} are validation films, which are never removed" if in_val else ""))
    if len(kept) < 2:
        raise DatasetError(f"the exclusion list leaves {len(kept)} training films in {root}")
    return kept, {"listed": len(listed), "removed": removed, "validation_kept": in_val,
                  "not_found": len(listed) - removed - in_val, "sha256": list_digest(listed)}
