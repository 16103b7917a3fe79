"""``cxrkit data check``: what is in a data folder, and what is wrong with it, before training."""
from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .folder import index_folder
from .io import ImageReadError, read_image


@dataclass
class CheckReport:
    root: str
    classes: list[str]
    counts: dict[str, dict[str, int]]  # split -> class -> images
    patients: dict[str, int]  # split -> distinct patients
    unreadable: list[str] = field(default_factory=list)
    not_images: list[str] = field(default_factory=list)
    duplicate_groups: list[list[str]] = field(default_factory=list)  # identical decoded pixels
    cross_split_images: list[list[str]] = field(default_factory=list)  # same pixels in two splits
    cross_split_patients: list[str] = field(default_factory=list)  # same patient id in two splits

    def to_dict(self) -> dict:
        return self.__dict__.copy()

    def summary(self) -> str:
        lines = [f"data: {self.root}", f"classes: {', '.join(self.classes)}", ""]
        width = max(len(c) for c in self.classes)
        header = f"{'split':<8}" + "".join(f"{c:>{max(width, 8) + 2}}" for c in self.classes) + f"{'total':>9}{'patients':>10}"
        lines.append(header)
        for split, per in self.counts.items():
            row = f"{split:<8}" + "".join(f"{per.get(c, 0):>{max(width, 8) + 2}}" for c in self.classes)
            lines.append(row + f"{sum(per.values()):>9}{self.patients[split]:>10}")
        lines += ["",
                  f"unreadable images:        {len(self.unreadable)}",
                  f"non-image files skipped:  {len(self.not_images)}",
                  f"duplicate groups:         {len(self.duplicate_groups)} "
                  f"({sum(len(g) for g in self.duplicate_groups)} files with identical pixels)",
                  f"cross-split same image:   {len(self.cross_split_images)}",
                  f"cross-split same patient: {len(self.cross_split_patients)}"]
        for title, items in (("unreadable", self.unreadable), ("not images", self.not_images)):
            for item in items[:20]:
                lines.append(f"  {title}: {item}")
            if len(items) > 20:
                lines.append(f"  ... {len(items) - 20} more {title}")
        for group in self.cross_split_images[:10]:
            lines.append(f"  leak (same image): {' = '.join(group)}")
        if self.cross_split_patients:
            shown = ", ".join(self.cross_split_patients[:10])
            lines.append(f"  leak (same patient): {shown}" + (" ..." if len(self.cross_split_patients) > 10 else ""))
        return "\n".join(lines)


def _pixel_digest(path: Path) -> tuple[str | None, str | None]:
    try:
        arr = read_image(path)
    except ImageReadError as exc:
        return None, str(exc)
    return hashlib.sha256(arr.tobytes() + str(arr.shape).encode()).hexdigest(), None


def check_folder(root: str | Path, progress: bool = True) -> CheckReport:
    index = index_folder(root)
    root = Path(root)
    split_name = {None: "all"}
    counts: dict[str, Counter] = defaultdict(Counter)
    patients: dict[str, set] = defaultdict(set)
    for s in index.samples:
        key = split_name.get(s.split, s.split)
        counts[key][index.classes[s.label]] += 1
        patients[key].add(s.patient)
    with ThreadPoolExecutor(max_workers=4) as pool:
        digests = list(tqdm(pool.map(lambda s: _pixel_digest(s.path), index.samples), total=len(index.samples),
                            desc="check", disable=not progress, leave=False, unit="img"))
    by_digest: dict[str, list] = defaultdict(list)
    unreadable = []
    for s, (digest, err) in zip(index.samples, digests):
        if err:
            unreadable.append(err)
        else:
            by_digest[digest].append(s)

    def rel(p: Path) -> str:
        return p.relative_to(root).as_posix()

    groups = [g for g in by_digest.values() if len(g) > 1]
    patient_splits: dict[str, set] = defaultdict(set)
    for s in index.samples:
        patient_splits[s.patient].add(s.split)
    return CheckReport(
        root=str(root), classes=list(index.classes),
        counts={k: dict(v) for k, v in counts.items()}, patients={k: len(v) for k, v in patients.items()},
        unreadable=unreadable, not_images=[rel(p) for p in index.skipped],
        duplicate_groups=[[rel(s.path) for s in g] for g in groups],
        cross_split_images=[[rel(s.path) for s in g] for g in groups if len({s.split for s in g}) > 1],
        cross_split_patients=sorted(p for p, splits in patient_splits.items() if len(splits) > 1),
    )
