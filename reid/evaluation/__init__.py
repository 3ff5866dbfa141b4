"""Retrieval evaluation: exact CMC/mAP/mINP, k-reciprocal re-ranking, plots."""

from .rank import RankResult, evaluate_distmat, evaluate_rank

__all__ = ["RankResult", "evaluate_rank", "evaluate_distmat"]
