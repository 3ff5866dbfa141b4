"""Evaluate query/gallery feature sets: optional AQE and re-ranking, metrics, ranked lists."""

from __future__ import annotations

import time
from dataclasses import dataclass

import faiss
import numpy as np

from ..data.records import NO_CAMERA
from .feature_set import FeatureSet, labels
from .postprocess import average_query_expansion, l2_normalize
from .rank import RankResult, evaluate_blocks, evaluate_rank, resolve_device
from .rerank import KReciprocalReranker


@dataclass(frozen=True)
class Rerank:
    """k-reciprocal re-ranking's parameters (``rerank=True``: these defaults, the paper's)."""

    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3


def evaluate_features(
    query: FeatureSet,
    gallery: FeatureSet,
    *,
    metric: str = "cosine",
    ap: str = "torchreid",
    rerank: bool | Rerank = False,
    query_expansion: int = 0,
    device=None,
    chunk_size: int | None = None,
) -> RankResult:
    start = time.perf_counter()
    query_features = query.features
    if query_expansion:
        query_features = average_query_expansion(query_features, gallery.features, query_expansion)
    if rerank:
        r = rerank if isinstance(rerank, Rerank) else Rerank()
        reranker = KReciprocalReranker(
            query_features, gallery.features, metric, r.k1, r.k2, r.lambda_value
        )
        result = evaluate_blocks(
            reranker,
            len(query),
            len(gallery),
            labels(query, gallery),
            ap=ap,
            chunk_size=chunk_size or 256,
        )
    else:
        result = evaluate_rank(
            FeatureSet(query_features, query.pids, query.camids),
            gallery,
            metric=metric,
            ap=ap,
            device=resolve_device(device),
            chunk_size=chunk_size,
        )
    result.timings["search_and_metrics_s"] = time.perf_counter() - start
    return result


def top_k(
    query: FeatureSet, gallery: FeatureSet, metric: str, k: int, query_rows: np.ndarray
) -> list[np.ndarray]:
    """Top-k valid gallery indices (same-id-same-camera and junk removed) per chosen query (FAISS)."""
    if metric == "cosine":
        q, g = l2_normalize(query.features[query_rows]), l2_normalize(gallery.features)
        index = faiss.IndexFlatIP(g.shape[1])
    else:
        q, g = (
            np.ascontiguousarray(query.features[query_rows], np.float32),
            np.ascontiguousarray(gallery.features, np.float32),
        )
        index = faiss.IndexFlatL2(g.shape[1])
    index.add(g)
    removed_max = int(np.bincount(np.maximum(gallery.pids + 1, 0)).max()) if len(gallery) else 0
    _, neighbours = index.search(q, min(len(g), k + removed_max))
    lists = []
    for row, nb in zip(query_rows, neighbours):
        nb = nb[nb >= 0]
        keep = gallery.pids[nb] != -1
        if query.camids[row] != NO_CAMERA:
            keep &= ~(
                (gallery.pids[nb] == query.pids[row]) & (gallery.camids[nb] == query.camids[row])
            )
        lists.append(nb[keep][:k])
    return lists
