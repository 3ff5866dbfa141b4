"""Cross-entropy with label smoothing, torchreid's convention (Szegedy et al., CVPR 2016).

Target ``q = (1 − ε)·onehot(y) + ε/C`` over the C real classes (torchreid ``CrossEntropyLoss``;
fast-reid spreads ε over the C−1 *other* classes instead). For the virtual head's extra column
(C+1 logits) the target on the virtual class is 0. ``L = −Σ_j q_j log softmax(z)_j``, batch mean.
"""

import torch
from torch import nn
from torch.nn import functional as F


class CrossEntropyLabelSmooth(nn.Module):
    def __init__(self, num_classes: int, epsilon: float = 0.1):
        super().__init__()
        self.num_classes, self.epsilon = num_classes, epsilon

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        log_probs = F.log_softmax(logits.float(), dim=1)
        target = torch.zeros_like(log_probs)
        target[:, : self.num_classes] = self.epsilon / self.num_classes
        target.scatter_add_(1, labels[:, None], torch.full_like(log_probs[:, :1], 1 - self.epsilon))
        return -(target * log_probs).sum(1).mean()
