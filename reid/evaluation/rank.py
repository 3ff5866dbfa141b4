"""Exact, memory-bounded CMC / mAP / mINP under the Market-1501 protocol (docs/methods.md §1).

Protocol: for each query, gallery items with the same pid *and* the same camera are removed
(cameras equal to ``NO_CAMERA`` = -1 never match, so data without cameras counts every pair as
cross-camera), gallery junk (pid -1) is ignored, distractors (pid 0) are ordinary negatives. A
query with no positive left is *invalid*: excluded from every average, and counted.

With the positives of a query at 1-based ranks ``r_1 < … < r_n`` among the remaining items:

* CMC@k = 1 if ``r_1 <= k``;
* AP ("torchreid", default; also fast-reid) = ``(1/n) Σ_i i / r_i``;
* AP ("market-official", Market MATLAB ``compute_AP`` / Oxford ``compute_ap``, trapezoidal) =
  ``(1/n) Σ_i (p'_i + p_i)/2`` with ``p_i = i/r_i`` and ``p'_i = (i-1)/(r_i-1)``, the precision at
  the rank just before the hit (1 when ``r_i = 1``);
* INP = ``n / r_n`` (Ye et al., TPAMI 2021).

**Ties** are broken by gallery index: among items with exactly equal score, the lower gallery
index ranks first (what a stable sort by score gives). torchreid's ``np.argsort`` quicksort leaves
ties unspecified, so the two agree exactly on tie-free data.

The counting kernels (how it is exact without sorting rows) are in ``_counting.py``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ReidError
from ._counting import Protocol, ap_from_ranks, positive_ranks, positive_ranks_np
from .feature_set import FeatureSet, Labels, labels

log = logging.getLogger(__name__)

METRICS = ("cosine", "euclidean")
AP_MODES = ("torchreid", "market-official")
#: Default budget for one block of query × gallery float32 scores (one GEMM). Larger blocks
#: keep the GEMM efficient (each block streams the whole gallery through the BLAS once); the
#: counting then walks the block in cache-sized slices of rows (``COUNT_BYTES``).
BLOCK_BYTES = 256 * 2**20
#: CPU: bytes of scores counted at a time (a slice of a GEMM block's rows that stays in cache)
COUNT_BYTES = 16 * 2**20


@dataclass
class RankResult:
    """Metrics of one evaluation. Per-query arrays have one entry per query (NaN if invalid)."""

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid_queries: int
    num_invalid_queries: int
    ap: np.ndarray = field(repr=False)
    inp: np.ndarray = field(repr=False)
    first_hit: np.ndarray = field(repr=False)  # 1-based rank of the first positive, 0 if invalid
    timings: dict = field(default_factory=dict)

    def rank(self, k: int) -> float:
        return float(self.cmc[min(k, len(self.cmc)) - 1])

    def as_dict(self) -> dict:
        return {
            "rank1": self.rank(1),
            "rank5": self.rank(5),
            "rank10": self.rank(10),
            "rank20": self.rank(20),
            "mAP": self.mAP,
            "mINP": self.mINP,
            "num_valid_queries": self.num_valid_queries,
            "num_invalid_queries": self.num_invalid_queries,
            "cmc": [float(v) for v in self.cmc],
            "timings": self.timings,
        }

    def table(self) -> str:
        d = self.as_dict()
        return (
            f"{'R1':>7} {'R5':>7} {'R10':>7} {'R20':>7} {'mAP':>7} {'mINP':>7} {'valid':>7} {'invalid':>7}\n"
            f"{d['rank1']:7.2%} {d['rank5']:7.2%} {d['rank10']:7.2%} {d['rank20']:7.2%} "
            f"{d['mAP']:7.2%} {d['mINP']:7.2%} {self.num_valid_queries:>7} {self.num_invalid_queries:>7}"
        )


# ----------------------------------------------------------------------------------------- input


def _labels(name: str, values, length: int | None = None) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    if length is not None and array.size != length:
        raise ValueError(f"{name} has {array.size} entries but there are {length} rows")
    return array.astype(np.int64)


def _features(name: str, values) -> torch.Tensor:
    tensor = (
        values
        if isinstance(values, torch.Tensor)
        else torch.from_numpy(np.ascontiguousarray(values))
    )
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be 2-D (items × dim), got shape {tuple(tensor.shape)}")
    if tensor.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if not torch.is_floating_point(tensor):
        raise ValueError(f"{name} must be floating point, got {tensor.dtype}")
    return tensor.float()  # no copy for float32 input


def _row_squares(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """Squared row norms, in slices (no (N, D) temporary). They double as the NaN/inf check: a
    row with NaN or inf (or values too large to square in float32) has a non-finite sum."""
    step = max(1, (64 * 2**20) // max(1, tensor.shape[1]))
    squares = torch.cat(
        [torch.linalg.vector_norm(part, dim=1).square_() for part in tensor.split(step)]
    )
    finite = torch.isfinite(squares)
    if not bool(finite.all()):
        bad = int((~finite).nonzero()[0, 0])
        raise ValueError(f"{name} holds NaN or inf values (first in row {bad})")
    return squares


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA device is available")
    return device


def _block_size(num_gallery: int, chunk_size: int | None, bytes_per_item: int = 4) -> int:
    if chunk_size is not None:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        return chunk_size
    return max(1, BLOCK_BYTES // (max(num_gallery, 1) * bytes_per_item))


# ----------------------------------------------------------------------------------------- core


ScoreBlocks = Callable[[int, int], torch.Tensor]


def _evaluate(
    score_block: ScoreBlocks,
    num_query: int,
    num_gallery: int,
    protocol: Protocol,
    *,
    max_rank: int,
    ap: str,
    block: int,
    device: torch.device,
) -> RankResult:
    if ap not in AP_MODES:
        raise ValueError(f"unknown ap {ap!r}; valid: {', '.join(AP_MODES)}")
    max_rank = min(max_rank, num_gallery)
    ap_all = np.full(num_query, np.nan)
    inp_all = np.full(num_query, np.nan)
    first_hit = np.zeros(num_query, dtype=np.int64)
    countable = None  # junk never counts
    if len(protocol.junk):
        countable = torch.ones(num_gallery, dtype=torch.bool, device=device)
        countable[torch.from_numpy(protocol.junk).to(device)] = False
    countable_np = None if countable is None else countable.cpu().numpy()
    stages = dict.fromkeys(("labels_s", "scores_s", "counting_s", "metrics_s"), 0.0)
    clock = time.perf_counter()

    def lap(stage: str) -> None:  # wall time per stage (on CUDA: launch time, not kernel time)
        nonlocal clock
        now = time.perf_counter()
        stages[stage] += now - clock
        clock = now

    # the protocol's labels for all queries at once, sliced per block (rows ascending)
    pos_rows_all, pos_cols_all, rm_rows_all, rm_cols_all = protocol.block(0, num_query)
    lap("labels_s")

    def part(rows, cols, start, end):
        low, high = np.searchsorted(rows, [start, end])
        return rows[low:high] - start, cols[low:high]

    # on the CPU the counting walks each GEMM block in slices of rows that stay in cache
    step = max(1, COUNT_BYTES // (4 * num_gallery)) if device.type == "cpu" else block
    mask = np.empty((min(step, block), num_gallery), dtype=bool) if device.type == "cpu" else None
    for start in range(0, num_query, block):
        end = min(start + block, num_query)
        if part(pos_rows_all, pos_cols_all, start, end)[0].size == 0:
            continue  # no query of the block has a positive: no scores needed
        scores = score_block(start, end)
        lap("scores_s")
        rm_rows, rm_cols = part(rm_rows_all, rm_cols_all, start, end)
        if rm_rows.size:
            scores[
                torch.from_numpy(rm_rows).to(device), torch.from_numpy(rm_cols).to(device)
            ] = -math.inf
        for low in range(start, end, step):
            high = min(low + step, end)
            pos_rows, pos_cols = part(pos_rows_all, pos_cols_all, low, high)
            if pos_rows.size == 0:
                continue
            rows_scores = scores[low - start : high - start]
            if device.type == "cpu":
                ranks = positive_ranks_np(
                    rows_scores.numpy(), pos_rows, pos_cols, countable_np, mask[: high - low]
                )
            else:
                ranks = positive_ranks(rows_scores, pos_rows, pos_cols, countable)
                ranks = ranks.cpu().numpy()
            lap("counting_s")
            n = np.bincount(pos_rows, minlength=high - low)
            rows = np.nonzero(n > 0)[0]
            ap_all[low + rows] = ap_from_ranks(ranks[rows], n[rows], ap)
            inp_all[low + rows] = n[rows] / ranks[rows, n[rows] - 1]
            first_hit[low + rows] = ranks[rows, 0]
            lap("metrics_s")
    valid = first_hit > 0
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ReidError(
            "no valid query: no query has a positive in the gallery (check pids and camids)"
        )
    hits = first_hit[valid]
    cmc = np.array([(hits <= k).mean() for k in range(1, max_rank + 1)])
    return RankResult(
        cmc=cmc,
        mAP=float(np.nanmean(ap_all)),
        mINP=float(np.nanmean(inp_all)),
        num_valid_queries=num_valid,
        num_invalid_queries=num_query - num_valid,
        ap=ap_all,
        inp=inp_all,
        first_hit=first_hit,
        timings=stages,
    )


# ------------------------------------------------------------------------------------ public API


def _check_labels(num_query, num_gallery, query_pids, gallery_pids, query_camids, gallery_camids):
    query_pids = _labels("query_pids", query_pids, num_query)
    gallery_pids = _labels("gallery_pids", gallery_pids, num_gallery)
    query_camids = _labels("query_camids", query_camids, num_query)
    gallery_camids = _labels("gallery_camids", gallery_camids, num_gallery)
    if (query_pids == -1).any():
        raise ValueError("query_pids contain junk pid -1; drop junk queries before evaluation")
    return Protocol(query_pids, gallery_pids, query_camids, gallery_camids)


def count_valid_queries(q_pids, q_camids, g_pids, g_camids) -> int:
    """Queries with at least one positive under the protocol (``Protocol``'s rule; junk pid −1
    never counts). Used to refuse an evaluation set up front."""
    labels = (np.asarray(a, dtype=np.int64) for a in (q_pids, g_pids, q_camids, g_camids))
    protocol = Protocol(*labels)
    rows = np.unique(protocol.block(0, len(protocol.query_pids))[0])
    return int((protocol.query_pids[rows] >= 0).sum())


def _run(
    score_block, num_query, num_gallery, labels, *, max_rank, ap, chunk_size, device
) -> RankResult:
    protocol = _check_labels(num_query, num_gallery, *labels)
    block = _block_size(num_gallery, chunk_size)
    return _evaluate(
        score_block,
        num_query,
        num_gallery,
        protocol,
        max_rank=max_rank,
        ap=ap,
        block=block,
        device=device,
    )


def _matmul_t(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T``, on the CPU through NumPy's BLAS (OpenBLAS; torch's MKL sgemm is 1.5-1.7×
    slower for these shapes on the machines we measured: benchmarks/bench_eval.py)."""
    if a.device.type == "cpu":
        return torch.from_numpy(a.numpy() @ b.numpy().T)
    return a @ b.T


def pairwise_scores(
    query: torch.Tensor, gallery: torch.Tensor, metric: str, gallery_sq=None
) -> torch.Tensor:
    """Scores, higher = closer: cosine similarity of L2-normalised rows, or minus squared L2."""
    if metric == "cosine":
        return _matmul_t(query, gallery)
    query_sq = (query * query).sum(1, keepdim=True)
    if gallery_sq is None:
        gallery_sq = (gallery * gallery).sum(1)
    return _matmul_t(query, gallery).mul_(-2).add_(query_sq).add_(gallery_sq.unsqueeze(0)).neg_()


def feature_score_blocks(
    query_features, gallery_features, metric: str, device
) -> tuple[ScoreBlocks, int, int]:
    """A ``score_block(start, end)`` over features (cosine: normalised on the fly, no gallery copy).

    On the CPU every block is written into one reused buffer: a block is valid until the next call.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    query = _features("query_features", query_features)
    gallery = _features("gallery_features", gallery_features)
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"feature dims differ: query {query.shape[1]} vs gallery {gallery.shape[1]}"
        )
    query, gallery = query.to(device), gallery.to(device)
    _row_squares("query_features", query)
    gallery_sq = _row_squares("gallery_features", gallery)  # the gallery is never copied on the CPU
    if metric == "cosine":  # q̂·g/‖g‖ = cos, without a normalised copy of the gallery
        inverse_norm = gallery_sq.sqrt().clamp(min=1e-12).reciprocal()
    if device.type != "cpu":

        def score_block(start, end):
            if metric == "cosine":
                query_unit = torch.nn.functional.normalize(query[start:end], dim=1)
                return (query_unit @ gallery.T).mul_(inverse_norm)
            return pairwise_scores(query[start:end], gallery, metric, gallery_sq)

        return score_block, query.shape[0], gallery.shape[0]

    # CPU: NumPy's BLAS into one reused buffer (a fresh block-sized output costs a page fault
    # per 4 KiB on every block), elementwise passes in place in NumPy: torch's CPU threads would
    # fight OpenBLAS's workers, which spin for a while after each GEMM
    gallery_np = gallery.numpy()
    buffer = np.zeros((0, gallery.shape[0]), np.float32)
    if metric == "cosine":
        inverse_norm_np = inverse_norm.numpy()
    else:
        gallery_sq_np = gallery_sq.numpy()

    def score_block(start, end):
        nonlocal buffer
        if len(buffer) < end - start:
            buffer = np.empty((end - start, gallery.shape[0]), np.float32)
        out = buffer[: end - start]
        if metric == "cosine":
            query_unit = torch.nn.functional.normalize(query[start:end], dim=1).numpy()
            np.matmul(query_unit, gallery_np.T, out=out)
            np.multiply(out, inverse_norm_np, out=out)
        else:  # −(|q|² + |g|² − 2 q·g), as pairwise_scores rounds it (negation is exact)
            query_sq = (query[start:end] * query[start:end]).sum(1, keepdim=True).numpy()
            np.matmul(query[start:end].numpy(), gallery_np.T, out=out)
            out *= 2
            out -= query_sq
            out -= gallery_sq_np
        return torch.from_numpy(out)

    return score_block, query.shape[0], gallery.shape[0]


@torch.no_grad()
def evaluate_rank(
    query: FeatureSet,
    gallery: FeatureSet,
    *,
    metric: str = "cosine",
    max_rank: int = 50,
    ap: str = "torchreid",
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
) -> RankResult:
    """CMC, mAP and mINP of query features against gallery features, exact over the whole gallery.

    Args:
        query, gallery: ``FeatureSet`` (features (Q, D) / (G, D), float array or tensor; pids
            and camids, int arrays (Q,) / (G,)).
        metric: ``cosine`` (on L2-normalised features) or ``euclidean`` (squared L2).
        max_rank: CMC length (capped at G). ap: ``torchreid`` or ``market-official``.
        device: ``cpu``, ``cuda`` or None (auto). chunk_size: queries per block (auto: ~384 MiB).
    """
    device = resolve_device(device)
    score_block, num_query, num_gallery = feature_score_blocks(
        query.features, gallery.features, metric, device
    )
    return _run(
        score_block,
        num_query,
        num_gallery,
        labels(query, gallery),
        max_rank=max_rank,
        ap=ap,
        chunk_size=chunk_size,
        device=device,
    )


@torch.no_grad()
def evaluate_distmat(
    distmat,
    query_pids,
    gallery_pids,
    query_camids,
    gallery_camids,
    *,
    max_rank: int = 50,
    ap: str = "torchreid",
    device: str | torch.device | None = "cpu",
    chunk_size: int | None = None,
) -> RankResult:
    """The same metrics from a precomputed (Q, G) distance matrix (lower = closer)."""
    distances = _features("distmat", distmat)
    if not bool(torch.isfinite(distances).all()):
        raise ValueError("distmat holds NaN or inf values")
    return evaluate_blocks(
        lambda s, e: distances[s:e],
        *distances.shape,
        Labels(query_pids, gallery_pids, query_camids, gallery_camids),
        max_rank=max_rank,
        ap=ap,
        device=device,
        chunk_size=chunk_size,
    )


def evaluate_blocks(
    blocks: Callable[[int, int], torch.Tensor],
    num_query: int,
    num_gallery: int,
    labels: Labels,
    *,
    max_rank: int = 50,
    ap: str = "torchreid",
    device: str | torch.device = "cpu",
    chunk_size: int | None = None,
) -> RankResult:
    """Metrics from a function returning (end-start, G) *distances* for queries [start, end)."""
    device = resolve_device(device)
    return _run(
        lambda s, e: blocks(s, e).to(device).neg(),
        num_query,
        num_gallery,
        tuple(labels),
        max_rank=max_rank,
        ap=ap,
        chunk_size=chunk_size,
        device=device,
    )
