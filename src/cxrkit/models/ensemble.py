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
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..data.preprocess import Preprocess, to_model_input
from ._factory import create_model
from ._registry import register_model


class Ensemble(nn.Module):
    """``members``: ``[{"arch", "model_kwargs", "preprocess" (Preprocess fields), "temperature"}, ...]``."""

    def __init__(self, members: list[dict], num_classes: int = 2):
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        self.members = nn.ModuleList(create_model(m["arch"], num_classes=num_classes, **m.get("model_kwargs", {}))
                                     for m in members)
        self.preprocess = [Preprocess(**m["preprocess"]) for m in members]
        self.temperatures = [float(m.get("temperature", 1.0)) for m in members]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for net, pre, t in zip(self.members, self.preprocess, self.temperatures):
            z = net(to_model_input(x, pre)).float() / t
            total = total + (torch.sigmoid(z) if z.shape[1] == 1 else torch.softmax(z, dim=1))
        p = (total / len(self.members)).clamp(1e-7, 1 - 1e-7)
        return torch.logit(p) if p.shape[1] == 1 else torch.log(p)


@register_model("ensemble", Preprocess(size=224, channels=1, mean=0.0, std=1.0))
def ensemble(num_classes: int = 2, members: list[dict] | None = None) -> nn.Module:
    """Mean of several trained models' calibrated probabilities (build one with `cxrkit ensemble`)."""
    if not members:
        raise ValueError("ensemble: give its members (build one with `cxrkit ensemble --models A,B --data DIR`)")
    return Ensemble(members, num_classes)
