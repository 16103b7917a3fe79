"""Model registry in the style of timm: architectures register themselves by name.

Each entry pairs a builder function with a :class:`ModelInfo` telling the rest
of cxrkit what the model expects (input size, channels, normalisation) and
what family it belongs to, so the CLI, reports and exporters never special-case
a model by name.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch.nn as nn

from ..data.preprocess import Preprocess
from ..shipped import shipped_models

DEFAULT_CLASSES = ("NORMAL", "PNEUMONIA")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str  # "cnn", "bnn", "transfer", ...
    preprocess: Preprocess
    classes: tuple[str, ...] = DEFAULT_CLASSES
    description: str = ""
    paper: str = ""  # which seed paper it reproduces, if any
    builder: Callable[..., nn.Module] = field(default=None, repr=False, compare=False)

    @property
    def shipped_weights(self) -> Path | None:
        """The weights file inside the package, if this architecture ships trained under its own name."""
        return shipped_models().get(self.name)


_MODELS: dict[str, ModelInfo] = {}


def register_model(family: str, preprocess: Preprocess, classes: tuple[str, ...] = DEFAULT_CLASSES,
                   paper: str = "") -> Callable:
    """Decorator: register ``fn(num_classes=..., **kwargs) -> nn.Module`` under its own name."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        _MODELS[name] = ModelInfo(name, family, preprocess, tuple(classes), doc[0] if doc else "", paper, fn)
        return fn

    return wrap


def list_models(family: str | None = None) -> list[str]:
    return sorted(n for n, info in _MODELS.items() if family is None or info.family == family)


def model_info(name: str) -> ModelInfo:
    try:
        return _MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(list_models())}") from None


def is_model(name: str) -> bool:
    return name in _MODELS
