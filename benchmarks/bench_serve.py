"""Latency and throughput of `POST /api/predict` on a real `cxrkit serve` process (loopback only).

    python benchmarks/bench_serve.py [--requests 200] [--model cxr_cnn] [--workers N]

Sends a 1024x1024 JPEG (a bundled sample film, upscaled) with and without the
Grad-CAM heatmap, at concurrency 1 and 8, after a warm-up, and prints p50/p95
latency and throughput per configuration as a markdown table. The server runs
with the fast glibc malloc settings that the `cxrkit` command sets for itself.
The client shares the CPU with the server, as a browser on the same machine would.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import statistics
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import httpx
from PIL import Image

from cxrkit.machine import FAST_MALLOC


def film_1024() -> bytes:
    sample = Path(str(resources.files("cxrkit") / "sample_data" / "kermany_sample" / "test" / "PNEUMONIA"))
    with Image.open(min(sample.glob("*.jpeg"))) as img:
        big = img.convert("L").resize((1024, 1024), Image.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, model: str | None, workers: int | None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cxrkit", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--model", model] if model else []
    cmd += ["--workers", str(workers)] if workers else []
    env = dict(os.environ, GLIBC_TUNABLES=FAST_MALLOC, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}: {' '.join(cmd)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.25)
    proc.kill()
    raise SystemExit("server did not come up in 180 s")


async def run(url: str, data: bytes, heatmap: bool, concurrency: int, n: int) -> dict:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    errors = 0
    query = "?heatmap=true" if heatmap else ""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def one():
            nonlocal errors
            async with gate:
                t = time.perf_counter()
                r = await client.post(f"/api/predict{query}", files={"files": ("film.jpeg", data, "image/jpeg")})
                latencies.append(time.perf_counter() - t)
                ok = r.status_code == 200 and (not heatmap or r.json()["results"][0]["heatmap"])
                errors += not ok

        await asyncio.gather(*(one() for _ in range(max(concurrency, n // 10))))  # warm-up, not timed
        latencies.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        wall = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100)
    return {"heatmap": heatmap, "concurrency": concurrency, "requests": n, "errors": errors,
            "p50_ms": 1000 * statistics.median(latencies), "p95_ms": 1000 * q[94], "req_per_s": n / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200, help="timed requests per configuration (default: 200)")
    ap.add_argument("--model", help="model to serve (default: the shipped default model)")
    ap.add_argument("--workers", type=int, help="the server's inference threads (default: cxrkit serve's)")
    args = ap.parse_args()
    data = film_1024()
    port = free_port()
    proc = start_server(port, args.model, args.workers)
    try:
        rows = [asyncio.run(run(f"http://127.0.0.1:{port}", data, heatmap, c, args.requests))
                for heatmap in (False, True) for c in (1, 8)]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"POST /api/predict, 1024x1024 JPEG ({len(data) / 1024:.0f} KB), model {args.model or 'default'}, "
          f"{os.cpu_count()} cores, {args.requests} timed requests per row\n")
    print("| heatmap | concurrency | p50 ms | p95 ms | req/s | errors |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {'on' if r['heatmap'] else 'off'} | {r['concurrency']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
              f"{r['req_per_s']:.1f} | {r['errors']} |")


if __name__ == "__main__":
    main()
