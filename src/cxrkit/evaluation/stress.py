"""Stress test: does a decision survive a change of the film's shape, exposure, tone or sharpness alone?

The Kermany films were squashed to square, so a wider original shows a
narrower chest, and in the training pool the PNEUMONIA originals are wider and
more tightly cropped than the NORMAL ones. A model can score 0.99 on validation
by reading that shape instead of the lungs, and then call most NORMAL films of
another acquisition PNEUMONIA. Validation cannot show it as it is; warping the
same validation films as differently shaped or cropped originals would look
does (docs/robustness.md). The score is the mean balanced accuracy over the
views, at the model's own threshold: a model that reads the lungs keeps it.

The exposure views ask the same of a film's global contrast, and the tone
views of its tone curve (dark greys lifted, as a veil over the lungs would):
the test split's NORMAL films that the shipped models call PNEUMONIA look
hazier than the training films, and both moved the binary network that does
not equalise its input on validation films (docs/robustness.md, sessions 20
and 26). The blur views ask it of sharpness: a Gaussian blur of sigma 2 pixels
made the default cxr_cnn, which equalises and so ignores exposure and tone,
call a third of its validation NORMAL films PNEUMONIA (session 26). The haze
views ask it of local contrast: a scatter veil that keeps every region's mean
grey and halves the detail above a scale of 8 or 16 pixels (the ribs against
the lungs) made it call 20 % and 53 % of them PNEUMONIA (item 37).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, recall_score, roc_auc_score

from ..inference.decision import decide_indices
from ..inference.predictor import predict_resized
from ..data.folder import DatasetError
from .evaluate import decode_split
from .geometry import GEOMETRY_VIEWS, View, warp  # noqa: F401  (View, warp: part of this module's API)
from .metrics import N_BOOTSTRAP, bootstrap_ci
from .recalibrate import carve_validation, validation_split_of


@dataclass(frozen=True)
class Exposure:
    """Every pixel pulled toward its film's mean grey by ``contrast`` (1 = unchanged): a washed-out exposure."""

    name: str
    contrast: float


@dataclass(frozen=True)
class Tone:
    """Every grey level ``v`` in [0, 1] mapped to ``v ** gamma``: ``gamma`` < 1 lifts the dark greys (the lungs)
    more than the bright ones (bone), so the film looks hazier while black and white stay where they are."""

    name: str
    gamma: float


@dataclass(frozen=True)
class Blur:
    """A Gaussian blur of ``sigma`` pixels at the model's input size: a softer detector or a film out of focus."""

    name: str
    sigma: float


@dataclass(frozen=True)
class Haze:
    """A scatter veil: the film becomes ``veil + keep * (film - veil)``, ``veil`` its Gaussian blur of ``sigma``
    pixels, so detail coarser than a few pixels loses ``1 - keep`` of its contrast and each region keeps its mean
    grey; equalising the film afterwards cannot undo it, as it can a global contrast change."""

    name: str
    sigma: float
    keep: float


EXPOSURE_VIEWS = (Exposure("washed out: contrast x0.8", 0.8), Exposure("washed out: contrast x0.65", 0.65))
TONE_VIEWS = (Tone("darks lifted: gamma 0.8", 0.8), Tone("darks lifted: gamma 0.65", 0.65))
BLUR_VIEWS = (Blur("softened: blur sigma 1 px", 1.0), Blur("softened: blur sigma 2 px", 2.0))
HAZE_VIEWS = (Haze("veiled: detail x0.5 above 8 px", 8.0, 0.5), Haze("veiled: detail x0.5 above 16 px", 16.0, 0.5))
STRESS_VIEW_SETS = {"geometry": GEOMETRY_VIEWS, "exposure": (GEOMETRY_VIEWS[0],) + EXPOSURE_VIEWS,
                    "tone": (GEOMETRY_VIEWS[0],) + TONE_VIEWS, "blur": (GEOMETRY_VIEWS[0],) + BLUR_VIEWS,
                    "haze": (GEOMETRY_VIEWS[0],) + HAZE_VIEWS}


def stress_views(spec: str) -> tuple:
    """``"geometry"`` (the default five views), ``"exposure"`` (as is and two washed-out ones), ``"tone"`` (as is
    and two with the darks lifted), ``"blur"`` (as is and two blurred), ``"haze"`` (as is and two veiled) or
    several, comma-separated: the union, the unwarped view first."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in STRESS_VIEW_SETS]
    if not names or unknown:
        raise ValueError(f"unknown stress views {', '.join(unknown) or repr(spec)} "
                         f"(one or more of: {', '.join(STRESS_VIEW_SETS)}, comma-separated)")
    return tuple(dict.fromkeys(v for n in names for v in STRESS_VIEW_SETS[n]))


def washed_out(images: torch.Tensor, contrast: float) -> torch.Tensor:
    """uint8 ``(N, S, S)`` films with every pixel pulled toward its film's mean by ``contrast`` (1 = unchanged),
    before the model's own preprocessing, so a model that equalises its input barely moves."""
    x = images.float()
    mean = x.mean(dim=(1, 2), keepdim=True)
    return (mean + contrast * (x - mean)).round().clamp(0, 255).to(torch.uint8)


def lifted_darks(images: torch.Tensor, gamma: float) -> torch.Tensor:
    """uint8 ``(N, S, S)`` films through the tone curve ``255 * (v / 255) ** gamma`` (1 = unchanged)."""
    curve = (255.0 * (torch.arange(256, dtype=torch.float64) / 255.0) ** gamma).round().to(torch.uint8)
    return curve[images.long()]


def blurred(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """uint8 ``(N, S, S)`` films through a Gaussian of ``sigma`` pixels (kernel +-3 sigma, edges reflected; on films
    too small for that, the widest kernel they can reflect)."""
    from torchvision.transforms.v2.functional import gaussian_blur

    half = min(int(3 * sigma + 0.5), min(images.shape[-2:]) - 1)  # reflection needs a kernel inside the film
    size = 2 * half + 1
    return gaussian_blur(images[:, None], [size, size], [sigma, sigma])[:, 0]


def veiled(images: torch.Tensor, sigma: float, keep: float) -> torch.Tensor:
    """uint8 ``(N, S, S)`` films under a scatter veil (:class:`Haze`): ``keep`` = 1 leaves them unchanged."""
    veil = blurred(images, sigma).float()
    return (veil + keep * (images.float() - veil)).round().clamp(0, 255).to(torch.uint8)


def apply_view(images: torch.Tensor, view) -> torch.Tensor:
    """``images`` as ``view`` (a geometric :class:`View`, an :class:`Exposure`, a :class:`Tone`, a :class:`Blur`
    or a :class:`Haze`) shows them."""
    if isinstance(view, Exposure):
        return washed_out(images, view.contrast)
    if isinstance(view, Tone):
        return lifted_darks(images, view.gamma)
    if isinstance(view, Blur):
        return blurred(images, view.sigma)
    if isinstance(view, Haze):
        return veiled(images, view.sigma, view.keep)
    return warp(images, view)


@dataclass(frozen=True)
class ViewResult:
    view: str
    balanced_accuracy: float
    recall: dict[str, float]  # per class: the share of its films still given their own label
    roc_auc: float  # binary: of the positive class; N classes: one-vs-rest macro


@dataclass(frozen=True)
class StressResult:
    model: str
    n: int
    threshold: float
    views: tuple[ViewResult, ...]

    @property
    def score(self) -> float:
        """Mean balanced accuracy over the views."""
        return float(np.mean([v.balanced_accuracy for v in self.views]))

    def to_dict(self) -> dict:
        return {"model": self.model, "n": self.n, "threshold": self.threshold, "score": self.score,
                "views": [asdict(v) for v in self.views]}


def _auc(labels: np.ndarray, probs: np.ndarray) -> float:
    if len(np.unique(labels)) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    return float(roc_auc_score(labels, probs, multi_class="ovr", average="macro", labels=range(probs.shape[1])))


def _stress(model, images: torch.Tensor, labels: np.ndarray, views, name: str) -> tuple[StressResult, np.ndarray]:
    """The result, and whether each film was decided right in each view: ``(views, films)`` booleans."""
    labels = np.asarray(labels)
    classes = list(model.classes)
    rows, right = [], []
    for view in views:
        probs = predict_resized(model, apply_view(images, view))
        pred = decide_indices(model, probs)
        recalls = recall_score(labels, pred, labels=range(len(classes)), average=None, zero_division=np.nan)
        rows.append(ViewResult(view.name, float(balanced_accuracy_score(labels, pred)),
                               {c: float(r) for c, r in zip(classes, recalls)}, _auc(labels, probs)))
        right.append(pred == labels)
    return StressResult(name, len(labels), float(model.threshold), tuple(rows)), np.array(right)


def stress_test(model, images: torch.Tensor, labels: np.ndarray, views=GEOMETRY_VIEWS,
                name: str = "") -> StressResult:
    """``model``: any cxrkit model (PyTorch bundle, ONNX, packed BNN); ``images`` uint8 at its input size."""
    return _stress(model, images, labels, views, name)[0]


@dataclass(frozen=True)
class StressComparison:
    """Two models' stress scores on the same films, and the paired bootstrap interval of their difference."""

    a: StressResult
    b: StressResult
    interval: tuple[float, float]  # 95% percentile interval of a.score - b.score over film resamples
    n_boot: int

    @property
    def difference(self) -> float:
        return self.a.score - self.b.score

    def to_dict(self) -> dict:
        return {"a": self.a.to_dict(), "b": self.b.to_dict(), "difference": self.difference,
                "interval": list(self.interval), "n_boot": self.n_boot}


def _score(right: np.ndarray, labels: np.ndarray) -> float:
    """Mean over views of the balanced accuracy, from ``(views, films)`` right/wrong flags."""
    return float(np.mean([right[:, labels == c].mean(axis=1) for c in np.unique(labels)], axis=0).mean())


def compare_stress(model_a, images_a: torch.Tensor, model_b, images_b: torch.Tensor, labels: np.ndarray,
                   views=GEOMETRY_VIEWS, n_boot: int = N_BOOTSTRAP, seed: int = 0,
                   names: tuple[str, str] = ("", "")) -> StressComparison:
    """Both models on the same films (each decoded at its own input size), and the difference of their scores
    with a paired percentile-bootstrap interval: every resample draws the same films for both.

    Why paired: two models' scores on the same 522 validation films share most of their noise (the hard films are
    hard for both), so the interval of the difference is much narrower than either score's own, and a rule can ask
    whether a challenger is better beyond that noise instead of comparing two point estimates (docs/robustness.md).
    Films are resampled one by one, as every other interval here."""
    labels = np.asarray(labels)
    a, right_a = _stress(model_a, images_a, labels, views, names[0])
    b, right_b = _stress(model_b, images_b, labels, views, names[1])
    diffs = bootstrap_ci(lambda i: {"d": _score(right_a[:, i], labels[i]) - _score(right_b[:, i], labels[i])},
                         len(labels), n_boot, seed)["d"] if n_boot else (np.nan, np.nan)
    return StressComparison(a, b, diffs, n_boot)


def stress_table(result: StressResult) -> str:
    """Markdown table, one row per view."""
    classes = list(result.views[0].recall)
    head = "| view | balanced accuracy | " + " | ".join(f"{c} kept" for c in classes) + " | ROC-AUC |"
    lines = [head, "|" + "---|" + "---:|" * (len(classes) + 2)]
    for v in result.views:
        lines.append(f"| {v.view} | {v.balanced_accuracy:.3f} | "
                     + " | ".join(f"{v.recall[c]:.3f}" for c in classes) + f" | {v.roc_auc:.3f} |")
    lines.append(f"| **score (mean balanced accuracy)** | **{result.score:.3f}** |" + " |" * (len(classes) + 1))
    return "\n".join(lines)


def _stress_films(model, data_dir, split: str, progress: bool):
    """The films a model is stressed on: its own validation split (``"val"``) or a split folder, decoded for it."""
    pre = model.preprocess
    if split == "val":
        fraction, seed = validation_split_of(model)
        data = carve_validation(data_dir, model.classes, pre, fraction, seed, progress)
    else:
        data, _ = decode_split(data_dir, model.classes, pre, split, progress)
    present = np.unique(data.labels.numpy())
    if len(present) < 2:  # the score is a balanced accuracy across the views: one class has nothing to balance
        raise DatasetError(f"{data_dir}: stress needs films of two or more classes; this split has only "
                           f"{model.classes[int(present[0])] if len(present) else 'none'}")
    return data


def _name(model) -> str:
    return str(getattr(model, "source", "") or "")


def stress_folder(model, data_dir, split: str = "val", progress: bool = False,
                  views=GEOMETRY_VIEWS) -> StressResult:
    """:func:`stress_test` on ``data_dir``: ``split="val"`` carves the validation split from its ``train/`` as the
    model's recipe did (never the test split); another name takes that split folder, or the whole folder when it
    has no split folders."""
    data = _stress_films(model, data_dir, split, progress)
    return stress_test(model, data.images, data.labels.numpy(), views=views, name=_name(model))


def compare_stress_folder(model_a, model_b, data_dir, split: str = "val", progress: bool = False,
                          views=GEOMETRY_VIEWS, n_boot: int = N_BOOTSTRAP) -> StressComparison:
    """:func:`compare_stress` on ``data_dir``'s films as :func:`stress_folder` chooses them; with ``split="val"``
    both models must have been validated on the same films (the same recipe fraction and seed)."""
    if tuple(model_a.classes) != tuple(model_b.classes):
        raise ValueError(f"the two models have different classes ({list(model_a.classes)} and "
                         f"{list(model_b.classes)}); a paired comparison needs the same ones")
    films_a = _stress_films(model_a, data_dir, split, progress)
    decoded_alike = ((model_a.preprocess.size, model_a.preprocess.resize)
                     == (model_b.preprocess.size, model_b.preprocess.resize))
    same_films = split != "val" or validation_split_of(model_a) == validation_split_of(model_b)
    # the films are decoded once when both models read them at one size (equalisation happens at prediction)
    films_b = films_a if decoded_alike and same_films else _stress_films(model_b, data_dir, split, progress)
    if [x.path for x in films_a.samples] != [x.path for x in films_b.samples]:
        raise DatasetError(f"{_name(model_a) or 'model'} and {_name(model_b) or 'the other model'} were validated on "
                           "different films (another validation seed or fraction); a paired comparison needs the "
                           "same ones: compare models trained with the same --seed, or use --split test")
    return compare_stress(model_a, films_a.images, model_b, films_b.images, films_a.labels.numpy(), views, n_boot,
                          names=(_name(model_a), _name(model_b)))


def comparison_table(result: StressComparison, label_a: str = "A", label_b: str = "B") -> str:
    """Markdown table: each view's balanced accuracy for both models and their difference, then the scores."""
    lines = [f"| view | {label_a} | {label_b} | {label_a} - {label_b} |", "|---|---:|---:|---:|"]
    for va, vb in zip(result.a.views, result.b.views):
        lines.append(f"| {va.view} | {va.balanced_accuracy:.3f} | {vb.balanced_accuracy:.3f} | "
                     f"{va.balanced_accuracy - vb.balanced_accuracy:+.3f} |")
    lo, hi = result.interval
    interval = f" (95% paired bootstrap {lo:+.3f} to {hi:+.3f})" if result.n_boot else ""
    lines.append(f"| **score** | **{result.a.score:.3f}** | **{result.b.score:.3f}** | **{result.difference:+.3f}**"
                 f"{interval} |")
    return "\n".join(lines)
