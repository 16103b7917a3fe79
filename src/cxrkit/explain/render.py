"""Heatmap overlays: a colour-mapped heatmap blended over the grayscale film.

Kept to NumPy + Pillow and a 256-entry colour table (built once from
matplotlib's ``jet``), so the web app can call it per request without pyplot.
"""
from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image


@lru_cache(maxsize=4)
def _lut(colormap: str) -> np.ndarray:
    import matplotlib

    return (matplotlib.colormaps[colormap](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4, colormap: str = "jet") -> Image.Image:
    """RGB PIL image: ``(1 - alpha * h) * film + alpha * h * colour(h)`` per pixel.

    Weighting the colour by the heat itself leaves cold regions as the plain
    film instead of tinting the whole image blue.
    """
    if image.shape != heatmap.shape:
        raise ValueError(f"image {image.shape} and heatmap {heatmap.shape} differ in size")
    h = np.clip(heatmap, 0.0, 1.0)[..., None]
    colour = _lut(colormap)[(h[..., 0] * 255).astype(np.uint8)].astype(np.float32)
    film = np.repeat(image[..., None].astype(np.float32), 3, axis=2)
    a = alpha * h
    return Image.fromarray(((1 - a) * film + a * colour).round().astype(np.uint8), "RGB")


def overlay_png(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4, colormap: str = "jet") -> bytes:
    """:func:`overlay` encoded as PNG bytes (what an HTTP response or an ``<img src=data:...>`` needs)."""
    buf = io.BytesIO()
    overlay(image, heatmap, alpha, colormap).save(buf, format="PNG")
    return buf.getvalue()
