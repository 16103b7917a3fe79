"""MobileNetV2 at width 0.35: seed 003's edge model, for the ``seed003_edge`` recipe.

torchvision's architecture, so no new dependency. Seed 003 fine-tuned
ImageNet weights on Edge Impulse; torchvision publishes none at width 0.35 and
cxrkit downloads nothing, so here it trains from scratch (family "transfer"
names the recipe it reproduces, not pretrained weights). Grayscale films are
repeated to 3 channels and normalised with ImageNet's mean/std averaged over
the channels, because ``Preprocess`` normalises all channels alike.
"""
from __future__ import annotations

import torch.nn as nn

from ..data.preprocess import Preprocess
from ._registry import register_model
from .small_cnn import _head_outputs


@register_model("transfer", Preprocess(size=160, channels=3, mean=0.449, std=0.226), paper="003")
def mobilenetv2_035(num_classes: int = 2, dropout: float = 0.2, **kwargs) -> nn.Module:
    """MobileNetV2 width 0.35 at 160x160 RGB, seed 003's edge model (0.4M parameters)."""
    from torchvision.models import mobilenet_v2

    return mobilenet_v2(weights=None, width_mult=0.35, num_classes=_head_outputs(num_classes), dropout=dropout,
                        **kwargs)
