"""Configuration → objects, in one place: the trainer, the centers' lifecycle, the loss and the
evaluation take the plain settings built here (``build_training``), not the config."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader

from ..data import arrays, load_dataset, verify_images
from ..data.cache import CachedLoader, decoded_bytes, shuffled_batches
from ..data.dataset import ImageDataset
from ..data.samplers import SAMPLERS
from ..data.transforms import build_transforms
from ..errors import CheckpointError, ReidError
from ..evaluation.rank import count_valid_queries
from ..heads import build_head, head_options
from ..heads.centers import CenterSettings
from ..losses import CenterLoss, CrossEntropyLabelSmooth, TripletLoss
from ..models import ReIDModel
from ..models.checkpoint import (
    ARCHITECTURE_KEYS,
    build_embedding_model,
    load_embedding_state,
    prefixed,
    read_checkpoint,
)
from ..optim import amp_dtype, lr_schedule, make_optimizer
from .centers import CenterLifecycle, FeaturePass
from .checkpoint import seed_everything, set_rng_state
from .distributed import init_distributed, local_device

log = logging.getLogger("reid.engine.trainer")


def build_model(cfg: DictConfig) -> ReIDModel:
    return build_embedding_model(cfg.model, cfg.model.pretrained)


def center_settings(cfg: DictConfig) -> CenterSettings:
    return CenterSettings(**cfg.centers)


def head_kwargs(cfg: DictConfig) -> dict:
    """The chosen head's constructor arguments: its declared options that are set, and the
    center settings for IR-Softmax (``config.validate`` already refused options it lacks)."""
    h = cfg.head
    kwargs = {"weights": h.weights}
    kwargs.update({k: h[k] for k in head_options(h.name) if h[k] is not None})
    if h.weights == "centers":
        kwargs["centers"] = center_settings(cfg)
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
        center_pull=cfg.centers.pull,
        label_smoothing=cfg.loss.label_smoothing,
    )


def build_sampler(cfg: DictConfig, pids, camids, rank: int, world_size: int):
    """The identity sampler ``sampler.name`` with its own settings (``OPTIONS``); None: random."""
    s = cfg.sampler
    if s.name == "random":
        return None
    if s.name not in SAMPLERS:
        raise KeyError(f"unknown sampler {s.name!r}; valid: random, {', '.join(SAMPLERS)}")
    sampler = SAMPLERS[s.name]
    first = (pids, camids) if sampler.NEEDS_CAMIDS else (pids,)
    options = {key: s[key] for key in sampler.OPTIONS}
    return sampler(
        *first,
        s.batch_size,
        s.num_instances,
        seed=cfg.train.seed,
        rank=rank,
        world_size=world_size,
        **options,
    )


def build_train_loader(cfg: DictConfig, records, sampler, device: torch.device):
    """The training batches: the identity sampler's, or shuffled fixed-size ones; from decoded
    images in memory (``data.cache=memory``, when it applies) or a DataLoader over the files."""
    d = cfg.data
    if d.cache == "memory":
        size = decoded_bytes(len(records), d.image_size)
        if d.color_jitter:
            log.info(
                "data.cache=memory: colour jitter computes otherwise on tensors than on images, "
                "which would change the numbers; reading images from files"
            )
        elif size > d.cache_gib * 2**30:
            log.info(
                "data.cache=memory: the decoded training set needs %.1f GiB > data.cache_gib=%g; "
                "reading images from files",
                size / 2**30,
                d.cache_gib,
            )
        else:
            return CachedLoader(
                records,
                d.image_size,
                sampler or shuffled_batches(len(records), cfg.sampler.batch_size),
                flip=d.flip,
                pad=d.pad,
                random_erasing=d.random_erasing,
                workers=d.workers,
                threads=max(1, d.workers),
            )
    dataset = ImageDataset(
        records,
        build_transforms(
            tuple(d.image_size), True, d.flip, d.pad, d.random_erasing, d.color_jitter
        ),
    )
    kwargs = {"num_workers": d.workers, "pin_memory": device.type == "cuda"}
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
    return make_optimizer(o.name, groups, o.lr, o.momentum)


def build_scheduler(cfg: DictConfig, optimizer, iters_per_epoch: int):
    """Per-iteration LR factor: linear warm-up, then multistep or cosine (epochs in the config)."""
    o = cfg.optim
    return lr_schedule(optimizer, o.scheduler, iters_per_epoch, cfg.train.epochs,
                       o.warmup_epochs, o.warmup_factor, o.gamma, o.milestones)  # fmt: skip


@dataclass
class LoopSettings:
    """What the epoch loop needs of the config (``train``, ``optim.grad_clip``, ``output``)."""

    epochs: int
    eval_every: int = 0
    grad_clip: float = 0.0
    channels_last: bool = False
    max_iters: int = 0
    log_every: int = 0
    tensorboard: bool = False


@dataclass
class EvalSettings:
    """How the trainer evaluates (``eval`` and the data's image size and workers)."""

    image_size: tuple
    metric: str = "cosine"
    ap: str = "torchreid"
    flip: bool = False
    batch_size: int = 128
    workers: int = 2
    rerank: bool = False


def loop_settings(cfg: DictConfig) -> LoopSettings:
    t = cfg.train
    return LoopSettings(
        t.epochs,
        cfg.eval.every,
        cfg.optim.grad_clip,
        t.channels_last,
        t.max_iters_per_epoch,
        t.log_every,
        cfg.output.tensorboard,
    )


def eval_settings(cfg: DictConfig) -> EvalSettings:
    e = cfg.eval
    return EvalSettings(
        tuple(cfg.data.image_size), e.metric, e.ap, e.flip, e.batch_size, cfg.data.workers, e.rerank
    )


def feature_pass(cfg: DictConfig) -> FeaturePass:
    return FeaturePass(
        tuple(cfg.data.image_size),
        cfg.sampler.batch_size,
        cfg.data.workers,
        cfg.train.seed,
        cfg.train.channels_last,
    )


def check_evaluation_set(dataset, root: str) -> None:
    """Refuse, before training, a query/gallery that the final evaluation could not score."""
    if not dataset.query or not dataset.gallery:
        empty = "query" if not dataset.query else "gallery"
        raise ReidError(f"data.root={root}: the {empty} set is empty; nothing to evaluate")
    (qp, qc), (gp, gc) = arrays(dataset.query), arrays(dataset.gallery)
    if count_valid_queries(qp, qc, gp, gc) == 0:
        raise ReidError(
            f"data.root={root}: no query has a positive in the gallery (same id, another camera)"
        )


@dataclass
class Training:
    """What one training run holds while it runs (built by ``build_training``)."""

    cfg: DictConfig  # saved with every checkpoint; the loop reads ``loop`` and ``evaluation``
    run_dir: Path
    dataset: object
    module: torch.nn.Module
    losses: Losses
    loader: object
    sampler: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    device: torch.device
    amp_dtype: object
    centers: CenterLifecycle
    loop: LoopSettings
    evaluation: EvalSettings
    rank: int = 0
    world_size: int = 1
    history: list = field(default_factory=list)
    best_map: float = -1.0
    start_epoch: int = 1
    saved_epoch: int = 0  # the last epoch written to last.pt

    @property
    def core(self):
        return self.module.module if hasattr(self.module, "module") else self.module


def build_training(cfg: DictConfig, run_dir: Path, checkpoint: dict | None) -> Training:
    """Everything before the first step, every check included (fails in seconds, not epochs)."""
    device = local_device(cfg.train.device)
    rank, world_size = init_distributed(device)
    seed_everything(cfg.train.seed, cfg.train.deterministic)  # same initial weights on every rank
    dataset = load_dataset(cfg.data.root, cfg.data.kind)
    check_evaluation_set(dataset, cfg.data.root)
    if cfg.data.verify_images and rank == 0:
        verify_images(dataset.train + dataset.query + dataset.gallery)
    pids, camids = arrays(dataset.train)
    num_classes = dataset.num_train_pids
    sampler = build_sampler(cfg, pids, camids, rank, world_size)
    loader = build_train_loader(cfg, dataset.train, sampler, device)
    iters = min(len(loader), cfg.train.max_iters_per_epoch or len(loader))
    if iters == 0:
        raise ReidError(
            f"sampler.batch_size={cfg.sampler.batch_size}: larger than the training set of "
            f"{cfg.data.root} ({len(dataset.train)} images) allows; lower it"
        )
    module = build_training_module(cfg, num_classes).to(device)
    if cfg.train.channels_last:
        module = module.to(memory_format=torch.channels_last)
    if cfg.train.compile:
        module.model.compile_for_training()
    if cfg.model.init_from and checkpoint is None:
        init_from_checkpoint(module, cfg)
    optimizer = build_optimizer(cfg, module)
    dtype = amp_dtype(cfg.train.amp, device)
    run = Training(
        cfg,
        run_dir,
        dataset,
        module,
        build_losses(cfg, num_classes),
        loader,
        sampler,
        optimizer,
        build_scheduler(cfg, optimizer, iters),
        torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
        device,
        dtype,
        CenterLifecycle(module, dataset.train, center_settings(cfg), feature_pass(cfg), device),
        loop_settings(cfg),
        eval_settings(cfg),
        rank,
        world_size,
    )
    if checkpoint is not None:
        restore(run, checkpoint)
    else:
        run.centers.start()
    if world_size > 1:
        torch.manual_seed(cfg.train.seed + rank)  # different augmentations per rank
        run.module = torch.nn.parallel.DistributedDataParallel(
            module,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    return run


def restore(run: Training, checkpoint: dict) -> None:
    """A resumed run's state from its ``last.pt``."""
    run.module.load_state_dict(checkpoint["module"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.scheduler.load_state_dict(checkpoint["scheduler"])
    run.scaler.load_state_dict(checkpoint["scaler"])
    run.history, run.best_map = checkpoint["history"], checkpoint["best_map"]
    run.start_epoch = checkpoint["epoch"] + 1
    run.saved_epoch = checkpoint["epoch"]
    set_rng_state(checkpoint["rng"])
    log.info("resumed %s at epoch %d", run.run_dir, run.start_epoch)
