"""Global pooling of a (B, C, H, W) feature map to (B, C): avg, max, or GeM.

GeM (Radenović et al., TPAMI 2018): ``(mean x^p)^(1/p)`` with a learnable p (init 3).
"""

from __future__ import annotations

import torch
from torch import nn


class GeM(nn.Module):
    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)


class _Pool(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) if self.kind == "avg" else x.amax(dim=(2, 3))


POOLINGS = {"avg": lambda: _Pool("avg"), "max": lambda: _Pool("max"), "gem": GeM}


def build_pooling(name: str) -> nn.Module:
    if name not in POOLINGS:
        raise KeyError(f"unknown pooling {name!r}; valid: {', '.join(POOLINGS)}")
    return POOLINGS[name]()
