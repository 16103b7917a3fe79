"""Adam and AdamW with ``torch.optim``'s arithmetic, bit for bit, but without importing ``torch._dynamo``.

Why: in PyTorch 2.x every ``torch.optim`` optimizer imports ``torch._dynamo`` (and with it sympy) the first time
it adds a parameter group or takes a step, only to mark those methods as not compilable. cxrkit never compiles
an optimizer, and on the 2-core reference machine that import alone raised the peak RSS of a seed 001 training
run by 136-151 MB (benchmarks/README.md), more than the margin by which it trailed the Keras peer.

:class:`LeanAdam` subclasses :class:`torch.optim.Optimizer`, so LR schedulers, ``state_dict`` and
``load_state_dict`` work unchanged, and it keeps ``torch.optim.Adam``'s parameter-group keys and per-parameter
state (``step``, ``exp_avg``, ``exp_avg_sq``): checkpoints written by either load into the other. Its update is
the same sequence of tensor operations as ``torch.optim.Adam``/``AdamW`` on the CPU, so results are identical
(``tests/test_training_optim.py`` checks this step for step, with weight decay and LR schedules):

- ``fused=True``: the same ``torch._fused_adam_`` / ``torch._fused_adamw_`` kernels that ``torch.optim`` calls;
- ``fused=False``: the per-tensor loop that ``torch.optim`` runs on the CPU (its ``foreach`` path, the default on
  GPUs, rounds differently, so :func:`make_optimizer` leaves non-CPU parameters to ``torch.optim``).

Not supported (never used by cxrkit recipes): amsgrad, maximize, capturable, differentiable, closures.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim import Optimizer


def _undecorated(method):
    """``Optimizer``'s method without its ``@torch._disable_dynamo`` wrapper, whose first call imports dynamo.

    ``torch._disable_dynamo`` wraps with ``functools.wraps``, so the plain function is ``__wrapped__``; the
    methods only do bookkeeping on Python dicts and tensors, which needs no dynamo outside ``torch.compile``."""
    return getattr(method, "__wrapped__", method)


class LeanAdam(Optimizer):
    """``torch.optim.Adam`` (``decoupled_weight_decay=False``) or ``AdamW`` (``True``) for CPU training."""

    add_param_group = _undecorated(Optimizer.add_param_group)
    zero_grad = _undecorated(Optimizer.zero_grad)
    state_dict = _undecorated(Optimizer.state_dict)
    load_state_dict = _undecorated(Optimizer.load_state_dict)

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, *, decoupled_weight_decay: bool = False,
                 fused: bool = False) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid Adam hyperparameters: lr={lr} betas={betas} eps={eps} "
                             f"weight_decay={weight_decay}")
        # the same keys and values as torch.optim.Adam/AdamW's groups, so state dicts are interchangeable
        defaults = {"lr": lr, "betas": (float(betas[0]), float(betas[1])), "eps": eps,
                    "weight_decay": weight_decay, "amsgrad": False, "maximize": False, "foreach": None,
                    "capturable": False, "differentiable": False, "fused": fused,
                    "decoupled_weight_decay": decoupled_weight_decay}
        super().__init__(params, defaults)

    def _state_of(self, p: torch.Tensor, fused: bool) -> dict:
        state = self.state[p]
        if not state:  # as torch.optim.Adam._init_group: fused keeps `step` beside the parameter
            state["step"] = (torch.zeros((), dtype=torch.float32, device=p.device) if fused
                             else torch.tensor(0.0, dtype=torch.float32))
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self, closure=None) -> None:
        if closure is not None:
            raise ValueError("LeanAdam.step takes no closure")
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            fused = bool(group["fused"])
            states = [self._state_of(p, fused) for p in params]
            grads = [p.grad for p in params]
            if any(g.is_sparse for g in grads):
                raise RuntimeError("LeanAdam does not support sparse gradients")
            exp_avgs = [s["exp_avg"] for s in states]
            exp_avg_sqs = [s["exp_avg_sq"] for s in states]
            steps = [s["step"] for s in states]
            beta1, beta2 = group["betas"]
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            decoupled = group["decoupled_weight_decay"]
            if fused:
                _fused(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, wd, eps, decoupled)
            else:
                _per_tensor(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, wd, eps, decoupled)


def _fused(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, wd, eps, decoupled) -> None:
    """``torch.optim.adam._fused_adam`` without gradient scaling: one kernel call per device and dtype."""
    grouped = Optimizer._group_tensors_by_device_and_dtype([params, grads, exp_avgs, exp_avg_sqs, [], steps])
    for (ps, gs, ms, vs, _, ss), _ in grouped.values():
        torch._foreach_add_(ss, 1)
        kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
        kernel(ps, gs, ms, vs, [], ss, amsgrad=False, lr=lr, beta1=beta1, beta2=beta2, weight_decay=wd, eps=eps,
               maximize=False, grad_scale=None, found_inf=None)


def _per_tensor(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, wd, eps, decoupled) -> None:
    """``torch.optim.adam._single_tensor_adam`` for real float tensors, in the same order of operations."""
    for param, grad, exp_avg, exp_avg_sq, step_t in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        step_t += 1
        if wd != 0:
            if decoupled:
                param.mul_(1 - lr * wd)
            else:
                grad = grad.add(param, alpha=wd)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = step_t.item()
        step_size = lr / (1 - beta1 ** step)
        bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        param.addcdiv_(exp_avg, denom, value=-step_size)


def make_optimizer(name: str, params, lr: float, weight_decay: float, fused: bool) -> Optimizer:
    """The optimizer a recipe names. Adam/AdamW on CPU parameters is :class:`LeanAdam` (identical results,
    no dynamo import); on other devices, and for SGD, it is ``torch.optim``'s own."""
    groups = list(params)
    tensors = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    on_cpu = all(p.device.type == "cpu" for p in tensors)
    if name in ("adam", "adamw"):
        if on_cpu:
            return LeanAdam(groups, lr=lr, weight_decay=weight_decay, decoupled_weight_decay=name == "adamw",
                            fused=fused)
        cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
        return cls(groups, lr=lr, weight_decay=weight_decay, fused=fused)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay, fused=fused)
    raise ValueError(f"unknown optimizer {name!r} (adam | adamw | sgd)")
