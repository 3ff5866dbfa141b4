"""Exact, memory-bounded CMC / mAP / mINP under the Market-1501 protocol (METHODS.md §1).

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

**How it is exact without sorting rows.** Scores (higher = better) are computed for a block of
queries against the whole gallery with one matrix product, so peak memory is O(block × gallery).
In each row the positives' scores are sorted (a handful per query), and every gallery item is
assigned, by binary search, the number ``c_g`` of positives it strictly beats. A positive with
score ``v`` has exactly ``#{g : c_g >= L(v)}`` items above it, where ``L(v)`` is the number of
positives with score ``<= v``; a histogram of ``c_g`` and a suffix sum give every positive's rank
at once. Items tied exactly with a positive are found in the same pass and added by index.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.records import NO_CAMERA
from ..errors import ReidError

log = logging.getLogger(__name__)

METRICS = ("cosine", "euclidean")
AP_MODES = ("torchreid", "market-official")
#: Default working-set budget for one block of queries (scores and per-item counters).
BLOCK_BYTES = 384 * 2**20


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


def _block_size(num_gallery: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        return chunk_size
    # per gallery item: float32 score + int32 count + int64 histogram slot + slack
    return max(1, BLOCK_BYTES // (max(num_gallery, 1) * 24))


# ----------------------------------------------------------------------------------------- core


class _Protocol:
    """Per-pid gallery lookups, so a block's positives and removals cost O(#same-pid items)."""

    def __init__(self, query_pids, gallery_pids, query_camids, gallery_camids):
        self.query_pids, self.query_camids = query_pids, query_camids
        self.gallery_pids, self.gallery_camids = gallery_pids, gallery_camids
        order = np.argsort(gallery_pids, kind="stable")
        sorted_pids = gallery_pids[order]
        uniques, starts = np.unique(sorted_pids, return_index=True)
        ends = np.append(starts[1:], len(order))
        self.by_pid = {int(p): order[s:e] for p, s, e in zip(uniques, starts, ends)}
        self.junk = self.by_pid.get(-1, np.zeros(0, dtype=np.int64))

    def block(self, start: int, end: int):
        """Flat (row, gallery index) pairs of positives and of removed items for queries [start, end)."""
        pos_rows, pos_cols, rm_rows, rm_cols = [], [], [], []
        for row, q in enumerate(range(start, end)):
            same = self.by_pid.get(int(self.query_pids[q]))
            if same is None:
                continue
            cam = self.query_camids[q]
            removed = (
                (self.gallery_camids[same] == cam)
                if cam != NO_CAMERA
                else np.zeros(len(same), bool)
            )
            pos, rm = same[~removed], same[removed]
            pos_rows.append(np.full(len(pos), row)), pos_cols.append(pos)
            rm_rows.append(np.full(len(rm), row)), rm_cols.append(rm)
        cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)  # noqa: E731
        return cat(pos_rows), cat(pos_cols), cat(rm_rows), cat(rm_cols)


def _order_keys(values: torch.Tensor) -> torch.Tensor:
    """int64 keys in the order of float32 ``values`` (−0.0 and +0.0 equal; no NaN): the IEEE bit
    pattern read as int32, with the magnitude bits of negatives flipped."""
    bits = (values + 0.0).view(torch.int32).long()  # + 0.0 turns −0.0 into +0.0
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits) + 2**31  # in [0, 2**32)


def _positive_ranks(
    scores: torch.Tensor, pos_rows: np.ndarray, pos_cols: np.ndarray, excluded: torch.Tensor
) -> torch.Tensor:
    """1-based ranks of each row's positives (ascending, padded with a huge value): (B, P) int64.

    ``scores`` (B, G) must already hold -inf at removed items; ``excluded`` (G,) bool marks
    items that never count (junk). Every score is mapped to an integer key ``row·2³² + order``
    so that one sorted 1-D array of the positives' keys serves all rows: a single binary search
    per counted item gives ``c_g``, the number of positives of its row it strictly beats.
    """
    device, (num_rows, num_gallery) = scores.device, scores.shape
    counts = np.bincount(pos_rows, minlength=num_rows)
    width, total = max(int(counts.max()) if counts.size else 0, 1), len(pos_rows)
    rows = torch.from_numpy(pos_rows).to(device)
    cols = torch.from_numpy(pos_cols).to(device)
    keys = (rows << 32) | _order_keys(scores[rows, cols])
    # positives sorted by (row, score, index descending): of two equal positives the one with
    # the lower index ranks first, so it is "beaten" by no equal one, the other by one
    order = torch.argsort(cols, descending=True, stable=True)
    order = order[torch.argsort(keys[order], stable=True)]
    keys, rows, cols = keys[order], rows[order], cols[order]
    starts = torch.from_numpy(np.cumsum(counts) - counts).to(device)
    slot = torch.arange(total, device=device) - starts[rows]

    # counted items: those scoring at least their row's lowest positive (no other item beats
    # any positive); on a decent model a few percent of the block. Flat indices, one pass each.
    lowest = torch.full((num_rows,), math.inf, device=device)
    first = slot == 0
    lowest[rows[first]] = scores[rows[first], cols[first]]
    flat = (scores >= lowest.unsqueeze(1)).view(-1).nonzero().squeeze(1)
    item_rows = flat // num_gallery
    if bool(excluded.any()):
        keep = ~excluded[flat - item_rows * num_gallery]
        flat, item_rows = flat[keep], item_rows[keep]
    item_keys = (item_rows << 32) | _order_keys(scores.reshape(-1).take(flat))
    below = torch.searchsorted(keys, item_keys)  # flat index of the row's first positive >= item
    shift = torch.arange(num_rows, device=device) * (width + 1) - starts  # → row·(width+1) + c_g
    hist = torch.bincount(below + shift[item_rows], minlength=num_rows * (width + 1))
    suffix = hist.view(num_rows, width + 1).flip(1).cumsum(1).flip(1)  # #{g : c_g >= L}
    above = suffix[rows, slot + 1]  # items strictly above each positive (equal ones skip c_g)

    # exact ties: an item scoring exactly as a run of equal positives ranks before those of them
    # with a higher index (each positive ties with itself, which adds nothing)
    is_tie = item_keys == keys[below.clamp(max=total - 1)]
    tie_cols = flat[is_tie] - item_rows[is_tie] * num_gallery
    tie_first = below[is_tie]
    tie_end = torch.searchsorted(keys, item_keys[is_tie], right=True)
    for offset in range(int((tie_end - tie_first).max()) if tie_first.numel() else 0):
        k = tie_first + offset
        ok = k < tie_end
        k = k.clamp(max=total - 1)
        ok &= cols[k] > tie_cols
        above.index_put_((k[ok],), torch.ones_like(k[ok]), accumulate=True)
    ranks = torch.full((num_rows, width), 2**62, dtype=torch.int64, device=device)
    ranks[rows, slot] = above + 1
    return ranks.sort(dim=1).values


def _ap_from_ranks(ranks: np.ndarray, n: np.ndarray, mode: str) -> np.ndarray:
    """AP per row from sorted 1-based ranks (B, P) padded with huge values, n positives per row."""
    i = np.arange(1, ranks.shape[1] + 1, dtype=np.float64)
    valid = i[None, :] <= n[:, None]
    r = np.where(valid, ranks, 1).astype(np.float64)
    precision = i / r
    if mode == "market-official":
        before = np.where(r > 1, (i - 1) / np.maximum(r - 1, 1), 1.0)
        precision = (precision + before) / 2
    return np.where(valid, precision, 0.0).sum(1) / np.maximum(n, 1)


ScoreBlocks = Callable[[int, int], torch.Tensor]


def _evaluate(
    score_block: ScoreBlocks,
    num_query: int,
    num_gallery: int,
    protocol: _Protocol,
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
    excluded = torch.zeros(num_gallery, dtype=torch.bool, device=device)
    excluded[torch.from_numpy(protocol.junk).to(device)] = True
    stages = dict.fromkeys(("labels_s", "scores_s", "counting_s", "metrics_s"), 0.0)
    clock = time.perf_counter()

    def lap(stage: str) -> None:  # wall time per stage (on CUDA: launch time, not kernel time)
        nonlocal clock
        now = time.perf_counter()
        stages[stage] += now - clock
        clock = now

    for start in range(0, num_query, block):
        end = min(start + block, num_query)
        pos_rows, pos_cols, rm_rows, rm_cols = protocol.block(start, end)
        lap("labels_s")
        if pos_rows.size == 0:  # no query of the block has a positive: no scores needed
            continue
        scores = score_block(start, end)
        lap("scores_s")
        if rm_rows.size:
            scores[
                torch.from_numpy(rm_rows).to(device), torch.from_numpy(rm_cols).to(device)
            ] = -math.inf
        ranks = _positive_ranks(scores, pos_rows, pos_cols, excluded).cpu().numpy()
        lap("counting_s")
        n = np.bincount(pos_rows, minlength=end - start)
        rows = np.nonzero(n > 0)[0]
        ap_all[start + rows] = _ap_from_ranks(ranks[rows], n[rows], ap)
        inp_all[start + rows] = n[rows] / ranks[rows, n[rows] - 1]
        first_hit[start + rows] = ranks[rows, 0]
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
    return _Protocol(query_pids, gallery_pids, query_camids, gallery_camids)


def count_valid_queries(q_pids, q_camids, g_pids, g_camids) -> int:
    """Queries with at least one positive under the protocol (``_Protocol``'s rule; junk pid −1
    never counts). Used to refuse an evaluation set up front."""
    labels = (np.asarray(a, dtype=np.int64) for a in (q_pids, g_pids, q_camids, g_camids))
    protocol = _Protocol(*labels)
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
    """``a @ b.T``. On the CPU through NumPy's BLAS (OpenBLAS: ~1.35× faster than torch's MKL
    sgemm for these shapes on the AVX-512 machines we measured; benchmarks/bench_eval.py)."""
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
    """A ``score_block(start, end)`` over features (cosine: normalised on the fly, no gallery copy)."""
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

        def score_block(start, end):
            query_unit = torch.nn.functional.normalize(query[start:end], dim=1)
            return _matmul_t(query_unit, gallery).mul_(inverse_norm)

        return score_block, query.shape[0], gallery.shape[0]
    return (
        (lambda s, e: pairwise_scores(query[s:e], gallery, metric, gallery_sq)),
        query.shape[0],
        gallery.shape[0],
    )


@torch.no_grad()
def evaluate_rank(
    query_features,
    gallery_features,
    query_pids,
    gallery_pids,
    query_camids,
    gallery_camids,
    *,
    metric: str = "cosine",
    max_rank: int = 50,
    ap: str = "torchreid",
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
) -> RankResult:
    """CMC, mAP and mINP of query features against gallery features, exact over the whole gallery.

    Args:
        query_features: (Q, D) float array or tensor; gallery_features: (G, D).
        query_pids, gallery_pids, query_camids, gallery_camids: int arrays (Q,) / (G,).
        metric: ``cosine`` (on L2-normalised features) or ``euclidean`` (squared L2).
        max_rank: CMC length (capped at G). ap: ``torchreid`` or ``market-official``.
        device: ``cpu``, ``cuda`` or None (auto). chunk_size: queries per block (auto: ~384 MiB).
    """
    device = resolve_device(device)
    score_block, num_query, num_gallery = feature_score_blocks(
        query_features, gallery_features, metric, device
    )
    labels = (query_pids, gallery_pids, query_camids, gallery_camids)
    return _run(
        score_block,
        num_query,
        num_gallery,
        labels,
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
        query_pids,
        gallery_pids,
        query_camids,
        gallery_camids,
        max_rank=max_rank,
        ap=ap,
        device=device,
        chunk_size=chunk_size,
    )


def evaluate_blocks(
    blocks: Callable[[int, int], torch.Tensor],
    num_query: int,
    num_gallery: int,
    query_pids,
    gallery_pids,
    query_camids,
    gallery_camids,
    *,
    max_rank: int = 50,
    ap: str = "torchreid",
    device: str | torch.device = "cpu",
    chunk_size: int | None = None,
) -> RankResult:
    """Metrics from a function returning (end-start, G) *distances* for queries [start, end)."""
    device = resolve_device(device)
    labels = (query_pids, gallery_pids, query_camids, gallery_camids)
    return _run(
        lambda s, e: blocks(s, e).to(device).neg(),
        num_query,
        num_gallery,
        labels,
        max_rank=max_rank,
        ap=ap,
        chunk_size=chunk_size,
        device=device,
    )
