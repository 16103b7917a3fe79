"""Model zoo: ``create_model(name)``, ``list_models()``, ``model_info(name)``."""
from . import bnn, ensemble, mobilenet, small_cnn, transfer  # noqa: F401  (register the models)
from ._factory import create_model
from ._registry import ModelInfo, is_model, list_models, model_info, register_model, shipped_models

__all__ = ["create_model", "list_models", "model_info", "is_model", "register_model", "ModelInfo", "shipped_models"]
