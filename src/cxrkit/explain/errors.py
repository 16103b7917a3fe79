"""The evaluation report's explanations: the most confident mistakes, with their heatmaps.

A model's most confident errors are where a heatmap is most worth a look
(a shortcut such as a marker or the film's border shows up there first). For
each (true class, predicted class) pair of wrong decisions — false positives
and false negatives for a binary task — the ``k`` most confident ones are
explained for the class the model predicted.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.io import ImageReadError, read_image
from ..inference.bundle import ModelBundle
from ..inference.decision import decide
from .cam import explain_image
from .render import overlay


def confident_errors(bundle: ModelBundle, probabilities: np.ndarray, labels: np.ndarray,
                     k: int = 3) -> dict[tuple[str, str], list[int]]:
    """``{(true, predicted): [indices, most confident first]}`` for every pair with at least one error."""
    predicted = decide(bundle, probabilities)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, (y, p) in enumerate(zip(labels, predicted)):
        true = bundle.classes[int(y)]
        if true != p:
            groups.setdefault((true, p), []).append(i)
    col = {c: j for j, c in enumerate(bundle.classes)}
    return {pair: sorted(idx, key=lambda i: -probabilities[i, col[pair[1]]])[:k] for pair, idx in sorted(groups.items())}


def _pair_title(bundle: ModelBundle, true: str, predicted: str) -> str:
    if bundle.is_binary:
        kind = "false positives" if predicted == bundle.classes[1] else "false negatives"
        return f"Most confident {kind} (true {true}, predicted {predicted})"
    return f"Most confident errors: true {true}, predicted {predicted}"


def errors_section(bundle: ModelBundle, probabilities: np.ndarray, labels: np.ndarray, paths: Sequence[str],
                   out_dir: str | Path, k: int = 3, names: Sequence[str] | None = None) -> str:
    """Markdown for ``report.md``; overlays go to ``out_dir/explanations/`` (links relative to ``out_dir``).

    ``names``: what the report calls each film (default: its file name), e.g. pseudonyms."""
    if not isinstance(bundle, ModelBundle):
        return "## Explanations\n\nNot available for exported models (ONNX or packed BNN: no gradients); evaluate the " \
               ".safetensors model to get them.\n"
    lines = ["## Explanations", "",
             "Grad-CAM heatmaps (docs/explain.md) of the most confident wrong decisions, for the predicted class: "
             "where the model found its evidence.", ""]
    groups = confident_errors(bundle, probabilities, labels, k)
    if not groups:
        return "\n".join(lines + ["No wrong decisions on this set.", ""])
    folder = Path(out_dir) / "explanations"
    folder.mkdir(parents=True, exist_ok=True)
    col = {c: j for j, c in enumerate(bundle.classes)}
    for (true, predicted), indices in groups.items():
        lines += [f"### {_pair_title(bundle, true, predicted)}", ""]
        for i in indices:
            path = Path(paths[i])
            name = Path(names[i]).name if names is not None else path.name
            try:
                img = read_image(path)
            except ImageReadError:  # changed on disk since it was scored
                continue
            e = explain_image(bundle, img, target=predicted)
            png = folder / f"{true}_as_{predicted}_{i:05d}_{Path(name).stem}.png"
            overlay(img, e.heatmap).save(png)
            lines.append(f"![{name}](explanations/{png.name}) `{name}`: "
                         f"P({predicted}) = {probabilities[i, col[predicted]]:.3f}")
            lines.append("")
    return "\n".join(lines)
