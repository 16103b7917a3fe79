"""Derive a new labelled folder tree from an existing one, e.g. Kermany's 3-class task.

Kermany et al. (2018) label every pneumonia film bacterial or viral in its file
name (``person1_bacteria_1.jpeg``, ``person3_virus_16.jpeg``), so NORMAL /
BACTERIAL / VIRAL is a real 3-class task hidden in the binary folders. Deriving
it as an ordinary ``ROOT/SPLIT/CLASS/*`` tree (symlinks by default: no extra
disk) lets every other command — train, evaluate, predict — treat it like any
folder of N classes. File names are kept, so patient grouping still works.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .folder import SPLIT_NAMES, DatasetError
from .io import is_image_file
from .patients import pneumonia_subtype

TASKS = ("kermany3",)
LINKS = ("symlink", "hardlink", "copy")
KERMANY3_CLASSES = ("BACTERIAL", "NORMAL", "VIRAL")
_SUBTYPE = {"bacteria": "BACTERIAL", "virus": "VIRAL"}


@dataclass
class DeriveResult:
    out: Path
    task: str
    counts: dict[str, dict[str, int]]  # split ('' when the source has none) -> class -> files
    link: str  # how files were placed: symlink | hardlink | copy (a fallback may differ from the one asked for)
    skipped: list[str]  # non-image files left out

    def to_dict(self) -> dict:
        return {"out": str(self.out), "task": self.task, "counts": self.counts, "link": self.link,
                "skipped": self.skipped}

    def summary(self) -> str:
        lines = [f"{self.out}: task {self.task}, files placed by {self.link}"]
        for split, counts in self.counts.items():
            total = sum(counts.values())
            lines.append(f"  {split or '(no split)'}: {total} — " + ", ".join(f"{c} {n}" for c, n in counts.items()))
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} non-image files")
        return "\n".join(lines)


def _kermany3_label(path: Path, folder: str) -> str | None:
    """NORMAL for the NORMAL folder (unless the name claims a pneumonia), the subtype for PNEUMONIA, else None."""
    subtype = pneumonia_subtype(path)
    if folder.upper() == "NORMAL":
        return None if subtype else "NORMAL"
    if folder.upper() == "PNEUMONIA" and subtype:
        return _SUBTYPE[subtype]
    return None


def _plan_kermany3(src: Path) -> tuple[list[tuple[Path, str, str]], list[str]]:
    """(source file, split, class) for every image, and the non-image files; refuses what it cannot classify."""
    split_dirs = [(s, src / s) for s in SPLIT_NAMES if (src / s).is_dir()] or [("", src)]
    plan, skipped, refused = [], [], []
    for split, folder in split_dirs:
        class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        unexpected = [d.name for d in class_dirs if d.name.upper() not in ("NORMAL", "PNEUMONIA")]
        if unexpected:
            raise DatasetError(f"{folder}: kermany3 needs NORMAL and PNEUMONIA folders, found {unexpected}")
        for cdir in class_dirs:
            for path in sorted(p for p in cdir.rglob("*") if p.is_file() and not p.name.startswith(".")):
                if not is_image_file(path):
                    skipped.append(str(path))
                    continue
                label = _kermany3_label(path, cdir.name)
                if label is None:
                    refused.append(path)
                else:
                    plan.append((path, split, label))
    if refused:
        raise DatasetError(f"{src}: {len(refused)} files cannot be classified NORMAL/BACTERIAL/VIRAL by name "
                           f"(PNEUMONIA files must be named personN_bacteria_* or personN_virus_*, NORMAL files must "
                           f"not be), e.g. {refused[0]}; nothing written")
    if not plan:
        raise DatasetError(f"{src}: no images under NORMAL/ or PNEUMONIA/ (expected SRC/SPLIT/NORMAL/*.jpeg)")
    return plan, skipped


def _place(src: Path, dst: Path, link: str) -> str:
    """Put ``src`` at ``dst`` by ``link``, falling back symlink → hard link → copy where the file system refuses."""
    for method in LINKS[LINKS.index(link):-1]:
        try:
            if method == "symlink":
                dst.symlink_to(src.resolve())
            else:
                os.link(src, dst)
            return method
        except OSError:
            continue
    shutil.copy2(src, dst)
    return "copy"


def derive(task: str, src: str | Path, out: str | Path, link: str = "symlink") -> DeriveResult:
    """Build ``out`` for ``task`` from the labelled tree ``src``; ``out`` must not exist or be empty.

    ``kermany3``: ``SRC/{train,val,test}/{NORMAL,PNEUMONIA}`` → ``OUT/{same splits}/{NORMAL,BACTERIAL,VIRAL}``.
    The splits are the source's own (validation is carved from train, grouped by patient, at training time).
    Every file is classified before anything is written.
    """
    if task not in TASKS:
        raise DatasetError(f"unknown derive task {task!r} ({' | '.join(TASKS)})")
    if link not in LINKS:
        raise DatasetError(f"unknown link mode {link!r} ({' | '.join(LINKS)})")
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DatasetError(f"{src}: no such folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out}: exists and is not an empty folder; choose a new OUT")
    if out.resolve().is_relative_to(src.resolve()):
        raise DatasetError(f"{out}: must not lie inside the source {src}")
    plan, skipped = _plan_kermany3(src)
    counts: dict[str, dict[str, int]] = {}
    used = set()
    # built beside OUT and renamed at the end: an interrupted or failed run leaves no half tree (or half-copied film)
    out.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        for path, split, label in plan:
            folder = building / split / label
            folder.mkdir(parents=True, exist_ok=True)
            if (folder / path.name).exists():
                raise DatasetError(f"{path}: a second file named {path.name} in {split or 'the'} split; names must "
                                   "be unique")
            used.add(_place(path, folder / path.name, link))
            per = counts.setdefault(split, {c: 0 for c in KERMANY3_CLASSES})
            per[label] += 1
        if out.exists():
            out.rmdir()  # empty, checked above
        building.rename(out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return DeriveResult(out, task, counts, "+".join(m for m in LINKS if m in used), skipped)
