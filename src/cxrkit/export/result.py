"""What an export returns, and the one error type it raises."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class ExportError(ValueError):
    """An export that cannot be done or failed its check; one line for the user."""


@dataclass
class ExportResult:
    path: Path
    format: str
    size_bytes: int
    check: dict = field(default_factory=dict)  # agreement with the PyTorch model on real images

    def to_dict(self) -> dict:
        return {"path": str(self.path), "format": self.format, "size_bytes": self.size_bytes, "check": self.check}
