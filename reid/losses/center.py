"""Center loss (Wen et al., ECCV 2016): ``½·mean_i ‖x_i − c_{y_i}‖²`` with learned centers.

BoT adds it with weight 5e-4 on the pre-BN feature; the centers are parameters trained with
their own SGD (lr 0.5 in BoT) or simply with the model's optimiser.
"""

import torch
from torch import nn


class CenterLoss(nn.Module):
    def __init__(self, num_classes: int, feature_dim: int):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, feature_dim))

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return 0.5 * (features.float() - self.centers[labels]).pow(2).sum(1).mean()
