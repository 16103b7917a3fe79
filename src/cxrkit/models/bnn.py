"""Binarized networks: seed 000's Larq model, exactly, and cxrkit's own residual BNN.

Both are built from :mod:`cxrkit.models._binary`; the packed, torch-free
inference engine in :mod:`cxrkit.bnn` runs them with XNOR + popcount.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.preprocess import Preprocess
from ._binary import BinaryConv2d, BinaryLinear
from ._registry import register_model


def _keras_init(module: nn.Module) -> None:
    """Keras defaults (Glorot-uniform kernels, zero biases), so seed 000 starts where Larq starts."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class FlattenHWC(nn.Flatten):
    """Flatten in (H, W, C) order, as Keras flattens its NHWC maps. On a channels_last tensor it is a view, where
    ``nn.Flatten``'s (C, H, W) order copies forward and makes the max-pool hand a layout-converting copy to the
    conv backward: seed_bnn trains ~15 % faster."""

    def __init__(self):
        super().__init__(start_dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).flatten(1)


class SeedBNN(nn.Module):
    """QuantConv32-ReLU-MaxPool-QuantConv64-MaxPool-Flatten-QuantDense128-Dense (valid padding, biases).

    ``binarize_inputs`` applies ``ste_sign`` to the inputs of the 2nd and 3rd
    quantized layers (Larq's usual pattern; the seed text does not say). Note
    that the 2nd conv then reads ``sign(MaxPool(ReLU(.)))``, which is +1
    everywhere because ReLU outputs are >= 0 and sign(0) = +1: with this option
    the network's output does not depend on its input at all.
    """

    def __init__(self, num_classes: int = 2, in_chans: int = 3, img_size: int = 128, binarize_inputs: bool = True):
        super().__init__()
        self.features = nn.Sequential(
            # the paper's QuantConv2D+ReLU → MaxPool, pooled first: max and ReLU commute, so outputs and
            # gradients are the same, and the ReLU and its backward touch a quarter of the elements
            BinaryConv2d(in_chans, 32, 3), nn.MaxPool2d(2), nn.ReLU(),
            BinaryConv2d(32, 64, 3, binarize_input=binarize_inputs), nn.MaxPool2d(2),
        )
        side = ((img_size - 2) // 2 - 2) // 2
        self.classifier = nn.Sequential(
            FlattenHWC(), BinaryLinear(64 * side * side, 128, binarize_input=binarize_inputs),
            nn.Linear(128, num_classes),
        )
        _keras_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class RPReLU(nn.Module):
    """ReActNet's RPReLU: PReLU with learnable per-channel shifts before and after."""

    def __init__(self, channels: int):
        super().__init__()
        self.shift_in = nn.Parameter(torch.zeros(channels))
        self.slope = nn.Parameter(torch.full((channels,), 0.25))
        self.shift_out = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - self.shift_in.view(1, -1, 1, 1)
        x = torch.where(x >= 0, x, x * self.slope.view(1, -1, 1, 1))
        return x + self.shift_out.view(1, -1, 1, 1)


class BinaryBlock(nn.Module):
    """RSign → binary 3x3 conv (mean-|W| scaled) → BN → + real shortcut → RPReLU.

    The shortcut is parameter-free: 2x2 average pooling when the block strides,
    the channels repeated when it widens (ReActNet's concatenation), so every
    weight of the block except BN and the activation shifts is binary.
    """

    def __init__(self, cin: int, cout: int, stride: int, binary: bool = True, binary_weights: bool = True):
        super().__init__()
        if cout % cin:
            raise ValueError(f"block width {cout} must be a multiple of its input width {cin}")
        self.conv = BinaryConv2d(cin, cout, 3, stride, 1, bias=False, binarize_input=True, learn_threshold=True,
                                 scale_weights=True, binarize_weight=binary_weights) if binary \
            else nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = RPReLU(cout)
        self.stride, self.repeat = stride, cout // cin

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            x = F.avg_pool2d(x, 2)
        return x.repeat(1, self.repeat, 1, 1) if self.repeat > 1 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)) + self.shortcut(x))


class CxrBNN(nn.Module):
    """Real stem, four stages of residual binary blocks, global average pooling, real classifier.

    Input sides must be multiples of 32 (five stride-2 steps). ``binary=False``
    builds the float twin (same layers, real 3x3 convs), the reference the
    packed engine's speed and size are compared with. ``binary_weights=False``
    binarizes activations only: stage 1 of ReActNet's two-stage training, whose
    weights (same names and shapes) then start stage 2 (recipe ``init_from``).
    ``depth`` is blocks per stage, one count for all or one per stage: a block
    costs the same compute in every stage (half the side, twice the width) but
    4x the bits in the next, so extra depth goes where the bits are cheap.
    """

    def __init__(self, num_classes: int = 2, in_chans: int = 1, stem: int = 32, widths=(32, 64, 128, 256),
                 depth: int | Sequence[int] = 2, dropout: float = 0.2, binary: bool = True,
                 binary_weights: bool = True):
        super().__init__()
        depths = [depth] * len(widths) if isinstance(depth, int) else list(depth)
        if len(depths) != len(widths) or min(depths) < 1:
            raise ValueError(f"depth must be one block count >= 1, or one per stage ({len(widths)}), got {depth}")
        self.stem = nn.Sequential(nn.Conv2d(in_chans, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem))
        blocks, cin = [], stem
        for width, n_blocks in zip(widths, depths):
            for i in range(n_blocks):
                blocks.append(BinaryBlock(cin, width, 2 if i == 0 else 1, binary, binary_weights))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(cin, 1 if num_classes == 2 else num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


@register_model("bnn", Preprocess(size=128, channels=3), paper="000")
def seed_bnn(num_classes: int = 2, **kwargs) -> nn.Module:
    """Seed 000's Larq BNN (128x128 RGB, 7.39M binary-weight parameters), layer for layer."""
    return SeedBNN(num_classes=num_classes, **kwargs)


@register_model("bnn", Preprocess(size=160, channels=1, mean=0.5, std=0.25))
def cxr_bnn(num_classes: int = 2, **kwargs) -> nn.Module:
    """cxrkit's residual BNN: real stem and classifier, RSign/RPReLU, 99.5% binary weights (1.18M; shipped: 1.57M).

    160 px and 2 blocks a stage unless a recipe says otherwise; the shipped weights (cxr_bnn_deep224) take 224 px
    and 4, 4, 4, 2 blocks, which their file records."""
    return CxrBNN(num_classes=num_classes, **kwargs)
