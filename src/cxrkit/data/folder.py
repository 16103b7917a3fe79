"""Index image folders: ``ROOT/{train,val,test}/{CLASS}/*`` or ``ROOT/{CLASS}/*``.

Indexing only lists files; nothing is decoded here, so it is instant even on
large trees and the result can be checked (``cxrkit data check``) before any
training starts.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .io import is_image_file
from .patients import patient_id

SPLIT_NAMES = ("train", "val", "test")


class DatasetError(ValueError):
    """A data folder that cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int
    split: str | None
    patient: str  # falls back to the file name when the name encodes no patient


@dataclass(frozen=True)
class FolderIndex:
    root: Path
    classes: tuple[str, ...]
    samples: tuple[Sample, ...]
    skipped: tuple[Path, ...]  # files without an image suffix

    def split(self, name: str | None) -> list[Sample]:
        return [s for s in self.samples if s.split == name]

    @property
    def splits(self) -> list[str | None]:
        return sorted({s.split for s in self.samples}, key=lambda s: SPLIT_NAMES.index(s) if s else -1)

    @property
    def has_splits(self) -> bool:
        return any(s.split is not None for s in self.samples)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files(folder: Path) -> tuple[list[Path], list[Path]]:
    images, other = [], []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            (images if is_image_file(p) else other).append(p)
    return images, other


def index_folder(root: str | Path, classes: list[str] | tuple[str, ...] | None = None) -> FolderIndex:
    """List every image under ``root`` with its class, split and patient.

    Class names come from sub-folder names, sorted, so label ids are stable
    across machines. Passing ``classes`` fixes the order (e.g. a model's own).
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: no such folder")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (expected ROOT/CLASS/*.jpeg or ROOT/SPLIT/CLASS/*.jpeg)")
    split_dirs = [root / s for s in SPLIT_NAMES if (root / s).is_dir()]
    parts = [(d.name, d) for d in split_dirs] if split_dirs else [(None, root)]
    found = sorted({c.name for _, d in parts for c in _class_dirs(d)})
    if not found:
        raise DatasetError(f"{root}: no class sub-folders (expected ROOT/CLASS/*.jpeg or ROOT/SPLIT/CLASS/*.jpeg)")
    if classes is None:
        classes = tuple(found)
    else:
        classes = tuple(classes)
        unknown = sorted(set(found) - set(classes))
        if unknown:
            named = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise DatasetError(f"{root}: class folders {named} are not among the expected classes {list(classes)} "
                               "(expected ROOT/CLASS/*.jpeg or ROOT/SPLIT/CLASS/*.jpeg)")
    samples, skipped = [], []
    for split, folder in parts:
        for cdir in _class_dirs(folder):
            images, other = _files(cdir)
            skipped.extend(other)
            label = classes.index(cdir.name)
            samples.extend(Sample(p, label, split, patient_id(p) or p.stem) for p in images)
    if not samples:
        raise DatasetError(f"{root}: no JPEG, PNG or DICOM images found")
    return FolderIndex(root, classes, tuple(samples), tuple(skipped))


def expand_paths(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders searched recursively for images, sorted."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths.extend(sorted(q for q in p.rglob("*") if q.is_file() and is_image_file(q)))
        else:
            paths.append(p)
    return paths
