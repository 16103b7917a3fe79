"""The FastAPI application: one page, a JSON API and its OpenAPI docs.

Models are loaded (and warmed up) once, in :func:`create_app`, and shared by
all requests. Decoding, prediction and Grad-CAM run on a small thread pool of
their own, never on the event loop, so health checks and uploads keep flowing
while images are being scored; the pool's size bounds how many requests use
the CPU at once. Every refusal is a JSON 4xx naming the file and the reason;
an unexpected failure is a bare 500 without a stack trace (the tests fuzz the
API to show there is none).
"""
from __future__ import annotations

import asyncio
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .models import load_models
from .schemas import ErrorBody, Health, ModelsResponse, PredictResponse
from .screen import UnreadableUploads, screen
from .uploads import UploadError, read_uploads

log = logging.getLogger("cxrkit.serving")

STATIC = Path(str(resources.files("cxrkit.serving") / "static"))
MAX_FILES = 32
# The page only needs its own files and images drawn from data: URIs; nothing else may load or run.
PAGE_CSP = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"

_MULTIPART = {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["files"],
    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"},
                             "description": "JPEG, PNG or DICOM files"}}}}}}
_ERRORS = {code: {"model": ErrorBody, "description": text} for code, text in (
    (400, "no files, too many files, or a malformed multipart body"), (404, "unknown model"),
    (413, "the request is over the upload size limit"), (415, "not a multipart/form-data body"),
    (422, ("an upload is not a readable image (empty, not an image, truncated, over the pixel limit, DICOM "
           "without pixel data or with an unsupported photometric interpretation), or a bad query option")))}


def _error(status: int, detail: str, errors: list[dict] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "errors": errors or []}, status_code=status)


class _ContainErrors:
    """An unexpected error becomes a 500 here, logged by its type only; every answer says ``nosniff``.

    Starlette's own last-resort handler answers 500 too, but then re-raises to the
    ASGI server, which logs the message and traceback; either could quote an
    upload (a file name, a DICOM value), and logs must hold no patient data.
    ``nosniff`` keeps a browser from reading a JSON answer or a static file as
    anything but its declared type.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-content-type-options"]
                message = {**message, "headers": [*headers, (b"x-content-type-options", b"nosniff")]}
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            log.error("internal error: %s", type(exc).__name__)
            if not started:
                await _error(500, "internal server error")(scope, receive, send)


def _quiet_dicom_decoder() -> None:
    """Silence pydicom's log records and warnings: some quote element values, and those may be patient data."""
    logging.getLogger("pydicom").setLevel(logging.CRITICAL + 1)
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")


def default_workers() -> int:
    """One inference thread per core (at most 4), each running PyTorch on one thread (``server.py``).

    Measured back to back on the shared 2-core machine (benchmarks/README.md):
    two single-threaded workers matched or beat one worker with two PyTorch
    threads in every row (heatmap at concurrency 1: 63 vs 68 ms; 50 vs 43
    requests/s without heatmap at concurrency 8). And two OpenMP threads per
    forward pass are fragile on a busy machine: a batch-1 forward on the main
    thread took 250 ms instead of 11 ms while a training job held a core.
    """
    return max(1, min(4, os.cpu_count() or 1))


def create_app(model=None, max_upload_mb: float = 20.0, save_dir: str | Path | None = None,
               max_files: int = MAX_FILES, workers: int | None = None) -> FastAPI:
    """Build the app. ``model``: a spec for ``resolve_model`` (``None``: the default model), a loaded bundle,
    or a list of these (the first is the default). ``save_dir``: keep every upload there under a random name
    (nothing is written anywhere without it)."""
    if not max_upload_mb > 0:
        raise ValueError(f"--max-upload-mb must be positive, got {max_upload_mb}")
    if max_files < 1:
        raise ValueError(f"--max-files must be at least 1, got {max_files}")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    workers = workers or default_workers()
    _quiet_dicom_decoder()
    specs = list(model) if isinstance(model, (list, tuple)) else [model]
    served = {m.id: m for m in load_models(specs, workers)}
    default = next(iter(served))
    folder = Path(save_dir) if save_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    max_bytes = int(max_upload_mb * 2**20)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="cxrkit-infer")
    page = (STATIC / "index.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(_app):
        yield
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="cxrkit screening", version="1", lifespan=lifespan,
                  description="Chest X-ray classifier (research and teaching; **not a medical device**). Upload "
                              "JPEG, PNG or DICOM files; get the decision, class probabilities, UNCERTAIN when "
                              "the model abstains, and optionally a Grad-CAM overlay.")
    app.state.models, app.state.pool = served, pool
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(_ContainErrors)

    @app.exception_handler(UploadError)
    async def _upload_error(_request, exc: UploadError):
        where = f"{exc.file}: " if exc.file else ""
        return _error(exc.status, where + exc.reason, [{"file": exc.file, "reason": exc.reason}])

    @app.exception_handler(UnreadableUploads)
    async def _unreadable(_request, exc: UnreadableUploads):
        first = exc.errors[0]
        more = f" (and {len(exc.errors) - 1} more)" if len(exc.errors) > 1 else ""
        return _error(422, f"{first['file']}: {first['reason']}{more}", exc.errors)

    @app.exception_handler(RequestValidationError)
    async def _bad_option(_request, exc: RequestValidationError):
        errors = [{"file": None, "reason": f"{'.'.join(map(str, e['loc']))}: {e['msg']}"} for e in exc.errors()]
        return _error(422, "; ".join(e["reason"] for e in errors), errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request, exc: StarletteHTTPException):  # unknown path, wrong method
        return _error(exc.status_code, str(exc.detail))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff"})

    @app.get("/healthz", response_model=Health, summary="liveness: the server answers and its models are loaded")
    async def healthz() -> dict:
        return {"status": "ok", "models": list(served)}

    @app.get("/api/models", response_model=ModelsResponse, summary="the models served, with their model cards")
    async def models() -> dict:
        return {"default": default, "models": [m.card for m in served.values()], "max_upload_mb": max_upload_mb,
                "max_files": max_files}

    @app.post("/api/predict", response_model=PredictResponse, responses=_ERRORS,
              openapi_extra={"requestBody": _MULTIPART},
              summary="classify one or more uploaded chest X-rays (JPEG, PNG or DICOM)")
    async def predict(request: Request,
                      heatmap: bool = Query(False, description="add a Grad-CAM overlay (PyTorch models only)"),
                      preview: bool = Query(False, description="add the decoded film (DICOM: after windowing)"),
                      model: str | None = Query(None, max_length=200, description="a model id from /api/models")):
        chosen = served.get(model or default)
        if chosen is None:
            return _error(404, f"unknown model {model!r}; served: {', '.join(served)}",
                          [{"file": None, "reason": "unknown model"}])
        uploads = await read_uploads(request, max_bytes, max_files)
        work = partial(screen, chosen, uploads, heatmap=heatmap, preview=preview, save_dir=folder)
        results = await asyncio.get_running_loop().run_in_executor(pool, work)
        return {"model": chosen.id, "results": results}

    return app
