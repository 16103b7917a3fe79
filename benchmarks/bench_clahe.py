#!/usr/bin/env python3
"""What local equalisation (CLAHE, ``Preprocess.clahe``) costs per film: OpenCV vs cxrkit's two twins, side by side.

cxrkit writes OpenCV's CLAHE out in NumPy (``clahe_levels``: the runtimes) and in PyTorch (``_clahe_levels_torch``:
training, and ensembles' ONNX graphs), both equal to ``cv2.createCLAHE`` to the bit (tests/test_data.py), so that
the torch-free runtime needs no OpenCV. This prints milliseconds per film for the three on real films, interleaved
rounds, best of each, and each twin's time over OpenCV's, beside decode + resize for scale.

    python benchmarks/bench_clahe.py --data ../shared/data/kermany_224 --films 64
    python benchmarks/bench_clahe.py --data src/cxrkit/sample_data/kermany_sample    # quick look
"""
from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch

from cxrkit.data.folder import expand_paths
from cxrkit.data.io import read_image
from cxrkit.data.preprocess import _clahe_levels_torch, clahe_levels, resize_gray


def best_ms_per_film(fn, films: np.ndarray, batch: int, rounds: int) -> float:
    """Best of ``rounds`` passes over ``films`` in batches of ``batch``, in ms per film."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(0, len(films), batch):
            fn(films[i:i + batch])
        best = min(best, (time.perf_counter() - start) * 1e3 / len(films))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a folder of films (searched recursively)")
    parser.add_argument("--films", type=int, default=64, help="films to time (default 64)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clip", type=float, default=2.0, help="clip limit (the shipped default's: 2)")
    args = parser.parse_args()

    paths = expand_paths([args.data])[: args.films]
    start = time.perf_counter()
    raw = [read_image(p) for p in paths]
    films224 = np.stack([resize_gray(a, 224) for a in raw])
    decode_ms = (time.perf_counter() - start) * 1e3 / len(paths)
    op = cv2.createCLAHE(clipLimit=args.clip, tileGridSize=(8, 8))

    def opencv(batch):
        return np.stack([op.apply(f) for f in batch])

    def numpy_twin(batch):
        return clahe_levels(batch, args.clip)

    def torch_twin(batch):
        return _clahe_levels_torch(torch.from_numpy(batch).long(), args.clip)

    print(f"{len(paths)} films of {args.data}; clip limit {args.clip}, 8 x 8 tiles; OpenCV {cv2.__version__}, "
          f"NumPy {np.__version__}, PyTorch {torch.__version__} ({torch.get_num_threads()} threads); best of "
          f"{args.rounds} rounds")
    print(f"decode + resize to 224 px (for scale): {decode_ms:.2f} ms per film\n")
    print("| size | batch | OpenCV ms/film | NumPy twin ms/film | PyTorch twin ms/film | NumPy / OpenCV "
          "| PyTorch / OpenCV |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    fns = (("opencv", opencv), ("numpy", numpy_twin), ("torch", torch_twin))
    for size in (224, 160):
        films = films224 if size == 224 else np.stack([resize_gray(a, size) for a in raw])
        for batch in (1, 32):
            times = {}
            for _ in range(2):  # interleaved: the machine's noise falls on all alike
                for name, fn in fns:
                    times[name] = min(times.get(name, float("inf")), best_ms_per_film(fn, films, batch, args.rounds))
            print(f"| {size} | {batch} | {times['opencv']:.3f} | {times['numpy']:.3f} | {times['torch']:.3f} | "
                  f"{times['numpy'] / times['opencv']:.1f}x | {times['torch'] / times['opencv']:.1f}x |")


if __name__ == "__main__":
    main()
