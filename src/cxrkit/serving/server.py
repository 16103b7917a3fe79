"""``cxrkit serve``: build the app and run it under uvicorn.

PyTorch's intra-op threads are divided between the inference threads
(cores // workers each), so concurrent requests do not oversubscribe the CPU.
"""
from __future__ import annotations

import os
import socket
import sys

from .app import create_app, default_workers

MAX_OPEN_REQUESTS = 64


def serve(models=None, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 20.0,
          save_dir: str | None = None, max_files: int = 32, workers: int | None = None) -> None:
    import uvicorn

    _check_can_listen(host, port)  # before the models load, not after
    app = create_app(models or None, max_upload_mb=max_upload_mb, save_dir=save_dir, max_files=max_files,
                     workers=workers)
    if "torch" in sys.modules:  # a PyTorch model is served; exported ones alone never import it
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, workers or default_workers())))
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"cxrkit serve: listening on {host}: anyone who can reach this machine can upload images",
              file=sys.stderr)
    # each open request may hold up to max_upload_mb in memory while it waits for an inference thread: past this
    # many, uvicorn answers 503 at once instead of letting the queue (and the memory) grow without bound
    uvicorn.run(app, host=host, port=port, log_level="info", limit_concurrency=MAX_OPEN_REQUESTS)


def _check_can_listen(host: str, port: int) -> None:
    """A port another program holds (or a host this machine does not have) as one line, not uvicorn's log."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
