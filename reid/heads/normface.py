"""NormFace (Wang et al., ACM MM 2017): ``s·cos θ_j`` for every class. Default s = 16."""

from ..arguments import Float
from ..settings import Setting
from .base import ClassifierHead


class NormFaceHead(ClassifierHead):
    OPTIONS = {"scale": Setting(16.0, "logit scale s", Float(0, 1000, low_open=True))}

    def __init__(self, in_features, num_classes, scale: float = OPTIONS["scale"].default, **kwargs):
        super().__init__(in_features, num_classes, **kwargs)
        self.scale = scale

    def logits(self, features, cos, labels, weight):
        return self.scale * cos
