"""One preprocessing contract shared by training, evaluation, prediction and serving.

A :class:`Preprocess` travels inside every saved model, so an image is resized
and normalised at prediction time exactly as it was during training.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class Preprocess:
    size: int = 128
    resize: str = "squash"  # "squash" (Kermany 224 set was squashed) or "pad" (keep aspect, pad to square)
    channels: int = 1  # 3 for ImageNet backbones and seed 000's RGB input
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self):
        if self.resize not in ("squash", "pad"):
            raise ValueError(f"resize must be 'squash' or 'pad', got {self.resize!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")

    def to_dict(self) -> dict:
        return asdict(self)


def resize_gray(arr: np.ndarray, size: int, policy: str = "squash") -> np.ndarray:
    """Resize an ``(H, W)`` uint8 image to ``(size, size)``.

    Pillow's antialiased bilinear filter is used for both policies so that a
    1,500 px film and a 224 px thumbnail end up alike.
    """
    img = Image.fromarray(arr)
    if policy == "pad":
        scale = size / max(img.width, img.height)
        w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
        canvas = Image.new("L", (size, size), 0)
        canvas.paste(img.resize((w, h), Image.BILINEAR), ((size - w) // 2, (size - h) // 2))
        return np.asarray(canvas)
    if img.size == (size, size):
        return arr
    return np.asarray(img.resize((size, size), Image.BILINEAR))


def to_model_input(batch: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """uint8 ``(B, H, W)`` or float ``(B, 1, H, W)`` in [0, 1] → normalised float ``(B, C, H, W)``."""
    x = batch.unsqueeze(1).float().div_(255.0) if batch.dtype == torch.uint8 else batch
    x = (x - pre.mean) / pre.std
    if pre.channels == 3:
        x = x.expand(-1, 3, -1, -1)
    return x.contiguous(memory_format=torch.channels_last)
