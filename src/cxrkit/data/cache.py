"""Decode a list of samples once into one uint8 tensor held in RAM.

Decoding JPEGs every epoch dominates small-CNN training on a 2-core CPU; a
decoded cache (5,216 images at 224 px = 260 MB) removes it, and the per-file
SHA-256 computed on the way gives the run's data fingerprint for free.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .folder import Sample
from .io import ImageReadError, read_image
from .preprocess import resize_gray
from .pseudonyms import pseudonym

log = logging.getLogger(__name__)


@dataclass
class DecodedSet:
    images: torch.Tensor  # (N, size, size) uint8
    labels: torch.Tensor  # (N,) int64
    samples: list[Sample]  # the readable ones, aligned with images
    failures: list[str]  # one line per unreadable file
    fingerprint: str  # sha256 over (relative path, label, file sha256)
    digests: list[str]  # each readable file's sha256, aligned with samples (cxrkit.data.pseudonyms)


def _load_one(sample: Sample, size: int, policy: str, out: np.ndarray, hide_names: bool):
    """Decode one file into its slot of ``out``; return (sha256, error or None)."""
    data = Path(sample.path).read_bytes() if Path(sample.path).is_file() else b""
    digest = hashlib.sha256(data).hexdigest()
    try:
        out[...] = resize_gray(read_image(data, name=pseudonym(digest) if hide_names else str(sample.path)), size,
                               policy)
    except ImageReadError as exc:
        return digest, str(exc)
    return digest, None


def decode_samples(
    samples: Sequence[Sample], size: int, policy: str = "squash", root: Path | None = None,
    desc: str = "decode", progress: bool = True, workers: int = 4, hide_names: bool = False,
) -> DecodedSet:
    """Decode, resize and fingerprint ``samples``; unreadable files are listed, not fatal (by their
    pseudonym if ``hide_names``: the list reaches reports and stderr).

    Images are written straight into one preallocated array, so peak memory is
    the cache itself, not the cache plus a list of per-image arrays.
    """
    images = np.empty((len(samples), size, size), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow releases the GIL while decoding
        load = lambda i: _load_one(samples[i], size, policy, images[i], hide_names)  # noqa: E731
        results = list(tqdm(pool.map(load, range(len(samples))),
                            total=len(samples), desc=desc, disable=not progress, leave=False, unit="img"))
    kept_idx, kept, failures, digests = [], [], [], []
    fp = hashlib.sha256()
    for i, (sample, (digest, err)) in enumerate(zip(samples, results)):
        rel = sample.path.relative_to(root) if root and sample.path.is_relative_to(root) else sample.path.name
        fp.update(f"{rel.as_posix() if isinstance(rel, Path) else rel}\t{sample.label}\t{digest}\n".encode())
        if err:
            failures.append(err)
            continue
        kept_idx.append(i)
        kept.append(sample)
        digests.append(digest)
    if failures:  # said once, on stderr, wherever the set is used (training, evaluation, stress): never silently
        images = images[kept_idx]
        log.warning("cxrkit: skipped %d unreadable file(s) of %d (first: %s)", len(failures), len(samples),
                    failures[0])
    labels = torch.tensor([s.label for s in kept], dtype=torch.int64)
    return DecodedSet(torch.from_numpy(images), labels, kept, failures, fp.hexdigest(), digests)
