"""A step loop's running figures, shown as it runs (torchvision's ``MetricLogger``, for one loop).

Running means of the loss terms, accuracy and images/s; shown on a progress bar when stderr is a
terminal, else (``log_every`` > 0) as a log line every N steps with the epoch's ETA.
"""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

log = logging.getLogger("reid.engine.trainer")


class MetricLogger:
    def __init__(
        self, total: int, epoch: int, optimizer, progress: bool = True, log_every: int = 0
    ):
        self.total, self.epoch, self.optimizer = total, epoch, optimizer
        self.log_every = log_every if progress and not sys.stderr.isatty() else 0
        self.totals: dict[str, float] = {}
        self.steps = self.correct = self.seen = 0
        self.start = time.perf_counter()
        self.bar = tqdm(
            total=total,
            desc=f"epoch {epoch}",
            disable=None if progress else True,  # auto: no bar when not a terminal
            leave=False,
            dynamic_ncols=True,
        )

    def update(self, terms: dict, correct: int, images: int) -> None:
        """One step: its (weighted) loss terms, correct predictions and batch size."""
        self.steps += 1
        self.correct += correct
        self.seen += images
        for key, value in terms.items():
            self.totals[key] = self.totals.get(key, 0.0) + float(value.detach())
        elapsed = time.perf_counter() - self.start
        if self.log_every and self.steps % self.log_every == 0:
            log.info(
                "epoch %d [%d/%d] %.0f img/s loss %.4f ETA %.0f s",
                self.epoch,
                self.steps,
                self.total,
                self.seen / elapsed,
                sum(self.totals.values()) / self.steps,
                (self.total - self.steps) / max(self.steps / elapsed, 1e-9),
            )
        self.bar.set_postfix(
            {
                **{k: f"{v / self.steps:.3f}" for k, v in self.totals.items()},
                "acc": f"{self.correct / self.seen:.3f}",
                "lr": f"{self.lr:.2e}",
                "img/s": f"{self.seen / elapsed:.0f}",
            }
        )
        self.bar.update()

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def summary(self) -> dict:
        """Mean loss terms, loss, accuracy, lr, images/s and the epoch's seconds; closes the bar."""
        self.bar.close()
        steps, elapsed = max(1, self.steps), time.perf_counter() - self.start
        return {
            **{f"loss_{k}": v / steps for k, v in self.totals.items()},
            "loss": sum(self.totals.values()) / steps,
            "acc": self.correct / max(self.seen, 1),
            "lr": self.lr,
            "images_per_s": self.seen / elapsed,
            "epoch_s": elapsed,
        }
