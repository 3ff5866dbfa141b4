"""Optimizers, the learning-rate schedule and mixed precision, as plain components: each takes
keyword arguments, never a config section (``engine/build.py`` reads the config and passes
them). The names here are the config's valid choices (``optim.name``, ``optim.scheduler``,
``train.amp``): declared once, read by the schema."""

from __future__ import annotations

import math

import torch

from ..errors import ReidError

#: optimizer name → (parameter groups, lr, momentum) → optimizer
OPTIMIZERS = {
    "adam": lambda groups, lr, momentum: torch.optim.Adam(groups, lr=lr),
    "adamw": lambda groups, lr, momentum: torch.optim.AdamW(groups, lr=lr),
    "sgd": lambda groups, lr, momentum: torch.optim.SGD(
        groups, lr=lr, momentum=momentum, nesterov=True
    ),
}
SCHEDULERS = ("multistep", "cosine")
#: train.amp choices (auto: fp16 on CUDA, off elsewhere)
AMP_MODES = ("auto", "off", "fp16", "bf16")


def make_optimizer(name: str, groups: list, lr: float, momentum: float) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise KeyError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](groups, lr, momentum)


def lr_schedule(
    optimizer,
    scheduler: str,
    iters_per_epoch: int,
    epochs: int,
    warmup_epochs: float,
    warmup_factor: float,
    gamma: float,
    milestones,
):
    """Per-iteration LR factor: linear warm-up, then multistep (``gamma`` at each of the
    ``milestones``, in epochs) or cosine to the end of the last epoch."""
    if scheduler not in SCHEDULERS:
        raise KeyError(f"unknown scheduler {scheduler!r}; valid: {', '.join(SCHEDULERS)}")
    total, warmup = epochs * iters_per_epoch, warmup_epochs * iters_per_epoch

    def factor(it: int) -> float:
        if it < warmup:
            return warmup_factor + (1 - warmup_factor) * it / max(1, warmup)
        if scheduler == "cosine":
            progress = (it - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        epoch = it // iters_per_epoch
        return gamma ** sum(epoch >= m for m in milestones)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def amp_dtype(mode: str, device: torch.device):
    if mode == "auto":
        mode = "fp16" if device.type == "cuda" else "off"
    if mode == "off":
        return None
    if mode == "bf16":
        return torch.bfloat16
    if mode == "fp16":
        if device.type != "cuda":
            raise ReidError("train.amp=fp16 needs CUDA; use bf16 or off on CPU")
        return torch.float16
    raise KeyError(f"unknown train.amp {mode!r}; valid: {', '.join(AMP_MODES)}")
