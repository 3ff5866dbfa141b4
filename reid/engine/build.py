"""Configuration → objects, in one place (no config object is read anywhere else)."""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig
from torch import nn

from ..data.samplers import SAMPLERS
from ..heads import build_head
from ..losses import CenterLoss, CrossEntropyLabelSmooth, TripletLoss
from ..models import ReIDModel


def build_model(cfg: DictConfig) -> ReIDModel:
    m = cfg.model
    return ReIDModel(m.backbone, m.last_stride, m.pooling, m.embedding_dim, m.bnneck, m.pretrained)


def head_kwargs(cfg: DictConfig) -> dict:
    h = cfg.head
    kwargs = {
        "weights": h.weights,
        "center_update": h.center_update,
        "center_momentum": h.center_momentum,
        "center_lr": h.center_lr,
        "center_lambda": h.center_lambda,
    }
    if h.name in ("normface", "cosface", "arcface", "circle") and h.scale is not None:
        kwargs["scale"] = h.scale
    if h.name in ("cosface", "arcface", "circle", "sphereface") and h.margin is not None:
        kwargs["margin"] = int(h.margin) if h.name == "sphereface" else h.margin
    if h.name == "virtual":
        kwargs["clamp"] = h.virtual_clamp
    if h.name == "sphereface":
        kwargs["beta_fixed"] = h.beta_fixed
    return kwargs


class TrainingModule(nn.Module):
    """Model + head(s) + learned loss parameters in one module (one DDP wrapper, one state)."""

    def __init__(self, cfg: DictConfig, num_classes: int):
        super().__init__()
        self.model = build_model(cfg)
        dim = self.model.feature_dim
        self.head = build_head(cfg.head.name, dim, num_classes, **head_kwargs(cfg))
        self.aux_head = (
            build_head("softmax", dim, num_classes) if cfg.head.aux_softmax > 0 else None
        )
        self.center_loss = CenterLoss(num_classes, dim) if cfg.loss.center > 0 else None

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        global_feature, bn_feature = self.model.forward_both(images)
        out = {"global": global_feature, "bn": bn_feature, "logits": self.head(bn_feature, labels)}
        if self.aux_head is not None:
            out["aux_logits"] = self.aux_head(bn_feature, labels)
        return out


class Losses(nn.Module):
    """Weighted sum of the configured terms; ``forward`` returns a dict of (weighted) terms."""

    def __init__(self, cfg: DictConfig, num_classes: int):
        super().__init__()
        self.cfg = {
            "ir": cfg.head.ir_weight,
            "aux": cfg.head.aux_softmax,
            "triplet": cfg.loss.triplet,
            "center": cfg.loss.center,
            "pull": cfg.head.center_pull,
        }
        self.ce = CrossEntropyLabelSmooth(num_classes, cfg.loss.label_smoothing)
        self.triplet = TripletLoss(cfg.loss.triplet_margin)

    def forward(self, module: TrainingModule, out: dict, labels: torch.Tensor) -> dict:
        w = self.cfg
        terms = {"ce": w["ir"] * self.ce(out["logits"], labels)}
        if "aux_logits" in out:
            terms["aux_ce"] = w["aux"] * self.ce(out["aux_logits"], labels)
        if w["triplet"] > 0:
            terms["triplet"] = w["triplet"] * self.triplet(out["global"], labels)
        if module.center_loss is not None:
            terms["center"] = w["center"] * module.center_loss(out["global"], labels)
        if w["pull"] > 0 and module.head.uses_centers:
            terms["center_pull"] = w["pull"] * module.head.center_pull(out["bn"], labels)
        return terms


def build_sampler(cfg: DictConfig, pids, camids, rank: int, world_size: int):
    s = cfg.sampler
    if s.name == "random":
        return None
    if s.name not in SAMPLERS:
        raise KeyError(f"unknown sampler {s.name!r}; valid: random, {', '.join(SAMPLERS)}")
    common = {"seed": cfg.train.seed, "rank": rank, "world_size": world_size}
    if s.name == "balanced":
        return SAMPLERS["balanced"](pids, camids, s.batch_size, s.num_instances, **common)
    if s.name == "power":
        return SAMPLERS["power"](pids, s.batch_size, s.num_instances, power=s.power, **common)
    if s.name == "repeat":
        return SAMPLERS["repeat"](
            pids, s.batch_size, s.num_instances, threshold=s.repeat_threshold, **common
        )
    return SAMPLERS["pk"](pids, s.batch_size, s.num_instances, **common)


def build_optimizer(cfg: DictConfig, module: nn.Module) -> torch.optim.Optimizer:
    """Weight decay on weights only: no decay for BN parameters, biases and GeM's p."""
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    o = cfg.optim
    groups = [
        {"params": decay, "weight_decay": o.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=True)
    if o.name == "adam":
        return torch.optim.Adam(groups, lr=o.lr)
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr)
    raise KeyError(f"unknown optimizer {o.name!r}; valid: sgd, adam, adamw")


def build_scheduler(cfg: DictConfig, optimizer, iters_per_epoch: int):
    """Per-iteration LR factor: linear warm-up, then multistep or cosine (epochs in the config)."""
    o, total = cfg.optim, cfg.train.epochs * iters_per_epoch
    warmup = o.warmup_epochs * iters_per_epoch
    if o.scheduler not in ("multistep", "cosine"):
        raise KeyError(f"unknown scheduler {o.scheduler!r}; valid: multistep, cosine")

    def factor(it: int) -> float:
        if it < warmup:
            return o.warmup_factor + (1 - o.warmup_factor) * it / max(1, warmup)
        if o.scheduler == "cosine":
            progress = (it - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        epoch = it // iters_per_epoch
        return o.gamma ** sum(epoch >= m for m in o.milestones)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def load_model(checkpoint_path) -> tuple[ReIDModel, DictConfig]:
    """The embedding model of a training checkpoint (``last.pt``/``best.pt`` or a run folder)."""
    from omegaconf import OmegaConf

    from .checkpoint import load_checkpoint

    checkpoint = load_checkpoint(checkpoint_path)
    if "module" not in checkpoint or "config" not in checkpoint:
        raise FileNotFoundError(
            f"{checkpoint_path}: not a reid training checkpoint (no module/config)"
        )
    cfg = OmegaConf.create(checkpoint["config"])
    cfg.model.pretrained = None  # the checkpoint holds the weights
    model = build_model(cfg)
    prefix = "model."
    state = {k[len(prefix) :]: v for k, v in checkpoint["module"].items() if k.startswith(prefix)}
    model.load_state_dict(state)
    return model.eval(), cfg
