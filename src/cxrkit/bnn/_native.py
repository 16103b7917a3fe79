"""The C kernels of ``xnor.c``, compiled on first use with the system C compiler and loaded with ctypes.

Why compile at first use rather than at install time: cxrkit installs as a
pure-Python package (editable installs included), and a kernel built for the
machine it runs on may use its popcount instructions (``-march=native``). The
shared library is cached under ``$CXRKIT_CACHE`` (default
``~/.cache/cxrkit``) keyed by a hash of the source, the flags and the
CPU's features, so it is built once (~0.3 s). Without a working compiler, or with
``CXRKIT_BNN_NATIVE=0``, :func:`kernels` returns None and the engine uses its
NumPy path, which computes the same numbers.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..machine import cpu_flags_line

SOURCE = Path(__file__).with_name("xnor.c")
# -ffp-contract=off: no fused multiply-add, so ``dot * scale + bias`` rounds as NumPy's two steps do.
# -fno-trapping-math: lets GCC turn RPReLU's ``y >= 0 ? y : y * slope`` into a vector blend (it kept the loop
# scalar, 0.21 ms for a 56x56x32 map, ~10x a vector pass); it changes no value, only which operations may raise
# floating-point exceptions, which nothing here reads.
_OPT = ["-O3", "-ffp-contract=off", "-fno-trapping-math"]
_FLAG_SETS = ([*_OPT, "-march=native"], _OPT)

_u64p = np.ctypeslib.ndpointer(np.uint64, flags="C_CONTIGUOUS")
_f32p = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
_f32p_or_null = ctypes.c_void_p
_i64 = ctypes.c_int64

_loaded: dict[str, object] = {}


def _cache_dir() -> Path:
    return Path(os.environ.get("CXRKIT_CACHE") or Path.home() / ".cache" / "cxrkit") / "bnn"


def _build(flags: list[str]) -> Path | None:
    """Compile ``xnor.c`` with ``flags`` into the cache (atomically renamed into place); None if that fails."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    src = SOURCE.read_bytes()
    key = " ".join([cc, *flags, platform.machine(), platform.system(), cpu_flags_line()])
    key = hashlib.sha256(src + key.encode()).hexdigest()
    lib = _cache_dir() / f"xnor-{key[:16]}.so"
    if lib.is_file():
        return lib
    try:
        lib.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=lib.parent)
        os.close(fd)
        result = subprocess.run([cc, *flags, "-shared", "-fPIC", "-o", tmp, str(SOURCE)],
                                capture_output=True, timeout=120)
        if result.returncode != 0:
            os.unlink(tmp)
            return None
        os.replace(tmp, lib)
    except (OSError, subprocess.SubprocessError):
        return None
    return lib


def kernels():
    """The loaded library with its functions typed (``bnn_pack``, ``bnn_conv``, ...), or None (no compiler, or disabled)."""
    if os.environ.get("CXRKIT_BNN_NATIVE", "1") == "0":
        return None
    if "lib" not in _loaded:
        _loaded["lib"] = None
        for flags in _FLAG_SETS:
            path = _build(flags)
            if path is None:
                continue
            try:
                lib = ctypes.CDLL(str(path))
            except OSError:
                continue
            lib.bnn_pack.restype = None
            lib.bnn_pack.argtypes = [_f32p, _i64, _i64, _i64, _i64, _f32p, _i64, _i64, _u64p]
            lib.bnn_conv.restype = ctypes.c_int
            lib.bnn_conv.argtypes = [_u64p, _i64, _i64, _i64, _u64p, *[_i64] * 7, *[_f32p_or_null] * 4,
                                     *[_i64] * 4, _f32p]
            lib.bnn_conv_real.restype = ctypes.c_int
            lib.bnn_conv_real.argtypes = [_f32p, _i64, _i64, _i64, _f32p, *[_i64] * 6, *[_f32p_or_null] * 4,
                                          *[_i64] * 4, _f32p]
            lib.bnn_channel.restype = None
            lib.bnn_channel.argtypes = [_f32p, _i64, _i64, *[_f32p_or_null] * 5]
            lib.bnn_kernel.restype = ctypes.c_char_p
            lib.bnn_kernel.argtypes = []
            lib.bnn_residual.restype = None
            lib.bnn_residual.argtypes = [_f32p, _f32p, *[_i64] * 8]
            _loaded["lib"] = lib
            break
    return _loaded["lib"]
