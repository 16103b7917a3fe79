"""Train a recipe on a folder dataset into a self-describing run directory.

The loop works on the decoded uint8 cache (see :mod:`cxrkit.data.cache`) with
batched augmentation, so a 2-core CPU spends its time in the model, not in JPEG
decoding. Every epoch ends with an atomic checkpoint that holds model,
optimizer, schedule, RNG states and history: ``resume=True`` after a kill
continues at the next epoch and reproduces the uninterrupted run exactly.
"""
from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from ..data.augment import augment_batch, mix_pairs
from ..data.cache import DecodedSet, decode_samples
from ..data.exclusions import drop_listed
from ..data.folder import DatasetError, index_folder
from ..data.preprocess import Preprocess, to_model_input
from ..data.splits import grouped_split
from ..evaluation.calibration import calibrate
from ..evaluation.geometry import GEOMETRY_RULE, calibrate_across_views
from ..evaluation.metrics import choose_threshold, evaluate_probabilities
from ..inference.bundle import ModelBundle, save_bundle
from ..inference.predictor import predict_resized, use_precision
from ..machine import native_bf16
from ..models import create_model, model_info
from ..recipes import Recipe
from . import distributed, finetune, rundir
from .optim import make_optimizer


@dataclass
class TrainResult:
    run_dir: Path
    bundle: ModelBundle
    history: list[dict]
    val_metrics: dict


def _preprocess_for(recipe: Recipe) -> Preprocess:
    base = model_info(recipe.model).preprocess
    return Preprocess(size=recipe.image_size, resize=recipe.resize, channels=base.channels,
                      mean=base.mean, std=base.std, equalize=recipe.equalize,
                      clahe=recipe.clahe)


def resolve_precision(precision: str) -> str:
    """``auto`` is bf16 autocast where the CPU multiplies bf16 natively (AVX512-BF16 or AMX): seed_cnn trains
    1.4x faster with the same test accuracy there (benchmarks/README.md); elsewhere bf16 is emulated, so fp32."""
    if precision == "auto":
        return "bf16" if native_bf16() else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r} (auto | fp32 | bf16)")
    return precision


def _class_shares(labels: torch.Tensor, classes) -> dict[str, float]:
    counts = torch.bincount(labels, minlength=len(classes)).tolist()
    return {c: round(n / max(1, sum(counts)), 6) for c, n in zip(classes, counts)}


def _class_weights(labels: torch.Tensor, k: int, mode: str) -> torch.Tensor:
    if mode == "none":
        return torch.ones(k)
    if mode == "balanced":
        counts = torch.bincount(labels, minlength=k).float().clamp(min=1)
        return counts.sum() / (k * counts)
    raise ValueError(f"unknown class_weighting {mode!r} (none | balanced)")


def _loss(logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, smoothing: float,
          denominator: torch.Tensor | None = None, teacher: torch.Tensor | None = None,
          alpha: float = 0.0) -> torch.Tensor:
    """Weighted BCE (one logit) or cross-entropy, averaged so class weights keep the loss scale.

    ``denominator`` replaces the batch's own weight sum: data-parallel processes each pass the global batch's
    sum divided by their number, so the gradients they average are the single-process ones. ``teacher``
    ``(B, C)`` probabilities are mixed into the target with weight ``alpha`` (knowledge distillation)."""
    w = weights[y]
    k = max(2, logits.shape[1])
    target = F.one_hot(y, k).float() * (1 - smoothing) + smoothing / k
    if teacher is not None and alpha > 0:
        target = (1 - alpha) * target + alpha * teacher.float()
    if logits.shape[1] == 1:
        per = F.binary_cross_entropy_with_logits(logits[:, 0].float(), target[:, 1], reduction="none")
    else:
        per = F.cross_entropy(logits.float(), target, reduction="none")
    return (per * w).sum() / (w.sum() if denominator is None else denominator)


def _batch_loss(logits: torch.Tensor, y_all: torch.Tensor, idx: torch.Tensor, recipe: Recipe, weights: torch.Tensor,
                teacher_probs: torch.Tensor | None, place: distributed.Placement) -> torch.Tensor:
    """:func:`_loss` of this process's slice of a global batch with labels ``y_all`` (films ``idx`` of the
    training set, for the teacher's probabilities), normalised by the global batch's class weights."""
    soft = distributed.my_slice(teacher_probs[idx].to(place.device), place) if teacher_probs is not None else None
    return _loss(logits, distributed.my_slice(y_all, place), weights, recipe.label_smoothing,
                 weights[y_all].sum() / place.world, soft, recipe.distill_weight)


def _optimizer(recipe: Recipe, model: nn.Module) -> torch.optim.Optimizer:
    """Fused (single-kernel) optimizers measured ~8% faster training of seed_cnn on 2 CPU cores; they round
    differently from the per-tensor loop, so the choice is part of the recipe (reruns must match).
    Adam/AdamW on the CPU is :class:`~cxrkit.training.optim.LeanAdam`: torch.optim's results, bit for bit,
    without the ``torch._dynamo`` import that cost 136-151 MB of peak RSS."""
    return make_optimizer(recipe.optimizer, finetune.param_groups(model, recipe), recipe.lr, recipe.weight_decay,
                          recipe.fused_optimizer)


def _schedule(recipe: Recipe, opt: torch.optim.Optimizer, steps_per_epoch: int):
    total = max(1, recipe.epochs * steps_per_epoch)
    if recipe.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    if recipe.schedule == "onecycle":
        if total < 8:  # OneCycleLR divides by its warm-up length, which is zero for a handful of steps
            return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                   total_steps=total, pct_start=0.25)
    if recipe.schedule == "cosine":
        warm = int(recipe.warmup_epochs * steps_per_epoch)
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))))
    raise ValueError(f"unknown schedule {recipe.schedule!r} (constant | cosine | onecycle)")


def _validate(model: nn.Module, data: DecodedSet, pre: Preprocess, weights: torch.Tensor, k: int) -> tuple[dict, np.ndarray]:
    bundle = ModelBundle(model, "", tuple(str(i) for i in range(k)), pre)
    probs = predict_resized(bundle, data.images, optimize=False)
    y = data.labels.numpy()
    p, w = torch.from_numpy(probs).clamp(1e-7, 1 - 1e-7), weights.cpu()[data.labels]
    nll = -(torch.log(p[torch.arange(len(y)), data.labels]) * w).sum() / w.sum()
    m = evaluate_probabilities(y, probs, [str(i) for i in range(k)], 0.5, n_boot=0)
    return {"val_loss": float(nll), "val_acc": m["accuracy"], "val_auc": m["roc_auc"]}, probs


def split_training_pool(recipe: Recipe, data_dir: str | Path) -> tuple[tuple[str, ...], list, list]:
    """Index the folder and split its training pool by patient; return (classes, train samples, val samples).
    Cheap (file names only), so a bad folder is refused before a run directory exists."""
    index = index_folder(data_dir)
    pool = index.split("train") if index.has_splits else list(index.samples)
    if not pool:
        raise DatasetError(f"{data_dir}: no training images (expected {data_dir}/train/CLASS/* or {data_dir}/CLASS/*)")
    if len(index.classes) < 2:
        raise DatasetError(f"{data_dir}: need at least two class folders, found {list(index.classes)}")
    train_s, val_s = grouped_split(pool, recipe.val_fraction, recipe.validation_seed)
    return tuple(index.classes), train_s, val_s


def _decode_split(recipe: Recipe, data_dir: str | Path, train_s, val_s, progress: bool,
                  hide_names: bool = False) -> tuple[DecodedSet, DecodedSet]:
    root = Path(data_dir)
    train = decode_samples(train_s, recipe.image_size, recipe.resize, root, "decode train", progress,
                           hide_names=hide_names)
    val = decode_samples(val_s, recipe.image_size, recipe.resize, root, "decode val", progress, hide_names=hide_names)
    if len(train.images) == 0 or len(val.images) == 0:
        raise DatasetError(f"{data_dir}: no readable training images")
    return train, val


def _penalty_views(recipe: Recipe) -> list:
    """The consistency penalty's views of each film beside the film itself: ``invariance_augment``, then
    ``extra_invariance_augment`` when it changes anything; none without a penalty weight."""
    if not recipe.invariance_weight:
        return []
    return [recipe.invariance_augment] + ([recipe.extra_invariance_augment]
                                          if recipe.extra_invariance_augment.enabled else [])


def train(recipe: Recipe, data_dir: str | Path, out_dir: str | Path, resume: bool = False,
          progress: bool = True, max_steps: int | None = None, command: str | None = None,
          verbose: bool = True, on_epoch: Callable[[int, dict], None] | None = None,
          device: str = "auto", hide_names: bool = False, exclude: Collection[str] | None = None) -> TrainResult:
    """Run ``recipe`` on ``data_dir`` and write everything to ``out_dir``.

    ``progress`` draws live bars (a terminal); ``verbose`` prints one line per
    epoch to stderr, which is what a ``nohup`` log shows. ``max_steps`` caps
    optimizer steps per epoch (smoke tests, benchmarks). ``on_epoch(epoch,
    record)`` runs after each epoch's checkpoint; an exception it raises stops
    training there (``cxrkit tune`` prunes trials this way). ``device``: auto
    (a GPU if PyTorch sees one), cpu or cuda; under ``torchrun`` every process
    trains a slice of each batch (:mod:`cxrkit.training.distributed`).
    ``hide_names``: unreadable films are listed in run.json and on stderr by
    their pseudonym (:mod:`cxrkit.data.pseudonyms`), not their path.
    ``exclude``: films (paths under ``data_dir``) left out of the training
    portion after the validation split is drawn (:mod:`cxrkit.data.exclusions`).
    """
    place = distributed.setup(device)
    verbose, progress = verbose and place.is_main, progress and place.is_main
    out = Path(out_dir)
    ckpt_path = out / "checkpoint.pt"
    # a start that never finished an epoch left config.yaml and run.json only: nothing to resume, so it restarts
    unfinished = out.is_dir() and {p.name for p in out.iterdir()} <= rundir.START_FILES
    if out.exists() and any(out.iterdir()) and not resume and not unfinished:
        raise FileExistsError(f"{out}: run directory is not empty (use --resume to continue it, or a new --out)")
    if resume and not ckpt_path.is_file():
        raise FileNotFoundError(f"{out}: nothing to resume (no checkpoint.pt: no epoch finished; run the same "
                                "command without --resume to start it again)")
    if resume:
        rundir.check_resumable(out, recipe)
    if recipe.init_from == "required" and not resume:
        raise ValueError(f"recipe {recipe.name} is a second stage: pass --init-from with the first stage's run "
                         f"directory (see `cxrkit recipes {recipe.name}`)")
    if recipe.teacher == "required":
        raise ValueError(f"recipe {recipe.name} distils a teacher you choose: pass --teacher with a trained model "
                         f"(name, run directory or .safetensors; see `cxrkit recipes {recipe.name}`)")
    if recipe.teacher and not recipe.distill_weight:
        raise ValueError(f"recipe {recipe.name} gives the teacher no share of the targets (distill_weight 0): the "
                         "teacher would change nothing; choose a recipe with distill_weight (e.g. "
                         "cxr_cnn_wide160_clahe_taught) or set it in a recipe file")
    classes, train_s, val_s = split_training_pool(recipe, data_dir)
    exclusions = None
    if exclude:
        train_s, exclusions = drop_listed(train_s, val_s, exclude, Path(data_dir))
        if verbose and place.is_main:
            _log(f"left out {exclusions['removed']} listed training films"
                 + (f"; {exclusions['validation_kept']} listed validation films stay (validation never changes)"
                    if exclusions["validation_kept"] else ""))
    _check_sources(recipe, classes, resume)
    # on a GPU bf16 is native; `auto` asks the CPU whether it multiplies bf16 itself
    use_bf16 = (resolve_precision(recipe.precision) == "bf16" if place.device.type == "cpu"
                else recipe.precision != "fp32")
    distributed.barrier(place)  # every process has checked the run directory before the main one writes to it
    if place.is_main:
        out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(recipe.seed)
    train_set, val_set = _decode_split(recipe, data_dir, train_s, val_s, progress, hide_names)
    if resume:
        rundir.check_same_data(out, train_set, val_set, exclusions)
    k = len(classes)
    pre = _preprocess_for(recipe)
    if not resume and place.is_main:
        rundir.write_config(out, recipe, data_dir, classes, train_set, val_set, command,
                            "bf16" if use_bf16 else "fp32", place.device.type, place.world, exclusions)

    model = create_model(recipe.model, num_classes=k, **recipe.model_kwargs).to(memory_format=torch.channels_last)
    weights_note = "none (trained from scratch)"
    if recipe.pretrained:
        from ..models.pretrained import load_backbone_weights

        weights_note = load_backbone_weights(model, recipe.model, recipe.pretrained)
    if recipe.init_from and not resume:  # two-stage training: e.g. binary activations first, then binary weights
        model.load_state_dict(_first_stage(recipe, classes).model.state_dict())
        weights_note = f"initialised from {recipe.init_from}"
    frozen_bn = finetune.freeze_backbone(model, recipe.unfreeze)
    model.to(place.device)
    trained = distributed.wrap(model, place)
    steps = math.ceil(len(train_set.images) / recipe.batch_size)
    if max_steps:
        steps = min(steps, max_steps)
    opt = _optimizer(recipe, model)
    sched = _schedule(recipe, opt, steps)
    # the weight average (recipe.ema_decay) is what validation sees, what the best epoch keeps and what ships
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True) \
        if recipe.ema_decay else None
    judged = averaged.module if averaged is not None else model
    weights = _class_weights(train_set.labels, k, recipe.class_weighting).to(place.device)
    gen = torch.Generator().manual_seed(recipe.seed)
    history: list[dict] = []
    best = {"score": -math.inf, "epoch": 0, "state": None}
    start_epoch = 1
    if resume:
        ck = torch.load(ckpt_path, weights_only=True, map_location=place.device)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        gen.set_state(ck["generator"].cpu())
        if averaged is not None:
            averaged.load_state_dict(ck["averaged"])
        torch.set_rng_state(ck["torch_rng"].cpu())
        history = ck["history"]
        best = {"score": ck["best_score"], "epoch": ck["best_epoch"], "state": ck["best_state"]}
        start_epoch = ck["epoch"] + 1
    elif recipe.head_epochs and finetune.is_transfer(model):
        feats = [finetune.embed(model.backbone, d, pre, use_bf16, progress=progress, desc=f"embed {name}")
                 for d, name in ((train_set, "train"), (val_set, "val"))]
        history += finetune.train_head(model, feats[0], train_set.labels.to(place.device), feats[1],
                                       val_set.labels.to(place.device), recipe, _loss, weights, gen, verbose,
                                       on_epoch)
        if place.is_main:
            rundir.write_json(out / "history.json", history)

    teacher_probs = _teacher_probabilities(recipe, train_set, data_dir, progress) if recipe.teacher \
        else None
    # binarized layers keep their latent weights in [-1, 1] after every step (Larq's weight_clip)
    clipped = [m for m in model.modules() if hasattr(m, "clip_latent_weights")]
    for m in clipped:  # from the first step on, as the binary layers' weight gradient assumes
        m.clip_latent_weights()
    monitor = recipe.early_stopping_metric
    for epoch in range(start_epoch, recipe.epochs + 1):
        model.train()
        for m in frozen_bn:
            m.eval()
        order = torch.randperm(len(train_set.images), generator=gen)
        size = recipe.epoch_size(epoch)
        t0, seen, total_loss = time.perf_counter(), 0, 0.0
        bar = tqdm(range(steps), desc=f"epoch {epoch}/{recipe.epochs} ({size} px)", disable=not progress,
                   unit="step", leave=False)
        for step in bar:
            idx = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
            x = train_set.images[idx].to(place.device, non_blocking=True).unsqueeze(1).float().div_(255.0)
            if size != recipe.image_size:  # progressive resizing: antialiased, as Pillow resizes at decode
                x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True).clamp_(0.0, 1.0)
            x = augment_batch(x, recipe.augment, gen)
            partner, lam = None, 1.0
            if recipe.mixup:
                x, partner, lam = mix_pairs(x, recipe.mixup, gen)
            views = [x] + [augment_batch(x, a, gen) for a in _penalty_views(recipe)]
            # every process keeps its slice of each view, so the pairs stay together
            x = torch.cat([distributed.my_slice(to_model_input(v, pre), place) for v in views])
            y_all = train_set.labels[idx].to(place.device)
            with torch.autocast(place.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits = trained(x)
            logits, *warped = logits.float().chunk(len(views)) if len(views) > 1 else (logits,)
            loss = lam * _batch_loss(logits, y_all, idx, recipe, weights, teacher_probs, place)
            if partner is not None:  # the blend's target is the same blend of the two films' targets
                y_partner = y_all[partner.to(y_all.device)]
                loss = loss + (1 - lam) * _batch_loss(logits, y_partner, idx[partner], recipe, weights, teacher_probs,
                                                      place)
            for other in warped:
                loss = loss + recipe.invariance_weight * (logits - other).pow(2).sum(dim=1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for m in clipped:
                m.clip_latent_weights()
            if averaged is not None:
                averaged.update_parameters(model)
            sched.step()
            seen += len(idx)
            total_loss += loss.item() * len(idx) / place.world
            bar.set_postfix(loss=f"{total_loss * place.world / seen:.4f}")
        total_loss = distributed.total(total_loss, place)
        train_seconds = time.perf_counter() - t0
        val, _ = _validate(judged, val_set, pre, weights, k)
        record = {"epoch": epoch, "image_size": size, "train_loss": total_loss / seen, **val,
                  "lr": opt.param_groups[0]["lr"],
                  "train_seconds": round(train_seconds, 2), "train_img_per_s": round(seen / train_seconds, 1)}
        history.append(record)
        score = {"val_loss": -val["val_loss"], "val_auc": val["val_auc"]}.get(monitor, -val["val_loss"])
        if score > best["score"]:
            best = {"score": score, "epoch": epoch,
                    "state": {k_: v.detach().clone() for k_, v in judged.state_dict().items()}}
        if verbose:
            _log(f"epoch {epoch}/{recipe.epochs}: loss {record['train_loss']:.4f}  val_loss {val['val_loss']:.4f}  "
                 f"val_auc {val['val_auc']:.4f}  val_acc {val['val_acc']:.4f}  "
                 f"({record['train_img_per_s']:.0f} img/s at {size} px)")
        if place.is_main:
            _save_checkpoint(ckpt_path, epoch, model, opt, sched, gen, history, best, averaged)
            rundir.write_json(out / "history.json", history)
        if on_epoch is not None:  # numbered after any head-only epochs, so a pruner sees one increasing series
            on_epoch(len(history), record)
        if monitor != "none" and epoch - best["epoch"] >= recipe.early_stopping_patience:
            if verbose:
                _log(f"early stopping: no {monitor} gain for {recipe.early_stopping_patience} epochs")
            break

    if recipe.keep_best and best["state"] is not None:
        model.load_state_dict(best["state"])
    elif averaged is not None:
        model.load_state_dict(averaged.module.state_dict())
    model.eval()
    val, val_probs = _validate(model, val_set, pre, weights, k)
    model = model.cpu().to(memory_format=torch.contiguous_format)
    y_val = val_set.labels.numpy()
    geometric = k == 2 and recipe.threshold_rule == GEOMETRY_RULE
    threshold = 0.5
    if k == 2 and not geometric:
        threshold = choose_threshold(y_val, val_probs[:, 1], recipe.threshold_rule)
    # temperature (if recipe.calibrate) and UNCERTAIN cut-off on validation; binary decisions stay the same
    if geometric:  # the cut-off is read off the warped validation films, in TorchScript as the teacher is
        cal = calibrate_across_views(ModelBundle(model, recipe.model, tuple(classes), pre, threshold,
                                                 engine="torchscript"),
                                     val_probs, y_val, val_set.images, recipe.uncertain_rule, fit=recipe.calibrate)
    else:
        cal = calibrate(val_probs, y_val, threshold, recipe.uncertain_rule, fit=recipe.calibrate)
    val_probs, threshold = cal.probs, cal.threshold
    val_metrics = evaluate_probabilities(val_set.labels.numpy(), val_probs, classes, threshold,
                                         confidence_threshold=cal.confidence_threshold)
    bundle = ModelBundle(model, recipe.model, tuple(classes), pre, threshold, dict(recipe.model_kwargs),
                         {"recipe": recipe.name, "recipe_version": recipe.version,
                          "threshold_rule": recipe.threshold_rule, "best_epoch": best["epoch"],
                          # which films were held out: stress, calibrate and ensemble must re-carve exactly these
                          "validation_split": recipe.validation_split,
                          "pretrained": weights_note,
                          "val_metrics": {m: val_metrics[m] for m in ("n", "accuracy", "roc_auc")},
                          # the mix the BatchNorm statistics were measured on (calibrate --unlabeled resamples to it)
                          "train_class_shares": _class_shares(train_set.labels, classes),
                          "calibration": cal.report},
                         temperature=cal.temperature, confidence_threshold=cal.confidence_threshold)
    if place.is_main:
        save_bundle(bundle, out / "model.safetensors")
        rundir.write_json(out / "val_metrics.json", val_metrics)
        rundir.plot_history(history, out / "training_curves.png")
    distributed.barrier(place)
    distributed.teardown(place)
    bundle.source = str(out / "model.safetensors")
    return TrainResult(out, bundle, history, val_metrics)


def _check_sources(recipe: Recipe, classes: tuple[str, ...], resume: bool) -> None:
    """Everything the recipe names outside itself (architecture, weights file, first stage, teacher) is found,
    read and checked against the data's classes before a run directory is made or a film decoded: a typo or a
    wrong ``--seed`` costs one line, not minutes and a left-over run that the corrected command refuses to
    overwrite.

    The first stage and the teacher are loaded here and again where training uses them: loading a model draws
    from torch's global generator (its layers initialise before the weights overwrite them), and the recorded
    runs' random stream includes those draws at those points, so moving them would change every rerun."""
    from ..inference.bundle import resolve_model
    from ..models.pretrained import check_weights_source

    family = model_info(recipe.model).family
    if recipe.teacher:
        teacher = resolve_model(recipe.teacher)
        if tuple(teacher.classes) != classes:
            raise ValueError(f"teacher {recipe.teacher} has classes {list(teacher.classes)}, the data {list(classes)}")
        split = teacher.info.get("validation_split")
        if split and split != recipe.validation_split:  # a note, not a refusal: the recorded BNN students do this
            _log(f"note: teacher {recipe.teacher} held out validation split {split}, this run {recipe.validation_split}"
                 f": it learnt from films this run validates on, so validation figures may read high (--split-seed "
                 f"{split.get('seed')} holds out the teacher's films)")
    if resume:
        return
    if recipe.pretrained and family != "transfer":
        raise ValueError(f"{recipe.model} is not a transfer backbone (family {family}): ImageNet weights "
                         f"(--weights / pretrained) apply to family 'transfer' only")
    check_weights_source(recipe.model, recipe.pretrained)
    if recipe.init_from:
        fresh = create_model(recipe.model, num_classes=len(classes), **recipe.model_kwargs)
        try:
            fresh.load_state_dict(_first_stage(recipe, classes).model.state_dict())
        except RuntimeError as exc:
            raise ValueError(f"init_from {recipe.init_from}: weights do not fit {recipe.model} with model_kwargs "
                             f"{recipe.model_kwargs} ({str(exc).splitlines()[0][:120]})") from None


def _first_stage(recipe: Recipe, classes: tuple[str, ...]) -> ModelBundle:
    """``recipe.init_from``, once it is known to be a trained model of this architecture, for these classes, that
    held out this run's validation films."""
    from ..inference.bundle import resolve_model

    source = resolve_model(recipe.init_from)
    if not isinstance(source, ModelBundle) or source.arch != recipe.model:
        raise ValueError(f"init_from {recipe.init_from}: need a trained {recipe.model} (run directory or "
                         f".safetensors), got {getattr(source, 'arch', type(source).__name__)}")
    if tuple(source.classes) != classes:
        raise ValueError(f"init_from {recipe.init_from}: it was trained on classes {list(source.classes)}, the data "
                         f"has {list(classes)}")
    split = source.info.get("validation_split")
    if split and split != recipe.validation_split:
        raise ValueError(f"init_from {recipe.init_from}: it held out validation split {split}, this run holds out "
                         f"fraction {recipe.val_fraction}, seed {recipe.validation_seed} (pass --seed "
                         f"{split.get('seed')}, or --split-seed {split.get('seed')} to keep another seed for the "
                         "weights): its weights have seen films this run would validate on")
    return source


def _teacher_probabilities(recipe: Recipe, train_set: DecodedSet, data_dir, progress: bool) -> torch.Tensor:
    """The teacher's (calibrated) probabilities for every un-augmented training image, computed once.

    Offline distillation: a ResNet- or MobileNet-sized teacher run on every
    augmented batch would cost more than the small student itself on 2 cores;
    its soft labels for the clean image carry over to mild, label-preserving
    augmentations.

    The teacher runs in TorchScript, never ONNX Runtime: soft labels that moved
    with the inference engine (1e-7, enough to flip a binary student's signs
    epochs later) would stop recorded runs from reproducing bit for bit."""
    from ..inference.bundle import resolve_model

    teacher = use_precision(resolve_model(recipe.teacher), "fp32", engine="torchscript")
    images = train_set.images
    if teacher.preprocess.size != recipe.image_size or teacher.preprocess.resize != recipe.resize:
        images = decode_samples(train_set.samples, teacher.preprocess.size, teacher.preprocess.resize, Path(data_dir),
                                "decode for teacher", progress).images
    return torch.from_numpy(predict_resized(teacher, images))


def _log(line: str) -> None:
    tqdm.write(line, file=sys.stderr)
    sys.stderr.flush()


def _save_checkpoint(path: Path, epoch, model, opt, sched, gen, history, best, averaged=None) -> None:
    tmp = path.with_suffix(".tmp")
    extra = {"averaged": averaged.state_dict()} if averaged is not None else {}
    torch.save({**extra, "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
                "history": history, "best_score": best["score"], "best_epoch": best["epoch"],
                "best_state": best["state"]}, tmp)
    os.replace(tmp, path)
