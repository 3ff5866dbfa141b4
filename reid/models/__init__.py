"""Embedding models: backbones (torchvision families, torchreid zoo), pooling, BNNeck, extractor,
and the checkpoint reader (``reid.loading`` turns a checkpoint into its model)."""

from .backbone import PretrainedWeightsError, build_backbone
from .checkpoint import read_checkpoint
from .extractor import FeatureExtractor
from .reid_model import ReIDModel

__all__ = [
    "ReIDModel",
    "FeatureExtractor",
    "build_backbone",
    "PretrainedWeightsError",
    "read_checkpoint",
]
