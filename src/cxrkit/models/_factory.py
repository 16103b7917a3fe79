"""``create_model``: the one way to build an architecture from its registered name."""
from __future__ import annotations

import torch.nn as nn

from ._registry import model_info


def create_model(name: str, num_classes: int | None = None, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build ``name``; ``pretrained=True`` loads the weights shipped inside cxrkit.

    ``num_classes`` defaults to the registered class list. A binary task gets a
    single logit (sigmoid) unless the architecture asks for two (softmax), as
    seed 000's network does.
    """
    info = model_info(name)
    if pretrained:
        from ..inference.bundle import load_bundle

        if info.shipped_weights is None:
            raise ValueError(f"model {name!r} ships no trained weights; train it with `cxrkit train`")
        return load_bundle(info.shipped_weights).model
    n = len(info.classes) if num_classes is None else num_classes
    return info.builder(num_classes=n, **kwargs)
