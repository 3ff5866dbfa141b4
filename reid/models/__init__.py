"""Embedding models: backbones (torchvision ResNets, torchreid zoo), pooling, BNNeck, extractor."""

from .backbone import PretrainedWeightsError, build_backbone
from .extractor import FeatureExtractor
from .reid_model import ReIDModel

__all__ = ["ReIDModel", "FeatureExtractor", "build_backbone", "PretrainedWeightsError"]
