"""A-Softmax / SphereFace (Liu et al., CVPR 2017).

Target logit ``‖x‖·(β·cos θ_y + ψ(θ_y)) / (1 + β)`` with ``ψ(θ) = (−1)^k cos(mθ) − 2k`` for
``θ ∈ [kπ/m, (k+1)π/m]``; other logits ``‖x‖·cos θ_j``. β is annealed as in the SphereFace code:
``β = max(beta_min, beta_base·(1 + gamma·it)^(−power))`` (base 1000, gamma 0.12, power 1, min 5),
``it`` advanced once per training step (``on_train_step``); ``beta_fixed`` (the IR authors' code: 10)
switches annealing off. Default m = 4.
"""

import math

import torch

from ..arguments import Float
from ..settings import Setting
from .base import ClassifierHead


def psi(theta: torch.Tensor, margin: int) -> torch.Tensor:
    k = torch.floor(theta * margin / math.pi).clamp(0, margin - 1)
    sign = 1.0 - 2.0 * torch.remainder(k, 2)
    return sign * torch.cos(margin * theta) - 2.0 * k


class SphereFaceHead(ClassifierHead):
    OPTIONS = {
        "margin": Setting(4, "angular margin m (an integer)", Float(0, 10)),
        "beta_fixed": Setting(None, "a fixed β instead of annealing (the IR authors' code: 10)",
                              Float(0, 1e6)),
    }  # fmt: skip

    def __init__(
        self,
        in_features,
        num_classes,
        margin: int = OPTIONS["margin"].default,
        beta_base: float = 1000.0,
        beta_gamma: float = 0.12,
        beta_power: float = 1.0,
        beta_min: float = 5.0,
        beta_fixed: float | None = OPTIONS["beta_fixed"].default,
        **kwargs,
    ):
        super().__init__(in_features, num_classes, **kwargs)
        self.margin, self.beta_fixed = int(margin), beta_fixed
        self.beta_base, self.beta_gamma, self.beta_power, self.beta_min = (
            beta_base,
            beta_gamma,
            beta_power,
            beta_min,
        )
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    @property
    def beta(self) -> float:
        if self.beta_fixed is not None:
            return float(self.beta_fixed)
        it = float(self.iteration)
        return max(self.beta_min, self.beta_base * (1 + self.beta_gamma * it) ** (-self.beta_power))

    def step(self) -> None:
        self.iteration += 1

    def on_train_step(self, features, labels) -> None:
        super().on_train_step(features, labels)
        self.step()

    def logits(self, features, cos, labels, weight):
        norm = features.norm(dim=1, keepdim=True)
        if labels is None:
            return norm * cos
        cos_target = cos.gather(1, labels[:, None])
        theta = torch.acos(cos_target.clamp(-1 + 1e-7, 1 - 1e-7))
        beta = self.beta
        target = (beta * cos_target + psi(theta, self.margin)) / (1 + beta)
        return norm * cos.scatter(1, labels[:, None], target)
