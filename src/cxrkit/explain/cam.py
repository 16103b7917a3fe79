"""Class activation maps through pytorch-grad-cam, for any registered model.

The target layer is found from the model itself, not from its name: one probe
forward pass records every module's output, and the layer explained is the
**last module to finish whose output is still a spatial map** (4-D, both sides
> 1). Forward hooks fire when a module returns, so an enclosing block finishes
after its children and wins: ``features`` of cxr_cnn (after the last ReLU),
``blocks`` of cxr_bnn and its float twin (after the last residual RPReLU),
``features`` of MobileNetV2 or ``layer4`` of a ResNet, ``conv2`` of seed_cnn
(its pooling and ReLU are functional). An ensemble gets that layer in every
member (``members.0.features,members.1.features``): pytorch-grad-cam scales
each member's map to [0, 1] and averages them, as the ensemble averages the
members' probabilities. With test-time views the map is the film's as it is:
the ensemble runs the unwarped view first and pytorch-grad-cam keeps the
first activation (and its gradient) per target layer, so a re-zoomed or
mirrored view's map, which would not lie over the film, is never drawn
(tests/test_ensemble.py). Global pooling (1x1) and the classifier are never
chosen. ``layer="name"`` (or several, comma-separated) overrides the rule with
module paths from ``model.named_modules()``.

The heatmap comes back in the frame of the image that was passed in (the
model-size map is mapped through the bundle's squash or pad resize), so it can
be laid over the original film.
"""
from __future__ import annotations

import copy
import dataclasses
import weakref
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from ..data.preprocess import Preprocess, resize_gray, to_model_input
from ..inference.bundle import ModelBundle, probabilities
from ..inference.decision import decide
from ..models.ensemble import Ensemble

METHODS = ("gradcam", "gradcam++", "scorecam", "eigencam", "layercam")
GRADIENT_METHODS = ("gradcam", "gradcam++", "layercam")  # read the class score's gradient at the layer, only there

_LAYER_CACHE: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


class ExplainError(ValueError):
    """A model or option that cannot be explained; one line for the user."""


@dataclass
class Explanation:
    heatmap: np.ndarray  # (H, W) float32 in [0, 1], in the input image's frame
    probabilities: dict[str, float]
    label: str  # the bundle's decision (threshold for binary models)
    explained: str  # the class the map is for
    layer: str


def target_layer_name(model: nn.Module, pre: Preprocess) -> str:
    """The module(s) explained by default, comma-separated (rule in the module docstring); cached per model."""
    if model in _LAYER_CACHE:
        return _LAYER_CACHE[model]
    names = {m: n for n, m in model.named_modules() if n}
    finished: list[str] = []

    def record(module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.dim() == 4 and min(output.shape[-2:]) > 1:
            finished.append(names[module])

    handles = [m.register_forward_hook(record) for m in names]
    try:
        with torch.inference_mode():
            model.eval()(to_model_input(torch.zeros(1, pre.size, pre.size, dtype=torch.uint8), pre))
    finally:
        for h in handles:
            h.remove()
    if not finished:
        raise ExplainError(f"{type(model).__name__} has no layer with a spatial output to explain")
    chosen = [finished[-1]]
    if isinstance(model, Ensemble):
        prefixes = [f"members.{i}." for i in range(len(model.members))]
        chosen = [[n for n in finished if n.startswith(p)][-1] for p in prefixes]
    _LAYER_CACHE[model] = ",".join(chosen)
    return _LAYER_CACHE[model]


def _cam_class(method: str):
    import pytorch_grad_cam as pgc

    classes = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "scorecam": pgc.ScoreCAM,
               "eigencam": pgc.EigenCAM, "layercam": pgc.LayerCAM}
    if method not in classes:
        raise ExplainError(f"unknown method {method!r} ({' | '.join(METHODS)})")
    return classes[method]


class _ClassScore:
    """The score whose gradient is explained: ``+logit`` / ``-logit`` for the two classes of a one-logit
    binary model, the class's logit otherwise.

    With ``index`` None the score decides on its first call, from the model output it is given: the gradient
    methods call it once, on the film itself, so the CAM pass's own forward also makes the decision and the
    probabilities (a separate no-grad forward for them was a third of a Grad-CAM call)."""

    def __init__(self, bundle: ModelBundle, index: int | None):
        self.bundle, self.index, self.probs, self.label = bundle, index, None, None

    def __call__(self, out: torch.Tensor) -> torch.Tensor:
        if self.probs is None:
            self.probs = probabilities(out.detach()[None].float(), self.bundle.temperature)[0].numpy()
            self.label = decide(self.bundle, self.probs[None])[0]
            if self.index is None:
                self.index = self.bundle.classes.index(self.label)
        if out.shape[-1] == 1:
            return out[0] if self.index == 1 else -out[0]
        return out[self.index]


def _to_image_frame(cam: np.ndarray, shape: tuple[int, int], pre: Preprocess) -> np.ndarray:
    """Undo the bundle's resize: crop the padded border (``pad``), then stretch to ``shape``."""
    h, w = shape
    if pre.resize == "pad":
        scale = pre.size / max(h, w)
        ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
        top, left = (pre.size - ch) // 2, (pre.size - cw) // 2
        cam = cam[top:top + ch, left:left + cw]
    if cam.shape != (h, w):
        cam = np.asarray(Image.fromarray(cam.astype(np.float32)).resize((w, h), Image.BILINEAR))
    return np.clip(cam, 0.0, 1.0).astype(np.float32)


def explain_image(bundle: ModelBundle, image: np.ndarray, target: str | int | None = None,
                  method: str = "gradcam", layer: str | None = None) -> Explanation:
    """Heatmap, probabilities and decision for one grayscale uint8 ``(H, W)`` image.

    ``target``: a class name or index to explain; ``None`` explains the
    predicted class.
    """
    if not isinstance(bundle, ModelBundle):
        raise ExplainError("explanations need a PyTorch model (.safetensors, run directory or name), not an "
                           "exported file (ONNX or packed BNN: no gradients)")
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ExplainError(f"expected a grayscale uint8 (H, W) image, got {image.dtype} {image.shape}")
    model, pre = bundle.model.eval(), bundle.preprocess
    index = None
    if target is not None:
        index = bundle.classes.index(target) if isinstance(target, str) and target in bundle.classes else target
        if not isinstance(index, int) or not 0 <= index < len(bundle.classes):
            raise ExplainError(f"unknown class {target!r}; the model's classes: {', '.join(bundle.classes)}")
    name = layer or target_layer_name(model, pre)
    modules, parts = dict(model.named_modules()), name.split(",")
    for part in parts:
        if part not in modules:
            raise ExplainError(f"{bundle.arch} has no layer {part!r}")
    x = to_model_input(torch.from_numpy(np.array(resize_gray(image, pre.size, pre.resize)))[None], pre)
    cam_class, score = _cam_class(method), _ClassScore(bundle, index)
    if method not in GRADIENT_METHODS:  # decide first: ScoreCAM scores masked copies, never the image itself
        with torch.inference_mode():
            score(model(x)[0])
    cam = cam_class(model=model, target_layers=[modules[part] for part in parts])
    try:
        heat = cam(input_tensor=x, targets=[score])[0]
    finally:
        cam.activations_and_grads.release()
    return Explanation(_to_image_frame(heat, image.shape, pre),
                       {c: float(p) for c, p in zip(bundle.classes, score.probs)}, score.label,
                       bundle.classes[score.index], name)


def gradcam(bundle: ModelBundle, image: np.ndarray, target: str | int | None = None,
            method: str = "gradcam", layer: str | None = None) -> np.ndarray:
    """Grad-CAM heatmap ``(H, W)`` float32 in [0, 1] for a grayscale uint8 image (the predicted class by default)."""
    return explain_image(bundle, image, target, method, layer).heatmap


def _plain_copy(bundle: ModelBundle) -> ModelBundle:
    return dataclasses.replace(bundle, model=copy.deepcopy(bundle.model).eval(), frozen=None)


def _stopped_copy(bundle: ModelBundle, layer: str) -> ModelBundle:
    copied = _plain_copy(bundle)
    modules = dict(copied.model.requires_grad_(False).named_modules())
    def leaf(_module, _inputs, out):
        return out.requires_grad_() if torch.is_grad_enabled() else out
    for name in layer.split(","):  # one per member of an ensemble
        modules[name].register_forward_hook(leaf)
    return copied


def explainer_copies(bundle: ModelBundle, n: int = 1, layer: str | None = None) -> list[ModelBundle]:
    """``n`` private copies of ``bundle`` for explaining many images at ``layer`` (default: the rule above).

    Each copy's weights are frozen and the explained layer's output is made a leaf that requires grad. Grad-CAM
    and its gradient relatives read only the gradient of the class score at that layer; with trainable weights
    autograd also walks back through the whole convolutional stack for weight gradients nobody reads: explaining a
    film with the default ``cxr_cnn`` took 155 ms instead of 80 on one AVX2 core. The copies give the plain
    heatmap; that is checked on a random probe image first, and a model that changes that output in place, which
    the check catches, gets plain copies instead. Copies, not the model itself: the CAM library hooks the model
    it is given, so threads must not share one, and the caller's model stays as it was.
    """
    if not isinstance(bundle, ModelBundle):
        raise ExplainError("explanations need a PyTorch model (.safetensors, run directory or name), not an "
                           "exported file (ONNX or packed BNN: no gradients)")
    layer = layer or target_layer_name(bundle.model.eval(), bundle.preprocess)
    size = bundle.preprocess.size
    probe = np.random.default_rng(0).integers(0, 256, (size, size), dtype=np.uint8)
    try:
        fast = explain_image(_stopped_copy(bundle, layer), probe, layer=layer).heatmap
        same = np.allclose(fast, explain_image(_plain_copy(bundle), probe, layer=layer).heatmap, atol=1e-5)
    except RuntimeError:  # e.g. an in-place op on the leaf
        same = False
    return [_stopped_copy(bundle, layer) if same else _plain_copy(bundle) for _ in range(n)]
