"""Several trained models as one: the mean of their calibrated probabilities.

An ensemble is an architecture like any other (``create_model("ensemble",
members=[...])``), so a bundle of it saves to one ``.safetensors``, and
predict, evaluate, explain, serve and the ONNX export take it unchanged. Its
input is the film in [0, 1] at the members' common size; each member applies
its own normalisation and channel count to it, which is exactly what it sees
on its own, and divides its logits by its own temperature. The output is one
logit (binary) or log-probabilities (N classes), so the bundle's own
temperature, threshold and UNCERTAIN cut-off, chosen on validation data by
:func:`cxrkit.inference.ensemble.build_ensemble`, apply as for a single model.
Grad-CAM explains every member's last spatial layer and averages the maps.

Test-time augmentation is the same average over fixed views of the film
(``views``: mirrored, re-zoomed, re-stretched; :mod:`cxrkit.data.views`), every
member seeing every view, so one trained model with views is an ensemble too.
The views are matrix products inside the forward pass, so they export with the
model; the heatmap is drawn from the unwarped view, whose maps lie in the
film's own frame (cxrkit.explain.cam).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..data.preprocess import Preprocess, to_model_input
from ..data.views import View, view_matrices
from ._factory import create_model
from ._registry import register_model

MAX_DEPTH = 3  # an ensemble of ensembles of ensembles
MAX_EVALUATIONS = 256  # member forward passes per film, nesting and views multiplied


def count_evaluations(members: list[dict], views: list[dict] | None = None, depth: int = 0) -> int:
    """Member forward passes an ensemble makes per film, read from its spec before anything is built.

    A model file's header is its text; without this bound a tampered one could nest ensembles until Python's
    recursion limit, or chain two-view ensembles into 2**depth forward passes per film, a server that never
    answers."""
    if depth > MAX_DEPTH:
        raise ValueError(f"ensembles nested more than {MAX_DEPTH} deep")
    inner = sum(count_evaluations(m["model_kwargs"]["members"], m["model_kwargs"].get("views"), depth + 1)
                if m["arch"] == "ensemble" else 1 for m in members)
    return inner * max(1, len(views or ()))


class Ensemble(nn.Module):
    """``members``: ``[{"arch", "model_kwargs", "preprocess" (Preprocess fields), "temperature"}, ...]``;
    ``views``: ``[{"name", "sx", "sy", "flip"}, ...]`` (default: the film as it is)."""

    def __init__(self, members: list[dict], num_classes: int = 2, views: list[dict] | None = None):
        super().__init__()
        self.views = [View(**v) for v in views] if views else [View("as is")]
        if len(members) * len(self.views) < 2:
            raise ValueError("an ensemble needs at least two members, or one member and two views")
        self.members = nn.ModuleList(create_model(m["arch"], num_classes=num_classes, **m.get("model_kwargs", {}))
                                     for m in members)
        self.preprocess = [Preprocess(**m["preprocess"]) for m in members]
        self.temperatures = [float(m.get("temperature", 1.0)) for m in members]
        size = self.preprocess[0].size
        for i, view in enumerate(self.views):  # recomputed from ``views``, so not saved with the weights
            rows, cols = view_matrices(view, size)
            self.register_buffer(f"view{i}_rows", rows, persistent=False)
            self.register_buffer(f"view{i}_cols", cols, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for i, view in enumerate(self.views):  # views outer, the unwarped one first: what Grad-CAM keeps
            xv = x if view.is_identity else getattr(self, f"view{i}_rows") @ x @ getattr(self, f"view{i}_cols").T
            for net, pre, t in zip(self.members, self.preprocess, self.temperatures):
                z = net(to_model_input(xv, pre)).float() / t
                total = total + (torch.sigmoid(z) if z.shape[1] == 1 else torch.softmax(z, dim=1))
        p = (total / (len(self.members) * len(self.views))).clamp(1e-7, 1 - 1e-7)
        return torch.logit(p) if p.shape[1] == 1 else torch.log(p)


@register_model("ensemble", Preprocess(size=224, channels=1, mean=0.0, std=1.0))
def ensemble(num_classes: int = 2, members: list[dict] | None = None, views: list[dict] | None = None) -> nn.Module:
    """Mean of trained models' calibrated probabilities, each over views of the film (`cxrkit ensemble`).

    Built from trained members only, never from scratch."""
    if not members:
        raise ValueError("ensemble: give its members (build one with `cxrkit ensemble --models A,B --data DIR`)")
    if count_evaluations(members, views) > MAX_EVALUATIONS:
        raise ValueError(f"ensemble: more than {MAX_EVALUATIONS} member forward passes per film")
    return Ensemble(members, num_classes, views)
