"""Comparisons across code paths: within a stated number of float32 ulps, rankings tie-aware.

Exact equality is right only where one computation produces both sides. Two code paths that
compute the same scores (a chunked GEMM and a full one, FAISS and NumPy, MKL and OpenBLAS) may
round differently: which kernel runs depends on the CPU (AVX2 or AVX-512) and on the block
shape, so the same test can pass on one machine and fail on another by one ulp.
"""

from __future__ import annotations

import numpy as np

#: the ulps two float32 paths computing a cosine of short vectors are allowed to differ by
SCORE_ULPS = 8


def float32_ulps(actual, expected) -> np.ndarray:
    """|actual − expected| in units in the last place of float32 at ``expected``."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    spacing = np.spacing(np.abs(expected).astype(np.float32)).astype(np.float64)
    same = (actual == expected) | (np.isinf(actual) & np.isinf(expected) & (actual == expected))
    with np.errstate(invalid="ignore"):
        diff = np.abs(actual - expected) / spacing
    return np.where(same, 0.0, diff)


def assert_within_ulps(actual, expected, ulps: int = SCORE_ULPS) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert np.array_equal(np.isfinite(actual), np.isfinite(expected)), "finite/inf pattern differs"
    distance = float32_ulps(actual, expected)
    worst = float(np.nanmax(distance)) if distance.size else 0.0
    assert worst <= ulps, f"{worst:.1f} ulps apart (allowed {ulps})"


def score_tolerance(scores, ulps: int = SCORE_ULPS) -> float:
    """An absolute tolerance worth ``ulps`` float32 ulps at the largest score."""
    top = float(np.max(np.abs(scores))) if np.size(scores) else 1.0
    return ulps * float(np.spacing(np.float32(max(top, 1e-30))))


def assert_topk_tie_aware(found: np.ndarray, scores: np.ndarray, tol: float) -> None:
    """``found`` (queries × k rows) is a correct top-k of ``scores`` (queries × gallery, the
    reference's): ranked by non-increasing reference score up to ``tol``, and it holds every
    item that beats the k-th by more than ``tol`` (items within ``tol`` of it may be swapped)."""
    for q, rows in enumerate(found):
        row_scores = scores[q]
        got = row_scores[rows]
        assert (np.diff(got) <= tol).all(), f"query {q}: not ranked by score"
        kth = got[-1]
        must = set(np.nonzero(row_scores > kth + tol)[0].tolist())
        assert must <= set(rows.tolist()), f"query {q}: misses {sorted(must - set(rows.tolist()))}"
        assert (got >= kth - tol).all() and (
            got >= np.sort(row_scores)[::-1][len(rows) - 1] - tol
        ).all()
