"""Frozen TorchScript (cxrkit's inference path today) vs ONNX Runtime for the same float32 network, one process.

A lead, not a shipped path: ONNX Runtime ran seed_cnn faster here at batch 32 and much faster at batch 1, but
importing it, building a session and running it raise the process's peak RSS (printed last), and the seed-001
benchmark's RSS margin over Keras is ~35 MB. The weights are random (speed does not depend on them):

    GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184 \\
        python benchmarks/bench_inference_backends.py --rounds 2
"""
from __future__ import annotations

import argparse
import io
import resource
import warnings

import numpy as np
import torch
from bench_bnn import _timings  # batch-1 median latency and batch-32 throughput, as bench_bnn.py times them

from cxrkit.data.preprocess import Preprocess
from cxrkit.inference.bundle import ModelBundle
from cxrkit.inference.predictor import frozen_for_inference
from cxrkit.models import create_model, model_info


def _onnxruntime_forward(model: torch.nn.Module, example: torch.Tensor):
    import onnxruntime as ort

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), buf, input_names=["x"], output_names=["y"], dynamo=False,
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"x": np.ascontiguousarray(x.numpy())})[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="seed_cnn,cxr_cnn")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    print(f"{torch.get_num_threads()} threads; best of {args.rounds} interleaved rounds\n")
    print("| model | backend | b32 img/s | b1 p50 ms | max abs logit difference |")
    print("|---|---|---:|---:|---:|")
    rss_added = {}
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = create_model(name).eval()
        size = model_info(name).preprocess.size
        bundle = ModelBundle(model, name, ("NORMAL", "PNEUMONIA"), Preprocess(size=size))
        x = torch.rand(32, 1, size, size).contiguous(memory_format=torch.channels_last)
        frozen = frozen_for_inference(bundle)
        with torch.inference_mode():
            frozen(x)
        rss_before = _peak_rss_mb()
        backends = {"frozen TorchScript (cxrkit today)": frozen,
                    "ONNX Runtime": _onnxruntime_forward(model, x[:2].contiguous())}
        with torch.inference_mode():
            backends["ONNX Runtime"](x)
        rss_added[name] = _peak_rss_mb() - rss_before
        with torch.inference_mode():
            reference = model(x)
            best = {k: (0.0, float("inf")) for k in backends}
            for _ in range(args.rounds):
                for k, forward in backends.items():
                    t = _timings(forward, x[:1], x, iters1=300, iters32=40)
                    ips, ms = t["b32_ips"], t["b1_ms"]
                    best[k] = (max(best[k][0], ips), min(best[k][1], ms))
            for k, forward in backends.items():
                gap = float((forward(x) - reference).abs().max())
                print(f"| {name} {size} px | {k} | {best[k][0]:.0f} | {best[k][1]:.3f} | {gap:.1e} |", flush=True)
    print("\npeak RSS added by ONNX Runtime (import, session, one batch-32 run), MB: "
          + ", ".join(f"{k} {v:.0f}" for k, v in rss_added.items()) + " (the first includes the import)")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
