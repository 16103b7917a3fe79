"""Shared fixtures: the bundled real sample, small file-tree builders, a fast training recipe."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import shutil  # noqa: E402
from importlib import resources  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# The reference machine has 2 cores, often shared with a training job: one intra-op thread per test
# process avoids oversubscription, which otherwise makes the small training runs 2-3x slower.
torch.set_num_threads(int(os.environ.get("CXRKIT_TEST_THREADS", "1")))

SAMPLE = Path(str(resources.files("cxrkit") / "sample_data" / "kermany_sample"))
CLASSES = ("NORMAL", "PNEUMONIA")


def sample_images(split: str, cls: str) -> list[Path]:
    files = sorted((SAMPLE / split / cls).glob("*.jpeg"))
    assert files, f"bundled sample missing {split}/{cls}"
    return files


def copy_images(dst: Path, split: str, cls: str, n: int) -> list[Path]:
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for src in sample_images(split, cls)[:n]:
        out.append(Path(shutil.copy(src, dst / src.name)))
    return out


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    assert (SAMPLE / "train").is_dir() and (SAMPLE / "test").is_dir()
    return SAMPLE


@pytest.fixture(scope="session")
def fast_recipe():
    """cxr_cnn made small enough to train in seconds on 2 loaded cores."""
    from cxrkit.recipes import load_recipe

    return load_recipe("cxr_cnn").replace(image_size=64, batch_size=8, model_kwargs={"widths": (8, 16, 16, 32, 32)})
