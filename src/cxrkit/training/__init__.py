"""Training: ``train(recipe, data_dir, out_dir)``."""
from .trainer import TrainResult, train

__all__ = ["train", "TrainResult"]
