"""ArcFace (Deng et al., CVPR 2019): target ``s·cos(θ_y + m)``, others ``s·cos θ_j``.

Where ``θ_y + m > π`` the target becomes ``s·(cos θ_y − m·sin m)`` (insightface), keeping the
logit monotonic in θ. Defaults s = 64, m = 0.5 (the paper's).
"""

import torch

from ..arguments import Float
from ..settings import Setting
from .base import ClassifierHead, angle_margin_target


class ArcFaceHead(ClassifierHead):
    OPTIONS = {
        "scale": Setting(64.0, "logit scale s", Float(0, 1000, low_open=True)),
        "margin": Setting(0.5, "additive angular margin m (radians)", Float(0, 10)),
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
        target = cos.gather(1, labels[:, None])
        out = cos.scatter(1, labels[:, None], angle_margin_target(target, self.margin))
        return self.scale * torch.as_tensor(out)
