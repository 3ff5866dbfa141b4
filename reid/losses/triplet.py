"""Batch-hard triplet loss (Hermans et al., 2017) on the pre-BNNeck feature.

For each anchor: hardest positive ``max d(a, p)`` and hardest negative ``min d(a, n)`` over the
batch, Euclidean distance; ``L = mean [d_ap − d_an + margin]₊`` (margin 0.3), or the soft margin
``mean softplus(d_ap − d_an)`` when ``margin`` is None. Anchors without a positive or without a
negative in the batch are skipped; a batch with no valid triplet gives a zero loss that still
backpropagates (so the graph stays connected).
"""

import torch
from torch import nn
from torch.nn import functional as F


class TripletLoss(nn.Module):
    def __init__(self, margin: float | None = 0.3):
        super().__init__()
        self.margin = margin

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        features = features.float()
        squared = (features * features).sum(1)
        dist = (
            (squared[:, None] + squared[None, :] - 2 * features @ features.T)
            .clamp(min=1e-12)
            .sqrt()
        )
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        has_pos = (same & ~eye).any(1)
        has_neg = (~same).any(1)
        valid = has_pos & has_neg
        if not bool(valid.any()):
            return features.sum() * 0.0
        hardest_pos = torch.where(same & ~eye, dist, torch.zeros_like(dist)).amax(1)
        hardest_neg = torch.where(~same, dist, torch.full_like(dist, float("inf"))).amin(1)
        gap = (hardest_pos - hardest_neg)[valid]
        return (
            F.softplus(gap).mean() if self.margin is None else torch.relu(gap + self.margin).mean()
        )
