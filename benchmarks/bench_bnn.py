#!/usr/bin/env python3
"""Binarized networks side by side: PyTorch BNN, its float twin and the packed engine, with the Larq peer.

One table, measured in one run. Every measurement runs in a fresh subprocess, so its peak RSS (``ru_maxrss``,
imports included) is its own and a packed-engine process never imports torch:

- **inference** of ``seed_bnn`` and ``cxr_bnn`` (trained runs, ``--seed-run`` / ``--cxr-run``): the PyTorch BNN
  (binary layers computed in float, as trained), its float twin (same layer shapes, real weights: ``cxr_bnn``
  with ``binary=False``; for ``seed_bnn`` the same conv/dense stack with ``nn.Conv2d``/``nn.Linear``) and the
  packed engine (``cxrkit.bnn.load_packed``, C kernels); batch-1 p50 latency on 1 and 2 threads and batch-32
  throughput, on random inputs of the model's size;
- **training** speed of ``seed_bnn`` in cxrkit (recipe ``seed000``, ``--train-steps`` optimizer steps per epoch,
  the first epoch excluded) and of the seed's own Larq model (``../shared/peers/larq_bnn.py`` in the TF venv,
  which also times its batch-32 and batch-1 inference and reports its peak RSS); both read ``--data``.

Accuracy and ROC-AUC are not re-measured (they need the whole test set): the table quotes the recorded
``cxrkit evaluate`` metrics of each model: ``--seed-eval`` / ``--cxr-eval`` (e.g. a committed report's
``metrics.json``, for a shipped name such as ``cxr_bnn``), else ``<run>.eval.json`` next to a run folder.
Configurations run in interleaved rounds and each keeps its best (the 2-core machine is shared and noisy).

    python benchmarks/bench_bnn.py --data ../shared/data/kermany_224 --seed-run ../runs/seed000 \\
        --cxr-run cxr_bnn --cxr-eval docs/reports/cxr_bnn_item85_test/metrics.json --rounds 2
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

from cxrkit.machine import FAST_MALLOC  # torch-free: this parent process never holds torch
from peers import run_peer

HERE = Path(__file__).resolve().parent
LOWER_IS_BETTER = ("b1_ms", "rss_mb")


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ``ru_maxrss``: Linux carries ``ru_maxrss`` over from the parent's
    memory across fork + exec, which would charge every worker with its parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _twin(arch: str, kwargs: dict):
    """The float twin: the BNN's layer shapes with real weights and inputs."""
    import torch.nn as nn

    from cxrkit.models import create_model

    if arch == "cxr_bnn":
        return create_model(arch, **{**kwargs, "binary": False})
    model = create_model(arch, **kwargs)  # seed_bnn: read its shapes, rebuild with plain float layers
    c1, c2 = model.features[0], model.features[3]
    dense, head = model.classifier[1], model.classifier[2]
    return nn.Sequential(nn.Conv2d(c1.in_channels, c1.out_channels, 3), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(c2.in_channels, c2.out_channels, 3), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(dense.in_features, dense.out_features), nn.Linear(head.in_features, head.out_features))


def _timings(fn, x1, x32, iters1: int, iters32: int) -> dict:
    import numpy as np

    for _ in range(5):
        fn(x1)
    fn(x32)
    lat = []
    for _ in range(iters1):
        t = time.perf_counter()
        fn(x1)
        lat.append(time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(iters32):
        fn(x32)
    return {"b1_ms": float(np.percentile(np.array(lat) * 1e3, 50)),
            "b32_ips": 32 * iters32 / (time.perf_counter() - t)}


def infer_worker(args) -> dict:
    """Times one (run, variant, threads) in this fresh process; the packed variant never imports torch."""
    import numpy as np

    spec = json.loads(args.spec)
    shape = spec["shape"]
    rng = np.random.default_rng(0)
    x32 = rng.random((32, *shape), dtype=np.float32)
    x1 = x32[:1].copy()
    out = {}
    if spec["variant"] == "packed":
        from cxrkit.bnn import load_packed

        model = load_packed(spec["packed"], threads=spec["threads"])
        out["backend"] = f"{model.backend}: {model.kernel}"
        fn = model.logits
    else:
        import torch

        from cxrkit.inference.bundle import resolve_model

        torch.set_num_threads(spec["threads"])
        bundle = resolve_model(spec["run"])
        model = (bundle.model if spec["variant"] == "torch" else _twin(bundle.arch, dict(bundle.model_kwargs))).eval()

        def fn(x):
            with torch.inference_mode():
                return model(torch.from_numpy(x))
    out.update(_timings(fn, x1, x32, args.iters1, args.iters32))
    out["rss_mb"] = _peak_rss_mb()
    return out


def train_worker(args) -> dict:
    """cxrkit's training loop on seed_bnn (recipe seed000), img/s without the first epoch."""
    from cxrkit.recipes import RECIPES
    from cxrkit.training import train

    recipe = RECIPES["seed000"].replace(epochs=args.train_epochs)
    with tempfile.TemporaryDirectory() as tmp:
        result = train(recipe, args.data, Path(tmp) / "run", progress=False, verbose=False,
                       max_steps=args.train_steps)
    hist = result.history[1:] or result.history
    ips = sum(h["train_img_per_s"] * h["train_seconds"] for h in hist) / sum(h["train_seconds"] for h in hist)
    return {"train_ips": ips, "rss_mb": _peak_rss_mb()}


def _subprocess(args, mode: str, spec: dict | None = None, threads: int | None = None) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--data", args.data, "--iters1", str(args.iters1),
           "--iters32", str(args.iters32), "--train-epochs", str(args.train_epochs),
           "--train-steps", str(args.train_steps)]
    if spec is not None:
        cmd += ["--spec", json.dumps(spec)]
    env = dict(os.environ, GLIBC_TUNABLES=FAST_MALLOC)  # the path the cxrkit command takes, whoever calls this
    if threads:  # NumPy's BLAS (the engine's dense layers) gets the same thread count as the rest
        env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        sys.exit(f"{mode} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def larq_peer(args) -> dict | None:
    s = run_peer("larq_bnn.py", args.peer_venv, args.data, args.train_epochs)
    if s is None:
        return None
    return {"train_ips": s["train_img_per_s_excl_first_epoch"], "b32_ips": s["infer_b32_img_per_s"],
            "b1_ms": s["infer_b1_p50_ms"], "rss_mb": s["peak_rss_mb"], "test_acc": s.get("test_accuracy")}


def prepare_worker(args) -> dict:
    """Exports ``spec["run"]`` to ``spec["packed"]``; parameters, binary fraction, sizes, activation memory and
    recorded test metrics. In a worker, so that the parent never holds torch (the Larq peer measures its peak
    RSS with ``ru_maxrss``, which a child inherits from its parent)."""
    import numpy as np
    import torch

    from cxrkit.bnn import export_packed, load_packed
    from cxrkit.inference.bundle import resolve_model

    spec = json.loads(args.spec)
    run = spec["run"]
    bundle = resolve_model(run)
    packed = export_packed(bundle, spec["packed"])
    model = bundle.model.eval()
    pre = bundle.preprocess
    acts, hooks = [], []
    for m in model.modules():
        if not list(m.children()):  # leaf layers: input + output bytes alive while each runs
            hooks.append(m.register_forward_hook(
                lambda mod, inp, outp: acts.append(4 * (inp[0].numel() + outp.numel()))))
    with torch.inference_mode():
        model(torch.zeros(1, pre.channels, pre.size, pre.size))
    for h in hooks:
        h.remove()
    engine = load_packed(packed)
    import tracemalloc  # NumPy reports its buffers to tracemalloc: the engine's real peak, temporaries included

    x = np.zeros((1, pre.channels, pre.size, pre.size), np.float32)
    engine.logits(x)
    tracemalloc.start()
    engine.logits(x)
    engine_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    info = engine.info
    facts = {"params": info["params"], "binary_fraction": info["binary_fraction"], "float32_bytes": 4 * info["params"],
             "packed_bytes": packed.stat().st_size, "act_torch_kb": max(acts) / 1024, "act_engine_kb": engine_peak / 1024,
             "shape": [pre.channels, pre.size, pre.size], "arch": bundle.arch}
    recorded = Path(spec.get("eval") or str(Path(run).resolve()) + ".eval.json")
    if recorded.is_file():
        ev = json.loads(recorded.read_text())
        facts.update(test_acc=ev["accuracy"], test_auc=ev["roc_auc"], eval_file=str(recorded))
    return facts


def _best(results: list[dict]) -> dict:
    out = dict(results[0])
    for key in results[0]:
        values = [r[key] for r in results if isinstance(r.get(key), (int, float))]
        if values:
            out[key] = min(values) if key in LOWER_IS_BETTER else max(values)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder with train/{NORMAL,PNEUMONIA} and test/{NORMAL,PNEUMONIA}")
    p.add_argument("--seed-run", help="trained seed_bnn run (cxrkit train --recipe seed000)")
    p.add_argument("--cxr-run", help="trained cxr_bnn run (cxrkit train --recipe cxr_bnn)")
    p.add_argument("--seed-eval", help="cxrkit evaluate's metrics JSON for --seed-run (default: RUN.eval.json)")
    p.add_argument("--cxr-eval", help="cxrkit evaluate's metrics JSON for --cxr-run, e.g. "
                                      "docs/reports/cxr_bnn_item85_test/metrics.json (default: RUN.eval.json)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds; each configuration keeps its best")
    p.add_argument("--threads", default="1,2", help="thread counts for the inference rows")
    p.add_argument("--iters1", type=int, default=100, help="timed batch-1 calls")
    p.add_argument("--iters32", type=int, default=10, help="timed batch-32 calls")
    p.add_argument("--train-epochs", type=int, default=2, help="training epochs (the first is excluded from img/s)")
    p.add_argument("--train-steps", type=int, default=60, help="cxrkit: optimizer steps per epoch (batch 32)")
    p.add_argument("--peer-venv", default=os.environ.get("VENV", "/tmp/venv-tf"))
    p.add_argument("--no-peer", action="store_true")
    p.add_argument("--no-train", action="store_true", help="skip the two training-speed measurements")
    p.add_argument("--worker", choices=["infer", "train", "prepare"], help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps({"infer": infer_worker, "train": train_worker, "prepare": prepare_worker}[args.worker](args)))
        return
    if not (args.seed_run and args.cxr_run):
        p.error("--seed-run and --cxr-run are required")

    tmp = Path(tempfile.mkdtemp(prefix="bench_bnn_"))
    facts, configs = {}, {}
    threads = [int(t) for t in args.threads.split(",")]
    for recorded in (args.seed_eval, args.cxr_eval):
        if recorded and not Path(recorded).is_file():
            p.error(f"{recorded}: no such metrics file")
    for label, run, recorded in (("seed_bnn", args.seed_run, args.seed_eval), ("cxr_bnn", args.cxr_run, args.cxr_eval)):
        packed = tmp / f"{label}.bnn.npz"
        facts[label] = f = _subprocess(args, "prepare", {"run": run, "packed": str(packed), "eval": recorded})
        for variant, name in (("torch", "PyTorch BNN"), ("twin", "PyTorch float twin"), ("packed", "packed engine")):
            for t in threads:
                spec = {"run": run, "variant": variant, "threads": t, "shape": f["shape"], "packed": str(packed)}
                configs[(label, name, t)] = (lambda s=spec, t=t: _subprocess(args, "infer", s, t))
    if not args.no_train:
        configs[("seed_bnn", "cxrkit training", None)] = lambda: _subprocess(args, "train")
    if not args.no_peer:
        configs[("seed_bnn", "Larq peer (TF 2.15)", None)] = lambda: larq_peer(args)
    runs: dict = {key: [] for key in configs}
    for r in range(args.rounds):
        for key, fn in configs.items():
            result = fn()
            if result:
                runs[key].append(result)
            print(f"round {r + 1}/{args.rounds}: {key} done", file=sys.stderr, flush=True)
    rows = {key: _best(res) for key, res in runs.items() if res}
    _print_table(args, facts, rows, threads)


def _print_table(args, facts: dict, rows: dict, threads: list[int]) -> None:
    load = os.getloadavg()[0]
    print(f"\nBNNs side by side, {os.cpu_count()} CPU cores (load average {load:.1f} at the end), best of "
          f"{args.rounds} interleaved rounds; inference on random inputs of each model's size; data {args.data}")
    larq = rows.get(("seed_bnn", "Larq peer (TF 2.15)", None))
    train = rows.get(("seed_bnn", "cxrkit training", None))
    if larq or train:
        print("\n| seed_bnn training and inference | train img/s | b32 img/s | b1 p50 ms | peak RSS MB | test acc |")
        print("|---|---:|---:|---:|---:|---:|")
        if larq:
            print(f"| Larq peer, seed 000's model (TF 2.15, {args.train_epochs} epochs, default threads) | "
                  f"{larq['train_ips']:.0f} | {larq['b32_ips']:.0f} | {larq['b1_ms']:.2f} | {larq['rss_mb']:.0f} | "
                  f"{larq['test_acc'] if larq['test_acc'] is not None else '-'} |")
        if train:
            ratio = f" ({train['train_ips'] / larq['train_ips']:.2f}x)" if larq else ""
            print(f"| cxrkit seed_bnn training (recipe seed000, {args.train_steps} steps/epoch) | "
                  f"{train['train_ips']:.0f}{ratio} | | | {train['rss_mb']:.0f} | |")
        for t in threads:
            e = rows.get(("seed_bnn", "packed engine", t))
            if larq and e:
                print(f"| cxrkit seed_bnn packed engine, {t} thread(s) | | {e['b32_ips']:.0f} "
                      f"({e['b32_ips'] / larq['b32_ips']:.2f}x) | {e['b1_ms']:.2f} ({larq['b1_ms'] / e['b1_ms']:.2f}x) | "
                      f"{e['rss_mb']:.0f} ({larq['rss_mb'] / e['rss_mb']:.1f}x less) | |")
    for label, f in facts.items():
        acc = (f"test accuracy {f['test_acc']:.3f}, ROC-AUC {f['test_auc']:.3f} (recorded: {f['eval_file']})"
               if "test_acc" in f else "no recorded evaluation")
        print(f"\n**{label}**: {f['params']:,} parameters, {100 * f['binary_fraction']:.2f} % binary; float32 weights "
              f"{f['float32_bytes']:,} B vs packed file {f['packed_bytes']:,} B "
              f"({f['float32_bytes'] / f['packed_bytes']:.1f}x smaller); batch-1 activation memory: PyTorch "
              f"{f['act_torch_kb']:.0f} KB (largest layer input + output), engine {f['act_engine_kb']:.0f} KB "
              f"(tracemalloc peak); {acc}\n")
        print("| inference | threads | b1 p50 ms | b32 img/s | peak RSS MB | b1 vs float twin | b32 vs float twin |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for t in threads:
            twin = rows.get((label, "PyTorch float twin", t))
            for name in ("PyTorch BNN", "PyTorch float twin", "packed engine"):
                r = rows.get((label, name, t))
                if not r:
                    continue
                vs1 = f"{twin['b1_ms'] / r['b1_ms']:.2f}x" if twin else "-"
                vs32 = f"{r['b32_ips'] / twin['b32_ips']:.2f}x" if twin else "-"
                print(f"| {name}{' (' + r['backend'] + ')' if 'backend' in r else ''} | {t} | {r['b1_ms']:.2f} | "
                      f"{r['b32_ips']:.0f} | {r['rss_mb']:.0f} | {vs1} | {vs32} |")


if __name__ == "__main__":
    main()
