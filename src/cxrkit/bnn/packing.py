"""Sign bits: packing ±1 tensors 8 per byte, and the packed file (.npz) with its versioned header.

Bit convention: bit 1 means +1, bit 0 means -1, packed along the last axis
with ``bitorder="little"``; the last byte of a row is completed with 0 bits.
Two rows packed this way can be compared with XOR + popcount directly, because
the filler bits agree and so never count.

File layout (``numpy.savez_compressed``, read back with ``allow_pickle=False``):
``__header__``, a uint8 array holding UTF-8 JSON (``format``, ``version``,
``arch``, ``classes``, ``preprocess``, ``threshold``, ``ops``, ``info``,
``tensors``, ``reals_dtype``); ``bits``, every packed sign tensor concatenated
(uint8); and ``reals``, every real-valued tensor concatenated (float32, or
float16 when exported so), stored as byte planes: a ``(itemsize, n)`` uint8
array whose row ``i`` holds byte ``i`` (little-endian) of every value (HDF5's and Blosc's
"shuffle" filter). Why: the exponent bytes of trained weights repeat, and
side by side they deflate; interleaved they barely do. Lossless, and it cuts
the reals of ``cxr_bnn`` by a tenth. ``tensors`` maps the names the ops use to
``[blob, offset, shape]``.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

FORMAT = "cxrkit-bnn-packed"
# 2: an ``rprelu`` op's ``shift_in`` may be null (folded into the BatchNorm shift before it); 3: reals as byte planes
VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
HEADER_KEY = "__header__"


class PackedFormatError(ValueError):
    """A packed BNN file that cannot be read; the message is one line for the user."""


def pack_signs(values: np.ndarray) -> np.ndarray:
    """``(..., K)`` array of signs (>= 0 means +1) → ``(..., ceil(K / 8))`` uint8."""
    return np.packbits(np.asarray(values) >= 0, axis=-1, bitorder="little")


def unpack_signs(packed: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`pack_signs`: ``(..., ceil(K / 8))`` uint8 → ``(..., K)`` float32 of ±1."""
    bits = np.unpackbits(packed, axis=-1, count=k, bitorder="little")
    return bits.astype(np.float32) * 2 - 1


def write_packed(path: str | Path, header: dict, arrays: dict[str, np.ndarray], real_dtype: str = "float32") -> Path:
    """Write ``arrays`` into two blobs: uint8 ones into ``bits``, the rest into ``reals`` as ``real_dtype``.

    Two blobs instead of one zip member per tensor: a member costs ~250 bytes
    of zip and .npy headers, which for cxr_bnn's ~70 small tensors would be
    10 % of the file. The header's ``tensors`` table maps each name to
    ``[blob, offset, shape]``.
    """
    if real_dtype not in ("float32", "float16"):
        raise ValueError(f"real_dtype must be float32 or float16, got {real_dtype!r}")
    table, parts, sizes = {}, {"bits": [], "reals": []}, {"bits": 0, "reals": 0}
    for name, a in arrays.items():
        a = np.asarray(a)
        blob = "bits" if a.dtype == np.uint8 else "reals"
        table[name] = [blob, sizes[blob], list(a.shape)]
        parts[blob].append(a.ravel() if blob == "bits" else a.astype(real_dtype).ravel())
        sizes[blob] += a.size
    head = {"format": FORMAT, "version": VERSION, **header, "tensors": table, "reals_dtype": real_dtype}
    reals = np.concatenate(parts["reals"]) if parts["reals"] else np.zeros(0, real_dtype)
    blobs = {"bits": np.concatenate(parts["bits"]) if parts["bits"] else np.zeros(0, np.uint8),
             "reals": _to_byte_planes(reals)}
    path = Path(path)
    with path.open("wb") as f:  # a file object: numpy would otherwise append ".npz" to other names
        np.savez_compressed(f, **{HEADER_KEY: np.frombuffer(json.dumps(head).encode(), dtype=np.uint8)}, **blobs)
    return path


def _to_byte_planes(values: np.ndarray) -> np.ndarray:
    """Little-endian bytes whatever the machine, as .npy's own '<f4' header would have recorded."""
    values = values.astype(values.dtype.newbyteorder("<"))
    return np.ascontiguousarray(values.view(np.uint8).reshape(-1, values.itemsize).T)


def _from_byte_planes(planes: np.ndarray, dtype: str) -> np.ndarray | None:
    """Inverse of :func:`_to_byte_planes`; None when the planes do not fit ``dtype``."""
    if dtype not in ("float32", "float16") or planes.dtype != np.uint8 or planes.ndim != 2 \
            or planes.shape[0] != np.dtype(dtype).itemsize:
        return None
    return np.ascontiguousarray(planes.T).view(np.dtype(dtype).newbyteorder("<")).ravel()


MAX_UNPACKED_BYTES = 64 * 2**20  # seed_bnn, the largest, unpacks to ~1 MB; the shipped cxr_bnn to ~0.4 MB


def read_packed(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Header and arrays (reals as float32) of a packed file; :class:`PackedFormatError` for anything unreadable."""
    path = Path(path)
    if not path.is_file():
        raise PackedFormatError(f"{path}: no such packed model file")
    if not zipfile.is_zipfile(path):  # np.load would try it as a pickle and advise loading it "unsafely"
        raise PackedFormatError(f"{path}: not a packed BNN file (not an .npz archive)")
    try:  # sizes from the zip directory: np.load would inflate a zip bomb before anything could be checked
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise PackedFormatError(f"{path}: not a packed BNN file ({exc.__class__.__name__})") from None
    if unpacked > MAX_UNPACKED_BYTES:
        raise PackedFormatError(f"{path}: its arrays would unpack to {unpacked / 2**20:,.0f} MiB (a packed BNN is "
                                f"well under {MAX_UNPACKED_BYTES // 2**20} MiB)")
    try:
        with np.load(path, allow_pickle=False) as data:
            members = {name: data[name] for name in data.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as exc:
        raise PackedFormatError(f"{path}: not a packed BNN file ({exc.__class__.__name__}: "
                                f"{str(exc).splitlines()[0][:100] if str(exc) else 'unreadable'})") from None
    raw = members.get(HEADER_KEY)
    try:
        header = json.loads(raw.tobytes().decode()) if raw is not None and raw.dtype == np.uint8 else None
    except (UnicodeDecodeError, ValueError):
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise PackedFormatError(f"{path}: .npz file without a {FORMAT} header")
    if header.get("version") not in READABLE_VERSIONS:
        raise PackedFormatError(f"{path}: {FORMAT} version {header.get('version')!r} is not supported "
                                f"(this cxrkit reads versions {', '.join(map(str, READABLE_VERSIONS))})")
    blobs = {"bits": members.get("bits"), "reals": members.get("reals")}
    if header["version"] >= 3 and blobs["reals"] is not None:
        blobs["reals"] = _from_byte_planes(blobs["reals"], header.get("reals_dtype"))
    if blobs["bits"] is None or blobs["bits"].dtype != np.uint8 or blobs["reals"] is None \
            or blobs["reals"].dtype not in (np.float16, np.float32):
        raise PackedFormatError(f"{path}: bits or reals blob missing or of the wrong type")
    arrays = {}
    try:
        for name, (blob, offset, shape) in header.get("tensors", {}).items():
            src, n = blobs[blob], int(np.prod(shape))
            if offset < 0 or offset + n > src.size:
                raise PackedFormatError(f"{path}: tensor {name!r} lies outside the {blob} blob")
            a = src[offset:offset + n].reshape(shape)
            arrays[name] = a.astype(np.float32) if blob == "reals" else a
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, PackedFormatError):
            raise
        raise PackedFormatError(f"{path}: malformed tensor table ({exc.__class__.__name__}: {exc})") from None
    return header, arrays
