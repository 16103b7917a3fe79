"""One preprocessing contract shared by training, evaluation, prediction and serving.

A :class:`Preprocess` travels inside every saved model, so an image is resized
and normalised at prediction time exactly as it was during training.

Only :func:`to_model_input` needs PyTorch, and imports it itself: the torch-free
ONNX runtime (``cxrkit.runtime``) uses the rest of this module unchanged, so an
exported model sees exactly the pixels the PyTorch model saw.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

MAX_SIZE = 4096  # pixels a side (the largest input any built-in recipe uses is 299)
CLAHE_TILES = 8  # CLAHE tiles per side: OpenCV's default grid, 28 px tiles on a 224 px film


@dataclass(frozen=True)
class Preprocess:
    size: int = 128
    resize: str = "squash"  # "squash" (Kermany 224 set was squashed) or "pad" (keep aspect, pad to square)
    channels: int = 1  # 3 for ImageNet backbones and seed 000's RGB input
    mean: float | tuple[float, ...] = 0.0  # one value for all channels, or one per channel (ImageNet backbones)
    std: float | tuple[float, ...] = 1.0
    # Histogram equalisation of every film before normalisation (see equalized_levels): the model then sees each
    # pixel's rank within its film, so any monotone difference in exposure, gamma or contrast between sites is gone
    equalize: bool = False
    # Contrast-limited adaptive histogram equalisation instead (CLAHE, clahe_levels): this clip limit, 0 = off.
    # Global equalisation ranks a pixel within the whole film, so a film whose lungs are hazier overall still looks
    # hazier; CLAHE ranks it within its neighbourhood, so local contrast is evened out as well (docs/robustness.md)
    clahe: float = 0.0

    def __post_init__(self):
        # a model file's metadata sets this: a crafted 100,000 would make every film a 40 GB array
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 1 <= self.size <= MAX_SIZE:
            raise ValueError(f"size must be a whole number of pixels from 1 to {MAX_SIZE}, got {self.size!r}")
        if self.resize not in ("squash", "pad"):
            raise ValueError(f"resize must be 'squash' or 'pad', got {self.resize!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if isinstance(self.clahe, bool) or not isinstance(self.clahe, (int, float)) or not 0 <= self.clahe <= 40:
            raise ValueError(f"clahe must be a clip limit from 0 (off) to 40, got {self.clahe!r}")
        if self.clahe and self.equalize:
            raise ValueError("equalize and clahe are two ways to equalise a film; choose one")
        if self.clahe and self.size % CLAHE_TILES:
            raise ValueError(f"clahe needs a film size divisible by {CLAHE_TILES} (its {CLAHE_TILES} x {CLAHE_TILES} "
                             f"tiles), got {self.size}")
        for name in ("mean", "std"):  # JSON metadata gives lists back; keep the dataclass hashable
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                if len(value) != self.channels:
                    raise ValueError(f"{name} needs {self.channels} values, got {len(value)}")
                object.__setattr__(self, name, tuple(float(v) for v in value))

    @property
    def per_channel(self) -> bool:
        return isinstance(self.mean, tuple) or isinstance(self.std, tuple)

    def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """mean and std as float32 arrays of shape (C, 1, 1)."""
        shape = (self.channels, 1, 1)
        return (np.broadcast_to(np.float32(self.mean), (self.channels,)).reshape(shape).astype(np.float32),
                np.broadcast_to(np.float32(self.std), (self.channels,)).reshape(shape).astype(np.float32))

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
        return _own(canvas)
    if img.size == (size, size):
        return arr
    return _own(img.resize((size, size), Image.BILINEAR))


def _own(img: Image.Image) -> np.ndarray:
    """A compact copy: ``np.asarray(img)`` keeps a ~64 KB Pillow buffer alive per image (measured: 192 MB
    instead of 49 MB for 3,000 cached 128 px images)."""
    return np.asarray(img).copy()


def equalized_levels(levels: np.ndarray) -> np.ndarray:
    """Integer grey levels ``(B, H, W)`` in 0..255 → float32 in (0, 1]: the share of the film's pixels at or
    below each pixel's level (the film's own cumulative histogram), which is global histogram equalisation."""
    b, n = levels.shape[0], levels[0].size
    flat = levels.reshape(b, -1).astype(np.int64)
    cdf = np.cumsum(np.bincount((flat + 256 * np.arange(b)[:, None]).ravel(), minlength=256 * b).reshape(b, 256),
                    axis=1)
    return (np.take_along_axis(cdf, flat, axis=1).astype(np.float32) / np.float32(n)).reshape(levels.shape)


def clahe_levels(levels: np.ndarray, clip: float) -> np.ndarray:
    """Integer grey levels ``(B, H, W)`` in 0..255 (H, W multiples of 8) → float32 in [0, 1] after OpenCV's CLAHE
    (``createCLAHE(clip, (8, 8))``), to the bit (tests/test_data.py compares them): per tile a histogram whose bins
    are capped at ``clip`` x the mean bin, the excess spread evenly (its remainder one count at a time from bin 0, in
    steps), its cumulative sum the tile's grey-level map; each pixel blends the maps of its four nearest tile centres
    bilinearly, in OpenCV's float32 operations and order, so that both round alike.

    Written out instead of calling OpenCV for two reasons: the torch-free runtime would need OpenCV, 173 MiB on an
    install of ~176 MiB (docs/edge.md), and the PyTorch twin (``_clahe_levels_torch``) must trace into an ONNX graph
    for ensembles, whose members normalise inside the forward pass."""
    levels = np.ascontiguousarray(levels, dtype=np.uint8)
    b, h, w = levels.shape
    own, corners, (xa1, xa, ya1, ya), area = _clahe_grid(h, w)
    flat = levels.reshape(b, -1).astype(np.int32)
    rows = (256 * CLAHE_TILES ** 2 * np.arange(b, dtype=np.int32))[:, None]  # each film's maps, looked up flat
    hist = np.bincount((flat + own + rows).ravel(), minlength=256 * CLAHE_TILES ** 2 * b)
    hist = hist.reshape(b, CLAHE_TILES ** 2, 256)
    if clip > 0:
        limit = max(int(clip * area / 256), 1)
        excess = np.maximum(hist - limit, 0).sum(-1, keepdims=True)
        residual = excess % 256
        step = np.maximum(256 // np.maximum(residual, 1), 1)
        bins = np.arange(256)
        hist = np.minimum(hist, limit) + excess // 256 + ((bins % step == 0) & (bins // step < residual))
    maps = np.rint(np.cumsum(hist, -1).astype(np.float32) * (np.float32(255) / np.float32(area))).clip(0, 255).ravel()
    m11, m12, m21, m22 = (maps[flat + corner + rows] for corner in corners)
    out = np.rint((m11 * xa1 + m12 * xa) * ya1 + (m21 * xa1 + m22 * xa) * ya).clip(0, 255)
    return (out / np.float32(255.0)).reshape(b, h, w)


@functools.lru_cache(maxsize=8)
def _clahe_grid(h: int, w: int):
    """What CLAHE's 8 x 8 tiles make of an ``h`` x ``w`` film, whatever its grey levels, per pixel (flattened): the
    offset (tile x 256) of its own tile's grey-level map, those of the maps of its four nearest tile centres, and
    their bilinear weights along x and y, in OpenCV's float32 arithmetic (both twins share them, so they agree)."""
    t, th, tw = CLAHE_TILES, h // CLAHE_TILES, w // CLAHE_TILES

    def neighbours(n: int, tile: int):  # per row (column): the two nearest tile centres and their weights
        pos = np.arange(n, dtype=np.float32) * (np.float32(1) / np.float32(tile)) - np.float32(0.5)
        first = np.floor(pos).astype(np.int32)
        far = pos - first.astype(np.float32)
        return np.maximum(first, 0), np.minimum(first + 1, t - 1), far, np.float32(1) - far

    y1, y2, ya, ya1 = neighbours(h, th)
    x1, x2, xa, xa1 = neighbours(w, tw)
    own = (256 * ((np.arange(h, dtype=np.int32) // th)[:, None] * t + np.arange(w, dtype=np.int32) // tw)).ravel()
    corners = tuple((256 * (ty[:, None] * t + tx[None, :])).ravel() for ty, tx in ((y1, x1), (y1, x2), (y2, x1),
                                                                                   (y2, x2)))
    weights = (np.tile(xa1, h), np.tile(xa, h), np.repeat(ya1, w), np.repeat(ya, w))
    return own, corners, weights, th * tw


def _clahe_levels_torch(levels: torch.Tensor, clip: float) -> torch.Tensor:
    """PyTorch twin of :func:`clahe_levels` (int64 ``(B, H, W)`` in, float32 out; bit-identical, and traceable to
    ONNX: its constants depend on the film size only)."""
    import torch

    b, h, w = levels.shape
    # int(): an ONNX trace passes sizes as tensors; the graph is made for one film size anyway
    own, corners, (xa1, xa, ya1, ya), area = _clahe_grid_torch(int(h), int(w), levels.device)
    flat = levels.reshape(b, -1)
    hist = levels.new_zeros((b, 256 * CLAHE_TILES ** 2)).scatter_add_(1, flat + own,
                                                                      levels.new_ones(()).expand_as(flat))
    hist = hist.reshape(b, -1, 256)
    if clip > 0:
        limit = max(int(clip * area / 256), 1)
        excess = (hist - limit).clamp(min=0).sum(-1, keepdim=True)
        residual = excess % 256
        step = (256 // residual.clamp(min=1)).clamp(min=1)
        bins = torch.arange(256, device=levels.device)
        hist = hist.clamp(max=limit) + excess // 256 + ((bins % step == 0) & (bins // step < residual))
    scale = float(np.float32(255) / np.float32(area))  # a float32 value: float32 tensors multiply by it as float32
    maps = torch.round(hist.cumsum(-1).float() * scale).clamp(0, 255).reshape(b, -1)
    m11, m12, m21, m22 = (maps.gather(1, flat + corner) for corner in corners)
    out = torch.round((m11 * xa1 + m12 * xa) * ya1 + (m21 * xa1 + m22 * xa) * ya).clamp(0, 255)
    return (out / 255.0).reshape(b, h, w)


@functools.lru_cache(maxsize=8)
def _clahe_grid_torch(h: int, w: int, device: torch.device):
    """:func:`_clahe_grid` as tensors on ``device`` (int64 offsets, for ``gather``), made once per size and device."""
    import torch

    own, corners, weights, area = _clahe_grid(h, w)
    return (torch.from_numpy(own).to(device, torch.long), tuple(torch.from_numpy(c).to(device, torch.long)
                                                                for c in corners),
            tuple(torch.from_numpy(v).to(device) for v in weights), area)


def _equalized_levels_torch(levels: torch.Tensor) -> torch.Tensor:
    """PyTorch twin of :func:`equalized_levels` (int64 in, float32 out; bit-identical, tests/test_export.py)."""
    b, n = levels.shape[0], levels[0].numel()
    flat = levels.reshape(b, -1)
    counts = levels.new_zeros((b, 256)).scatter_add_(1, flat, levels.new_ones(()).expand_as(flat))
    return (counts.cumsum(1).gather(1, flat).float() / float(n)).reshape(levels.shape)


def to_model_input(batch: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """uint8 ``(B, H, W)`` or float ``(B, 1, H, W)`` in [0, 1] → normalised float ``(B, C, H, W)``."""
    import torch

    if pre.equalize or pre.clahe:  # augmented float films are equalised on their nearest of the 256 grey levels
        levels = (batch.long() if batch.dtype == torch.uint8
                  else batch.squeeze(1).mul(255.0).round_().clamp_(0, 255).long())
        if pre.clahe:
            x = _clahe_levels_torch(levels, pre.clahe).unsqueeze(1)
        else:
            x = _equalized_levels_torch(levels).unsqueeze(1)
    else:
        x = batch.unsqueeze(1).float().div_(255.0) if batch.dtype == torch.uint8 else batch
    if pre.per_channel:  # grey film repeated to RGB, then each channel normalised with its own ImageNet stats
        mean, std = (torch.from_numpy(a).to(x.device) for a in pre.channel_stats())
        x = (x.expand(-1, pre.channels, -1, -1) - mean) / std
    else:
        x = (x - pre.mean) / pre.std
        if pre.channels == 3:
            x = x.expand(-1, 3, -1, -1)
    return x.contiguous(memory_format=torch.channels_last)


def to_model_array(batch: np.ndarray, pre: Preprocess) -> np.ndarray:
    """NumPy twin of :func:`to_model_input` for uint8 ``(B, H, W)``: float32 ``(B, C, H, W)``.

    Same float32 operations in the same order, so the result is bit-identical
    (checked in tests/test_export.py); ONNX models are fed through this.
    """
    if pre.clahe:
        x = clahe_levels(batch, pre.clahe)[:, None]
    else:
        x = (equalized_levels(batch) if pre.equalize else batch.astype(np.float32) / np.float32(255.0))[:, None]
    if pre.per_channel:
        mean, std = pre.channel_stats()
        x = (np.repeat(x, pre.channels, axis=1) - mean) / std
    else:
        x = (x - np.float32(pre.mean)) / np.float32(pre.std)
        if pre.channels == 3:
            x = np.repeat(x, 3, axis=1)
    return np.ascontiguousarray(x)
