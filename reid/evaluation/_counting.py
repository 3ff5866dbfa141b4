"""The counting kernels of the exact evaluator (private: ``rank.py`` is the public API).

**How it is exact without sorting rows.** Scores (higher = better) are computed for a block of
queries against the whole gallery with one matrix product (``BLOCK_BYTES`` of scores), so peak
memory is O(block × gallery). Only items scoring at least a query's lowest positive can outrank
any positive; they are picked out with one comparison and a flat ``nonzero``. Each is assigned,
by binary search among its row's sorted positives, the number ``c_g`` of positives it strictly
beats; a positive in sorted place ``j`` has exactly ``#{g : c_g > j}`` items above it, which a
histogram of ``c_g`` and a suffix sum give for every positive at once. Items tied exactly with a
positive are found in the same pass and added by index. On the CPU the counting runs in NumPy
on slices of rows that stay in cache (``COUNT_BYTES``); ``benchmarks/bench_eval.py`` measures it
against the GEMM alone and against the peers' compiled evaluators.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..data.records import NO_CAMERA


class Protocol:
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


def order_keys(values: torch.Tensor) -> torch.Tensor:
    """int64 keys in the order of float32 ``values`` (−0.0 and +0.0 equal; no NaN): the IEEE bit
    pattern read as int32, with the magnitude bits of negatives flipped."""
    bits = (values + 0.0).view(torch.int32).long()  # + 0.0 turns −0.0 into +0.0
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits) + 2**31  # in [0, 2**32)


def positive_ranks(
    scores: torch.Tensor, pos_rows: np.ndarray, pos_cols: np.ndarray, countable: torch.Tensor | None
) -> torch.Tensor:
    """1-based ranks of each row's positives (ascending, padded with a huge value): (B, P) int64.

    ``scores`` (B, G) must already hold -inf at removed items; ``countable`` (G,) bool is False
    at items that never count (junk), or None. Every score is mapped to an integer key
    ``row·2³² + order`` so that one sorted 1-D array of the positives' keys serves all rows: one
    binary search per counted item gives ``c_g``, the number of positives of its row it beats.
    M-sized steps use ``take`` (torch's advanced indexing is several times slower on the CPU).
    """
    device, (num_rows, num_gallery) = scores.device, scores.shape
    flat_scores = scores.reshape(-1)
    counts = np.bincount(pos_rows, minlength=num_rows)
    width, total = max(int(counts.max()) if counts.size else 0, 1), len(pos_rows)
    rows = torch.from_numpy(pos_rows).to(device)
    cols = torch.from_numpy(pos_cols).to(device)
    keys = (rows << 32) | order_keys(flat_scores.take(rows * num_gallery + cols))
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
    lowest[rows[first]] = flat_scores.take(rows[first] * num_gallery + cols[first])
    mask = scores >= lowest.unsqueeze(1)
    if countable is not None:
        mask &= countable
    flat = mask.view(-1).nonzero().squeeze(1)
    del mask
    item_rows = flat // num_gallery
    item_keys = (item_rows << 32) | order_keys(flat_scores.take(flat))
    below = torch.searchsorted(keys, item_keys)  # flat index of the row's first positive >= item
    # histogram of c_g with n_r + 1 bins per row, laid out row after row: bin below + row
    hist = torch.bincount(below + item_rows, minlength=total + num_rows)
    after = torch.cat([hist.flip(0).cumsum(0).flip(0), hist.new_zeros(1)])  # Σ of bins >= i
    # items strictly above each positive: bins c_g > its slot, up to the row's end
    ends = torch.from_numpy(np.cumsum(counts)).to(device)
    above = after.take(torch.arange(total, device=device) + rows + 1) - after.take(
        ends.take(rows) + rows + 1
    )

    # exact ties: an item scoring exactly as a run of equal positives ranks before those of them
    # with a higher index (each positive ties with itself, which adds nothing)
    tie = (item_keys == keys.take(below.clamp(max=total - 1))).nonzero().squeeze(1)
    tie_cols = flat.take(tie) - item_rows.take(tie) * num_gallery
    tie_first = below.take(tie)
    tie_end = torch.searchsorted(keys, item_keys.take(tie), right=True)
    for offset in range(int((tie_end - tie_first).max()) if tie.numel() else 0):
        k = tie_first + offset
        ok = k < tie_end
        k = k.clamp(max=total - 1)
        ok &= cols[k] > tie_cols
        above.index_put_((k[ok],), torch.ones_like(k[ok]), accumulate=True)
    ranks = torch.full((num_rows, width), 2**62, dtype=torch.int64, device=device)
    ranks[rows, slot] = above + 1
    return ranks.sort(dim=1).values


def positive_ranks_np(
    scores: np.ndarray,
    pos_rows: np.ndarray,
    pos_cols: np.ndarray,
    countable: np.ndarray | None,
    mask: np.ndarray,
) -> np.ndarray:
    """``positive_ranks`` in NumPy, the CPU path (2-4× faster than torch's CPU kernels here
    for compare, flat nonzero and take). Counted items come out of ``flatnonzero`` grouped by
    row, so each row's binary search runs on its own few positives, in float32: no integer keys.
    ``mask`` is a reused (B, G) bool buffer."""
    num_rows, num_gallery = scores.shape
    flat_scores = scores.reshape(-1)
    counts = np.bincount(pos_rows, minlength=num_rows)
    width, total = max(int(counts.max()) if counts.size else 0, 1), len(pos_rows)
    values = flat_scores.take(pos_rows * num_gallery + pos_cols)
    # positives sorted by (row, score, index descending): of two equal positives the one with
    # the lower index ranks first, so it is "beaten" by no equal one, the other by one
    order = np.lexsort((-pos_cols, values, pos_rows))
    rows, cols, values = pos_rows[order], pos_cols[order], values[order]
    ends = np.cumsum(counts)
    starts = ends - counts
    slot = np.arange(total) - starts[rows]

    # counted items: those scoring at least their row's lowest positive
    lowest = np.full(num_rows, np.inf, dtype=np.float32)
    lowest[rows[slot == 0]] = values[slot == 0]
    np.greater_equal(scores, lowest[:, None], out=mask)
    if countable is not None:
        np.logical_and(mask, countable, out=mask)
    flat = np.flatnonzero(mask)
    items = flat_scores.take(flat)
    bounds = np.searchsorted(flat, np.arange(num_rows + 1) * num_gallery)  # items per row
    below = np.empty(len(flat), dtype=np.int64)  # c_g: positives of its row strictly below
    for row in np.flatnonzero(counts):
        lo, hi = bounds[row], bounds[row + 1]
        below[lo:hi] = np.searchsorted(values[starts[row] : ends[row]], items[lo:hi])
    item_rows = np.repeat(np.arange(num_rows), np.diff(bounds))
    # histogram of c_g, n_r + 1 bins per row laid out row after row (row r's bins start at
    # starts[r] + r); suffix sums give the items strictly above each positive
    hist = np.bincount(below + starts[item_rows] + item_rows, minlength=total + num_rows)
    after = np.append(np.cumsum(hist[::-1])[::-1], 0)  # after[i] = Σ hist[i:]
    above = after.take(np.arange(total) + rows + 1) - after.take(ends[rows] + rows + 1)

    # exact ties: an item scoring exactly as a run of equal positives ranks before those of them
    # with a higher index (each positive ties with itself, which adds nothing)
    inside = below < counts[item_rows]
    at = np.minimum(starts[item_rows] + below, total - 1)
    tie = np.flatnonzero(inside & (items == values.take(at)))
    if tie.size > total:  # an item other than the positives ties with one: count each pair
        tie_rows, tie_first = item_rows.take(tie), at.take(tie)
        tie_cols, tie_values = flat.take(tie) - tie_rows * num_gallery, items.take(tie)
        for offset in range(width):
            k = tie_first + offset
            ok = k < ends[tie_rows]
            k = np.minimum(k, total - 1)
            ok &= (values[k] == tie_values) & (cols[k] > tie_cols)
            if not ok.any():
                break
            np.add.at(above, k[ok], 1)
    else:  # only positives tie: each is preceded by the equal ones with a lower index, which
        # follow it in its run (runs are sorted by index descending)
        new_run = np.ones(total, dtype=bool)
        new_run[1:] = (rows[1:] != rows[:-1]) | (values[1:] != values[:-1])
        run_ends = np.append(np.flatnonzero(new_run)[1:], total)
        above += run_ends[np.cumsum(new_run) - 1] - np.arange(total) - 1
    ranks = np.full((num_rows, width), 2**62, dtype=np.int64)
    ranks[rows, slot] = above + 1
    ranks.sort(axis=1)
    return ranks


def ap_from_ranks(ranks: np.ndarray, n: np.ndarray, mode: str) -> np.ndarray:
    """AP per row from sorted 1-based ranks (B, P) padded with huge values, n positives per row."""
    i = np.arange(1, ranks.shape[1] + 1, dtype=np.float64)
    valid = i[None, :] <= n[:, None]
    r = np.where(valid, ranks, 1).astype(np.float64)
    precision = i / r
    if mode == "market-official":
        before = np.where(r > 1, (i - 1) / np.maximum(r - 1, 1), 1.0)
        precision = (precision + before) / 2
    return np.where(valid, precision, 0.0).sum(1) / np.maximum(n, 1)
