"""Class-level Circle loss logits (Sun et al., CVPR 2020; fast-reid ``CircleSoftmax``).

Target ``s·α_p·(cos θ_y − (1 − m))`` with ``α_p = [1 + m − cos θ_y]₊``, others
``s·α_n·(cos θ_j − m)`` with ``α_n = [cos θ_j + m]₊``; α's are detached. Defaults s = 64, m = 0.35.
Without labels (accuracy) the plain ``s·cos θ`` ranking is returned.
"""

import torch

from ..arguments import Float
from ..settings import Setting
from .base import ClassifierHead


class CircleHead(ClassifierHead):
    OPTIONS = {
        "scale": Setting(64.0, "logit scale γ", Float(0, 1000, low_open=True)),
        "margin": Setting(0.35, "relaxation margin m", Float(0, 10)),
    }

    def __init__(
        self,
        in_features,
        num_classes,
        scale: float = OPTIONS["scale"].default,
        margin: float = OPTIONS["margin"].default,
        **kwargs,
    ):
        super().__init__(in_features, num_classes, **kwargs)
        self.scale, self.margin = scale, margin

    def logits(self, features, cos, labels, weight):
        if labels is None:
            return self.scale * cos
        m = self.margin
        alpha_p = torch.relu(1 + m - cos.detach())
        alpha_n = torch.relu(cos.detach() + m)
        positive = self.scale * alpha_p * (cos - (1 - m))
        negative = self.scale * alpha_n * (cos - m)
        onehot = torch.zeros_like(cos, dtype=torch.bool).scatter_(1, labels[:, None], True)
        return torch.where(onehot, positive, negative)
