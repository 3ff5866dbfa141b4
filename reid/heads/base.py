"""Base of every classifier head: class weights that are either learned or IR-Softmax centers.

IR-Softmax (Zhu et al., ACCV 2020, arXiv 2011.11155; METHODS.md §3): with ``weights="centers"``
the class weights are unit-norm centers of the L2-normalised features of each class,
``c_j = normalize(mean_{i: y_i = j} x̂_i)``. They are buffers, so the classification loss gives
them **no gradient** (the features still get one). They move only through ``update_centers``:

* ``ema`` — ``c_k ← normalize(μ·c_k + (1−μ)·mean_{batch, y=k} x̂)`` (μ = ``center_momentum``);
* ``grad`` — the paper's center term ``λ·mean_i ‖c_{y_i} − x̂_i‖²`` with its own SGD step of rate
  ``center_lr``: ``c_k ← normalize(c_k − center_lr · (2λ/B) Σ_{i: y_i=k} (c_k − x̂_i))``;
* ``cumulative`` — the authors' released code: ``S_k += Σ_{i: y_i=k} x̂_i``, ``c_k = normalize(S_k)``.

A class's first appearance sets its center to that batch's class mean (``center_init: batches``)
unless ``init_centers`` (one feature pass, recommended) already set it. Classes absent from the
batch keep their center. Under ``torch.distributed`` the per-class sums
and counts are all-reduced first, so every rank holds the same centers.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

WEIGHT_MODES = ("learned", "centers")
CENTER_UPDATES = ("ema", "grad", "cumulative")


class ClassifierHead(nn.Module):
    """Subclasses implement ``logits(features, cos, labels, weight)``; ``forward`` returns (B, C)."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        weights: str = "learned",
        center_update: str = "ema",
        center_momentum: float = 0.9,
        center_lr: float = 0.5,
        center_lambda: float = 1.0,
    ):
        super().__init__()
        if weights not in WEIGHT_MODES:
            raise ValueError(f"unknown weights {weights!r}; valid: {', '.join(WEIGHT_MODES)}")
        if center_update not in CENTER_UPDATES:
            raise ValueError(
                f"unknown center_update {center_update!r}; valid: {', '.join(CENTER_UPDATES)}"
            )
        self.in_features, self.num_classes, self.mode = in_features, num_classes, weights
        self.center_update, self.center_momentum = center_update, center_momentum
        self.center_lr, self.center_lambda = center_lr, center_lambda
        if weights == "learned":
            self.weight = nn.Parameter(torch.empty(num_classes, in_features))
            nn.init.normal_(self.weight, std=0.001)  # BoT: bias-free, N(0, 0.001)
        else:
            self.register_buffer(
                "centers", F.normalize(torch.randn(num_classes, in_features), dim=1)
            )
            self.register_buffer("center_sums", torch.zeros(num_classes, in_features))
            # a class never seen yet takes its first batch mean as its center ("first batches" init)
            self.register_buffer("center_seen", torch.zeros(num_classes, dtype=torch.bool))

    @property
    def uses_centers(self) -> bool:
        return self.mode == "centers"

    def class_weights(self) -> torch.Tensor:
        return self.centers if self.uses_centers else self.weight

    def cosine(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features, dim=1) @ F.normalize(self.class_weights(), dim=1).T

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        with torch.autocast(features.device.type, enabled=False):  # margins need float32
            features = features.float()
            weight = self.class_weights().float()
            if self.uses_centers:
                weight = weight.detach()
            cos = F.normalize(features, dim=1) @ F.normalize(weight, dim=1).T
            return self.logits(features, cos.clamp(-1.0, 1.0), labels, weight)

    def logits(self, features, cos, labels, weight) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Logits without margins (accuracy); the first C columns for the virtual head."""
        return self.forward(features, None)[:, : self.num_classes]

    # ---------------------------------------------------------------- IR-Softmax centers

    @staticmethod
    def _class_sums(features: torch.Tensor, labels: torch.Tensor, num_classes: int):
        unit = F.normalize(features.detach().float(), dim=1)
        sums = torch.zeros(num_classes, unit.shape[1], device=unit.device).index_add_(
            0, labels, unit
        )
        counts = torch.bincount(labels, minlength=num_classes).float()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
            dist.all_reduce(counts)
        return sums, counts

    @torch.no_grad()
    def update_centers(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """One center update from a batch (no-op for learned weights)."""
        if not self.uses_centers:
            return
        sums, counts = self._class_sums(features, labels, self.num_classes)
        present = counts > 0
        first = present & ~self.center_seen
        if bool(first.any()):
            self.centers[first] = F.normalize(sums[first], dim=1)
            self.center_sums[first] = sums[first]
            self.center_seen[first] = True
            present &= ~first
            if not bool(present.any()):
                return
        if self.center_update == "ema":
            means = sums[present] / counts[present, None]
            updated = (
                self.center_momentum * self.centers[present] + (1 - self.center_momentum) * means
            )
        elif self.center_update == "grad":
            batch = counts.sum()
            grad = (2 * self.center_lambda / batch) * (
                counts[present, None] * self.centers[present] - sums[present]
            )
            updated = self.centers[present] - self.center_lr * grad
        else:
            self.center_sums[present] += sums[present]
            updated = self.center_sums[present]
        self.centers[present] = F.normalize(updated, dim=1)

    def center_pull(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``λ·mean ‖c_y − x̂‖²`` with the centers detached: the optional pull on the features."""
        unit = F.normalize(features.float(), dim=1)
        return self.center_lambda * (self.centers.detach()[labels] - unit).pow(2).sum(1).mean()

    @torch.no_grad()
    def init_centers(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Set every center present in ``labels`` to its normalised class mean (one feature pass)."""
        if not self.uses_centers:
            return
        sums, counts = self._class_sums(features, labels, self.num_classes)
        present = counts > 0
        self.centers[present] = F.normalize(sums[present], dim=1)
        self.center_sums.copy_(sums)
        self.center_seen |= present


def angle_margin_target(cos_target: torch.Tensor, margin: float) -> torch.Tensor:
    """ArcFace target ``cos(θ + m)``, with ``cos θ − m·sin m`` where ``θ + m > π`` (monotonic)."""
    sin_target = torch.sqrt((1.0 - cos_target * cos_target).clamp(min=1e-12))
    shifted = cos_target * math.cos(margin) - sin_target * math.sin(margin)
    return torch.where(
        cos_target > math.cos(math.pi - margin), shifted, cos_target - margin * math.sin(margin)
    )
