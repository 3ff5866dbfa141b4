"""IR-Softmax class centers: state, initialisation, update and diagnostics, in one place.

IR-Softmax (Zhu et al., ACCV 2020, arXiv 2011.11155; docs/methods.md §3) replaces a head's class
weights by unit class centers of the L2-normalised BNNeck features, ``c_k ≈ normalize(mean x̂)``.
They are buffers: the classification loss gives them **no gradient** (features still get one).
They move only through :meth:`ClassCenters.update`, once per training step, by one of the rules
in ``UPDATES`` (a dict of small pure functions; a new rule is one function and its entry):

* ``authors`` (default) — the authors' released code: ``c_k ← normalize(c_k + Σ_{i: y_i=k} x̂_i)``
  on the already-unit center, i.e. an effective momentum of 1/(1+n_k‖x̄_k‖) per step (≈0.2–0.3
  at K = 4 once features cluster);
* ``ema`` — ``c_k ← normalize(μ·c_k + (1−μ)·mean_{batch, y=k} x̂)`` (μ = ``centers.momentum``);
* ``grad`` — the paper's center term ``λ·mean_i ‖c_{y_i} − x̂_i‖²`` with its own SGD step of
  rate ``centers.lr`` (λ = ``centers.lam``):
  ``c_k ← normalize(c_k − lr · (2λ/B) Σ_{i: y_i=k} (c_k − x̂_i))``.

Every setting is declared once, in :class:`CenterSettings`, which is also the config's
``centers:`` section. Initialisation: :meth:`ClassCenters.init_from_features` sets every center
to its class's normalised mean feature (the trainer computes those features with **train-mode** BatchNorm statistics, see
``engine.centers``, which also runs the centers' life in training: an untrained BNNeck in eval mode is an identity and maps every image to the
same direction). A class not initialised that way takes its first batch mean (``seen``). Classes
absent from a batch keep their center. Under ``torch.distributed`` per-class sums and counts are
all-reduced first, so every rank holds the same centers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from ..arguments import Float, Int
from ..settings import setting


# Update rules: (centers c, per-class sums of unit features, counts, batch size, settings) of the
# classes present in the batch (each already seen once) → the new centers before normalisation.
def _authors(c, sums, counts, total, s: CenterSettings):
    return c + sums


def _ema(c, sums, counts, total, s: CenterSettings):
    return s.momentum * c + (1 - s.momentum) * sums / counts[:, None]


def _grad(c, sums, counts, total, s: CenterSettings):
    return c - s.lr * ((2 * s.lam / total) * (counts[:, None] * c - sums))


UPDATES = {"authors": _authors, "ema": _ema, "grad": _grad}
INITS = ("features", "batches")


@dataclass
class CenterSettings:
    """IR-Softmax center settings: the config's ``centers:`` section (used with
    ``head.weights=centers``), declared here once."""

    update: str = setting(
        "authors", "the center update rule (authors: the authors' code)", choices=tuple(UPDATES)
    )
    momentum: float = setting(
        0.5, "ema: weight of the old center per update", Float(0, 1, high_open=True)
    )
    lr: float = setting(0.5, "grad: the center term's step size", Float(0, 10))
    lam: float = setting(1.0, "λ of the center term (grad, pull)", Float(0, 1e6))
    pull: float = setting(
        0.0,
        "loss weight of the center term's pull on the features (the paper leaves it unstated)",
        Float(0, 1e6),
    )
    init: str = setting(
        "features",
        "features: a train-mode BN pass over the training set; "
        "batches: each class's first batch mean",
        choices=INITS,
    )
    refresh: int = setting(
        0, "every N epochs re-initialise the centers from a feature pass (0: off)", Int(0, 100000)
    )


def class_sums(features: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """Per-class sums of unit features and counts, all-reduced under torch.distributed."""
    unit = F.normalize(features.detach().float(), dim=1)
    sums = torch.zeros(num_classes, unit.shape[1], device=unit.device).index_add_(0, labels, unit)
    counts = torch.bincount(labels, minlength=num_classes).float()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
        dist.all_reduce(counts)
    return sums, counts


class ClassCenters(nn.Module):
    """Unit class centers ``weight`` (C, D), moved by the rule ``settings.update``."""

    def __init__(self, num_classes: int, dim: int, settings: CenterSettings | None = None):
        super().__init__()
        settings = settings or CenterSettings()
        if settings.update not in UPDATES:
            raise ValueError(
                f"unknown centers.update {settings.update!r}; valid: {', '.join(UPDATES)}"
            )
        self.num_classes, self.settings = num_classes, settings
        self.register_buffer("weight", F.normalize(torch.randn(num_classes, dim), dim=1))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """One update from a batch of (BNNeck) features and their labels."""
        sums, counts = class_sums(features, labels, self.num_classes)
        present = counts > 0
        first = present & ~self.seen
        if bool(first.any()):  # first appearance: the batch mean
            self.weight[first] = F.normalize(sums[first], dim=1)
            self.seen[first] = True
            present &= ~first
        if not bool(present.any()):
            return
        rule = UPDATES[self.settings.update]
        updated = rule(
            self.weight[present], sums[present], counts[present], counts.sum(), self.settings
        )
        self.weight[present] = F.normalize(updated, dim=1)

    @torch.no_grad()
    def init_from_features(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Every class present in ``labels`` ← its normalised mean feature."""
        sums, counts = class_sums(features, labels, self.num_classes)
        present = counts > 0
        self.weight[present] = F.normalize(sums[present], dim=1)
        self.seen |= present

    def pull(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``λ·mean ‖c_y − x̂‖²`` with the centers detached: the optional pull on the features."""
        unit = F.normalize(features.float(), dim=1)
        return self.settings.lam * (self.weight.detach()[labels] - unit).pow(2).sum(1).mean()


@torch.no_grad()
def weight_mean_angles(weight: torch.Tensor, features: torch.Tensor, labels: torch.Tensor):
    """For each class in the batch: the angle (degrees) between its class weight (center or
    learned weight) and the normalised mean of its unit features in the batch.

    Returns ``(classes, angles)``; the trainer averages them per class over an epoch and reports
    the mean by training-frequency tercile (``center_angle_rare/mid/frequent``).
    """
    classes, inverse = torch.unique(labels, return_inverse=True)
    unit = F.normalize(features.detach().float(), dim=1)
    means = torch.zeros(len(classes), unit.shape[1], device=unit.device).index_add_(
        0, inverse, unit
    )
    cos = (F.normalize(means, dim=1) * F.normalize(weight[classes].float(), dim=1)).sum(1)
    return classes, torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))
