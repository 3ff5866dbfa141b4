"""CosFace / AM-Softmax (Wang et al., CVPR 2018): target ``s·(cos θ_y − m)``, others ``s·cos θ_j``.

Defaults s = 30, m = 0.35 (AM-Softmax; CosFace's face setting is s = 64).
"""

from torch.nn import functional as F

from ..arguments import Float
from ..settings import Setting
from .base import ClassifierHead


class CosFaceHead(ClassifierHead):
    OPTIONS = {
        "scale": Setting(30.0, "logit scale s", Float(0, 1000, low_open=True)),
        "margin": Setting(0.35, "additive cosine margin m", Float(0, 10)),
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
        return self.scale * (cos - self.margin * F.one_hot(labels, self.num_classes).to(cos.dtype))
