"""CosFace / AM-Softmax (Wang et al., CVPR 2018): target ``s·(cos θ_y − m)``, others ``s·cos θ_j``.

Defaults s = 30, m = 0.35 (AM-Softmax; CosFace's face setting is s = 64).
"""

from torch.nn import functional as F

from .base import ClassifierHead


class CosFaceHead(ClassifierHead):
    OPTIONS = {"scale": 30.0, "margin": 0.35}

    def __init__(
        self, in_features, num_classes, scale: float = 30.0, margin: float = 0.35, **kwargs
    ):
        super().__init__(in_features, num_classes, **kwargs)
        self.scale, self.margin = scale, margin

    def logits(self, features, cos, labels, weight):
        if labels is None:
            return self.scale * cos
        return self.scale * (cos - self.margin * F.one_hot(labels, self.num_classes).to(cos.dtype))
