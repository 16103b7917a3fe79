"""Film names for reports and galleries that must not carry them.

A file name can be an identifier: the Kermany set's ``person1_bacteria_1.jpeg``
carries a patient number, and a hospital export may carry a name or a record
number. With names hidden, a film is shown as ``film-`` and the first 12 hex
digits of its file's SHA-256: nothing of the name, yet whoever holds the films
finds one again with ``sha256sum`` (and a copy under another name is the same
film). 12 digits (48 bits) make an accidental clash between two films of one
report about one in 10**7 even for a million films.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

PREFIX = "film-"
DIGITS = 12


def pseudonym(digest: str) -> str:
    """``film-<first 12 hex digits>`` of a file's SHA-256 hex digest."""
    return PREFIX + digest[:DIGITS]


def film_name(path: str | Path, data: bytes, hide: bool) -> str:
    """What a report calls the film read from ``path`` as ``data``: its path, or its pseudonym if ``hide``."""
    return pseudonym(hashlib.sha256(data).hexdigest()) if hide else str(path)
