"""The geometric views of a film, and a decision threshold chosen across them.

The Kermany films were squashed to square by their source, so an original's
width:height survives as a squeeze of the anatomy, and in the training pool
the classes differ in it (docs/robustness.md). A cut-off chosen on the
validation films as they are is tuned to that pool's shapes; the same films
warped as differently shaped or cropped originals show where it moves when
only the acquisition changes. :mod:`.stress` scores a model across these
views; :func:`geometry_threshold` picks the cut-off that holds best across them.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from ..data.views import GEOMETRY_VIEWS, View
from ..inference.predictor import predict_resized
from .calibration import Calibration, calibrate
from .metrics import choose_threshold

GEOMETRY_RULE = "youden-geometry"
__all__ = ["GEOMETRY_RULE", "GEOMETRY_VIEWS", "View", "calibrate_across_views", "geometry_threshold", "warp"]


def warp(images: torch.Tensor, view: View) -> torch.Tensor:
    """uint8 ``(N, S, S)`` films → the same films as ``view`` sees them, uint8 (``grid_sample``, as every stress
    score and ``youden-geometry`` cut-off on record was computed)."""
    if view.flip:
        images = images.flip(-1)
    if view.sx == 1.0 and view.sy == 1.0:
        return images
    x = images.float()[:, None] / 255.0
    theta = torch.tensor([[1.0 / view.sx, 0.0, 0.0], [0.0, 1.0 / view.sy, 0.0]]).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return (out[:, 0] * 255.0).round().clamp(0, 255).to(torch.uint8)


def geometry_threshold(model, images: torch.Tensor, labels: np.ndarray, views=GEOMETRY_VIEWS) -> float:
    """Youden's cut-off on P(positive) of ``images`` pooled over ``views``: the threshold with the highest mean
    balanced accuracy across the views, for a binary ``model`` (its temperature applied, so the cut-off is on the
    scale its ``threshold`` is kept on).

    Why pooled: Youden on the films as they are puts the cut-off where that pool's NORMAL films score, and any
    shape cue the model still reads lifts other sites' NORMAL films above it; across the views the cut-off is
    set where NORMAL films of any of these shapes fall.
    """
    labels = np.asarray(labels)
    p = np.concatenate([predict_resized(model, warp(images, v))[:, 1] for v in views])
    return choose_threshold(np.tile(labels, len(views)), p.astype(np.float64), "youden")


def calibrate_across_views(bundle, probs: np.ndarray, labels: np.ndarray, images: torch.Tensor,
                           uncertain_rule: str, fit: bool = True) -> Calibration:
    """:func:`~.calibration.calibrate` with the binary cut-off by ``youden-geometry``: the temperature is fitted on
    ``probs`` (``bundle``'s validation probabilities, at its own temperature) first, because the cut-off is read
    off the warped films at that temperature, and the UNCERTAIN cut-off is then fitted around it."""
    labels = np.asarray(labels)
    scale = calibrate(probs, labels, bundle.threshold, "none", fit=fit).temperature
    at_new_temperature = dataclasses.replace(bundle, temperature=bundle.temperature * scale, frozen=None)
    cut = geometry_threshold(at_new_temperature, images, labels)
    return calibrate(probs, labels, bundle.threshold, uncertain_rule, fit=fit, threshold_rule=f"fixed:{cut!r}")
