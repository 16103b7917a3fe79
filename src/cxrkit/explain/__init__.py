"""Explanations: Grad-CAM family heatmaps (pytorch-grad-cam), overlays, and checks that the maps mean something."""
from .cam import METHODS, ExplainError, Explanation, explain_image, explainer_copies, gradcam, target_layer_name
from .gallery import explain_files
from .render import overlay, overlay_png
from .sanity import pointing_game, randomization_test, randomized_copy

__all__ = ["METHODS", "ExplainError", "Explanation", "explain_files", "explain_image", "explainer_copies", "gradcam",
           "target_layer_name", "overlay", "overlay_png", "pointing_game", "randomization_test", "randomized_copy"]
