"""LeanAdam: torch.optim.Adam/AdamW's results bit for bit, state dicts interchangeable, and no torch._dynamo import."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from cxrkit.recipes import RECIPES
from cxrkit.training.optim import LeanAdam, make_optimizer
from cxrkit.training.trainer import _optimizer, _schedule


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    return net.to(memory_format=torch.channels_last)


def _groups(model: nn.Module, lr: float) -> list[dict]:
    """Two groups with different learning rates, as finetune.param_groups gives transfer models."""
    params = list(model.parameters())
    return [{"params": params[:2], "lr": lr}, {"params": params[2:], "lr": lr * 0.1}]


def _schedulers(opt, kind: str, total: int):
    if kind == "onecycle":  # also cycles betas[0] in the param groups every step
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                   total_steps=total, pct_start=0.25)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))


def _train(model, opt, sched, steps: int, seed: int = 1) -> list[float]:
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        x = torch.randn(5, 1, 8, 8, generator=gen).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 3, (5,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def _assert_same_state(a: nn.Module, b: nn.Module, opt_a, opt_b) -> None:
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for i in sa["state"]:
        for key in ("step", "exp_avg", "exp_avg_sq"):
            ta, tb = sa["state"][i][key], sb["state"][i][key]
            assert ta.dtype == tb.dtype and ta.device == tb.device and torch.equal(ta, tb), (i, key)


@pytest.mark.parametrize("decoupled", [False, True], ids=["adam", "adamw"])
@pytest.mark.parametrize("fused", [False, True], ids=["per_tensor", "fused"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_bit_identical_to_torch_optim(decoupled, fused, weight_decay, schedule):
    ref_model, lean_model = _model(), _model()
    ref_cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    ref = ref_cls(_groups(ref_model, 3e-3), lr=3e-3, weight_decay=weight_decay, fused=fused)
    lean = LeanAdam(_groups(lean_model, 3e-3), lr=3e-3, weight_decay=weight_decay, decoupled_weight_decay=decoupled,
                    fused=fused)
    ref_losses = _train(ref_model, ref, _schedulers(ref, schedule, 12), 12)
    lean_losses = _train(lean_model, lean, _schedulers(lean, schedule, 12), 12)
    assert lean_losses == ref_losses
    assert ref_losses[-1] != ref_losses[0]  # it did train
    _assert_same_state(ref_model, lean_model, ref, lean)


@pytest.mark.parametrize("fused", [False, True], ids=["per_tensor", "fused"])
def test_resumes_a_torch_optim_checkpoint_exactly(fused):
    """Run directories written before LeanAdam hold torch.optim.AdamW state: resuming them must not change a bit."""
    total = 10
    ref_model = _model()
    ref = torch.optim.AdamW(ref_model.parameters(), lr=1e-2, weight_decay=0.01, fused=fused)
    ref_sched = _schedulers(ref, "onecycle", total)
    _train(ref_model, ref, ref_sched, 4)
    ckpt = {"model": {k: v.clone() for k, v in ref_model.state_dict().items()},
            "optimizer": ref.state_dict(), "scheduler": ref_sched.state_dict()}
    ckpt = torch.load(_roundtrip(ckpt), weights_only=True)
    ref_rest = _train(ref_model, ref, ref_sched, 6, seed=2)

    lean_model = _model(seed=7)  # different initial weights: everything must come from the checkpoint
    lean = LeanAdam(lean_model.parameters(), lr=1e-2, weight_decay=0.01, decoupled_weight_decay=True, fused=fused)
    lean_sched = _schedulers(lean, "onecycle", total)
    lean_model.load_state_dict(ckpt["model"])
    lean.load_state_dict(ckpt["optimizer"])
    lean_sched.load_state_dict(ckpt["scheduler"])
    assert _train(lean_model, lean, lean_sched, 6, seed=2) == ref_rest
    _assert_same_state(ref_model, lean_model, ref, lean)


def _roundtrip(obj):
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_trainer_picks_lean_adam_on_cpu_and_torch_optim_for_sgd():
    recipe = RECIPES["seed001"]
    model = _model()
    assert type(_optimizer(recipe, model)) is LeanAdam
    assert type(_optimizer(recipe.replace(optimizer="sgd"), model)) is torch.optim.SGD
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("rmsprop", model.parameters(), 1e-3, 0.0, False)
    opt = _optimizer(recipe.replace(schedule="onecycle", epochs=3), model)
    _schedule(recipe.replace(schedule="onecycle", epochs=3), opt, 5)  # OneCycleLR needs betas in the groups
    assert opt.param_groups[0]["fused"] is True and opt.param_groups[0]["decoupled_weight_decay"] is False


def test_rejects_closures_and_bad_hyperparameters():
    model = _model()
    with pytest.raises(ValueError, match="invalid Adam"):
        LeanAdam(model.parameters(), lr=-1.0)
    with pytest.raises(ValueError, match="closure"):
        LeanAdam(model.parameters()).step(lambda: 0.0)


def test_training_and_frozen_inference_never_import_dynamo_or_sympy():
    """The whole point: a fresh process that builds, schedules, steps and checkpoints the optimizer, then
    freezes the model for inference (whose torch.jit.trace check_trace would import sympy), keeps torch._dynamo
    and sympy out of memory. Fails if a PyTorch upgrade moves the import somewhere we call."""
    code = """
import sys, torch
from cxrkit.recipes import RECIPES
from cxrkit.training.trainer import _optimizer, _schedule
recipe = RECIPES["seed001"].replace(schedule="onecycle", epochs=2)
model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(2 * 6 * 6, 1))
opt = _optimizer(recipe, model)
sched = _schedule(recipe, opt, 8)
for _ in range(3):
    opt.zero_grad(set_to_none=True)
    model(torch.randn(4, 1, 8, 8)).sum().backward()
    opt.step()
    sched.step()
opt.load_state_dict(opt.state_dict())
from cxrkit.inference.bundle import ModelBundle
from cxrkit.inference.predictor import frozen_for_inference
from cxrkit.models import create_model, model_info
bundle = ModelBundle(create_model("seed_cnn", num_classes=2), "seed_cnn", ("A", "B"), model_info("seed_cnn").preprocess)
assert frozen_for_inference(bundle) is not bundle.model  # traced and frozen, as `cxrkit predict` runs it
print(sorted(m for m in ("torch._dynamo", "sympy") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
