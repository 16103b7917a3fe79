"""cxrkit: train, evaluate, explain, compress and serve chest X-ray classifiers on a CPU."""
__version__ = "0.1.0"
