"""NormFace (Wang et al., ACM MM 2017): ``s·cos θ_j`` for every class. Default s = 16."""

from .base import ClassifierHead


class NormFaceHead(ClassifierHead):
    OPTIONS = {"scale": 16.0}

    def __init__(self, in_features, num_classes, scale: float = 16.0, **kwargs):
        super().__init__(in_features, num_classes, **kwargs)
        self.scale = scale

    def logits(self, features, cos, labels, weight):
        return self.scale * cos
