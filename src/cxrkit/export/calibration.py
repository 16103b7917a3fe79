"""Images that calibrate int8 activation ranges, and images that check an export.

Calibration reads *training* images only (a folder's ``train/`` split when it
has one): ranges fitted on test images would leak the test set into the model.
The export check uses the bundled sample's test images, so it runs anywhere
with no data folder.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from ..data.folder import expand_paths, index_folder
from ..data.io import ImageReadError, read_image
from ..data.preprocess import Preprocess, resize_gray
from .result import ExportError


def _decode(paths: list[Path], pre: Preprocess) -> np.ndarray:
    arrays = []
    for p in paths:
        try:
            arrays.append(resize_gray(read_image(p), pre.size, pre.resize))
        except ImageReadError:
            continue  # a broken file among hundreds does not invalidate calibration
    return np.stack(arrays) if arrays else np.zeros((0, pre.size, pre.size), dtype=np.uint8)


def calibration_images(calib_dir: str | Path, pre: Preprocess, n: int, seed: int = 0) -> np.ndarray:
    """``n`` training images drawn at random (fixed seed) from ``calib_dir``, as uint8 ``(n, S, S)``.

    Labels play no part in activation ranges, so a folder without class
    sub-folders works too: a site that adapted a model to its unlabelled films
    (``calibrate --unlabeled``) calibrates its int8 copy on the same films.
    """
    if Path(calib_dir).is_dir() and not any(p.is_dir() for p in Path(calib_dir).iterdir()):
        paths = expand_paths([calib_dir])
        if not paths:
            raise ExportError(f"{calib_dir}: no JPEG, PNG or DICOM images found")
    else:
        index = index_folder(calib_dir)
        if index.has_splits:
            if "train" not in index.splits:
                raise ExportError(f"{calib_dir}: has splits {index.splits} but no train/: calibrate on training "
                                  "images")
            paths = [s.path for s in index.split("train")]
        else:
            paths = [s.path for s in index.samples]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(paths), size=min(n, len(paths)), replace=False)
    images = _decode([paths[i] for i in sorted(chosen)], pre)
    if len(images) == 0:
        raise ExportError(f"{calib_dir}: none of the chosen calibration images could be read")
    return images


def check_images(pre: Preprocess) -> np.ndarray:
    """The bundled sample's test images (real radiographs, never trained on) at the model's size."""
    root = Path(str(resources.files("cxrkit") / "sample_data" / "kermany_sample" / "test"))
    return _decode(sorted(p for p in root.rglob("*.jpeg")), pre)
