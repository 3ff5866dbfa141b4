"""Linear softmax head (BoT): bias-free ``w_jᵀx``. With IR centers: ``c_jᵀx = ‖x‖ cos θ_j``."""

from .base import ClassifierHead


class SoftmaxHead(ClassifierHead):
    def logits(self, features, cos, labels, weight):
        return features @ weight.T
