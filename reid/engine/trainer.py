"""Training: ``train_one_epoch`` and ``evaluate`` functions and the ``fit`` loop around them.

The run folder holds ``config.yaml`` (resolved), ``metrics.jsonl`` (one JSON line per epoch and
per evaluation), ``last.pt`` (every epoch) and ``best.pt`` (best mAP), ``summary.csv`` and
``curves.png``. Checkpoints hold model, heads and IR centers, optimiser, scheduler, AMP scaler,
epoch, sampler state, RNG states, the resolved config and the evaluation history, so
``--resume RUN_DIR`` continues exactly from the last completed epoch.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from ..config import config_yaml, to_dict
from ..data import arrays, load_dataset, verify_images
from ..errors import ReidError
from ..evaluation.features_io import FeatureSet
from ..evaluation.pipeline import evaluate_features
from ..evaluation.rank import RankResult, count_valid_queries
from ..models import FeatureExtractor
from ..outputs import OutputFolder, lock_folder
from .build import (
    Losses,
    build_losses,
    build_optimizer,
    build_sampler,
    build_scheduler,
    build_train_loader,
    build_training_module,
    init_from_checkpoint,
)
from .centers import frequency_groups, init_head_centers
from .checkpoint import load_checkpoint, rng_state, seed_everything, set_rng_state
from .distributed import cleanup, init_distributed, local_device
from .report import write_report

log = logging.getLogger(__name__)


class NonFiniteLossError(ReidError):
    """The loss became NaN/inf; the last good checkpoint is left untouched."""


class TrainingInterrupted(ReidError):
    """Ctrl-C during training: the message names the last good checkpoint (exit status 130)."""

    exit_code = 130


def last_good_state(run_dir: Path, epoch: int) -> str:
    """Where a stopped run can continue from, in words."""
    if (run_dir / "last.pt").is_file() and epoch > 1:
        return (
            f"{run_dir / 'last.pt'} (epoch {epoch - 1}) is the last good state; "
            f"continue with --resume {run_dir}"
        )
    return "no checkpoint was written (it stopped in the first epoch)"


def _amp_dtype(mode: str, device: torch.device):
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
    raise KeyError(f"unknown train.amp {mode!r}; valid: auto, off, fp16, bf16")


def _unwrap(module):
    return module.module if hasattr(module, "module") else module


def train_one_epoch(
    module,
    losses: Losses,
    loader,
    optimizer,
    scheduler,
    scaler,
    device,
    *,
    amp_dtype=None,
    grad_clip: float = 0.0,
    channels_last: bool = False,
    max_iters: int = 0,
    epoch: int = 0,
    progress: bool = True,
    class_groups: torch.Tensor | None = None,
    log_every: int = 0,
) -> dict:
    """One pass over ``loader``; returns mean loss terms, accuracy, lr and images/s, and with
    ``class_groups`` (class → frequency tercile) the mean angle between each class's weight or
    IR center and its batch-mean feature per tercile (``center_angle_rare/mid/frequent``).
    ``log_every``: when stderr is not a terminal (no progress bar), a log line every N steps
    with images/s, loss and the epoch's ETA."""
    module.train()
    core = _unwrap(module)
    totals: dict[str, float] = {}
    angle_sum = torch.zeros(core.head.num_classes, dtype=torch.float64)
    angle_n = torch.zeros(core.head.num_classes, dtype=torch.float64)
    correct = seen = 0
    start = time.perf_counter()
    total_iters = min(len(loader), max_iters) if max_iters else len(loader)
    bar = tqdm(
        total=total_iters,
        desc=f"epoch {epoch}",
        disable=None if progress else True,  # auto: no bar when not a terminal
        leave=False,
        dynamic_ncols=True,
    )
    steps = 0
    for step, (images, labels, _, _) in enumerate(loader):
        if max_iters and step >= max_iters:
            break
        steps += 1
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(
            device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
        ):
            out = module(images, labels)
            terms = losses(core, out, labels)
            loss = sum(terms.values())
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"epoch {epoch} step {step}: loss is {loss.item()} "
                f"({ {k: float(v.detach()) for k, v in terms.items()} })"
            )
        if class_groups is not None:  # before this step's center update: the lag it must close
            classes, angles = core.head.weight_angles(out["bn"], labels)
            angle_sum.index_add_(0, classes.cpu(), angles.cpu().double())
            angle_n.index_add_(0, classes.cpu(), torch.ones(len(classes), dtype=torch.float64))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(core.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        core.head.on_train_step(out["bn"].detach(), labels)
        with torch.no_grad():
            correct += int((core.head.predict_logits(out["bn"].detach()).argmax(1) == labels).sum())
        seen += len(labels)
        for key, value in terms.items():
            totals[key] = totals.get(key, 0.0) + float(value.detach())
        elapsed = time.perf_counter() - start
        if log_every and progress and not sys.stderr.isatty() and (step + 1) % log_every == 0:
            rate = (step + 1) / elapsed
            log.info(
                "epoch %d [%d/%d] %.0f img/s loss %.4f ETA %.0f s",
                epoch,
                step + 1,
                total_iters,
                seen / elapsed,
                sum(totals.values()) / (step + 1),
                (total_iters - step - 1) / max(rate, 1e-9),
            )
        bar.set_postfix(
            {
                **{k: f"{v / (step + 1):.3f}" for k, v in totals.items()},
                "acc": f"{correct / seen:.3f}",
                "lr": f"{optimizer.param_groups[0]['lr']:.2e}",
                "img/s": f"{seen / elapsed:.0f}",
            }
        )
        bar.update()
    bar.close()
    steps = max(1, steps)
    elapsed = time.perf_counter() - start
    angles = {}
    if class_groups is not None:
        per_class = angle_sum / angle_n.clamp(min=1)
        for group, name in enumerate(("rare", "mid", "frequent")):
            chosen = (class_groups == group) & (angle_n > 0)
            if bool(chosen.any()):
                angles[f"center_angle_{name}"] = float(per_class[chosen].mean())
    return {
        **angles,
        **{f"loss_{k}": v / steps for k, v in totals.items()},
        "loss": sum(totals.values()) / steps,
        "acc": correct / max(seen, 1),
        "lr": optimizer.param_groups[0]["lr"],
        "images_per_s": seen / elapsed,
        "epoch_s": elapsed,
    }


@torch.no_grad()
def evaluate(
    model,
    query,
    gallery,
    *,
    image_size,
    device,
    metric="cosine",
    ap="torchreid",
    flip=False,
    batch_size=128,
    workers=2,
    rerank=False,
) -> RankResult:
    """Extract query/gallery features with ``model`` and compute CMC/mAP/mINP (FAISS evaluator)."""
    start = time.perf_counter()
    extractor = FeatureExtractor(model, image_size, str(device), batch_size, workers, flip)
    query_features, gallery_features = (
        extractor.extract_records(query),
        extractor.extract_records(gallery),
    )
    extract_s = time.perf_counter() - start
    (query_pids, query_camids), (gallery_pids, gallery_camids) = arrays(query), arrays(gallery)
    result = evaluate_features(
        FeatureSet(query_features, query_pids, query_camids, np.array([])),
        FeatureSet(gallery_features, gallery_pids, gallery_camids, np.array([])),
        metric=metric,
        ap=ap,
        rerank=rerank,
        device=device,
    )
    result.timings.update(
        {"extract_s": extract_s, "metrics_s": time.perf_counter() - start - extract_s}
    )
    return result


#: a run whose rare-tercile center angle stays above this is not testing IR-Softmax
CENTER_ANGLE_WARN = 20.0
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "config.yaml", "summary.csv", "curves.png")


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
    """What one training run holds while it runs (built by ``_build``, saved by ``_save``)."""

    cfg: DictConfig
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
    groups: torch.Tensor
    rank: int = 0
    world_size: int = 1
    history: list = field(default_factory=list)
    best_map: float = -1.0
    start_epoch: int = 1

    @property
    def core(self):
        return _unwrap(self.module)


def _build(cfg: DictConfig, run_dir: Path, checkpoint: dict | None) -> Training:
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
    if cfg.model.init_from and checkpoint is None:
        init_from_checkpoint(module, cfg)
    optimizer = build_optimizer(cfg, module)
    amp_dtype = _amp_dtype(cfg.train.amp, device)
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
        torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
        device,
        amp_dtype,
        frequency_groups(dataset.train, num_classes),
        rank,
        world_size,
    )
    if checkpoint is not None:
        _restore(run, checkpoint)
    elif module.head.uses_centers and cfg.head.center_init == "features":
        init_head_centers(module, dataset.train, cfg, device)
    if world_size > 1:
        torch.manual_seed(cfg.train.seed + rank)  # different augmentations per rank
        run.module = torch.nn.parallel.DistributedDataParallel(
            module,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    return run


def _restore(run: Training, checkpoint: dict) -> None:
    run.module.load_state_dict(checkpoint["module"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.scheduler.load_state_dict(checkpoint["scheduler"])
    run.scaler.load_state_dict(checkpoint["scaler"])
    run.history, run.best_map = checkpoint["history"], checkpoint["best_map"]
    run.start_epoch = checkpoint["epoch"] + 1
    set_rng_state(checkpoint["rng"])
    log.info("resumed %s at epoch %d", run.run_dir, run.start_epoch)


def _save(run: Training, epoch: int, name: str) -> None:
    run_outputs(run.run_dir).write(name, lambda tmp: torch.save(_state(run, epoch), tmp))


def _state(run: Training, epoch: int) -> dict:
    return {
        "module": run.core.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "epoch": epoch,
        "sampler": run.sampler.state_dict() if run.sampler is not None else None,
        "rng": rng_state(),
        "config": to_dict(run.cfg),
        "history": run.history,
        "best_map": run.best_map,
        "num_classes": run.core.head.num_classes,
    }


def _evaluate_now(run: Training) -> dict:
    cfg = run.cfg
    result = evaluate(
        run.core.model,
        run.dataset.query,
        run.dataset.gallery,
        image_size=tuple(cfg.data.image_size),
        device=run.device,
        metric=cfg.eval.metric,
        ap=cfg.eval.ap,
        flip=cfg.eval.flip,
        batch_size=cfg.eval.batch_size,
        workers=cfg.data.workers,
        rerank=cfg.eval.rerank,
    ).as_dict()
    log.info(
        "R1 %.2f%% mAP %.2f%% mINP %.2f%%",
        100 * result["rank1"],
        100 * result["mAP"],
        100 * result["mINP"],
    )
    return {k: result[k] for k in ("rank1", "rank5", "rank10", "mAP", "mINP")}


def _log_epoch(epoch: int, stats: dict, uses_centers: bool, last: bool) -> None:
    angles = [stats.get(f"center_angle_{t}", float("nan")) for t in ("rare", "mid", "frequent")]
    log.info(
        "epoch %d: loss %.4f acc %.3f %.0f img/s; weight-feature angles (rare/mid/frequent) %s",
        epoch,
        stats["loss"],
        stats["acc"],
        stats["images_per_s"],
        "/".join(f"{a:.1f}°" for a in angles),
    )
    if uses_centers and last and angles[0] > CENTER_ANGLE_WARN:
        log.warning(
            "rare classes' IR centers ended %.1f° from their batch features (> %.0f°): the "
            "centers lag the features, so this run says little about IR-Softmax "
            "(see head.center_update, head.center_refresh)",
            angles[0],
            CENTER_ANGLE_WARN,
        )


def run_outputs(run_dir: Path) -> OutputFolder:
    """The run folder's files, in its ledger (``reid/outputs.py``)."""
    return OutputFolder(run_dir, "run", "--output")


def fit(
    cfg: DictConfig,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    replace: bool = False,
) -> dict:
    """Train (and periodically evaluate) as configured; returns the final metrics dict.

    ``resume=True`` continues from ``run_dir/last.pt`` with ``cfg`` (the run's own config, where
    ``workflows.train`` allows only a longer ``train.epochs`` and a few bookkeeping keys to change).
    Everything that can be checked runs before the first step: the evaluation set, the sampler,
    the model, ``init_from``. The folder is held for this run alone while it trains (a second
    training into it is refused). ``replace=True`` (``--overwrite``) removes the earlier run's
    files, those its ledger lists, only once every check has passed.
    """
    run_dir = Path(run_dir)
    if int(os.environ.get("RANK", "0")) != 0:  # DDP: rank 0 holds the folder and writes it
        return _fit(cfg, run_dir, resume, progress, replace, check_names=False)
    created = not run_dir.exists()
    try:
        with lock_folder(run_dir, "training run", "--output"):
            return _fit(cfg, run_dir, resume, progress, replace, check_names=not resume)
    except BaseException:
        if created and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()  # a run that failed its checks leaves no empty folder behind
        raise


def _fit(
    cfg: DictConfig, run_dir: Path, resume: bool, progress: bool, replace: bool, check_names: bool
) -> dict:
    outputs = run_outputs(run_dir)
    if check_names:  # a new run's names: free, or the earlier run's own files
        outputs.check(RUN_FILES, "choose another --output folder")
    run = _build(cfg, run_dir, load_checkpoint(run_dir / "last.pt") if resume else None)
    main, core = run.rank == 0, run.core
    if main:
        if replace:
            outputs.remove(RUN_FILES)
            shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
        outputs.write_text("config.yaml", config_yaml(cfg))
    writer = None
    if main and cfg.output.tensorboard:
        from torch.utils.tensorboard import SummaryWriter  # optional, heavy: only when asked

        writer = SummaryWriter(str(run_dir / "tensorboard"))
    epoch = run.start_epoch
    try:
        for epoch in range(run.start_epoch, cfg.train.epochs + 1):
            if run.sampler is not None:
                run.sampler.set_epoch(epoch)
            refresh = cfg.head.center_refresh
            if core.head.uses_centers and refresh and epoch > 1 and (epoch - 1) % refresh == 0:
                init_head_centers(core, run.dataset.train, cfg, run.device)
            try:
                stats = train_one_epoch(
                    run.module,
                    run.losses,
                    run.loader,
                    run.optimizer,
                    run.scheduler,
                    run.scaler,
                    run.device,
                    amp_dtype=run.amp_dtype,
                    grad_clip=cfg.optim.grad_clip,
                    channels_last=cfg.train.channels_last,
                    max_iters=cfg.train.max_iters_per_epoch,
                    epoch=epoch,
                    progress=progress and main,
                    class_groups=run.groups,
                    log_every=cfg.train.log_every,
                )
            except NonFiniteLossError as exc:
                raise NonFiniteLossError(
                    f"{exc}; stopped, {last_good_state(run_dir, epoch)}"
                ) from None
            if run.world_size > 1:  # BN running statistics drift per rank after the last forward
                for buffer in core.buffers():
                    torch.distributed.broadcast(buffer, 0)
            last = epoch == cfg.train.epochs
            record = {"epoch": epoch, **stats}
            if main and (last or (cfg.eval.every and epoch % cfg.eval.every == 0)):
                try:
                    record.update(_evaluate_now(run))
                except BaseException:  # keep the epoch just trained, then report the failure
                    run.history.append(record)
                    _save(run, epoch, "last.pt")
                    epoch += 1  # the epoch just trained is the last good state
                    raise
            if main:
                run.history.append(record)
                with open(run_dir / "metrics.jsonl", "a") as handle:
                    handle.write(json.dumps(record) + "\n")
                outputs.record(["metrics.jsonl"])
                if writer is not None:
                    for key, value in record.items():
                        writer.add_scalar(key, value, epoch)
                if "mAP" in record and record["mAP"] > run.best_map:
                    run.best_map = record["mAP"]
                    _save(run, epoch, "best.pt")
                _save(run, epoch, "last.pt")
                _log_epoch(epoch, stats, core.head.uses_centers, last)
    except KeyboardInterrupt:
        raise TrainingInterrupted(
            f"interrupted in epoch {epoch}: {last_good_state(run_dir, epoch)}"
        ) from None
    finally:
        if writer is not None:
            writer.close()
            outputs.record(["tensorboard"])
        cleanup()
    if main:
        write_report(run.history, outputs)
    return run.history[-1] if run.history else {}
