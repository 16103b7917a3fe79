"""The trained models inside the package, found without importing torch.

A module of its own because ``cxrkit recipes`` and ``cxrkit models`` answer in a fraction of a second and the model
registry (``cxrkit.models``) imports torch, which takes seconds.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def shipped_models() -> dict[str, Path]:
    """Trained models inside the package, by name: ``weights/NAME.safetensors``.

    A name is an architecture's (``cxr_cnn``: the default) or a trained
    model's own (``cxr_mobilenetv2``: MobileNetV2 fine-tuned by that recipe;
    ``kermany3``: a 3-class model), since one architecture can ship trained for
    several tasks; the file's metadata names its architecture and classes.
    """
    root = Path(str(resources.files("cxrkit") / "weights"))
    return {p.name[:-len(".safetensors")]: p for p in sorted(root.glob("*.safetensors"))}
