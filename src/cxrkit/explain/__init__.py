"""Explanations: Grad-CAM family heatmaps (pytorch-grad-cam), overlays, and checks that the maps mean something.

Names are imported on first use: the overlay renderer is NumPy and Pillow only, and a server of exported
models draws with it without importing torch.
"""
from importlib import import_module

_API = {
    **dict.fromkeys(["METHODS", "ExplainError", "Explanation", "explain_image", "explainer_copies", "gradcam",
                     "target_layer_name"], "cam"),
    "explain_files": "gallery", "overlay": "render", "overlay_png": "render",
    **dict.fromkeys(["pointing_game", "randomization_test", "randomized_copy"], "sanity"),
}
__all__ = list(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'cxrkit.explain' has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_API[name]}"), name)
