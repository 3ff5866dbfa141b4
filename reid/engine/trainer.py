"""Training: ``train_one_epoch`` and ``evaluate`` functions and the ``fit`` loop around them.

The run folder holds ``config.yaml`` (resolved), ``metrics.jsonl`` (one JSON line per epoch and
per evaluation), ``last.pt`` (every epoch) and ``best.pt`` (best mAP), ``summary.csv`` and
``curves.png``. Checkpoints hold model, heads and IR centers, optimiser, scheduler, AMP scaler,
epoch, sampler state, RNG states, the resolved config and the evaluation history, so
``--resume RUN_DIR`` continues exactly from the last completed epoch. The config is read in
``build.py`` (``build_training``); the loop here reads the plain settings it built.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from ..config import config_yaml, to_dict
from ..data import arrays
from ..errors import ReidError
from ..evaluation.features_io import FeatureSet
from ..evaluation.pipeline import evaluate_features
from ..evaluation.rank import RankResult
from ..models import FeatureExtractor
from ..models.checkpoint import plain
from ..outputs import OutputFolder, lock_folder
from .build import EvalSettings, LoopSettings, Losses, Training, build_training
from .centers import TERCILES, CenterLifecycle
from .checkpoint import load_checkpoint, rng_state
from .distributed import cleanup
from .metric_logger import MetricLogger
from .report import write_report

log = logging.getLogger(__name__)


class NonFiniteLossError(ReidError):
    """The loss became NaN/inf; the last good checkpoint is left untouched."""


class TrainingInterrupted(ReidError):
    """Ctrl-C during training: the message names the last good checkpoint (exit status 130)."""

    exit_code = 130


def last_good_state(run_dir: Path, saved_epoch: int) -> str:
    """Where a stopped run can continue from, in words (``saved_epoch``: the last epoch written
    to ``last.pt``, 0 for none). Read from what was saved, not from the epoch counter: a stop
    can land between an epoch's checkpoint and the next epoch's start."""
    if (run_dir / "last.pt").is_file() and saved_epoch > 0:
        return (
            f"{run_dir / 'last.pt'} (epoch {saved_epoch}) is the last good state; "
            f"continue with --resume {run_dir}"
        )
    return "no checkpoint was written (it stopped in the first epoch)"


def _unwrap(module):
    return module.module if hasattr(module, "module") else module


@dataclass
class Optimization:
    """What one optimisation step uses: the optimizer, its per-step LR schedule, the gradient
    scaler and the autocast dtype (None: fp32)."""

    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    amp_dtype: object = None


#: the loop settings of a bare pass (no clipping, every batch): ``train_one_epoch``'s default
ONE_PASS = LoopSettings(epochs=1)


def train_one_epoch(
    module,
    losses: Losses,
    loader,
    optimization: Optimization,
    device,
    *,
    loop: LoopSettings = ONE_PASS,
    epoch: int = 0,
    progress: bool = True,
    centers: CenterLifecycle | None = None,
) -> dict:
    """One pass over ``loader`` (at most ``loop.max_iters`` steps); returns mean loss terms,
    accuracy, lr and images/s (``MetricLogger``), and with ``centers`` the epoch's
    weight-feature angles."""
    optimizer, scheduler, scaler, amp_dtype = (
        optimization.optimizer, optimization.scheduler, optimization.scaler, optimization.amp_dtype
    )  # fmt: skip
    grad_clip, channels_last, max_iters = loop.grad_clip, loop.channels_last, loop.max_iters
    log_every = loop.log_every
    module.train()
    core = _unwrap(module)
    total = min(len(loader), max_iters) if max_iters else len(loader)
    metrics = MetricLogger(total, epoch, optimizer, progress, log_every)
    for step, (images, labels, _, _) in enumerate(loader):
        if step >= total:
            break
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
        if centers is not None:
            centers.observe(out["bn"], labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(core.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        features = out["bn"].detach()
        core.head.on_train_step(features, labels)  # IR centers move; A-Softmax's β schedule
        with torch.no_grad():
            correct = int((core.head.predict_logits(features).argmax(1) == labels).sum())
        metrics.update(terms, correct, len(labels))
    angles = centers.end_epoch() if centers is not None else {}
    return {**angles, **metrics.summary()}


@torch.no_grad()
def evaluate(model, query, gallery, settings: EvalSettings, device) -> RankResult:
    """Extract query/gallery features with ``model`` and compute CMC/mAP/mINP (FAISS evaluator)."""
    image_size, metric, ap, flip = settings.image_size, settings.metric, settings.ap, settings.flip
    batch_size, workers, rerank = settings.batch_size, settings.workers, settings.rerank
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


RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "config.yaml", "summary.csv", "curves.png")


def _save(run: Training, epoch: int, name: str) -> None:
    run_outputs(run.run_dir).write(name, lambda tmp: torch.save(_state(run, epoch), tmp))
    if name == "last.pt":
        run.saved_epoch = epoch


def _state(run: Training, epoch: int) -> dict:
    """Tensors and plain types only: the file loads with ``weights_only=True``."""
    return {
        "module": run.core.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "epoch": epoch,
        "sampler": plain(run.sampler.state_dict()) if run.sampler is not None else None,
        "rng": rng_state(),
        "config": plain(to_dict(run.cfg)),
        "history": plain(run.history),
        "best_map": plain(run.best_map),
        "num_classes": run.core.head.num_classes,
    }


def _evaluate_now(run: Training) -> dict:
    e: EvalSettings = run.evaluation
    result = evaluate(
        run.core.model, run.dataset.query, run.dataset.gallery, e, run.device
    ).as_dict()
    log.info(
        "R1 %.2f%% mAP %.2f%% mINP %.2f%%",
        100 * result["rank1"],
        100 * result["mAP"],
        100 * result["mINP"],
    )
    return {k: result[k] for k in ("rank1", "rank5", "rank10", "mAP", "mINP")}


def _log_epoch(epoch: int, stats: dict) -> None:
    angles = [stats.get(f"center_angle_{t}", float("nan")) for t in TERCILES]
    log.info(
        "epoch %d: loss %.4f acc %.3f %.0f img/s; weight-feature angles (rare/mid/frequent) %s",
        epoch,
        stats["loss"],
        stats["acc"],
        stats["images_per_s"],
        "/".join(f"{a:.1f}°" for a in angles),
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
    with intra_op_threads(cfg.train.threads):
        if int(os.environ.get("RANK", "0")) != 0:  # DDP: rank 0 holds the folder and writes it
            return _fit(cfg, run_dir, resume, progress, replace, check_names=False)
        created = not run_dir.exists()
        try:
            with lock_folder(run_dir, "training run", "--output"):
                return _fit(cfg, run_dir, resume, progress, replace, check_names=True)
        except BaseException:
            if created and run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()  # a run that failed its checks leaves no empty folder behind
            raise


@contextmanager
def intra_op_threads(threads: int):
    """``train.threads`` for the duration of one run (0: leave torch's setting), then the
    process's own setting again (a study runs many runs in one process)."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fit(
    cfg: DictConfig, run_dir: Path, resume: bool, progress: bool, replace: bool, check_names: bool
) -> dict:
    outputs = run_outputs(run_dir)
    if check_names:  # the names this run writes: free, or the run's own files (a link is not)
        outputs.check(
            RUN_FILES,
            "resume a run whose files reid wrote (move it away, or start a new run)"
            if resume
            else "choose another --output folder",
        )
    run = build_training(cfg, run_dir, load_checkpoint(run_dir / "last.pt") if resume else None)
    main, loop = run.rank == 0, run.loop
    if main:
        if replace:
            outputs.remove(RUN_FILES)
            shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
        outputs.write_text("config.yaml", config_yaml(cfg))
    writer = None
    if main and loop.tensorboard:
        from torch.utils.tensorboard import SummaryWriter  # optional, heavy: only when asked

        writer = SummaryWriter(str(run_dir / "tensorboard"))
    epoch = run.start_epoch
    try:
        for epoch in range(run.start_epoch, loop.epochs + 1):
            stats = _train_epoch(run, epoch, progress and main)
            last = epoch == loop.epochs
            record = {"epoch": epoch, **stats}
            if main and (last or (loop.eval_every and epoch % loop.eval_every == 0)):
                try:
                    record.update(_evaluate_now(run))
                except BaseException:  # keep the epoch just trained, then report the failure
                    run.history.append(record)
                    _save(run, epoch, "last.pt")
                    raise
            if main:
                _record_epoch(run, record, outputs, writer)
                _log_epoch(epoch, stats)
                if last:
                    run.centers.warn_if_lagging(stats)
    except KeyboardInterrupt:
        raise TrainingInterrupted(
            f"interrupted in epoch {epoch}: {last_good_state(run_dir, run.saved_epoch)}"
        ) from None
    finally:
        if writer is not None:
            writer.close()
            outputs.record(["tensorboard"])
        cleanup()
    if main:
        write_report(run.history, outputs)
    return run.history[-1] if run.history else {}


def _train_epoch(run: Training, epoch: int, progress: bool) -> dict:
    """One epoch of ``run``: the sampler's epoch, the centers' refresh, the steps, DDP sync."""
    if run.sampler is not None:
        run.sampler.set_epoch(epoch)
    run.centers.begin_epoch(epoch)
    loop = run.loop
    try:
        stats = train_one_epoch(
            run.module,
            run.losses,
            run.loader,
            Optimization(run.optimizer, run.scheduler, run.scaler, run.amp_dtype),
            run.device,
            loop=loop,
            epoch=epoch,
            progress=progress,
            centers=run.centers,
        )
    except NonFiniteLossError as exc:
        raise NonFiniteLossError(
            f"{exc}; stopped, {last_good_state(run.run_dir, run.saved_epoch)}"
        ) from None
    if run.world_size > 1:  # BN running statistics drift per rank after the last forward
        for buffer in run.core.buffers():
            torch.distributed.broadcast(buffer, 0)
    return stats


def _record_epoch(run: Training, record: dict, outputs: OutputFolder, writer) -> None:
    """Rank 0: the epoch's line in metrics.jsonl (and TensorBoard), best.pt, last.pt."""
    run.history.append(record)
    with open(run.run_dir / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
    outputs.record(["metrics.jsonl"])
    if writer is not None:
        for key, value in record.items():
            writer.add_scalar(key, value, record["epoch"])
    if "mAP" in record and record["mAP"] > run.best_map:
        run.best_map = record["mAP"]
        _save(run, record["epoch"], "best.pt")
    _save(run, record["epoch"], "last.pt")
