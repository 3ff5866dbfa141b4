"""Configuration → objects, in one place (no config object is read anywhere else)."""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader

from ..data.dataset import ImageDataset
from ..data.samplers import SAMPLERS
from ..data.transforms import build_transforms
from ..errors import CheckpointError
from ..heads import build_head, head_options
from ..losses import CenterLoss, CrossEntropyLabelSmooth, TripletLoss
from ..models import ReIDModel
from ..models.checkpoint import (
    ARCHITECTURE_KEYS,
    load_embedding_state,
    prefixed,
    read_checkpoint,
)


def build_model(cfg: DictConfig) -> ReIDModel:
    m = cfg.model
    return ReIDModel(m.backbone, m.last_stride, m.pooling, m.embedding_dim, m.bnneck, m.pretrained)


def head_kwargs(cfg: DictConfig) -> dict:
    """The chosen head's constructor arguments: its declared options that are set, and the
    center settings for IR-Softmax (``config.validate`` already refused options it lacks)."""
    h = cfg.head
    kwargs = {"weights": h.weights}
    for option in head_options(h.name):
        if h[option] is not None:
            kwargs[option] = (
                int(h[option]) if (h.name, option) == ("sphereface", "margin") else h[option]
            )
    if h.weights == "centers":
        kwargs.update(
            center_update=h.center_update,
            center_momentum=h.center_momentum,
            center_lr=h.center_lr,
            center_lambda=h.center_lambda,
        )
    return kwargs


class TrainingModule(nn.Module):
    """Model + head(s) + learned loss parameters in one module (one DDP wrapper, one state)."""

    def __init__(
        self,
        model: ReIDModel,
        head: nn.Module,
        aux_head: nn.Module | None = None,
        center_loss: CenterLoss | None = None,
    ):
        super().__init__()
        self.model, self.head, self.aux_head, self.center_loss = model, head, aux_head, center_loss

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        global_feature, bn_feature = self.model.forward_both(images)
        out = {"global": global_feature, "bn": bn_feature, "logits": self.head(bn_feature, labels)}
        if self.aux_head is not None:
            out["aux_logits"] = self.aux_head(bn_feature, labels)
        return out


def build_training_module(cfg: DictConfig, num_classes: int) -> TrainingModule:
    model = build_model(cfg)
    dim = model.feature_dim
    return TrainingModule(
        model,
        build_head(cfg.head.name, dim, num_classes, **head_kwargs(cfg)),
        build_head("softmax", dim, num_classes) if cfg.head.aux_softmax > 0 else None,
        CenterLoss(num_classes, dim) if cfg.loss.center > 0 else None,
    )


def init_from_checkpoint(module: TrainingModule, cfg: DictConfig) -> None:
    """``model.init_from``: start from an earlier run's backbone + BNNeck (and, with
    ``model.init_head``, its learned head weights), as the IR-Softmax paper fine-tunes from a
    trained softmax baseline. Refuses a checkpoint of another architecture by name."""
    path = cfg.model.init_from
    checkpoint = read_checkpoint(path)
    source = checkpoint["config"]["model"]
    for key in ARCHITECTURE_KEYS:
        if source[key] != cfg.model[key]:
            raise CheckpointError(
                f"model.init_from={path}: its model.{key} is {source[key]!r}, this run's is "
                f"{cfg.model[key]!r}; fine-tuning needs the same architecture"
            )
    load_embedding_state(module.model, prefixed(checkpoint["module"], "model."), str(path))
    if cfg.model.init_head:
        state = prefixed(checkpoint["module"], "head.")
        if module.head.uses_centers or "weight" not in state:
            raise CheckpointError(
                f"model.init_head: needs learned weights on both sides (this run: head.weights="
                f"{cfg.head.weights}; {path}: {checkpoint['config']['head']['weights']})"
            )
        if state["weight"].shape != module.head.weight.shape:
            raise CheckpointError(
                f"model.init_head: {path} has {tuple(state['weight'].shape)} head weights, this run "
                f"needs {tuple(module.head.weight.shape)} (other training identities?)"
            )
        with torch.no_grad():
            module.head.weight.copy_(state["weight"])


class Losses(nn.Module):
    """Weighted sum of the configured terms; ``forward`` returns a dict of (weighted) terms."""

    def __init__(
        self,
        num_classes: int,
        *,
        ir_weight: float = 1.0,
        aux_weight: float = 0.0,
        triplet: float = 1.0,
        triplet_margin: float | None = 0.3,
        center: float = 0.0,
        center_pull: float = 0.0,
        label_smoothing: float = 0.1,
    ):
        super().__init__()
        self.weights = {
            "ir": ir_weight,
            "aux": aux_weight,
            "triplet": triplet,
            "center": center,
            "pull": center_pull,
        }
        self.ce = CrossEntropyLabelSmooth(num_classes, label_smoothing)
        self.triplet = TripletLoss(triplet_margin)

    def forward(self, module: TrainingModule, out: dict, labels: torch.Tensor) -> dict:
        w = self.weights
        terms = {"ce": w["ir"] * self.ce(out["logits"], labels)}
        if "aux_logits" in out:
            terms["aux_ce"] = w["aux"] * self.ce(out["aux_logits"], labels)
        if w["triplet"] > 0:
            terms["triplet"] = w["triplet"] * self.triplet(out["global"], labels)
        if module.center_loss is not None:
            terms["center"] = w["center"] * module.center_loss(out["global"], labels)
        if w["pull"] > 0 and module.head.uses_centers:
            terms["center_pull"] = w["pull"] * module.head.centers.pull(out["bn"], labels)
        return terms


def build_losses(cfg: DictConfig, num_classes: int) -> Losses:
    return Losses(
        num_classes,
        ir_weight=cfg.head.ir_weight,
        aux_weight=cfg.head.aux_softmax,
        triplet=cfg.loss.triplet,
        triplet_margin=cfg.loss.triplet_margin,
        center=cfg.loss.center,
        center_pull=cfg.head.center_pull,
        label_smoothing=cfg.loss.label_smoothing,
    )


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


def build_train_loader(cfg: DictConfig, records, sampler, device: torch.device) -> DataLoader:
    """The training DataLoader: the identity sampler's batches, or shuffled fixed-size batches."""
    dataset = ImageDataset(
        records,
        build_transforms(
            tuple(cfg.data.image_size),
            True,
            cfg.data.flip,
            cfg.data.pad,
            cfg.data.random_erasing,
            cfg.data.color_jitter,
        ),
    )
    kwargs = {"num_workers": cfg.data.workers, "pin_memory": device.type == "cuda"}
    if sampler is None:
        return DataLoader(
            dataset, batch_size=cfg.sampler.batch_size, shuffle=True, drop_last=True, **kwargs
        )
    return DataLoader(dataset, batch_sampler=sampler, **kwargs)


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
