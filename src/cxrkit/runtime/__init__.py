"""Torch-free inference on exported ``.onnx`` models (ONNX Runtime + NumPy + Pillow).

Nothing under this package may import PyTorch: it is what an edge device or a
clinic PC installs instead of a 700 MB deep-learning framework
(``tests/test_export.py`` runs it with ``torch`` made unimportable).
"""
from .onnx_model import METADATA_KEY, OnnxModel, RuntimeModelError, load_onnx, softmax_or_sigmoid

__all__ = ["METADATA_KEY", "OnnxModel", "RuntimeModelError", "load_onnx", "softmax_or_sigmoid"]
