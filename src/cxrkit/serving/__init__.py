"""The screening web app and JSON API (``cxrkit serve``): FastAPI + uvicorn, one static page; docs/serve.md."""
from .app import create_app

__all__ = ["create_app"]
