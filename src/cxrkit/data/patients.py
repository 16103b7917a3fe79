"""Patient ids and pneumonia subtypes from Kermany et al. file names.

Several films of one child must never straddle a train/validation split, or
validation scores measure memory of the child, not skill. The file name is the
only patient link the public data set keeps.
"""
from __future__ import annotations

import re
from pathlib import Path

_PERSON = re.compile(r"^(person\d+)_(bacteria|virus)_\d+", re.IGNORECASE)
_NORMAL2 = re.compile(r"^(NORMAL2-IM-\d+)-\d+", re.IGNORECASE)
_NORMAL = re.compile(r"^(IM-\d+)-\d+", re.IGNORECASE)


def patient_id(path: str | Path) -> str | None:
    """Return the patient id encoded in a Kermany file name, or None.

    ``person<N>`` is used alone (not with its subtype) because the data set's
    numbering can give one child both a bacterial and a viral film: merging is
    safe, splitting a child is not.
    """
    stem = Path(path).name
    for pattern in (_PERSON, _NORMAL2, _NORMAL):
        m = pattern.match(stem)
        if m:
            return m.group(1).upper() if pattern is not _PERSON else m.group(1).lower()
    return None


def pneumonia_subtype(path: str | Path) -> str | None:
    """'bacteria', 'virus' or None: the label for the derived 3-class task."""
    m = _PERSON.match(Path(path).name)
    return m.group(2).lower() if m else None
