"""Read a multipart upload into memory, enforcing the limits while the bytes arrive.

Starlette's own form parser spools every file over 1 MB to a temporary file on
disk and only lets the caller look at sizes after the whole body has been read.
An X-ray upload may be a DICOM with patient data in it, so this parser keeps
the parts in memory, never on disk, and stops reading as soon as the request
grows past the size limit (413) or brings one file too many (400), naming the
file it was receiving.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request


@dataclass
class Upload:
    name: str  # the client's file name, cleaned for display; never used as a path
    data: bytes


class UploadError(Exception):
    """A request the server refuses; ``status`` is the HTTP 4xx code, ``file`` the upload it is about."""

    def __init__(self, status: int, reason: str, file: str | None = None):
        super().__init__(reason)
        self.status, self.reason, self.file = status, reason, file


def display_name(raw: str, index: int) -> str:
    """The last path component, without control or format characters (a right-to-left override can disguise
    ``gpj.exe`` as ``exe.jpg``), at most 120 characters; ``file N`` if nothing is left."""
    last = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in last if unicodedata.category(c) not in ("Cc", "Cf")).strip()
    return name[:120] or f"file {index}"


@dataclass
class _Collector:
    """python-multipart callbacks: one :class:`Upload` per part that carries a file."""

    max_files: int
    files: list[Upload] = field(default_factory=list)
    current: str | None = None  # name of the file being received (for error messages)
    too_many: str | None = None  # the first file over the count limit
    _header_field: bytes = b""
    _header_value: bytes = b""
    _disposition: bytes = b""
    _chunks: list[bytes] | None = None

    def callbacks(self) -> dict:
        return {"on_part_begin": self._part_begin, "on_header_field": self._header_field_data,
                "on_header_value": self._header_value_data, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
                "on_part_end": self._part_end}

    def _part_begin(self) -> None:
        self._disposition, self._chunks, self.current = b"", None, None

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_field.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_field, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._disposition)
        filename = params.get(b"filename")
        if filename is None and params.get(b"name") != b"files":
            return  # a plain form field: ignored (its bytes still count towards the size limit)
        index = len(self.files) + 1
        self.current = display_name((filename or b"").decode("utf-8", "replace"), index)
        if index > self.max_files:
            self.too_many = self.too_many or self.current
            return
        self._chunks = []

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._chunks is not None:
            self._chunks.append(data[start:end])

    def _part_end(self) -> None:
        if self._chunks is not None and self.current is not None:
            self.files.append(Upload(self.current, b"".join(self._chunks)))
        self._chunks = None


async def read_uploads(request: Request, max_bytes: int, max_files: int) -> list[Upload]:
    """The request's files, in order; :class:`UploadError` for anything the server will not take."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data":
        raise UploadError(415, "expected a multipart/form-data body with one or more 'files' parts")
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadError(400, "multipart body without a boundary")
    collector = _Collector(max_files)
    received = 0
    limit = f"the {max_bytes / 2**20:g} MB upload limit"
    try:
        parser = MultipartParser(boundary, collector.callbacks())  # refuses a boundary over 256 bytes
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:  # parse up to the limit first, to name the file that crossed it
                parser.write(chunk[:len(chunk) - (received - max_bytes)])
                raise UploadError(413, f"request exceeds {limit}", collector.current)
            parser.write(chunk)
            if collector.too_many:
                raise UploadError(400, f"more than {max_files} files in one request", collector.too_many)
        parser.finalize()
    except FormParserError as exc:
        raise UploadError(400, f"malformed multipart body ({exc})", collector.current) from None
    except ClientDisconnect:
        raise UploadError(400, "the client disconnected during the upload", collector.current) from None
    if not collector.files:
        raise UploadError(400, "no files in the request (send them as multipart 'files' parts)")
    return collector.files
