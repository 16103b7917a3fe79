"""Transfer-learning stages: a head trained on cached features, then fine-tuning.

On a 2-core CPU a pretrained backbone's forward pass is the expensive part, so
the first stage embeds every training and validation image *once* (no
augmentation, backbone frozen) and trains seed 002's head on the cached
vectors in seconds. Fine-tuning then starts from a head that already works,
which is what keeps the first epochs from wrecking the pretrained features; it
trains only the last ``unfreeze`` fraction of the backbone's tensors, at
``backbone_lr_mult`` times the head's learning rate, with the frozen part's
BatchNorm statistics left as they were.
"""
from __future__ import annotations

import math
import sys

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..data.cache import DecodedSet
from ..data.preprocess import Preprocess, to_model_input
from ..evaluation.metrics import evaluate_probabilities
from ..inference.bundle import probabilities
from ..models.transfer import TransferNet
from ..recipes import Recipe


def is_transfer(model: nn.Module) -> bool:
    return isinstance(model, TransferNet)


def freeze_backbone(model: nn.Module, unfreeze: float) -> list[nn.Module]:
    """Train only the last ``unfreeze`` fraction of the backbone's parameter tensors (1 = all, 0 = none).

    Returns the frozen BatchNorm layers: the caller keeps them in eval mode, since
    updating running statistics of layers whose weights cannot adapt only
    drifts them away from what the pretrained weights expect.
    """
    if not is_transfer(model) or unfreeze >= 1:
        return []
    params = list(model.backbone.named_parameters())
    n_train = round(len(params) * max(0.0, unfreeze))
    frozen_names = {name for name, _ in params[:len(params) - n_train]}
    for name, p in params:
        p.requires_grad_(name not in frozen_names)
    frozen_bn = []
    for mod_name, mod in model.backbone.named_modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and all(
                f"{mod_name}.{p}" in frozen_names for p, _ in mod.named_parameters(recurse=False)):
            frozen_bn.append(mod)
    return frozen_bn


def param_groups(model: nn.Module, recipe: Recipe) -> list[dict]:
    """Head at the recipe's lr, backbone at ``lr * backbone_lr_mult``; other models: one group."""
    if not is_transfer(model):
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": recipe.lr}]
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    groups = [{"params": list(model.head.parameters()), "lr": recipe.lr}]
    if backbone:
        groups.append({"params": backbone, "lr": recipe.lr * recipe.backbone_lr_mult})
    return groups


def embed(backbone: nn.Module, data: DecodedSet, pre: Preprocess, bf16: bool, batch_size: int = 64,
          progress: bool = True, desc: str = "embed") -> torch.Tensor:
    """``(N, F)`` float32 features of every image, backbone in eval mode."""
    backbone.eval()
    device = next(backbone.parameters()).device
    out = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for i in tqdm(range(0, len(data.images), batch_size), desc=desc, disable=not progress, leave=False,
                      unit="batch"):
            out.append(backbone(to_model_input(data.images[i:i + batch_size].to(device), pre)).float())
    return torch.cat(out) if out else torch.zeros(0, 0)


def train_head(model: TransferNet, train_feats: torch.Tensor, train_labels: torch.Tensor,
               val_feats: torch.Tensor, val_labels: torch.Tensor, recipe: Recipe, loss_fn, weights: torch.Tensor,
               gen: torch.Generator, verbose: bool = True, on_epoch=None) -> list[dict]:
    """Train ``model.head`` on cached features for ``recipe.head_epochs``; keep the best-validation-AUC epoch.

    ``on_epoch(epoch, record)`` is called after every epoch, as the trainer does (``cxrkit tune`` prunes there)."""
    head = model.head
    opt = torch.optim.AdamW(head.parameters(), lr=recipe.head_lr, weight_decay=recipe.weight_decay)
    batch = 64
    steps = math.ceil(len(train_feats) / batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, recipe.head_epochs * steps))
    history, best = [], (-math.inf, None)
    for epoch in range(1, recipe.head_epochs + 1):
        head.train()
        order = torch.randperm(len(train_feats), generator=gen)
        total = 0.0
        for s in range(steps):
            idx = order[s * batch:(s + 1) * batch]
            loss = loss_fn(head(train_feats[idx]), train_labels[idx], weights, recipe.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        head.eval()
        with torch.no_grad():
            p = probabilities(head(val_feats)).clamp(1e-7, 1 - 1e-7)
            w = weights[val_labels]
            val_loss = float(-(p[torch.arange(len(val_labels)), val_labels].log() * w).sum() / w.sum())
            probs = p.cpu().numpy()
        names = [str(i) for i in range(probs.shape[1])]
        m = evaluate_probabilities(val_labels.cpu().numpy(), probs, names, 0.5, n_boot=0)
        record = {"stage": "head", "epoch": epoch, "train_loss": total / len(train_feats), "val_loss": val_loss,
                  "val_acc": m["accuracy"], "val_auc": m["roc_auc"]}
        history.append(record)
        if m["roc_auc"] > best[0]:
            best = (m["roc_auc"], {k_: v.detach().clone() for k_, v in head.state_dict().items()})
        if verbose:
            print(f"head epoch {epoch}/{recipe.head_epochs}: loss {record['train_loss']:.4f}  val_loss {val_loss:.4f}  "
                  f"val_auc {m['roc_auc']:.4f}  val_acc {m['accuracy']:.4f}", file=sys.stderr, flush=True)
        if on_epoch is not None:
            on_epoch(epoch, record)
    if best[1] is not None:
        head.load_state_dict(best[1])
    return history
