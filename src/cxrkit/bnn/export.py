"""PyTorch BNN → packed file: binary weights as sign bits, everything else float32 (or float16).

This is the only part of :mod:`cxrkit.bnn` that imports torch; it walks the
model's modules in forward order and emits the ops that
:mod:`cxrkit.bnn.engine` interprets.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..models._binary import BinaryConv2d, BinaryLinear
from ..models.bnn import BinaryBlock, CxrBNN, FlattenHWC, RPReLU, SeedBNN
from .packing import pack_signs, write_packed

_CONTAINERS = (nn.Sequential, SeedBNN, CxrBNN)  # their children run in registration order
_SKIPPED = (nn.Dropout, nn.Identity)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy().copy()


class _Emitter:
    def __init__(self, shapes: dict[nn.Module, tuple]):
        self.ops: list[dict] = []
        self.arrays: dict[str, np.ndarray] = {}
        self.shapes = shapes  # input shape of every Flatten, from one traced forward pass
        self.binary_weights = 0

    def add(self, name: str, value: np.ndarray | None) -> str | None:
        if value is None:
            return None
        key = f"{len(self.arrays):03d}.{name}"
        self.arrays[key] = value
        return key

    def quant(self, m: nn.Module, op: str, w: np.ndarray, fold_scale: bool = False, **geometry) -> np.ndarray | None:
        """A conv/dense layer; ``w`` is ``(out, K)`` in the engine's ``(kh, kw, cin)`` column order. With
        ``fold_scale`` the per-channel weight scale is returned for the caller to fold, not stored."""
        binary = isinstance(m, (BinaryConv2d, BinaryLinear))
        if binary and not m.binarize_weight:
            raise ValueError(f"cannot pack {m}: its weights are real (stage 1 of two-stage training); train stage 2 "
                             "from it (recipe init_from) and pack that")
        threshold = getattr(m, "threshold", None)
        thr = None if threshold is None else _np(threshold)
        scale = m.weight_scale() if binary else None
        scale = None if scale is None else _np(scale)
        folded = scale if fold_scale else None
        if fold_scale:
            if m.bias is not None:
                raise ValueError(f"cannot fold the weight scale of {m}: it has a bias")
            scale = None
        if binary:
            self.binary_weights += w.size
        self.ops.append({
            "op": op, **geometry, "in": geometry.get("in", w.shape[1]), "out": w.shape[0],
            "weight_bits": binary, "binarize_input": bool(binary and m.binarize_input),
            "weight": self.add("weight_bits" if binary else "weight", pack_signs(w) if binary else w),
            "threshold": self.add("threshold", thr), "scale": self.add("scale", scale),
            "bias": self.add("bias", None if m.bias is None else _np(m.bias)),
        })
        return folded

    def conv(self, m: nn.Conv2d, fold_scale: bool = False) -> np.ndarray | None:
        k, s = m.kernel_size[0], m.stride[0]
        pad = m.pad if isinstance(m, BinaryConv2d) else m.padding[0]
        if m.kernel_size != (k, k) or m.stride != (s, s) or m.groups != 1 or m.dilation != (1, 1):
            raise ValueError(f"cannot pack {m}: only square, ungrouped, undilated convolutions")
        w = _np(m.weight).transpose(0, 2, 3, 1).reshape(m.out_channels, -1)
        return self.quant(m, "conv", w, fold_scale, kernel=k, stride=s, pad=pad, **{"in": m.in_channels})

    def batchnorm(self, m: nn.BatchNorm2d, pre_scale: np.ndarray | None = None,
                  post_shift: np.ndarray | None = None) -> None:
        """Folded as PyTorch's CPU kernel folds it: invstd in double, then float32 scale and shift. ``pre_scale``
        (the conv's weight scale before it) multiplies into the scale; ``post_shift`` (RPReLU's shift_in, after
        the residual add) subtracts from the shift."""
        invstd = (1.0 / np.sqrt(m.running_var.double().numpy() + m.eps)).astype(np.float32)
        scale = invstd * _np(m.weight)
        shift = _np(m.bias) - _np(m.running_mean) * scale
        if pre_scale is not None:
            scale = pre_scale * scale
        if post_shift is not None:
            shift = shift - post_shift
        self.ops.append({"op": "affine", "channels": m.num_features, "scale": self.add("bn_scale", scale),
                         "shift": self.add("bn_shift", shift)})

    def flatten(self, m: nn.Flatten) -> None:
        _, c, h, w = self.shapes[m]
        if h * w > 1 and not isinstance(m, FlattenHWC):  # the engine flattens NHWC
            raise ValueError(f"cannot pack a (C, H, W)-order Flatten of a {c}x{h}x{w} map: use "
                             "cxrkit.models.bnn.FlattenHWC, the engine's (H, W, C) order")
        self.ops.append({"op": "flatten"})

    def rprelu(self, m: RPReLU, fold_shift_in: bool = False) -> None:
        self.ops.append({"op": "rprelu", "channels": m.slope.numel(),
                         "shift_in": None if fold_shift_in else self.add("shift_in", _np(m.shift_in)),
                         **{k: self.add(k, _np(getattr(m, k))) for k in ("slope", "shift_out")}})

    def walk(self, m: nn.Module) -> None:
        if isinstance(m, BinaryBlock):
            # act(bn(s * conv(x)) + shortcut): s folds into the BatchNorm scale and the RPReLU's shift_in into the
            # BatchNorm shift (x + a - b = x + (a - b)); 2 x 960 fewer float32s in cxr_bnn, ~4 % of its file
            self.ops.append({"op": "residual_begin"})
            scale = self.conv(m.conv, fold_scale=True)
            self.batchnorm(m.bn, pre_scale=scale, post_shift=_np(m.act.shift_in))
            self.ops.append({"op": "residual_end", "stride": m.stride, "repeat": m.repeat})
            self.rprelu(m.act, fold_shift_in=True)
        elif isinstance(m, _CONTAINERS):
            for child in m.children():
                self.walk(child)
        elif isinstance(m, nn.Conv2d):
            self.conv(m)
        elif isinstance(m, nn.Linear):
            self.quant(m, "dense", _np(m.weight))
        elif isinstance(m, nn.BatchNorm2d):
            self.batchnorm(m)
        elif isinstance(m, RPReLU):
            self.rprelu(m)
        elif isinstance(m, nn.ReLU):
            self.ops.append({"op": "relu"})
        elif isinstance(m, nn.MaxPool2d) and m.kernel_size in (2, (2, 2)) and m.stride in (2, (2, 2)) \
                and m.padding in (0, (0, 0)) and not m.ceil_mode:
            self.ops.append({"op": "maxpool"})
        elif isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1)):
            self.ops.append({"op": "gap"})
        elif isinstance(m, nn.Flatten):
            self.flatten(m)
        elif not isinstance(m, _SKIPPED):
            raise ValueError(f"cannot pack module {m.__class__.__name__} ({m})")


def _input_shapes(model: nn.Module, pre) -> dict[nn.Module, tuple]:
    shapes, hooks = {}, []
    for m in model.modules():
        if isinstance(m, nn.Flatten):
            hooks.append(m.register_forward_pre_hook(lambda mod, args: shapes.__setitem__(mod, tuple(args[0].shape))))
    try:
        with torch.inference_mode():
            model(torch.zeros(1, pre.channels, pre.size, pre.size))
    finally:
        for h in hooks:
            h.remove()
    return shapes


def export_packed(bundle, path: str | Path, real_dtype: str = "float32") -> Path:
    """Write ``bundle`` (a :class:`~cxrkit.inference.bundle.ModelBundle` of a BNN) as a packed file at ``path``.

    ``real_dtype="float16"`` halves the real-valued parts (the engine still
    computes in float32), at the price of exact agreement with PyTorch.
    Raises ``ValueError`` for a model with layers the engine cannot run.
    """
    model = bundle.model.eval()
    emitter = _Emitter(_input_shapes(model, bundle.preprocess))
    emitter.walk(model)
    params = sum(p.numel() for p in model.parameters())
    header = {
        "arch": bundle.arch, "classes": list(bundle.classes), "preprocess": bundle.preprocess.to_dict(),
        "threshold": float(bundle.threshold), "temperature": float(bundle.temperature),
        "confidence_threshold": float(bundle.confidence_threshold), "ops": emitter.ops,
        "info": {**bundle.info, "params": params, "binary_params": emitter.binary_weights,
                 "binary_fraction": round(emitter.binary_weights / params, 6), "real_dtype": real_dtype},
    }
    return write_packed(path, header, emitter.arrays, real_dtype)
