"""The embedding model: backbone → pooling → optional reduction → BNNeck.

BNNeck (Luo et al., "Bag of Tricks", CVPRW 2019): ``f_t = pool(backbone(x))`` (after an optional
linear reduction) feeds the triplet loss; ``f_i = BatchNorm1d(f_t)`` with its bias frozen at 0
feeds the classifier head and is the test feature. Shapes: (B, 3, H, W) → (B, D).
"""

from __future__ import annotations

import torch
from torch import nn

from .backbone import build_backbone
from .pooling import build_pooling


class ReIDModel(nn.Module):
    def __init__(
        self,
        backbone: str = "resnet50",
        last_stride: int = 1,
        pooling: str = "avg",
        embedding_dim: int = 0,
        bnneck: bool = True,
        pretrained: str | None = None,
    ):
        super().__init__()
        self.backbone = build_backbone(backbone, last_stride, pretrained)
        self.pool = build_pooling(pooling)
        channels = self.backbone.out_channels
        self.reduction = nn.Identity()
        if embedding_dim:
            self.reduction = nn.Sequential(nn.Linear(channels, embedding_dim, bias=False))
            channels = embedding_dim
        self.feature_dim = channels
        self.neck = nn.BatchNorm1d(channels) if bnneck else nn.Identity()
        if bnneck:
            self.neck.bias.requires_grad_(False)
            nn.init.zeros_(self.neck.bias)
            nn.init.ones_(self.neck.weight)

    def compile_for_training(self) -> None:
        """``train.compile``: the gradient steps run the backbone through ``torch.compile``
        (inductor: the forward compiles at the first step, the backward at the first backward).
        Every pass without gradients (feature extraction, the IR centers' train-mode feature
        passes) keeps the eager backbone, so the model compiles once, not again for each mode and
        batch size; the compiled wrapper is not a submodule, so the state dict and checkpoints
        are unchanged."""
        self.__dict__["_training_backbone"] = torch.compile(self.backbone)

    def forward_both(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f_t, f_i): the pre-BN feature (triplet loss) and the BNNeck feature (head, test)."""
        compiled = self.training and torch.is_grad_enabled()
        backbone = self.__dict__.get("_training_backbone") if compiled else None
        if backbone is None:
            backbone = self.backbone
        global_feature = self.reduction(self.pool(backbone(images)))
        return global_feature, self.neck(global_feature)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The test embedding f_i (not normalised; the extractor and evaluator normalise)."""
        return self.forward_both(images)[1]
