"""Fixed re-framings of a film: the geometric views of the stress test and the views of test-time augmentation.

A view magnifies the content ``sx`` times across and ``sy`` times down about the
centre (cropping, or repeating the edge pixels where it shrinks) and may mirror
it left to right. Both scalings are separable, so a view is two small
interpolation matrices, ``rows @ film @ cols.T``: what
``grid_sample(bilinear, border, align_corners=False)`` computes for the same
scaling (up to float rounding), but with no per-batch grid, so a model that
applies views in its forward pass (:class:`cxrkit.models.ensemble.Ensemble`)
traces and exports to ONNX for any batch size. The stress test keeps its own
uint8 ``grid_sample`` warp (:func:`cxrkit.evaluation.geometry.warp`), so the
thresholds and scores recorded with it reproduce bit for bit.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class View:
    """Content magnified ``sx`` times across and ``sy`` times down, then mirrored left-right if ``flip``."""

    name: str
    sx: float = 1.0
    sy: float = 1.0
    flip: bool = False

    @property
    def is_identity(self) -> bool:
        return self.sx == 1.0 and self.sy == 1.0 and not self.flip

    def to_dict(self) -> dict:
        return asdict(self)


AS_IS = View("as is")
GEOMETRY_VIEWS = (
    AS_IS,
    View("narrower: squeezed across to 0.8 (an original 1.25x wider)", 1.0, 1.25),
    View("wider: stretched across to 1.25 (an original 1.25x narrower)", 1.25, 1.0),
    View("zoomed in 1.3 (a tighter crop)", 1.3, 1.3),
    View("zoomed out to 0.8 (a wider field)", 0.8, 0.8),
)
FLIP_VIEWS = (AS_IS, View("mirrored left-right", flip=True))
VIEW_SETS = {"flip": FLIP_VIEWS, "geometry": GEOMETRY_VIEWS}


def parse_views(spec: str) -> tuple[View, ...]:
    """``"flip"``, ``"geometry"`` or both (``"geometry,flip"``: every geometric view, plain and mirrored).
    The unwarped view always comes first."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in VIEW_SETS]
    if not names or unknown:
        raise ValueError(f"unknown view set {', '.join(unknown) or repr(spec)} "
                         f"(one or more of: {', '.join(VIEW_SETS)}, comma-separated)")
    views = [AS_IS]
    for name in names:
        views = [_compose(a, b) for a in views for b in VIEW_SETS[name]]
    return tuple(dict.fromkeys(views))  # geometry,geometry would repeat views


def _compose(a: View, b: View) -> View:
    if a.is_identity:
        return b
    if b.is_identity:
        return a
    return View(f"{a.name}, {b.name}", a.sx * b.sx, a.sy * b.sy, a.flip != b.flip)


def resample_matrix(size: int, scale: float, flip: bool = False) -> torch.Tensor:
    """``(size, size)`` float32 ``M`` with ``M @ line`` = the line magnified ``scale`` times about its centre,
    sampled bilinearly with edge pixels repeated (``grid_sample``'s ``border`` padding, ``align_corners=False``),
    then reversed if ``flip``."""
    i = torch.arange(size, dtype=torch.float64)
    src = ((2 * i + 1) / size - 1) / scale  # normalised source coordinate of each output pixel
    pos = (((src + 1) * size - 1) / 2).clamp(0, size - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=size - 1)
    frac = pos - lo
    m = torch.zeros(size, size, dtype=torch.float64)
    m[i.long(), lo] += 1 - frac
    m[i.long(), hi] += frac
    if flip:
        m = m.flip(0)
    return m.float()


def view_matrices(view: View, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) such that ``rows @ film @ cols.T`` is ``view`` of a ``(.., size, size)`` film."""
    return resample_matrix(size, view.sy), resample_matrix(size, view.sx, view.flip)

