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


HAZE_SIGMAS = (4.0, 16.0)  # the scatter veil's Gaussian sigma in pixels, drawn per film from this range


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
    # max Gaussian blur sigma in pixels, drawn per image from [0, blur]: a softer detector or a film scanned out of
    # focus. `sharpness` blurs by one 3x3 kernel at most (sigma ~0.7); the default cxr_cnn calls a third of its
    # validation NORMALs PNEUMONIA at sigma 2 (docs/robustness.md, session 26).
    blur: float = 0.0
    # max share of the film's detail taken away by a scatter veil: the film becomes veil + k * (film - veil), the
    # veil a Gaussian blur of sigma 4-16 px (drawn per film) and k drawn from [1 - haze, 1]. Scatter (a grid left
    # out, a thicker child) lowers the contrast between lung and rib without moving the film's local means; the
    # default cxr_cnn calls half its validation NORMALs PNEUMONIA at k = 0.5, sigma 16 (docs/robustness.md, item 37).
    haze: float = 0.0
    # max share of a film's Fourier amplitude replaced by another film's of the same batch, its phase kept (Xu et
    # al. 2021, "A Fourier-based framework for domain generalization"): the phase holds where edges and opacities
    # are, the amplitude how sharp, hazy and contrasty the whole film is. Drawing that profile from the real
    # training films of either class, instead of one parametric change (blur, veil), spans acquisition differences
    # the parametric ones miss and takes the film's global texture away as a class cue (docs/robustness.md,
    # item 61). The partner is a random film of the batch, whatever its class.
    spectrum_mix: float = 0.0
    # max |log| of the width:height stretch, area kept. Why: the Kermany films were squashed to square, so an
    # original's aspect ratio survives as a squeeze of the anatomy, and in the training pool the PNEUMONIA
    # originals are ~1.25x wider than the NORMAL ones (aspect ratio alone separates them at ROC-AUC 0.875);
    # a model without this learns the squeeze (docs/robustness.md). Drawn last among the geometric draws.
    aspect: float = 0.0

    @property
    def enabled(self) -> bool:
        return any((self.rotation, self.zoom, self.shift, self.hflip, self.brightness, self.contrast,
                    self.gamma, self.sharpness, self.noise, self.aspect, self.blur, self.haze,
                    self.spectrum_mix))

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
    if aug.blur:  # before the noise, as a detector blurs and then adds its noise; drawn only when asked for
        x = gaussian_blur_each(x, torch.rand(b, generator=generator) * aug.blur, aug.blur)
    if aug.haze:  # after the blur (the veil is optical, the blur the detector's), before the noise
        lo, hi = HAZE_SIGMAS
        veil = gaussian_blur_each(x, lo + torch.rand(b, generator=generator) * (hi - lo), hi)
        keep = (1.0 - torch.rand(b, generator=generator) * aug.haze).view(b, 1, 1, 1).to(x.device)
        x = veil + keep * (x - veil)
    if aug.spectrum_mix:  # after the optical and detector changes, before the noise, as the veil
        share = (torch.rand(b, generator=generator) * aug.spectrum_mix).view(b, 1, 1, 1).to(x.device)
        partner = torch.randperm(b, generator=generator).to(x.device)
        spectrum = torch.fft.rfft2(x.float())
        amplitude = spectrum.abs()
        amplitude = (1.0 - share) * amplitude + share * amplitude[partner]
        mixed = torch.fft.irfft2(torch.polar(amplitude, spectrum.angle()), s=x.shape[-2:])
        x = mixed.to(x.dtype).clamp_(0.0, 1.0)
    if aug.noise:
        std = (torch.rand(b, generator=generator) * aug.noise).view(b, 1, 1, 1)
        x = (x + std.to(x.device) * torch.randn(x.shape, generator=generator).to(x.device)).clamp_(0.0, 1.0)
    return x


def mix_pairs(x: torch.Tensor, alpha: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    """mixup (Zhang et al. 2018): the batch blended with a shuffle of itself, ``lam * x + (1 - lam) * x[partner]``,
    one ``lam`` per batch drawn from Beta(alpha, alpha). Returns the blend, ``partner`` and ``lam``; the caller
    blends the targets alike. Unlike :func:`augment_batch` it changes what a film shows of its class, so it is a
    recipe option of its own (``Recipe.mixup``), never a consistency-penalty view.

    ``lam`` is Beta's inverse distribution function at one uniform draw from ``generator``, so a run, its resume
    and every process of a data-parallel run draw the same one."""
    import torch
    from scipy.special import betaincinv

    lam = float(betaincinv(alpha, alpha, torch.rand(1, generator=generator).item()))
    partner = torch.randperm(x.shape[0], generator=generator)
    return lam * x + (1.0 - lam) * x[partner.to(x.device)], partner, lam


def _blur3(x: torch.Tensor) -> torch.Tensor:
    """3x3 binomial blur ([1, 2, 1] / 4 both ways), edges reflected."""
    import torch
    import torch.nn.functional as F

    k = torch.tensor([1.0, 2.0, 1.0], device=x.device, dtype=x.dtype) / 4
    kernel = (k[:, None] * k[None, :]).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel, groups=x.shape[1])


def gaussian_blur_each(x: torch.Tensor, sigmas: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Each image of ``x`` ``(B, 1, H, W)`` blurred by its own Gaussian ``sigmas[i]`` (pixels), edges reflected.

    Why not torchvision's ``gaussian_blur``: it takes one sigma per call, and a batch of per-image sigmas in one
    grouped, separable convolution costs what one blur does. The kernel spans +-3 ``max_sigma`` (torchvision's
    size for that sigma), so an image drawn at ``max_sigma`` is blurred exactly as torchvision blurs it."""
    import torch
    import torch.nn.functional as F

    b, c, h, w = x.shape
    half = min(int(3 * max_sigma + 0.5), h - 1, w - 1)  # reflect padding needs the kernel inside the image
    offsets = torch.arange(-half, half + 1, dtype=x.dtype, device=x.device)
    s = sigmas.to(device=x.device, dtype=x.dtype).clamp(min=1e-3)[:, None]  # sigma ~0: every weight on the centre
    k = torch.exp(-0.5 * (offsets[None, :] / s) ** 2)
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (B*C, 2*half+1)
    y = F.pad(x.reshape(1, b * c, h, w), (half, half, half, half), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=b * c)
    y = F.conv2d(y, k[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)
