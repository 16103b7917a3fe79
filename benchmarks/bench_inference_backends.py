"""cxrkit's two fp32 inference engines side by side, one process: ONNX Runtime (the default, ``--engine auto``)
and the frozen TorchScript copy (``--engine torchscript``, the default before session 12).

Both come from ``cxrkit.inference.predictor.frozen_for_inference``, as ``cxrkit predict`` builds them. The weights
are random (speed does not depend on them). Peak RSS is reported for building and running each engine, in the
order given, within this one process:

    python benchmarks/bench_inference_backends.py --rounds 2
"""
from __future__ import annotations

import sys

from cxrkit.machine import reexec_with_fast_malloc

reexec_with_fast_malloc([sys.executable, *sys.argv])  # measure with the allocator the cxrkit command uses

import argparse
import resource

import torch
from bench_bnn import _timings  # batch-1 median latency and batch-32 throughput, as bench_bnn.py times them

from cxrkit.data.preprocess import Preprocess
from cxrkit.inference.bundle import ModelBundle
from cxrkit.inference.predictor import frozen_for_inference
from cxrkit.models import create_model, model_info

ENGINES = {"torchscript": "frozen TorchScript (--engine torchscript)", "auto": "ONNX Runtime (default)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="seed_cnn,cxr_cnn")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    print(f"{torch.get_num_threads()} threads; best of {args.rounds} interleaved rounds\n")
    print("| model | engine | b32 img/s | b1 p50 ms | max abs logit difference | peak RSS added, MB |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = create_model(name).eval()
        size = model_info(name).preprocess.size
        x = torch.rand(32, 1, size, size).contiguous(memory_format=torch.channels_last)
        forwards, rss_added = {}, {}
        for engine in ENGINES:
            before = _peak_rss_mb()
            bundle = ModelBundle(model, name, ("NORMAL", "PNEUMONIA"), Preprocess(size=size), engine=engine)
            forwards[engine] = frozen_for_inference(bundle)
            with torch.inference_mode():
                forwards[engine](x)
            rss_added[engine] = _peak_rss_mb() - before
        with torch.inference_mode():
            reference = model(x)
            best = {k: (0.0, float("inf")) for k in forwards}
            for _ in range(args.rounds):
                for k, forward in forwards.items():
                    t = _timings(forward, x[:1], x, iters1=300, iters32=40)
                    best[k] = (max(best[k][0], t["b32_ips"]), min(best[k][1], t["b1_ms"]))
            for k, forward in forwards.items():
                gap = float((forward(x) - reference).abs().max())
                print(f"| {name} {size} px | {ENGINES[k]} | {best[k][0]:.0f} | {best[k][1]:.3f} | {gap:.1e} | "
                      f"{rss_added[k]:.0f} |", flush=True)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
