"""Embedding models: backbones (torchvision families, torchreid zoo), pooling, BNNeck, extractor,
and checkpoint → model loading."""

from .backbone import PretrainedWeightsError, build_backbone
from .checkpoint import load_model, read_checkpoint
from .extractor import FeatureExtractor
from .reid_model import ReIDModel

__all__ = [
    "ReIDModel",
    "FeatureExtractor",
    "build_backbone",
    "PretrainedWeightsError",
    "load_model",
    "read_checkpoint",
]
