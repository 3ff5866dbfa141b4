"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) with exact blocked k-NN and sparse encodings.

Same algorithm and numbers as torchreid's ``re_ranking`` (k1=20, k2=6, λ=0.3), whose input
``dist`` is the metric's distance (cosine distance ``1 - cos``, or squared L2) over all
``N = Q + G`` items. With ``d'(i, j) = dist(i, j)² / max_k dist(i, k)²``:

1. ``R(i, k)``: the k-reciprocal neighbours of i among its k+1 nearest (itself included);
2. expansion: add ``R(c, round(k1/2))`` for each ``c ∈ R(i, k1)`` sharing more than 2/3 of it;
3. ``V[i, j] = exp(-d'(i, j)) / Σ exp(-d'(i, ·))`` over the expanded set, then averaged over
   the k2 nearest neighbours (local query expansion);
4. ``d_J(q, g) = 1 − Σ min(V_q, V_g) / (2 − Σ min(V_q, V_g))`` and the final distance
   ``(1 − λ)·d_J + λ·d'``.

Peers build several dense N×N matrices (fast-reid #404: out of memory on MSMT17). Here the
nearest neighbours and each row's farthest distance come from one exact pass of blocked matrix
products (``NEIGHBOUR_BLOCK_BYTES`` of scores at a time), ``V`` is a sparse matrix with O(N·k)
entries whose dot products are computed in chunks of ``PAIR_CHUNK_BYTES``, and the final (Q, G)
distance is produced in blocks of queries, so memory is O(N·k + block·(N + G) + N·D) (the last
term: one normalised copy of the features).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from .postprocess import l2_normalize
from .rank import pairwise_scores


def _prepare(features: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        return l2_normalize(features)
    return np.ascontiguousarray(features, dtype=np.float32)


def _distance(scores: torch.Tensor, metric: str) -> torch.Tensor:
    return 1.0 - scores if metric == "cosine" else -scores


#: bytes of one block of scores in the nearest/farthest neighbour pass
NEIGHBOUR_BLOCK_BYTES = 128 * 2**20


def _neighbours(x: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest items of every item (itself included, nearest first) and
    ``max_j dist(i, j)²``, from one exact pass of blocked matrix products over all N items
    (memory O(block · N); the nearest and the farthest come from the same block of scores)."""
    num = len(x)
    step = max(1, NEIGHBOUR_BLOCK_BYTES // (4 * num))
    knn = np.empty((num, k), dtype=np.int64)
    max_sq = np.empty(num, dtype=np.float64)
    squares = (x.astype(np.float64) ** 2).sum(1)
    half_sq = torch.from_numpy((squares / 2).astype(np.float32))
    for start in range(0, num, step):
        end = min(start + step, num)
        scores = torch.from_numpy(x[start:end] @ x.T)  # cosine: similarity, higher = closer
        if metric == "euclidean":  # x_i·x_j − |x_j|²/2 = (|x_i|² − dist²)/2: higher = closer
            scores.sub_(half_sq)
        knn[start:end] = torch.topk(scores, k, dim=1).indices.numpy()
        lowest = scores.min(dim=1).values.double().numpy()
        if metric == "cosine":
            far = 1.0 - lowest
        else:
            far = squares[start:end] - 2.0 * lowest
        max_sq[start:end] = np.maximum(far, 0.0) ** 2
    return knn, max_sq


def _reciprocal(knn: np.ndarray, k: int) -> list[np.ndarray]:
    forward = knn[:, : k + 1]
    backward = knn[forward, : k + 1]  # (N, k+1, k+1)
    mask = (backward == np.arange(len(knn))[:, None, None]).any(-1)
    return [forward[i][mask[i]] for i in range(len(knn))]


#: bytes of gathered feature rows per chunk when computing the dot products of V's entries
PAIR_CHUNK_BYTES = 32 * 2**20


def _pair_dots(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``x[rows[e]] · x[cols[e]]`` for every entry e, in chunks: the gathered rows never exceed
    ``PAIR_CHUNK_BYTES`` (a single gather would hold entries × D floats, O(N·k·D))."""
    step = max(1, PAIR_CHUNK_BYTES // (4 * x.shape[1]))
    out = np.empty(len(rows), dtype=np.float64)
    for start in range(0, len(rows), step):
        r, c = rows[start : start + step], cols[start : start + step]
        out[start : start + step] = np.einsum("ij,ij->i", x[r], x[c], dtype=np.float32)
    return out


def _encodings(
    x: np.ndarray, knn: np.ndarray, max_sq: np.ndarray, metric: str, k1: int, k2: int
) -> sp.csr_matrix:
    num = len(x)
    full = _reciprocal(knn, k1)
    half = _reciprocal(knn, int(np.around(k1 / 2.0)))
    rows, cols = [], []
    for i in range(num):
        expansion = [full[i]]
        members = set(full[i].tolist())
        for candidate in full[i]:
            cand = half[candidate]
            if len(members.intersection(cand.tolist())) > 2.0 / 3 * len(cand):
                expansion.append(cand)
        chosen = np.unique(np.concatenate(expansion))
        rows.append(np.full(len(chosen), i)), cols.append(chosen)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    dots = _pair_dots(x, rows, cols)
    if metric == "cosine":
        dist = 1.0 - dots
    else:
        sq = (x.astype(np.float64) ** 2).sum(1)
        dist = sq[rows] + sq[cols] - 2 * dots
    weights = np.exp(-(dist**2) / max_sq[rows])
    sums = np.bincount(rows, weights=weights, minlength=num)
    v = sp.csr_matrix((weights / sums[rows], (rows, cols)), shape=(num, num))
    if k2 != 1:
        qe_rows = np.repeat(np.arange(num), k2)
        qe = sp.csr_matrix(
            (np.full(num * k2, 1.0 / k2), (qe_rows, knn[:, :k2].reshape(-1))), shape=(num, num)
        )
        v = (qe @ v).tocsr()
    return v


class KReciprocalReranker:
    """Callable ``(start, end) → (end-start, G)`` re-ranked distances, for ``evaluate_blocks``."""

    def __init__(
        self, query_features, gallery_features, metric="cosine", k1=20, k2=6, lambda_value=0.3
    ):
        if metric not in ("cosine", "euclidean"):
            raise ValueError(f"unknown metric {metric!r}; valid: cosine, euclidean")
        if not 1 <= k2 <= k1 + 1:
            raise ValueError(f"need 1 <= k2 <= k1 + 1, got k1={k1}, k2={k2}")
        q, g = _prepare(query_features, metric), _prepare(gallery_features, metric)
        self.x = np.vstack([q, g])
        self.num_query, self.metric, self.lam = len(q), metric, lambda_value
        knn, self.max_sq = _neighbours(self.x, min(k1 + 1, len(self.x)), metric)
        v = _encodings(self.x, knn, self.max_sq, metric, k1, k2)
        self.v_query = v[: self.num_query].tocsr()
        self.v_gallery_csr = v[
            self.num_query :
        ].T.tocsr()  # (N, G): column k of V restricted to gallery
        self.gallery = torch.from_numpy(self.x[self.num_query :])

    def jaccard(self, start: int, end: int) -> np.ndarray:
        """1 − Σ_k min(V_qk, V_gk) / (2 − Σ_k min(V_qk, V_gk)) for queries [start, end)."""
        num_gallery = self.gallery.shape[0]
        out = np.zeros((end - start, num_gallery))
        vq, vg = self.v_query, self.v_gallery_csr
        for row, q in enumerate(range(start, end)):
            ks = vq.indices[vq.indptr[q] : vq.indptr[q + 1]]
            values = vq.data[vq.indptr[q] : vq.indptr[q + 1]]
            starts, ends = vg.indptr[ks], vg.indptr[ks + 1]
            lengths = ends - starts
            if lengths.sum() == 0:
                continue
            gather = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
            mins = np.minimum(np.repeat(values, lengths), vg.data[gather])
            out[row] = np.bincount(vg.indices[gather], weights=mins, minlength=num_gallery)
        return 1.0 - out / (2.0 - out)

    def __call__(self, start: int, end: int) -> torch.Tensor:
        query = torch.from_numpy(self.x[start:end])
        original = _distance(
            pairwise_scores(query, self.gallery, self.metric), self.metric
        ).double()
        original = original**2 / torch.from_numpy(self.max_sq[start:end]).unsqueeze(1)
        final = torch.from_numpy(self.jaccard(start, end)) * (1 - self.lam) + original * self.lam
        return final.float()


def rerank_distances(
    query_features, gallery_features, metric="cosine", k1=20, k2=6, lambda_value=0.3
) -> np.ndarray:
    """The full (Q, G) re-ranked distance matrix (small problems; use the class for blocks)."""
    reranker = KReciprocalReranker(query_features, gallery_features, metric, k1, k2, lambda_value)
    return reranker(0, reranker.num_query).numpy()
