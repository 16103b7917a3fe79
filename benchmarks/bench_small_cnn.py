#!/usr/bin/env python3
"""Speed of seed 001's CNN (128x128 grayscale, batch 32) in cxrkit vs the seed's own Keras code, side by side.

Each configuration runs in a fresh subprocess (so peak RSS and malloc settings are its own):

- ``cxrkit``: the default path — recipe ``seed001`` as shipped (precision ``auto``: bf16 autocast for training where
  the CPU has native bf16, fp32 inference), channels_last, fast glibc malloc settings (what the ``cxrkit`` command sets)
- ``cxrkit, fp32 training``: the same with fp32 training
- ``cxrkit, default malloc``: the default path with glibc's default malloc, to show what the setting buys
- ``cxrkit, bf16 inference``: the default path with ``--precision bf16`` inference (a frozen bfloat16 copy; opt-in)
- ``cxrkit, TorchScript inference``: the default path with ``--engine torchscript`` (fp32 inference by the frozen
  TorchScript copy instead of ONNX Runtime: cxrkit's default before session 12)
- ``keras``: ``../shared/peers/keras_small_cnn.py`` on TensorFlow-CPU 2.15 (if its venv exists)

Training img/s is cxrkit's real training loop (``cxrkit.training.train`` on the decoded cache, recipe ``seed001``),
excluding the first epoch, as the peer harness does. Inference is the model's forward pass as ``cxrkit predict``
runs it (ONNX Runtime, fp32; frozen TorchScript with ``--engine torchscript`` or in bf16 with ``--precision bf16``); ``predict`` is the end-to-end ``cxrkit predict`` path on a folder of JPEGs (decode + resize + forward).

    python benchmarks/bench_small_cnn.py --data ../shared/data/kermany_224            # full table
    python benchmarks/bench_small_cnn.py --data src/cxrkit/sample_data/kermany_sample --epochs 2   # quick look
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cxrkit.machine import FAST_MALLOC
from peers import run_peer

HERE = Path(__file__).resolve().parent


def worker(args) -> dict:
    import numpy as np
    import torch

    from cxrkit.inference.bundle import resolve_model
    from cxrkit.data.folder import expand_paths
    from cxrkit.inference.predictor import frozen_for_inference, predict_paths, use_precision
    from cxrkit.recipes import RECIPES
    from cxrkit.training import train

    recipe = RECIPES["seed001"].replace(epochs=args.epochs, precision=args.train_precision)
    with tempfile.TemporaryDirectory() as tmp:
        result = train(recipe, args.data, Path(tmp) / "run", progress=False, verbose=False)
        hist = result.history[1:] or result.history
        train_ips = sum(h["train_img_per_s"] * h["train_seconds"] for h in hist) / sum(h["train_seconds"] for h in hist)
        bundle = use_precision(resolve_model(Path(tmp) / "run"), args.infer_precision)
        bundle.engine = args.engine
    # the compiled copy that `cxrkit predict [--precision bf16]` runs
    model = frozen_for_inference(bundle)
    dtype = torch.bfloat16 if args.infer_precision == "bf16" else torch.float32
    xb = torch.rand(32, 1, 128, 128).to(dtype).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(5):
            model(xb), model(xb[:1])
        t = time.perf_counter()
        for _ in range(args.infer_iters):
            model(xb)
        infer_ips = 32 * args.infer_iters / (time.perf_counter() - t)
        lat = []
        for _ in range(args.latency_iters):
            t = time.perf_counter()
            model(xb[:1])
            lat.append(time.perf_counter() - t)
    folder = Path(args.data) / "test" if (Path(args.data) / "test").is_dir() else Path(args.data)
    paths = expand_paths([folder])
    predict_paths(bundle, paths[:32])  # warm-up
    t = time.perf_counter()
    preds, _ = predict_paths(bundle, paths)
    predict_ips = len(preds) / (time.perf_counter() - t)
    return {"train_img_per_s": train_ips, "infer_b32_img_per_s": infer_ips,
            "infer_b1_p50_ms": float(np.percentile(np.array(lat) * 1000, 50)),
            "predict_img_per_s": predict_ips, "n_predict": len(preds),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_cxrkit(args, env_extra: dict, train_precision: str = "auto", infer_precision: str = "fp32",
               engine: str = "auto") -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env.update(env_extra)
    cmd = [sys.executable, __file__, "--worker", "--data", args.data, "--epochs", str(args.epochs),
           "--train-precision", train_precision, "--infer-precision", infer_precision, "--engine", engine]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"cxrkit worker failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_keras(args) -> dict | None:
    summary = run_peer("keras_small_cnn.py", args.peer_venv, args.data, args.epochs)
    if summary is None:
        return None
    return {"train_img_per_s": summary["train_img_per_s_excl_first_epoch"],
            "infer_b32_img_per_s": summary["infer_b32_img_per_s"], "infer_b1_p50_ms": summary["infer_b1_p50_ms"],
            "predict_img_per_s": None, "peak_rss_mb": summary["peak_rss_mb"]}


LOWER_IS_BETTER = ("infer_b1_p50_ms", "peak_rss_mb")


def _best(results: list[dict]) -> dict:
    out = {}
    for key in results[0]:
        values = [r[key] for r in results if r.get(key) is not None]
        if not values or not isinstance(values[0], (int, float)):
            out[key] = results[0][key]
        else:
            out[key] = min(values) if key in LOWER_IS_BETTER else max(values)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder with train/{NORMAL,PNEUMONIA} and test/{NORMAL,PNEUMONIA}")
    p.add_argument("--epochs", type=int, default=3, help="training epochs (the first is excluded from img/s)")
    p.add_argument("--peer-venv", default=os.environ.get("VENV", "/tmp/venv-tf"))
    p.add_argument("--no-peer", action="store_true")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds; each configuration keeps its best")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--train-precision", default="auto", help=argparse.SUPPRESS)
    p.add_argument("--infer-precision", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--engine", default="auto", help=argparse.SUPPRESS)
    p.add_argument("--infer-iters", type=int, default=30)
    p.add_argument("--latency-iters", type=int, default=200)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    fast = {"GLIBC_TUNABLES": FAST_MALLOC}
    configs = {
        "cxrkit": lambda: run_cxrkit(args, fast),
        "cxrkit, fp32 training": lambda: run_cxrkit(args, fast, train_precision="fp32"),
        "cxrkit, default malloc": lambda: run_cxrkit(args, {}),
        "cxrkit, bf16 inference": lambda: run_cxrkit(args, fast, infer_precision="bf16"),
        "cxrkit, TorchScript inference": lambda: run_cxrkit(args, fast, engine="torchscript"),
    }
    if not args.no_peer:
        configs = {"keras (seed 001, TF 2.15)": lambda: run_keras(args)} | configs
    # Rounds interleave the configurations, and each keeps its best round: a burst of load from elsewhere on a
    # 2-core machine then costs one configuration one round, not the comparison.
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    for r in range(args.rounds):
        for name, fn in configs.items():
            result = fn()
            if result:
                runs[name].append(result)
            print(f"round {r + 1}/{args.rounds}: {name} done", file=sys.stderr, flush=True)
    rows = {name: _best(results) for name, results in runs.items() if results}
    ref = rows.get("keras (seed 001, TF 2.15)")

    def cell(v, key, fmt):
        if v is None:
            return "-"
        s = fmt.format(v)
        if ref and ref.get(key):
            ratio = (ref[key] / v) if key in LOWER_IS_BETTER else (v / ref[key])
            s += f" ({ratio:.2f}x)"
        return s

    print(f"\nseed_cnn, 128x128x1, batch 32, {os.cpu_count()} CPU cores, data {args.data}, {args.epochs} epochs, "
          f"best of {args.rounds} interleaved rounds")
    print("ratios vs Keras: higher is better for cxrkit (speed-ups; for latency and RSS, Keras / cxrkit)\n")
    cols = [("train_img_per_s", "train img/s", "{:.0f}"), ("infer_b32_img_per_s", "infer b32 img/s", "{:.0f}"),
            ("infer_b1_p50_ms", "b1 latency p50 ms", "{:.2f}"), ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
            ("predict_img_per_s", "predict JPEG img/s", "{:.0f}")]
    print("| configuration | " + " | ".join(c[1] for c in cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(cell(r.get(k), k, f) for k, _, f in cols) + " |")


if __name__ == "__main__":
    main()
