"""Base of every classifier head: class weights that are either learned or IR-Softmax centers.

With ``weights="centers"`` (IR-Softmax) the head holds a :class:`~.centers.ClassCenters` (built
from its :class:`~.centers.CenterSettings`) and uses its unit centers as the class weights,
detached from the loss; everything about the centers (settings, update rules, initialisation,
diagnostics) lives in ``centers.py``. The training loop calls one
hook per step, :meth:`ClassifierHead.on_train_step`, which updates the centers (and lets a head
advance its own schedule, e.g. A-Softmax's β).

Each head declares its own options once, in ``OPTIONS`` (``reid.settings.Setting``: default,
help, range); the config's ``head:`` section is built from them and rejects an option the
chosen head does not use, or a value outside that head's range.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .centers import CenterSettings, ClassCenters, weight_mean_angles

WEIGHT_MODES = ("learned", "centers")


class ClassifierHead(nn.Module):
    """Subclasses implement ``logits(features, cos, labels, weight)``; ``forward`` returns (B, C)."""

    #: the head's own options (``head.<option>`` in the config): name → ``Setting`` (default,
    #: help, range), declared here once; ``__init__`` takes its defaults from them
    OPTIONS: dict = {}

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        weights: str = "learned",
        centers: CenterSettings | None = None,
    ):
        super().__init__()
        if weights not in WEIGHT_MODES:
            raise ValueError(f"unknown weights {weights!r}; valid: {', '.join(WEIGHT_MODES)}")
        self.in_features, self.num_classes, self.mode = in_features, num_classes, weights
        if weights == "learned":
            self.weight = nn.Parameter(torch.empty(num_classes, in_features))
            nn.init.normal_(self.weight, std=0.001)  # BoT: bias-free, N(0, 0.001)
            self.centers = None
        else:
            self.centers = ClassCenters(num_classes, in_features, centers)

    @property
    def uses_centers(self) -> bool:
        return self.centers is not None

    def class_weights(self) -> torch.Tensor:
        return self.centers.weight if self.uses_centers else self.weight

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

    @torch.no_grad()
    def on_train_step(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Called once after every optimiser step with the step's BNNeck features."""
        if self.uses_centers:
            self.centers.update(features, labels)

    def weight_angles(self, features: torch.Tensor, labels: torch.Tensor):
        """(classes, degrees) between each batch class's weight/center and its batch mean."""
        return weight_mean_angles(self.class_weights().detach(), features, labels)


def angle_margin_target(cos_target: torch.Tensor, margin: float) -> torch.Tensor:
    """ArcFace target ``cos(θ + m)``, with ``cos θ − m·sin m`` where ``θ + m > π`` (monotonic)."""
    sin_target = torch.sqrt((1.0 - cos_target * cos_target).clamp(min=1e-12))
    shifted = cos_target * math.cos(margin) - sin_target * math.sin(margin)
    return torch.where(
        cos_target > math.cos(math.pi - margin), shifted, cos_target - margin * math.sin(margin)
    )
