"""cxrkit: train, evaluate, explain, compress and serve chest X-ray classifiers on a CPU.

The Python API in a few names::

    import cxrkit
    model = cxrkit.load_model()                      # shipped default model (or a run dir / .safetensors)
    preds, errors = cxrkit.predict_paths(model, ["film.dcm"])
    ev = cxrkit.evaluate_folder(model, "data/kermany_224")
    result = cxrkit.train(cxrkit.load_recipe("cxr_cnn"), "data/kermany_224", "runs/mine")
    net = cxrkit.create_model("seed_cnn")            # a bare torch.nn.Module

Names are imported on first use, so ``cxrkit --help`` does not pay for torch.
"""
from importlib import import_module

__version__ = "0.1.0"

_API = {
    "create_model": "cxrkit.models", "list_models": "cxrkit.models",
    "load_model": ("cxrkit.inference.bundle", "resolve_model"),
    "predict_paths": "cxrkit.inference.predictor",
    "evaluate_folder": "cxrkit.evaluation.evaluate", "write_report": "cxrkit.evaluation.evaluate",
    "train": "cxrkit.training", "load_recipe": "cxrkit.recipes", "list_recipes": "cxrkit.recipes",
}
__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'cxrkit' has no attribute {name!r}")
    module, attr = _API[name] if isinstance(_API[name], tuple) else (_API[name], name)
    return getattr(import_module(module), attr)
