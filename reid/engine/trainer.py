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
import random
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import config_from_dict, save_config, to_dict
from ..data import arrays, load_dataset, verify_images
from ..data.dataset import ImageDataset
from ..data.transforms import build_transforms
from ..evaluation.rank import RankResult
from ..models import FeatureExtractor
from .build import Losses, TrainingModule, build_optimizer, build_sampler, build_scheduler
from .checkpoint import atomic_save, load_checkpoint
from .distributed import cleanup, init_distributed, local_device

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf; the last good checkpoint is left untouched."""


def _amp_dtype(mode: str, device: torch.device):
    if mode == "auto":
        mode = "fp16" if device.type == "cuda" else "off"
    if mode == "off":
        return None
    if mode == "bf16":
        return torch.bfloat16
    if mode == "fp16":
        if device.type != "cuda":
            raise ValueError("train.amp=fp16 needs CUDA; use bf16 or off on CPU")
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
) -> dict:
    """One pass over ``loader``; returns mean loss terms, accuracy, lr and images/s."""
    module.train()
    core = _unwrap(module)
    totals: dict[str, float] = {}
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
                f"({ {k: float(v.detach()) for k, v in terms.items()} }); stopping, last.pt is the last good state"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(core.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        core.head.update_centers(out["bn"].detach(), labels)
        if hasattr(core.head, "step"):
            core.head.step()
        with torch.no_grad():
            correct += int((core.head.predict_logits(out["bn"].detach()).argmax(1) == labels).sum())
        seen += len(labels)
        for key, value in terms.items():
            totals[key] = totals.get(key, 0.0) + float(value.detach())
        elapsed = time.perf_counter() - start
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
    return {
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
    from ..evaluation.features_io import FeatureSet
    from ..evaluation.pipeline import evaluate_features

    start = time.perf_counter()
    extractor = FeatureExtractor(model, image_size, str(device), batch_size, workers, flip)
    query_features, gallery_features = (
        extractor.extract_records(query),
        extractor.extract_records(gallery),
    )
    extract_s = time.perf_counter() - start
    (qp, qc), (gp, gc) = arrays(query), arrays(gallery)
    result = evaluate_features(
        FeatureSet(query_features, qp, qc, np.array([])),
        FeatureSet(gallery_features, gp, gc, np.array([])),
        metric=metric,
        ap=ap,
        rerank=rerank,
        device=device,
    )
    result.timings.update(
        {"extract_s": extract_s, "metrics_s": time.perf_counter() - start - extract_s}
    )
    return result


@torch.no_grad()
def init_centers_from_features(core: TrainingModule, records, cfg: DictConfig, device) -> None:
    """IR-Softmax: every class center ← normalised mean of its BNNeck features (one pass)."""
    extractor = FeatureExtractor(
        core.model, tuple(cfg.data.image_size), str(device), cfg.eval.batch_size, cfg.data.workers
    )
    features = torch.from_numpy(extractor.extract_records(records)).to(device)
    core.head.init_centers(features, torch.from_numpy(arrays(records)[0]).to(device))
    core.model.train()  # the extractor put it in eval mode


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - third-party augmentations may use it
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def _rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def fit(cfg: DictConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Train (and periodically evaluate) as configured; returns the final metrics dict."""
    run_dir = Path(run_dir)
    checkpoint = load_checkpoint(run_dir / "last.pt") if resume else None
    if checkpoint is not None:
        cfg = config_from_dict(checkpoint["config"], str(run_dir / "last.pt"))
    device = local_device(cfg.train.device)
    rank, world_size = init_distributed(device)
    main = rank == 0
    _seed_everything(cfg.train.seed, cfg.train.deterministic)  # same initial weights on every rank
    dataset = load_dataset(cfg.data.root, cfg.data.kind)
    if cfg.data.verify_images and main:
        verify_images(dataset.train + dataset.query + dataset.gallery)
    pids, camids = arrays(dataset.train)
    num_classes = dataset.num_train_pids
    size = tuple(cfg.data.image_size)
    train_set = ImageDataset(
        dataset.train,
        build_transforms(
            size, True, cfg.data.flip, cfg.data.pad, cfg.data.random_erasing, cfg.data.color_jitter
        ),
    )
    sampler = build_sampler(cfg, pids, camids, rank, world_size)
    loader_kwargs = {
        "num_workers": cfg.data.workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": False,
    }
    if sampler is None:
        loader = DataLoader(
            train_set,
            batch_size=cfg.sampler.batch_size,
            shuffle=True,
            drop_last=True,
            **loader_kwargs,
        )
    else:
        loader = DataLoader(train_set, batch_sampler=sampler, **loader_kwargs)
    iters = (
        min(len(loader), cfg.train.max_iters_per_epoch)
        if cfg.train.max_iters_per_epoch
        else len(loader)
    )
    if iters == 0:
        raise ValueError(
            f"{cfg.data.root}: the training set gives no batch of {cfg.sampler.batch_size} "
            f"(P×K); lower sampler.batch_size"
        )

    module = TrainingModule(cfg, num_classes).to(device)
    if cfg.train.channels_last:
        module = module.to(memory_format=torch.channels_last)
    losses = Losses(cfg, num_classes)
    optimizer = build_optimizer(cfg, module)
    scheduler = build_scheduler(cfg, optimizer, iters)
    amp_dtype = _amp_dtype(cfg.train.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    history: list[dict] = []
    best_map, start_epoch = -1.0, 1
    if checkpoint is not None:
        module.load_state_dict(checkpoint["module"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        history, best_map = checkpoint["history"], checkpoint["best_map"]
        start_epoch = checkpoint["epoch"] + 1
        _set_rng_state(checkpoint["rng"])
        log.info("resumed %s at epoch %d", run_dir, start_epoch)
    elif cfg.head.weights == "centers" and cfg.head.center_init == "features":
        init_centers_from_features(module, dataset.train, cfg, device)
    if world_size > 1:
        torch.manual_seed(cfg.train.seed + rank)  # different augmentations per rank
        module = torch.nn.parallel.DistributedDataParallel(
            module,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    writer = None
    if main and cfg.output.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))
    core = _unwrap(module)

    def save(epoch: int, name: str) -> None:
        atomic_save(
            {
                "module": core.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch,
                "sampler": sampler.state_dict() if sampler is not None else None,
                "rng": _rng_state(),
                "config": to_dict(cfg),
                "history": history,
                "best_map": best_map,
                "num_classes": num_classes,
            },
            run_dir / name,
        )

    try:
        for epoch in range(start_epoch, cfg.train.epochs + 1):
            if sampler is not None:
                sampler.set_epoch(epoch)
            stats = train_one_epoch(
                module,
                losses,
                loader,
                optimizer,
                scheduler,
                scaler,
                device,
                amp_dtype=amp_dtype,
                grad_clip=cfg.optim.grad_clip,
                channels_last=cfg.train.channels_last,
                max_iters=cfg.train.max_iters_per_epoch,
                epoch=epoch,
                progress=progress and main,
            )
            if world_size > 1:  # BN running statistics drift per rank after the last forward
                for buffer in core.buffers():
                    torch.distributed.broadcast(buffer, 0)
            record = {"epoch": epoch, **stats}
            last = epoch == cfg.train.epochs
            if main and (last or (cfg.eval.every and epoch % cfg.eval.every == 0)):
                result = evaluate(
                    core.model,
                    dataset.query,
                    dataset.gallery,
                    image_size=size,
                    device=device,
                    metric=cfg.eval.metric,
                    ap=cfg.eval.ap,
                    flip=cfg.eval.flip,
                    batch_size=cfg.eval.batch_size,
                    workers=cfg.data.workers,
                    rerank=cfg.eval.rerank,
                )
                metrics = result.as_dict()
                record.update({k: metrics[k] for k in ("rank1", "rank5", "rank10", "mAP", "mINP")})
                log.info(
                    "epoch %d: R1 %.2f%% mAP %.2f%% mINP %.2f%%",
                    epoch,
                    100 * metrics["rank1"],
                    100 * metrics["mAP"],
                    100 * metrics["mINP"],
                )
            if main:
                history.append(record)
                with open(run_dir / "metrics.jsonl", "a") as handle:
                    handle.write(json.dumps(record) + "\n")
                if writer is not None:
                    for key, value in record.items():
                        writer.add_scalar(key, value, epoch)
                if "mAP" in record and record["mAP"] > best_map:
                    best_map = record["mAP"]
                    save(epoch, "best.pt")
                save(epoch, "last.pt")
                log.info(
                    "epoch %d: loss %.4f acc %.3f %.0f img/s",
                    epoch,
                    stats["loss"],
                    stats["acc"],
                    stats["images_per_s"],
                )
    finally:
        if writer is not None:
            writer.close()
        cleanup()
    if main:
        from .report import write_report

        write_report(history, run_dir)
    return history[-1] if history else {}
