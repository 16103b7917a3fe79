"""Decode one chest X-ray file (JPEG, PNG or DICOM) into an 8-bit grayscale array.

Everything downstream (training cache, prediction, the web app) goes through
:func:`read_image`, so that a radiograph looks the same to a model whichever
door it came in by. Failures raise :class:`ImageReadError` with a one-line,
human-readable reason; callers report and skip instead of crashing mid-epoch.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".dcm", ".dicom"})

# Pillow's own decompression-bomb guard fires at ~89 Mpx; a chest film is < 20 Mpx.
MAX_PIXELS = 50_000_000
# A DICOM's decoded pixel data, all frames and samples: a 16-bit film of MAX_PIXELS. Counting pixels alone let a
# 4 MiB RLE upload of a 16-bit RGB film expand to ~1.75 GB in the decoder.
MAX_DICOM_BYTES = 2 * MAX_PIXELS
# Deflated Explicit VR Little Endian: pydicom inflates the whole dataset before any size can be checked, so a
# 400 KiB upload became 400 MiB in memory. No radiograph needs it; the file meta is read first to refuse it.
DEFLATED_TRANSFER_SYNTAX = "1.2.840.10008.1.2.1.99"
# Only the formats the docs promise: every other Pillow decoder (TIFF, GIF, PCX, ...) is attack surface nobody uses.
RASTER_FORMATS = ("JPEG", "PNG")
PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2", "RGB")

Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageReadError(ValueError):
    """A file that is not a readable image; the message is one line for the user."""


class MissingDecoderError(ImageReadError):
    """A readable format whose decoder is not installed: DICOM in a torch-free runtime installed without the
    ``dicom`` extra (pydicom is 14 MiB of the ~150 MiB budget, and JPEG/PNG users do not need it). Unlike a bad
    file, every such file fails the same way, so ``python -m cxrkit.runtime`` stops with this line."""


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _looks_like_dicom(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def read_image(source: str | Path | bytes, name: str | None = None) -> np.ndarray:
    """Return an ``(H, W)`` uint8 grayscale array from a path or raw bytes.

    DICOM is recognised by its magic bytes, not the file name, because
    uploads and PACS exports often carry no suffix at all.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "<upload>")
    if isinstance(source, bytes):
        data = source
    else:
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError:
            raise ImageReadError(f"{label}: file not found") from None
        except IsADirectoryError:
            raise ImageReadError(f"{label}: is a directory, not an image") from None
        except OSError as exc:
            raise ImageReadError(f"{label}: cannot read ({exc.strerror or exc})") from None
    if not data:
        raise ImageReadError(f"{label}: empty file")
    if _looks_like_dicom(data[:132]):
        return _read_dicom(data, label)
    return _read_raster(data, label)


def _read_raster(data: bytes, label: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data), formats=RASTER_FORMATS) as img:
            if img.width * img.height > MAX_PIXELS:
                raise ImageReadError(f"{label}: {img.width}x{img.height} exceeds the {MAX_PIXELS:,}-pixel limit")
            img.load()  # forces a full decode so truncated files fail here, not later
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                return _to_uint8(np.asarray(img, dtype=np.float64))
            return np.asarray(img.convert("L"), dtype=np.uint8)
    except ImageReadError:
        raise
    except Image.DecompressionBombError:
        raise ImageReadError(f"{label}: image exceeds the {MAX_PIXELS:,}-pixel limit") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{label}: not a JPEG, PNG or DICOM image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{label}: corrupt or truncated image ({exc})") from None


def _read_dicom(data: bytes, label: str) -> np.ndarray:
    """Apply the modality and VOI LUTs (or window), then invert MONOCHROME1.

    MONOCHROME1 stores bone as dark; inverting it makes every source look like
    the MONOCHROME2 / JPEG films the models were trained on.
    """
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:
        raise MissingDecoderError(f"{label}: reading DICOM needs pydicom, which this install lacks "
                                  "(pip install 'cxrkit[runtime,dicom]')") from None
    try:
        fp = io.BytesIO(data)  # the file meta alone (pydicom's public reader takes a path, not bytes; tests
        pydicom.filereader.read_preamble(fp, False)  # read DICOM through here, so an API change shows in CI)
        syntax = str(pydicom.filereader._read_file_meta_info(fp).get("TransferSyntaxUID", ""))
        if syntax == DEFLATED_TRANSFER_SYNTAX:
            raise ImageReadError(f"{label}: deflated DICOM transfer syntax is not accepted")
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except ImageReadError:
        raise
    except Exception as exc:  # pydicom raises many types for malformed headers
        raise ImageReadError(f"{label}: unreadable DICOM ({type(exc).__name__})") from None
    if "PixelData" not in ds:
        raise ImageReadError(f"{label}: DICOM has no pixel data")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric not in PHOTOMETRIC:  # quoted only if it is a DICOM code string: the file's text could be anything
        shown = photometric if re.fullmatch(r"[A-Z0-9_ ]{1,16}", photometric) else "(not a DICOM code string)"
        raise ImageReadError(f"{label}: unsupported DICOM photometric interpretation {shown}")
    try:  # checked before decoding: RLE or JPEG pixel data of a small upload can expand to gigabytes
        pixels = int(ds.get("Rows") or 0) * int(ds.get("Columns") or 0) * int(ds.get("NumberOfFrames") or 1)
        decoded = pixels * int(ds.get("SamplesPerPixel") or 1) * -(-int(ds.get("BitsAllocated") or 16) // 8)
    except (TypeError, ValueError):
        raise ImageReadError(f"{label}: unreadable DICOM (bad image size)") from None
    if pixels > MAX_PIXELS:
        raise ImageReadError(f"{label}: image exceeds the {MAX_PIXELS:,}-pixel limit")
    if decoded > MAX_DICOM_BYTES:
        raise ImageReadError(f"{label}: decoded pixel data would exceed the {MAX_DICOM_BYTES / 1e6:g} MB limit")
    try:  # malformed rescale or window values fail in the LUTs: also the file's fault, not ours
        arr = ds.pixel_array
        if photometric == "RGB":
            arr = np.asarray(arr, dtype=np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        else:
            if arr.ndim == 3:  # multi-frame: a radiograph is one frame, take the first
                arr = arr[0]
            arr = apply_voi_lut(apply_modality_lut(arr, ds), ds)
    except Exception as exc:
        raise ImageReadError(f"{label}: cannot decode DICOM pixels ({type(exc).__name__})") from None
    out = _to_uint8(np.asarray(arr, dtype=np.float64))
    if photometric == "MONOCHROME1":
        out = 255 - out
    return out


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(arr)), float(np.max(arr))
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)
