"""Helpers for the serving tests: test images (JPEG, PNG, DICOM with patient tags) and a real server process."""
from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from conftest import sample_images

PATIENT_NAME, PATIENT_ID, BIRTH_DATE = "DOE^JANE^Q", "PID-8675309", "19700101"
PATIENT_STRINGS = ("DOE", "JANE", PATIENT_ID, BIRTH_DATE)
_INLINE_IMAGE = re.compile(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]*")


def without_inline_images(text: str) -> str:
    """``text`` with its base64 images (preview, heatmap) cut out: a 100 KB heatmap spells a three-letter name
    such as "DOE" by chance about one time in three, which says nothing about identifiers leaking."""
    return _INLINE_IMAGE.sub("data:image", text)


def film(cls: str = "PNEUMONIA", index: int = 0) -> np.ndarray:
    """A real film from the bundled sample test split, grayscale uint8."""
    with Image.open(sample_images("test", cls)[index]) as img:
        return np.asarray(img.convert("L"))


def encode(image: np.ndarray, fmt: str = "JPEG", side: int | None = None) -> bytes:
    img = Image.fromarray(image)
    if side:
        img = img.resize((side, side), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def dicom_bytes(pixels: np.ndarray | None, photometric: str = "MONOCHROME2", samples_per_pixel: int = 1,
                window: tuple[float, float] | None = None, transfer_syntax: str | None = None,
                claimed_shape: tuple[int, int] | None = None) -> bytes:
    """A DX DICOM file carrying patient identifiers (which the server must never show or log).

    ``claimed_shape``: Rows and Columns that the pixel data does not have (a header that promises a huge film).
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = FileDataset("test.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT_NAME, PATIENT_ID, BIRTH_DATE
    shape = (16, 16) if pixels is None else pixels.shape
    ds.Rows, ds.Columns = claimed_shape or shape[:2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel = samples_per_pixel
    if samples_per_pixel > 1:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if pixels is not None:
        ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    buf = io.BytesIO()
    try:
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    except TypeError:  # pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        pydicom.dcmwrite(buf, ds, write_like_original=False)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def cxrkit_server(log_path: Path, *args: str, timeout: float = 120.0):
    """``cxrkit serve`` in a child process on a free loopback port; yields its base URL, stops it after."""
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "cxrkit", "serve", "--host", "127.0.0.1", "--port", str(port),
                                 *args], stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                assert proc.poll() is None, f"cxrkit serve exited: {log_path.read_text()[-2000:]}"
                try:
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "cxrkit serve did not come up"
                time.sleep(0.25)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
