"""Virtual Softmax (Chen et al., NeurIPS 2018): softmax logits plus one virtual class.

Training logits (B, C+1): ``w_jᵀx`` for the C classes and ``‖w_y‖·‖x‖`` per sample (never a batch
norm) as column C, optionally clamped from above (``virtual_clamp``; public code uses 15). No bias, no
hyper-parameter; in evaluation and for accuracy only the first C columns are used.
"""

import torch

from ..arguments import Float
from ..settings import Setting
from .base import ClassifierHead


class VirtualSoftmaxHead(ClassifierHead):
    OPTIONS = {
        "virtual_clamp": Setting(None, "cap on the virtual class's logit ‖W_y‖‖x‖ (None: none)",
                                 Float(0, 1e6)),
    }  # fmt: skip

    def __init__(
        self,
        in_features,
        num_classes,
        virtual_clamp: float | None = OPTIONS["virtual_clamp"].default,
        **kwargs,
    ):
        super().__init__(in_features, num_classes, **kwargs)
        self.clamp = virtual_clamp

    def logits(self, features, cos, labels, weight):
        logits = features @ weight.T
        if labels is None:
            return logits
        virtual = weight[labels].norm(dim=1) * features.norm(dim=1)
        if self.clamp is not None:
            virtual = virtual.clamp(max=self.clamp)
        return torch.cat([logits, virtual[:, None]], dim=1)
