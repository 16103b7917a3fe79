"""One API request's work, run on a worker thread: decode, predict, explain, draw.

Everything here is synchronous and CPU-bound; ``app.py`` runs it off the
event loop. Decisions and the UNCERTAIN flag come from the predictor
(:mod:`cxrkit.inference.predictor`), exactly as ``cxrkit predict`` makes them;
nothing is recomputed here.
"""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

from ..data.io import MAX_PIXELS, ImageReadError, read_image
from ..inference.decision import decide, uncertain_mask
from ..inference.files import Prediction
from .images import display_image, overlay_uri, preview_uri
from .models import ServedModel, probabilities
from .uploads import Upload


class UnreadableUploads(Exception):
    """Some uploads are not images the server can read; ``errors`` has one ``{file, reason}`` per upload."""

    def __init__(self, errors: list[dict]):
        super().__init__(f"{len(errors)} unreadable upload(s)")
        self.errors = errors


def _suffix(data: bytes) -> str:
    """File suffix from the content (never from the client's name)."""
    if data[128:132] == b"DICM":
        return ".dcm"
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    return ".bin"


def save_uploads(uploads: Sequence[Upload], folder: Path) -> None:
    """``--save-dir``: each upload under a random name, so no client name ever reaches the file system."""
    for u in uploads:
        (folder / f"{uuid.uuid4().hex}{_suffix(u.data)}").write_bytes(u.data)


def _reason(exc: ImageReadError, name: str) -> str:
    msg = str(exc)
    return msg[len(name) + 2:] if msg.startswith(f"{name}: ") else msg


def decode(uploads: Sequence[Upload], max_pixels: int = MAX_PIXELS) -> list:
    """Grayscale arrays of all uploads, or :class:`UnreadableUploads` listing every one that failed.

    ``max_pixels`` bounds the request as a whole, not only each image: 32
    small PNGs of 7,000 x 7,000 zeros would otherwise decode to 1.5 GB.
    """
    images, errors, total = [], [], 0
    for u in uploads:
        try:
            image = read_image(u.data, name=u.name)
        except ImageReadError as exc:
            errors.append({"file": u.name, "reason": _reason(exc, u.name)})
            continue
        except Exception as exc:  # noqa: BLE001 - a hostile file may break a decoder in any way; still its fault
            errors.append({"file": u.name, "reason": f"cannot decode ({type(exc).__name__})"})
            continue
        total += image.size
        if total > max_pixels:
            errors.append({"file": u.name, "reason": f"the images of this request exceed {max_pixels:,} pixels "
                                                     f"in total; send fewer at a time"})
            break
        images.append(image)
    if errors:
        raise UnreadableUploads(errors)
    return images


def screen(model: ServedModel, uploads: Sequence[Upload], heatmap: bool = False, preview: bool = False,
           save_dir: Path | None = None) -> list[dict]:
    """One result per upload, in order; :class:`UnreadableUploads` if any upload cannot be decoded."""
    if save_dir is not None:
        save_uploads(uploads, save_dir)
    images = decode(uploads)
    bundle = model.bundle
    probs = probabilities(bundle, images)
    results = []
    for u, image, row, label, unsure in zip(uploads, images, probs, decide(bundle, probs),
                                            uncertain_mask(bundle, probs)):
        pred = Prediction(u.name, label, {c: round(float(v), 6) for c, v in zip(bundle.classes, row)}, bool(unsure))
        result = {"file": u.name, **{k: v for k, v in pred.to_dict().items() if k != "path"},
                  "width": int(image.shape[1]), "height": int(image.shape[0])}
        shown = display_image(image) if (preview or heatmap) else None
        if preview:
            result["preview"] = preview_uri(shown)
        if heatmap:
            if model.explainers is None:
                result["heatmap"], result["heatmap_note"] = None, model.card["heatmap_note"]
            else:
                # explained at display size: same decision (made above on the full film), and the map comes
                # back in the frame it is drawn in, instead of being stretched to the film and shrunk again
                result["heatmap"] = overlay_uri(shown, model.explain(shown, label))
        results.append(result)
    return results
