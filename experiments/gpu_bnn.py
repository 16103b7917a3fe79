"""Train session 18's pre-registered binary networks on a lent GPU inside a fixed time window.

A lent GPU comes for minutes, once (docs/robustness.md, "Session 18 pre-registration"), so the number of
epochs is decided before training, by the rule written there: a probe times one training step of each
candidate on the bundled sample (both at once, as they will run), then

1. both ``cxr_bnn_deep224`` and ``cxr_bnn_long224`` at the largest of 96 / 72 epochs that fits the window, else
2. ``cxr_bnn_deep224`` alone at the largest of 96 / 72 / 48 that fits, else
3. ``cxr_bnn_deep224`` alone at 48, its checkpoint brought back to be resumed (``cxrkit train --resume``).

``--plan RECIPE:EPOCHS:SEED[,RECIPE:EPOCHS:SEED...]`` skips the probe and trains those runs at once (later
pre-registered items).

Every run directory comes back as one tar file (a checkpoint too big for one file in parts), with this
script's log, under OUT. The runs are evaluated where cxrkit's CPU figures are measured, not here.

usage: python3 experiments/gpu_bnn.py --data kermany_224 --out $OUT --window 520

Getting the data there: the device tool sends the working tree, 64 MiB at most. ``experiments/gpu_tree.sh
prepare`` puts kermany_224 (42.7 MB) in ``.gpudata/`` (ignored; name it in the call's ``carry``) and deletes from the
working tree what no GPU run reads (docs/reports, the shipped weights but the teacher ``cxr_mobilenetv2`` and
``cxr_cnn``); ``experiments/gpu_tree.sh restore`` brings them back after the call. Measured there: 0.035 s a step, a 48-epoch run in
about 300 s in all (245 s of steps), so OVERHEAD_S and MARGIN are cautious: 72 epochs would have fitted.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "src" / "cxrkit" / "sample_data" / "kermany_sample"
PRIORITY = ("cxr_bnn_deep224", "cxr_bnn_long224")
STEPS_PER_EPOCH = 147  # 4,694 training films (the patient-grouped 90 %), batch 32
OVERHEAD_S = 120  # decoding 5,216 films, the teacher's probabilities, the cut-off across the views, saving
MARGIN = 1.2  # validation (522 films) and the checkpoint every epoch
PART_BYTES = 15 * 2 ** 20  # files come back at most 16 MiB each


def _log(msg: str, log: Path) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    with log.open("a") as f:
        f.write(line + "\n")


def _train(recipe: str, data: Path, out: Path, epochs: int, extra: list[str], log: Path, device: str,
           limit_s: float | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cxrkit", "train", "--recipe", recipe, "--data", str(data), "--out", str(out),
           "--epochs", str(epochs), "--device", device, "--quiet", *extra]
    if limit_s is not None:
        cmd = ["timeout", str(max(60, int(limit_s))), *cmd]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    _log("$ " + " ".join(cmd), log)
    return subprocess.Popen(cmd, env=env, stdout=(out.parent / f"{out.name}.log").open("w"),
                            stderr=subprocess.STDOUT)


def probe(work: Path, log: Path, device: str) -> dict[str, float]:
    """Seconds per training step of each candidate, both running at once, warm-up epochs dropped."""
    procs = {r: _train(r, SAMPLE, work / f"probe_{r}", 14, ["--max-steps", "1"], log, device) for r in PRIORITY}
    step = {}
    for r, p in procs.items():
        if p.wait() != 0:
            raise SystemExit(f"probe of {r} failed: see {work / f'probe_{r}.log'}")
        history = json.loads((work / f"probe_{r}" / "history.json").read_text())
        step[r] = statistics.median(h["train_seconds"] for h in history[4:])
    return step


def plan(step: dict[str, float], left_s: float) -> list[tuple[str, int]]:
    """The pre-registered rule (module docstring)."""
    def fits(recipe: str, epochs: int) -> bool:
        return OVERHEAD_S + epochs * STEPS_PER_EPOCH * step[recipe] * MARGIN <= left_s

    for epochs in (96, 72):
        if all(fits(r, epochs) for r in PRIORITY):
            return [(r, epochs) for r in PRIORITY]
    for epochs in (96, 72, 48):
        if fits(PRIORITY[0], epochs):
            return [(PRIORITY[0], epochs)]
    return [(PRIORITY[0], 48)]


def bring_back(run: Path, out: Path) -> None:
    """One tar per run; the checkpoint only when the run did not finish (then split into parts)."""
    finished = (run / "model.safetensors").is_file()
    tar_path = out / f"{run.name}.tar"
    with tarfile.open(tar_path, "w") as tar:
        for f in sorted(run.parent.glob(f"{run.name}.log")) + sorted(run.iterdir()):
            if f.name != "checkpoint.pt" or not finished:
                tar.add(f, arcname=f"{run.name}/{f.name}")
    if tar_path.stat().st_size > PART_BYTES:
        data = tar_path.read_bytes()
        tar_path.unlink()
        for i in range(0, len(data), PART_BYTES):
            (out / f"{run.name}.tar.part{i // PART_BYTES}").write_bytes(data[i:i + PART_BYTES])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="kermany_224 (train/ and test/)")
    ap.add_argument("--out", type=Path, required=True, help="where the tar files go")
    ap.add_argument("--work", type=Path, default=Path("/tmp/gpu_bnn"), help="run directories")
    ap.add_argument("--window", type=float, default=520, help="seconds from start to the last run's end")
    ap.add_argument("--device", default="cuda", help="cuda; cpu only to try this script out")
    ap.add_argument("--plan", help="RECIPE:EPOCHS:SEED[,...]: these runs, at once, without the probe")
    args = ap.parse_args()
    start = time.monotonic()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "gpu_bnn.log"
    if args.plan:
        chosen = [(r, int(e), int(seed)) for r, e, seed in (item.split(":") for item in args.plan.split(","))]
    else:
        step = probe(args.work, log, args.device)
        chosen = [(r, e, 0) for r, e in plan(step, args.window - (time.monotonic() - start))]
        _log(f"probe: seconds per step {json.dumps({r: round(s, 4) for r, s in step.items()})}; plan {chosen}", log)
    left = args.window - (time.monotonic() - start)
    procs = {}
    for recipe, epochs, seed in chosen:
        name = recipe if seed == 0 else f"{recipe}_s{seed}"
        procs[name] = _train(recipe, args.data, args.work / name, epochs, ["--seed", str(seed)], log, args.device,
                             limit_s=left)
    for name, p in procs.items():
        _log(f"{name}: exit {p.wait()} after {time.monotonic() - start:.0f} s", log)
        bring_back(args.work / name, args.out)


if __name__ == "__main__":
    main()
