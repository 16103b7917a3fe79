"""Explain many files: one overlay PNG each and an HTML gallery sorted by confidence.

The gallery is a static page with relative links, so the output folder can be
zipped, mailed or opened from disk. The true label is the parent folder's
name when it is one of the model's classes (the ``ROOT/CLASS/*`` layout).
"""
from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from .. import jsonio
from ..data.io import ImageReadError, read_image
from ..data.pseudonyms import film_name
from ..inference.bundle import ModelBundle
from .cam import GRADIENT_METHODS, explain_image, explainer_copies
from .render import overlay


def explain_files(bundle: ModelBundle, paths: Sequence[str | Path], out_dir: str | Path, method: str = "gradcam",
                  target: str | None = None, progress: bool = False,
                  hide_names: bool = False) -> tuple[list[dict], list[str]]:
    """Write ``OUT/NNNN_NAME.png`` overlays, ``OUT/index.html`` and ``OUT/explanations.json``.

    Returns one record per readable file and one error line per unreadable one. ``hide_names``: films are
    named by pseudonym (:mod:`cxrkit.data.pseudonyms`) in all of them, overlay file names included.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _remove_previous_overlays(out)
    records, errors = [], []
    if method in GRADIENT_METHODS and len(paths) > 1:  # a copy that stops the backward pays for itself
        bundle = explainer_copies(bundle)[0]
    for i, p in enumerate(tqdm(paths, disable=not progress, desc="explain", unit="image")):
        p = Path(p)
        try:
            data = p.read_bytes()
        except OSError:
            data = b""  # read_image(p) below says why, in one line
        name = film_name(p, data, hide_names)
        try:
            img = read_image(data or p, name=name)
        except ImageReadError as exc:
            errors.append(str(exc))
            continue
        e = explain_image(bundle, img, target=target, method=method)
        png = out / f"{i:04d}_{Path(name).stem}.png"
        overlay(img, e.heatmap).save(png)
        truth = p.parent.name if p.parent.name in bundle.classes else None
        records.append({"path": name, "overlay": str(png), "label": e.label, "explained": e.explained,
                        "true_label": truth, "probabilities": {c: round(v, 6) for c, v in e.probabilities.items()},
                        "confidence": round(e.probabilities[e.label], 6), "method": method, "layer": e.layer})
    records.sort(key=lambda r: -r["confidence"])
    jsonio.write(out / "explanations.json", records)
    (out / "index.html").write_text(_gallery_html(records, bundle, method))
    return records, errors


def _remove_previous_overlays(out: Path) -> None:
    """A reused folder would otherwise keep the last run's overlays beside a gallery that no longer shows them.

    Only PNGs that the previous ``explanations.json`` lists directly inside ``out`` go: never anything else.
    """
    try:
        previous = json.loads((out / "explanations.json").read_text())
    except (OSError, ValueError):
        return
    for record in previous if isinstance(previous, list) else []:
        png = Path(str(record.get("overlay", ""))) if isinstance(record, dict) else Path()
        if png.suffix == ".png" and png.parent.resolve() == out.resolve():
            png.unlink(missing_ok=True)


def _gallery_html(records: list[dict], bundle: ModelBundle, method: str) -> str:
    cards = []
    for r in records:
        wrong = r["true_label"] is not None and r["true_label"] != r["label"]
        truth = f"true {html.escape(r['true_label'])}" if r["true_label"] else "true label unknown"
        cards.append(
            f'<figure class="{"wrong" if wrong else ""}"><img src="{html.escape(Path(r["overlay"]).name)}" '
            f'loading="lazy"><figcaption><b>{html.escape(r["label"])}</b> {r["confidence"]:.3f} · {truth}'
            f'<br><small>{html.escape(Path(r["path"]).name)}</small></figcaption></figure>')
    return ("<!doctype html><meta charset=utf-8><title>cxrkit explanations</title><style>"
            "body{font-family:sans-serif}figure{display:inline-block;margin:6px;width:240px;vertical-align:top}"
            "img{width:240px}.wrong figcaption{color:#b00}</style>"
            f"<h1>{html.escape(method)} · {html.escape(bundle.arch)} ({html.escape(bundle.source)})</h1>"
            f"<p>{len(records)} images, most confident first; red: prediction differs from the folder label. "
            f"Heat shows where evidence for the explained class lies; no heat means none was found.</p>"
            + "".join(cards))
