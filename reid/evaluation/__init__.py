"""Retrieval evaluation: exact CMC/mAP/mINP, k-reciprocal re-ranking, plots.

``pipeline.evaluate_features(query, gallery)`` takes two :class:`FeatureSet` objects (features
and labels of each side); the array-level evaluators take the arrays themselves.
"""

from .feature_set import FeatureSet
from .rank import RankResult, evaluate_distmat, evaluate_rank

__all__ = ["FeatureSet", "RankResult", "evaluate_rank", "evaluate_distmat"]
