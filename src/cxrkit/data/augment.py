"""Batched, per-image random augmentation on the decoded cache.

Seed 002's Keras augmentation (rotation, zoom, shift, flip) drawn independently
for every image but applied to the whole batch in one ``affine_grid`` /
``grid_sample`` call: per-image torchvision transforms cost more than the
small models' own forward pass on 2 cores.

Torch is imported where a batch is augmented, not with the module: every
recipe holds an :class:`Augment`, and listing or checking recipes must not
wait two seconds for torch.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Augment:
    rotation: float = 0.0  # max degrees either way
    zoom: float = 0.0  # max relative zoom in or out
    shift: float = 0.0  # max shift, fraction of the image side
    hflip: bool = False  # off by default: the heart sits on the left in almost every film
    brightness: float = 0.0  # max relative brightness change
    contrast: float = 0.0  # max relative contrast change
    # acquisition changes (exposure curve, detector sharpness, noise) that move a film between hospitals or
    # years without changing its diagnosis; drawn after the others, so recipes without them keep their streams
    gamma: float = 0.0  # max |log gamma|: x ** gamma, gamma in [exp(-g), exp(g)]
    sharpness: float = 0.0  # max unsharp-mask amount either way (negative amounts blur)
    noise: float = 0.0  # max standard deviation of additive Gaussian noise (image in [0, 1])
    # max |log| of the width:height stretch, area kept. Why: the Kermany films were squashed to square, so an
    # original's aspect ratio survives as a squeeze of the anatomy, and in the training pool the PNEUMONIA
    # originals are ~1.25x wider than the NORMAL ones (aspect ratio alone separates them at ROC-AUC 0.875);
    # a model without this learns the squeeze (docs/robustness.md). Drawn last among the geometric draws.
    aspect: float = 0.0

    @property
    def enabled(self) -> bool:
        return any((self.rotation, self.zoom, self.shift, self.hflip, self.brightness, self.contrast,
                    self.gamma, self.sharpness, self.noise, self.aspect))

    def to_dict(self) -> dict:
        return asdict(self)


def augment_batch(x: torch.Tensor, aug: Augment, generator: torch.Generator) -> torch.Tensor:
    """``x``: float ``(B, 1, H, W)`` in [0, 1]; returns a new tensor of the same shape."""
    import torch
    import torch.nn.functional as F

    if not aug.enabled:
        return x
    b = x.shape[0]

    def uniform(scale: float) -> torch.Tensor:
        return (torch.rand(b, generator=generator) * 2 - 1) * scale

    if aug.rotation or aug.zoom or aug.shift or aug.hflip or aug.aspect:
        angle = uniform(math.radians(aug.rotation))
        scale = 1.0 + uniform(aug.zoom)
        flip = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0) if aug.hflip else torch.ones(b)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([
            torch.stack([cos * flip, -sin, uniform(2 * aug.shift)], dim=1),
            torch.stack([sin * flip, cos, uniform(2 * aug.shift)], dim=1),
        ], dim=1)
        if aug.aspect:  # input x and y scaled by exp(-+a/2): the content widens by exp(a), its area unchanged
            half = uniform(aug.aspect) / 2
            theta = theta * torch.stack([torch.exp(-half), torch.exp(half)], dim=1)[:, :, None]
        grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if aug.brightness or aug.contrast:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        c = (1.0 + uniform(aug.contrast)).view(b, 1, 1, 1).to(x.device)
        br = (1.0 + uniform(aug.brightness)).view(b, 1, 1, 1).to(x.device)
        x = ((x - mean) * c + mean) * br
        x = x.clamp_(0.0, 1.0)
    if aug.gamma:
        x = x.clamp(min=1e-6) ** torch.exp(uniform(aug.gamma)).view(b, 1, 1, 1).to(x.device)
    if aug.sharpness:
        amount = uniform(aug.sharpness).view(b, 1, 1, 1).to(x.device)
        x = (x + amount * (x - _blur3(x))).clamp_(0.0, 1.0)
    if aug.noise:
        std = (torch.rand(b, generator=generator) * aug.noise).view(b, 1, 1, 1)
        x = (x + std.to(x.device) * torch.randn(x.shape, generator=generator).to(x.device)).clamp_(0.0, 1.0)
    return x


def _blur3(x: torch.Tensor) -> torch.Tensor:
    """3x3 binomial blur ([1, 2, 1] / 4 both ways), edges reflected."""
    import torch
    import torch.nn.functional as F

    k = torch.tensor([1.0, 2.0, 1.0], device=x.device, dtype=x.dtype) / 4
    kernel = (k[:, None] * k[None, :]).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel, groups=x.shape[1])
