"""Optimizer and learning-rate schedule of CLIP training.

    groups = param_groups(model, weight_decay=0.2)      # no decay on gains, biases, logit scale
    opt = adamw(model, cfg)                             # AdamW over those groups
    lr = lr_at(step, base_lr=5e-4, warmup=2000, total=100_000)
    set_lr(opt, lr)

The learning rate is a pure function of the step, so a resumed run needs nothing but the step.
"""

from __future__ import annotations

import math

import torch


def no_decay(name: str, param: torch.Tensor) -> bool:
    """Gains (LayerNorm/BatchNorm weights), biases, the logit scale and other 0/1-d tensors: no weight decay."""
    return param.ndim < 2 or name.endswith(".bias") or "logit_scale" in name or "logit_bias" in name


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, plain = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (plain if no_decay(name, param) else decay).append(param)
    return [{"params": plain, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def adamw(model: torch.nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
          eps: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps)


def lr_at(step: int, base_lr: float, warmup: int, total: int) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to 0 at `total` (0-based step)."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if total <= warmup:
        return base_lr
    progress = min(1.0, (step - warmup) / (total - warmup))
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
