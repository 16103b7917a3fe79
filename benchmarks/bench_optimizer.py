#!/usr/bin/env python3
"""Optimizer step time on seed_cnn's parameters: torch.optim.Adam vs cxrkit's LeanAdam, interleaved in one process.

LeanAdam exists to keep ``torch._dynamo`` out of memory (benchmarks/README.md); this checks that it costs no
speed. Both run the same kernels, so any difference is Python overhead. Rounds alternate between the two
so that load from elsewhere on a shared machine hits both alike; each keeps its best round.

    python benchmarks/bench_optimizer.py [--fused 0|1] [--steps 300] [--rounds 5]
"""
from __future__ import annotations

import argparse
import time

import torch

from cxrkit.models import create_model
from cxrkit.training.optim import LeanAdam


def _time_steps(opt, steps: int) -> float:
    t = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - t) / steps * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fused", type=int, default=1)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    model = create_model("seed_cnn", num_classes=2)
    params = list(model.parameters())
    for q in params:
        q.grad = torch.randn_like(q) * 1e-3
    opts = {"torch.optim.Adam": torch.optim.Adam(params, lr=1e-3, fused=bool(args.fused)),
            "LeanAdam": LeanAdam(params, lr=1e-3, fused=bool(args.fused))}
    best = {name: float("inf") for name in opts}
    for _ in range(args.rounds):
        for name, opt in opts.items():
            best[name] = min(best[name], _time_steps(opt, args.steps))
    print(f"seed_cnn ({sum(q.numel() for q in params):,} parameters), fused={bool(args.fused)}, "
          f"{torch.get_num_threads()} threads, best of {args.rounds} rounds of {args.steps} steps")
    for name, us in best.items():
        print(f"{name:>18}: {us:8.1f} us/step")


if __name__ == "__main__":
    main()
