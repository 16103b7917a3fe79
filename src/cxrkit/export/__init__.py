"""Deployment exports: float32 ONNX, int8 ONNX (static QDQ), packed BNN; needs ``pip install 'cxrkit[export]'``."""
from .api import DEFAULT_N_CALIB, FORMATS, export_model
from .int8 import CALIB_METHODS
from .result import ExportError, ExportResult

__all__ = ["export_model", "ExportError", "ExportResult", "FORMATS", "CALIB_METHODS", "DEFAULT_N_CALIB"]
