"""What this machine offers cxrkit: the CPU features that decide which path runs, and how fast.

Why it matters: the same model runs at very different speed ratios on different x86 CPUs, measured here: the int8
ONNX default model is 3.65x float32 at batch 1 with VNNI and 1.92x without (docs/edge.md); training's precision
``auto`` takes bf16 only where the CPU multiplies it natively (elsewhere it is emulated and ~30x slower); the
packed BNN engine compiles another popcount loop for AVX-512 and for AVX2. A user comparing their figures with
ours needs to know which side of each line their CPU is on; ``cxrkit info`` prints it. Torch-free, so the
runtime and the BNN engine can use it too.
"""
from __future__ import annotations

import functools
import os
import platform
import sys
from importlib import metadata

# glibc's default malloc returns freed tensor memory to the OS after every step and PyTorch pays page faults to get it
# back; these settings keep it (1.2-1.3x for `cxrkit predict` and binary-network training on the 2-core machines:
# benchmarks/README.md, docs/bnn.md). They must be set before a process starts: the cxrkit command and the benchmarks
# that measure in their own process re-execute themselves once with them (reexec_with_fast_malloc), and the others give
# them to every cxrkit process they start, so a table measures the path a user gets.
FAST_MALLOC = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184"


def reexec_with_fast_malloc(argv: list[str]) -> None:
    """Replace this process with ``argv`` under FAST_MALLOC, once; return only where that does not apply.

    The settings are read when a process starts, so a command or a benchmark that measures in its own process can
    only get them by starting again. A caller's own GLIBC_TUNABLES (any value) is respected, CXRKIT_NO_REEXEC=1 opts
    out, and where exec fails (or off Linux) the caller simply goes on with the default allocator.
    """
    opted_out = "GLIBC_TUNABLES" in os.environ or os.environ.get("CXRKIT_NO_REEXEC") == "1"
    if opted_out or not sys.platform.startswith("linux"):
        return
    try:
        os.execve(argv[0], argv, dict(os.environ, GLIBC_TUNABLES=FAST_MALLOC, CXRKIT_NO_REEXEC="1"))
    except OSError:
        pass

# The features that change a path or a speed in cxrkit, in the names Linux gives them in /proc/cpuinfo.
FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "avx512_vpopcntdq")
PACKAGES = ("torch", "torchvision", "onnxruntime", "timm", "numpy", "pillow")


@functools.cache
def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:  # not Linux: no feature list, so every feature reads as absent and the safe paths are taken
        return ""


def _first(prefixes: tuple[str, ...]) -> str:
    return next((line for line in _cpuinfo().splitlines() if line.startswith(prefixes)), "")


def cpu_flags_line() -> str:
    """The raw feature line (``flags`` on x86, ``Features`` on ARM), or the processor name where there is none:
    the BNN kernel cache key, so that a library built for one CPU is never loaded on another."""
    return _first(("flags", "Features")) or platform.processor()


def cpu_flags() -> frozenset[str]:
    line = _first(("flags", "Features"))
    return frozenset(line.split(":", 1)[1].split()) if ":" in line else frozenset()


def cpu_model() -> str:
    line = _first(("model name", "Model", "Hardware"))
    return line.split(":", 1)[1].strip() if ":" in line else (platform.processor() or platform.machine())


def native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matrix products in hardware, so bf16 autocast is faster, not 30x slower."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def int8_dot_product() -> bool:
    """VNNI (AVX-512 or AVX): ONNX Runtime's int8 kernels multiply-accumulate in 32 bits in one instruction."""
    return bool({"avx512_vnni", "avx_vnni"} & cpu_flags())


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """Everything ``cxrkit info`` prints, as plain data (no PyTorch import: this stays fast and torch-free)."""
    from .bnn import _native

    flags = cpu_flags()
    lib = _native.kernels()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "features": {f: f in flags for f in FEATURES},
        "training_precision_auto": "bf16" if native_bf16() else "fp32",
        "int8_vnni": int8_dot_product(),
        "bnn_kernel": lib.bnn_kernel().decode() if lib is not None else "NumPy bitwise_count (no C compiler, or "
                                                                           "CXRKIT_BNN_NATIVE=0)",
        "fast_malloc": "mmap_max=0" in os.environ.get("GLIBC_TUNABLES", ""),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {p: _version(p) for p in PACKAGES},
    }


def info_lines(info: dict) -> list[str]:
    """``machine_info()`` for a person: one line a topic, each saying what it means for cxrkit."""
    yes = [f for f, on in info["features"].items() if on]
    bf16 = ("bf16 (native bfloat16)" if info["training_precision_auto"] == "bf16" else
            "fp32 (no native bfloat16: --precision bf16 would be emulated, ~30x slower)")
    int8 = ("VNNI present: int8 ONNX ran ~3.5x float32 at batch 1 on such a CPU" if info["int8_vnni"] else
            "no VNNI: int8 ONNX ran ~1.9x float32 at batch 1 on such a CPU, ~3.5x with VNNI (docs/edge.md)")
    pkgs = ", ".join(f"{p} {v}" for p, v in info["packages"].items() if v)
    return [f"cpu           {info['cpu']} ({info['usable_cpus']} usable of {info['logical_cpus']} logical CPUs)",
            f"features      {', '.join(yes) or 'none of ' + ', '.join(FEATURES)}",
            f"training      precision auto -> {bf16}",
            f"int8          {int8}",
            f"BNN engine    {info['bnn_kernel']}",
            f"fast malloc   {'on' if info['fast_malloc'] else 'off'} (GLIBC_TUNABLES; the cxrkit command sets it)",
            f"python        {info['python']} on {info['platform']}",
            f"packages      {pkgs}"]
