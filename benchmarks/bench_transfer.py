"""Training and inference speed of the transfer backbones on this CPU: fp32 vs bf16 autocast, channels_last.

Prints one Markdown table: images/s for a training step (forward + backward +
AdamW, batch 32) and for inference (batch 32), each in fp32 and under bf16
autocast, with the bf16/fp32 ratio. This is what chose each recipe's
``precision`` (docs/transfer.md). Random inputs: speed does not depend on pixels.

    python benchmarks/bench_transfer.py [--models resnet50,...] [--rounds 2] [--size 160]
"""
from __future__ import annotations

import sys

from cxrkit.machine import reexec_with_fast_malloc

reexec_with_fast_malloc([sys.executable, *sys.argv])  # measure with the allocator the cxrkit command uses

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from cxrkit.models import create_model, model_info  # noqa: E402

DEFAULT = "mobilenetv2_100,efficientnet_lite0,densenet121,resnet50,inception_v3,vgg16"


def _rate(fn, images: int, rounds: int) -> float:
    fn()  # warm-up: oneDNN builds its kernels for these shapes
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return images / best


def measure(name: str, batch: int, rounds: int, size: int = 0) -> dict:
    size = size or model_info(name).preprocess.size
    model = create_model(name).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    row = {"model": name, "size": size, "params_m": sum(p.numel() for p in model.parameters()) / 1e6}
    for precision in ("fp32", "bf16"):
        def step():
            model.train()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = model(x).float().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def infer():
            model.eval()
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                model(x)

        row[f"train_{precision}"] = _rate(step, batch, rounds)
        row[f"infer_{precision}"] = _rate(infer, batch, rounds)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=DEFAULT)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--size", type=int, default=0,
                    help="input size in px (default: each backbone's own; the 160-px recipes train at 160)")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, best of {args.rounds}")
    print("| model | input | params | train fp32 | train bf16 | bf16/fp32 | infer fp32 | infer bf16 | bf16/fp32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        r = measure(name, args.batch, args.rounds, args.size)
        print(f"| {name} | {r['size']} | {r['params_m']:.1f}M | {r['train_fp32']:.1f} | {r['train_bf16']:.1f} | "
              f"{r['train_bf16'] / r['train_fp32']:.2f}x | {r['infer_fp32']:.1f} | {r['infer_bf16']:.1f} | "
              f"{r['infer_bf16'] / r['infer_fp32']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
