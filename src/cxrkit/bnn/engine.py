"""Torch-free inference for packed BNN files: XNOR + popcount where both sides are binary, float elsewhere.

The file's header lists ``ops`` that run in order on an NHWC float32 tensor:

``conv``/``dense``
    ``weight_bits`` true: weights are packed signs (:mod:`.packing`), rows in
    ``(kh, kw, cin)`` order. With ``binarize_input`` the input is binarized as
    ``x >= threshold`` (sign(x - threshold), zero → +1), padded with +1 bits
    (one padding, see :mod:`cxrkit.models._binary`), packed 8 channels per byte
    per pixel, cut into patches of those bytes (im2col on packed bits: 8x less
    to copy than on booleans), viewed as uint64 words and compared with every
    filter, re-packed at load time in the same per-tap layout, by XOR +
    popcount: ``dot = K - 2 * popcount(a XOR w)``. Filler bits (channel
    padding to a byte, row padding to a word) are 0 on both sides, so they
    never count. Without ``binarize_input`` (a real
    input, e.g. the image) the signs are unpacked once to ±1 floats and the
    layer is a float im2col matrix product with zero padding. Then ``scale``
    (per output channel) and ``bias`` are applied, in that order, as PyTorch does.
``affine`` (BatchNorm folded to scale/shift), ``relu``, ``rprelu``, ``maxpool``
(2x2, floor), ``gap``, ``flatten`` (NHWC order, as the models' ``FlattenHWC``), ``residual_begin`` (push x) and
``residual_end`` (pop the pushed x, 2x2-average-pool it when ``stride`` is 2,
repeat its channels ``repeat`` times, add).

Two implementations of the same arithmetic. The **native** one (default where a
C compiler is found, see :mod:`._native`) runs binarized-input layers, the short
real stems, residual adds and per-channel ops through the C loops of
``xnor.c``, with a BatchNorm, ReLU or max-pool that directly follows a conv
fused into its loop; at batch 1 the NumPy path spends its time in dozens of
small array passes per layer, which is what the C loops remove (~5x). The
**NumPy** path above is the reference and the fallback. Both sum in the same
order and round at the same steps, so they give bit-identical logits (tested).
"""
from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..data.preprocess import Preprocess, resize_gray, to_model_array
from ..inference.decision import decide
from . import _native
from .packing import FORMAT, VERSION, PackedFormatError, read_packed, unpack_signs

_CHUNK_WORDS = 1 << 20  # XOR block size (8 MB of uint64) per popcount step
_PLANE_WORDS = 16  # rows up to this many words take the per-word route in _xnor_dot
_C_BLOCK = 32  # xnor.c's CB: output channels per block of its loops
_C_REAL_MAX_ROW = 64  # real convs with rows up to this long (the stems: 9, 27) take xnor.c's loop, longer BLAS

_POP8 = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1).astype(np.uint8)


def _popcount_table(words: np.ndarray) -> np.ndarray:
    """Bits set per uint64 by byte lookup: the fallback for NumPy < 2, which has no ``bitwise_count``."""
    return _POP8[np.ascontiguousarray(words).view(np.uint8)].reshape(*words.shape, 8).sum(axis=-1, dtype=np.uint8)


_popcount = getattr(np, "bitwise_count", _popcount_table)


def _to_words(packed: np.ndarray) -> np.ndarray:
    """``(R, nbytes)`` uint8 → ``(R, ceil(nbytes / 8))`` uint64, zero-filled."""
    extra = -packed.shape[1] % 8
    if extra:
        packed = np.pad(packed, ((0, 0), (0, extra)))
    return np.ascontiguousarray(packed).view("<u8")


def _xnor_dot(a: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """±1 dot products of packed rows: ``(M, nw)`` and ``(Cout, nw)`` words → ``(M, Cout)`` int32.

    With few words per row (early, narrow layers) one XOR + popcount pass per
    word over ``(rows, Cout)`` planes is ~4x faster than one 3-D temporary,
    whose reduction over a short last axis dominates; long rows (the dense
    layers) take the 3-D route.
    """
    m, nw = a.shape
    out = np.empty((m, w.shape[0]), dtype=np.int32)
    step = max(1, _CHUNK_WORDS // (w.shape[0] * (1 if nw <= _PLANE_WORDS else nw)))
    if nw <= _PLANE_WORDS:
        at, wt = np.ascontiguousarray(a.T), np.ascontiguousarray(w.T)
        for s in range(0, m, step):
            diff = np.zeros((min(step, m - s), w.shape[0]), dtype=np.int32)
            for j in range(nw):
                diff += _popcount(at[j, s:s + step, None] ^ wt[j])
            out[s:s + step] = k - 2 * diff
        return out
    for s in range(0, m, step):
        diff = _popcount(a[s:s + step, None, :] ^ w[None]).sum(axis=-1, dtype=np.int32)
        out[s:s + step] = k - 2 * diff
    return out


def _patches(x: np.ndarray, k: int, stride: int, pad: int, pad_value) -> np.ndarray:
    """NHWC → ``(N, Ho, Wo, k * k * C)`` patches in ``(kh, kw, c)`` order."""
    if pad:
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=pad_value)
    if k == 1 and stride == 1:
        return x
    _, h, w, _ = x.shape
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    cols = [x[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride] for i in range(k)
            for j in range(k)]
    return np.concatenate(cols, axis=-1)


def _vector(arrays: dict, key, n: int, name: str) -> np.ndarray | None:
    if key is None:
        return None
    a = arrays.get(key)
    if a is None or a.shape != (n,):
        raise PackedFormatError(f"{name}: array {key!r} missing or not of shape ({n},)")
    return a.astype(np.float32)


class _Conv:
    def __init__(self, spec: dict, arrays: dict):
        self.k, self.stride, self.pad = spec.get("kernel", 1), spec.get("stride", 1), spec.get("pad", 0)
        cin, self.cout = spec["in"], spec["out"]
        self.kk = self.k * self.k * cin
        self.binarize = bool(spec.get("binarize_input", False))
        w = arrays.get(spec["weight"])
        if spec.get("weight_bits"):
            if w is None or w.dtype != np.uint8 or w.shape != (self.cout, -(-self.kk // 8)):
                raise PackedFormatError(f"weight {spec['weight']!r}: missing or not packed bits of shape "
                                        f"({self.cout}, {-(-self.kk // 8)})")
            if self.binarize:  # re-packed per tap, so that patches can be cut from channel-packed pixels
                self.bits, self.cin = w, cin  # kept packed; use_native() lays them out for the C loop
                taps = np.unpackbits(w, axis=-1, count=self.kk, bitorder="little").reshape(self.cout, -1, cin)
                self.words = _to_words(np.packbits(taps, axis=-1, bitorder="little").reshape(self.cout, -1))
            else:
                self.matrix = np.ascontiguousarray(unpack_signs(w, self.kk).T)
        elif self.binarize:
            raise PackedFormatError(f"weight {spec['weight']!r}: a binarized input needs binary weights")
        else:
            if w is None or w.shape != (self.cout, self.kk):
                raise PackedFormatError(f"weight {spec['weight']!r}: missing or not of shape ({self.cout}, {self.kk})")
            self.matrix = np.ascontiguousarray(w.astype(np.float32).T)
        thr = _vector(arrays, spec.get("threshold"), cin, spec["weight"])
        self.threshold = np.zeros(cin, np.float32) if thr is None else thr
        self.scale = _vector(arrays, spec.get("scale"), self.cout, spec["weight"])
        self.bias = _vector(arrays, spec.get("bias"), self.cout, spec["weight"])
        self.native = None  # (C function, its layer arguments, row splitter) once use_native() is called
        self.pack = None  # xnor.c's bnn_pack, with self.native
        # what PackedModel fused into the C loop from the ops that follow: a BatchNorm (scale, shift), a ReLU, a
        # 2x2 max-pool; each saves a pass over the layer's output, the pool also its full-size temporary
        self.post, self.relu, self.pool = None, False, 1

    def _short_rows(self) -> bool:
        """A real conv whose rows (k * k * cin) are too short for a BLAS matrix product to pay: the stems."""
        return not self.binarize and self.kk <= _C_REAL_MAX_ROW and not isinstance(self, _Dense)

    def use_native(self, lib, split) -> bool:
        """Run this layer through ``xnor.c`` if it has a C loop for it; False where it has none (dense layers and
        real convs with long rows, where a BLAS matrix product is the faster loop).

        The filters are laid out as the C loops read them: transposed to ``(k, k, cin words, Cout)``, each tap's
        channels in whole uint64 words (binarized input) or float32 (real input), ``Cout`` zero-padded to a
        multiple of ``_C_BLOCK``. ``split(fn, rows, work)`` runs ``fn(r0, r1)`` over output-row ranges, on one or
        more threads (ctypes releases the GIL during the call).
        """
        coutp = -(-self.cout // _C_BLOCK) * _C_BLOCK
        self.pack = lib.bnn_pack
        if self.binarize:
            cin, cw = self.cin, -(-self.cin // 64)
            taps = np.unpackbits(self.bits, axis=-1, count=self.kk, bitorder="little").reshape(self.cout, -1, cin)
            taps = np.pad(taps, ((0, coutp - self.cout), (0, 0), (0, 64 * cw - cin)))
            words = np.ascontiguousarray(np.packbits(taps, axis=-1, bitorder="little")).view("<u8")
            self.native = (lib.bnn_conv, (cw, np.ascontiguousarray(words.reshape(coutp, -1).T), self.cout, coutp,
                                          self.k, self.stride), split)
        elif self._short_rows():
            filters = np.pad(self.matrix, ((0, 0), (0, coutp - self.cout)))
            self.native = (lib.bnn_conv_real, (self.kk // self.k ** 2, filters, self.cout, coutp, self.k,
                                               self.stride), split)
        return self.native is not None

    def _run_native(self, x: np.ndarray) -> np.ndarray:
        """Pack (binarized input, one padding) or zero-pad (real input), then one C loop per output row range."""
        fn, args, split = self.native
        x = np.ascontiguousarray(x, dtype=np.float32)
        n, h, w, c = x.shape
        hp, wp = h + 2 * self.pad, w + 2 * self.pad
        if self.binarize:
            xp = np.empty((n, hp, wp, args[0]), np.uint64)
            self.pack(x, n, h, w, c, self.threshold, self.pad, args[0], xp)
        else:
            xp = np.pad(x, ((0, 0), (self.pad, self.pad), (self.pad, self.pad), (0, 0))) if self.pad else x
        ho, wo = ((hp - self.k) // self.stride + 1) // self.pool, ((wp - self.k) // self.stride + 1) // self.pool
        out = np.empty((n, ho, wo, self.cout), np.float32)
        ptrs = [None if a is None else a.ctypes.data for a in (self.scale, self.bias, *(self.post or (None, None)))]
        extra = (self.kk,) if self.binarize else ()

        def rows(r0: int, r1: int) -> None:
            if fn(xp, hp, wp, *args, ho, wo, *extra, *ptrs, self.relu, self.pool, r0, r1, out):
                raise MemoryError("xnor.c: out of memory")
        split(rows, n * ho, n * ho * wo * self.cout * self.kk * self.pool ** 2)
        return out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.native is not None:
            return self._run_native(x)
        if self.binarize:
            bits = x >= self.threshold
            if self.pad:
                bits = np.pad(bits, ((0, 0), (self.pad, self.pad), (self.pad, self.pad), (0, 0)), constant_values=True)
            p = _patches(np.packbits(bits, axis=-1, bitorder="little"), self.k, self.stride, 0, 0)
            shape = p.shape[:3]
            y = _xnor_dot(_to_words(p.reshape(-1, p.shape[-1])), self.words, self.kk).astype(np.float32)
        else:
            p = _patches(x, self.k, self.stride, self.pad, 0.0)
            shape = p.shape[:3]
            p = p.reshape(-1, self.kk)
            if self._short_rows():  # summed tap by tap, as xnor.c's loop does, so both paths agree to the bit
                y = p[:, :1] * self.matrix[0]
                for t in range(1, self.kk):
                    y += p[:, t:t + 1] * self.matrix[t]
            else:
                y = p @ self.matrix
        if self.scale is not None:
            y *= self.scale
        if self.bias is not None:
            y += self.bias
        return y.reshape(*shape, self.cout)


class _Dense(_Conv):
    def __call__(self, x: np.ndarray) -> np.ndarray:
        return super().__call__(x[:, None, None, :])[:, 0, 0, :]


# Below this many output values x taps a layer runs on the calling thread: handing a small layer to a second
# thread costs more than it saves (cxr_bnn at batch 1: 2.8 ms on 2 threads splitting every layer, 1.1 ms with
# this cut-off, 1.05 ms with no split at all; at batch 32 the big layers still split: 1190 vs 1117 img/s).
_MIN_SPLIT_WORK = 20_000_000


def _splitter(threads: int):
    """``split(fn, rows, work)``: ``fn(r0, r1)`` over ``threads`` contiguous row ranges, the last on the calling
    thread; one range when ``work`` (output values x taps) is too small to share."""
    if threads <= 1:
        return lambda fn, rows, work: fn(0, rows)
    pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="cxrkit-bnn")

    def split(fn, rows: int, work: int) -> None:
        if work < _MIN_SPLIT_WORK:
            fn(0, rows)
            return
        bounds = np.linspace(0, rows, min(threads, rows) + 1).astype(int).tolist()
        jobs = [pool.submit(fn, a, b) for a, b in zip(bounds[:-2], bounds[1:-1])]
        fn(bounds[-2], bounds[-1])
        for job in jobs:
            job.result()
    return split


def _pool2(x: np.ndarray) -> np.ndarray:
    n, h, w, c = x.shape
    return x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)


class _Residual:
    def __init__(self, spec: dict):
        self.stride, self.repeat = spec.get("stride", 1), spec.get("repeat", 1)
        self.native = None  # xnor.c's bnn_residual, set by PackedModel

    def add(self, x: np.ndarray, saved: np.ndarray, inplace: bool) -> np.ndarray:
        """``x + shortcut(saved)``: ``saved`` 2x2-average-pooled when striding, its channels repeated by
        broadcasting (no tiled copy); into ``x`` itself when ``inplace``. One C loop with ``xnor.c``."""
        if self.native is not None:
            out = x if inplace else np.array(x, dtype=np.float32, order="C")
            saved = np.ascontiguousarray(saved, dtype=np.float32)
            n, h, w, _ = out.shape
            self.native(out, saved, n, h, w, saved.shape[3], saved.shape[1], saved.shape[2], self.stride, self.repeat)
            return out
        if self.stride == 2:
            q = _pool2(saved)
            saved = q[:, :, 0, :, 0] + q[:, :, 0, :, 1]  # summed in the order of (a + b + c + d) / 4
            saved += q[:, :, 1, :, 0]
            saved += q[:, :, 1, :, 1]
            saved /= np.float32(4)
        out = x if inplace else np.empty_like(x)
        n, h, w, c = saved.shape
        np.add(x.reshape(n, h, w, self.repeat, c), saved[:, :, :, None, :], out=out.reshape(n, h, w, self.repeat, c))
        return out


class _Elementwise:
    """A per-value op, ``fn(x, out)``; the engine passes ``out=x`` when no one else holds ``x``, which saves a
    full-size temporary and a pass over memory per op. ``params`` are the per-channel arrays that
    ``xnor.c``'s ``bnn_channel`` takes (``scale``, ``shift`` or ``shift_in``, ``slope``, ``shift_out``)."""

    def __init__(self, fn, kind: str, **params):
        self.fn, self.kind, self.params = fn, kind, params

    def use_native(self, lib) -> None:
        """Run through ``bnn_channel``: one pass in place (on a copy when ``x`` is not ours)."""
        p = {k: self.params.get(k) for k in ("scale", "shift", "shift_in", "slope", "shift_out")}
        ptrs = [None if a is None else a.ctypes.data for a in p.values()]

        def fn(x, out):
            y = np.array(x, dtype=np.float32, order="C") if out is None else out
            lib.bnn_channel(y, y.size // y.shape[-1], y.shape[-1], *ptrs)
            return y
        self.fn = fn


class _MaxPool:
    """2x2 max-pooling, stride 2, floor (a class, so that PackedModel can fuse it into the C conv before it)."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return _pool2(x).max(axis=(2, 4))


def _simple(spec: dict, arrays: dict):
    op = spec["op"]
    if op == "relu":
        return _Elementwise(lambda x, out: np.maximum(x, np.float32(0), out=out), op)
    if op == "maxpool":
        return _MaxPool()
    if op == "gap":
        return lambda x: x.mean(axis=(1, 2), dtype=np.float32)
    if op == "flatten":
        return lambda x: x.reshape(len(x), -1)
    if op not in ("affine", "rprelu"):
        raise PackedFormatError(f"unknown op {op!r}")
    n = spec["channels"]
    if op == "affine":
        scale, shift = (_vector(arrays, spec[k], n, op) for k in ("scale", "shift"))

        def affine(x, out):
            y = np.multiply(x, scale, out=out)
            return np.add(y, shift, out=y)
        return _Elementwise(affine, op, scale=scale, shift=shift)
    shift_in, slope, shift_out = (_vector(arrays, spec[k], n, op) for k in ("shift_in", "slope", "shift_out"))
    if shift_in is None:  # folded into the BatchNorm shift before it (format version 2); x - 0 is exact
        shift_in = np.zeros(n, np.float32)

    def rprelu(x, out):
        y = np.subtract(x, shift_in, out=out)
        np.multiply(y, slope, out=y, where=y < 0)
        return np.add(y, shift_out, out=y)
    return _Elementwise(rprelu, op, shift_in=shift_in, slope=slope, shift_out=shift_out)


def _probabilities(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``(N, 1)`` logits → sigmoid pair, ``(N, K)`` → softmax, of ``z / temperature``, as
    ``inference.bundle.probabilities``."""
    z = z.astype(np.float64) / temperature
    if z.shape[1] == 1:
        p = 0.5 * (1 + np.tanh(z[:, 0] / 2))  # the logistic function without overflow for huge logits
        return np.stack([1 - p, p], axis=1).astype(np.float32)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


class PackedModel:
    """A packed BNN loaded for inference; mirrors ``ModelBundle``'s arch, classes, preprocess and threshold.

    ``backend``: ``"auto"`` runs the binarized-input layers through the C kernels of ``xnor.c`` when a C
    compiler can build them (:mod:`._native`) and with NumPy otherwise; ``"numpy"`` or ``"native"`` force one
    (``"native"`` raises ``RuntimeError`` without a compiler). ``threads`` splits each C layer's output rows
    over that many threads (the NumPy path uses one).
    """

    def __init__(self, header: dict, arrays: dict[str, np.ndarray], source: str = "", backend: str = "auto",
                 threads: int = 1):
        if backend not in ("auto", "numpy", "native"):
            raise ValueError(f"backend must be auto, numpy or native, got {backend!r}")
        try:
            self.arch = header["arch"]
            self.classes = tuple(header["classes"])
            self.preprocess = Preprocess(**header["preprocess"])
            self.threshold = float(header.get("threshold", 0.5))
            self.temperature = float(header.get("temperature", 1.0))  # calibration, as ModelBundle's
            self.confidence_threshold = float(header.get("confidence_threshold", 0.0))
            self.info = header.get("info", {})
            self._ops = [self._build(spec, arrays) for spec in header["ops"]]
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, PackedFormatError):
                raise PackedFormatError(f"{source}: {exc}") from None
            raise PackedFormatError(f"{source}: malformed header ({exc.__class__.__name__}: {exc})") from None
        self.source = source
        lib = None if backend == "numpy" else _native.kernels()
        if backend == "native" and lib is None:
            raise RuntimeError("the native BNN kernels are unavailable (no C compiler, or CXRKIT_BNN_NATIVE=0)")
        self.backend = "native" if lib is not None else "numpy"
        # the binary-convolution loop in use, e.g. "AVX2 nibble lookup": what a benchmark row's speed depends on
        self.kernel = lib.bnn_kernel().decode() if lib is not None else "NumPy bitwise_count"
        if lib is not None:
            split, ops = _splitter(threads), []
            for op in self._ops:
                prev = ops[-1] if ops and isinstance(ops[-1], _Conv) and ops[-1].native is not None else None
                if prev is not None and prev.pool == 1 and not isinstance(prev, _Dense):  # fuse, in layer order
                    if isinstance(op, _Elementwise) and op.kind == "affine" and prev.post is None and not prev.relu:
                        prev.post = (op.params["scale"], op.params["shift"])
                        continue
                    if isinstance(op, _Elementwise) and op.kind == "relu" and not prev.relu:
                        prev.relu = True
                        continue
                    if isinstance(op, _MaxPool):
                        prev.pool = 2
                        continue
                if isinstance(op, _Conv):
                    op.use_native(lib, split)
                elif isinstance(op, _Elementwise) and op.kind != "relu":
                    op.use_native(lib)
                elif isinstance(op, tuple) and op[0] == "residual_end":
                    op[1].native = lib.bnn_residual
                ops.append(op)
            self._ops = ops

    @staticmethod
    def _build(spec: dict, arrays: dict):
        op = spec["op"]
        if op == "conv":
            return _Conv(spec, arrays)
        if op == "dense":
            return _Dense(spec, arrays)
        if op in ("residual_begin", "residual_end"):
            return (op, _Residual(spec))
        return _simple(spec, arrays)

    @property
    def is_binary(self) -> bool:
        return len(self.classes) == 2

    def metadata(self) -> dict:
        return {"format": FORMAT, "format_version": VERSION, "arch": self.arch, "classes": list(self.classes),
                "preprocess": self.preprocess.to_dict(), "threshold": self.threshold,
                "temperature": self.temperature, "confidence_threshold": self.confidence_threshold, "info": self.info}

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Preprocessed float32 ``(N, C, H, W)`` (as the PyTorch model takes it) → raw outputs ``(N, K)``."""
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32).transpose(0, 2, 3, 1))
        saved = []
        owned = False  # whether x is a temporary of this call that nothing else refers to
        for op in self._ops:
            if isinstance(op, tuple):
                kind, res = op
                if kind == "residual_begin":
                    saved.append(x)
                    owned = False
                else:
                    x, owned = res.add(x, saved.pop(), owned), True
            elif isinstance(op, _Elementwise):
                x, owned = op.fn(x, x if owned else None), True
            else:
                x, owned = op(x), True  # convs, pools and flatten (a view of its own temporary)
        return x

    def predict_resized(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """uint8 ``(N, S, S)`` images already at the model's size → ``(N, classes)`` probabilities.

        The same call as ``OnnxModel.predict_resized``, so the predictor and
        evaluator can take a packed model where they take a bundle.
        """
        images = np.asarray(images, dtype=np.uint8)
        out = [self.logits(to_model_array(images[i:i + batch_size], self.preprocess))
               for i in range(0, len(images), batch_size)]
        return _probabilities(np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32),
                              self.temperature)

    def predict_proba(self, images: np.ndarray | Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """uint8 grayscale images of any size, or preprocessed float NCHW arrays → ``(N, classes)`` probabilities."""
        pre = self.preprocess
        if isinstance(images, np.ndarray) and images.dtype.kind == "f":
            if images.ndim != 4 or images.shape[1] != pre.channels:
                raise ValueError(f"preprocessed input must be (N, {pre.channels}, H, W) float, got {images.shape}")
            out = [self.logits(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
            return _probabilities(np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32),
                              self.temperature)
        arrays = list(images) if not isinstance(images, np.ndarray) or images.ndim == 3 else [images]
        if any(a.dtype != np.uint8 or a.ndim != 2 for a in arrays):
            raise ValueError("images must be 2-D uint8 grayscale arrays (or preprocessed float NCHW arrays)")
        if not arrays:
            return np.zeros((0, len(self.classes)), np.float32)
        return self.predict_resized(np.stack([resize_gray(a, pre.size, pre.resize) for a in arrays]), batch_size)

    def predict(self, images: np.ndarray | Sequence[np.ndarray]) -> list[str]:
        """Class names; binary tasks compare P(classes[1]) with the stored threshold, as ``cxrkit predict``."""
        return decide(self, self.predict_proba(images))


def load_packed(path: str | Path, backend: str = "auto", threads: int = 1) -> PackedModel:
    """Read a file written by :func:`cxrkit.bnn.export_packed`; :class:`PackedFormatError` if unusable.

    ``backend`` and ``threads``: see :class:`PackedModel`.
    """
    header, arrays = read_packed(path)
    return PackedModel(header, arrays, str(path), backend, threads)
