"""Controlled long-tail caps (METHODS.md §6) — the split tool is added with the imbalance issue."""

from __future__ import annotations

import numpy as np


def longtail_caps(num_ids: int, n_max: int, ratio: float, minimum: int = 2) -> np.ndarray:
    """Per-identity caps ``n_i = floor(n_max · ρ^(−i/(C−1)))`` for i = 0..C-1, at least ``minimum``.

    ρ = 1 gives ``n_max`` for everyone. Identity *order* is the caller's (seeded) choice.
    """
    if ratio < 1:
        raise ValueError(f"long-tail ratio must be >= 1, got {ratio}")
    if num_ids <= 0:
        return np.zeros(0, dtype=np.int64)
    if num_ids == 1:
        return np.array([max(n_max, minimum)], dtype=np.int64)
    i = np.arange(num_ids, dtype=np.float64)
    caps = np.floor(n_max * ratio ** (-i / (num_ids - 1)) + 1e-9).astype(np.int64)
    return np.maximum(caps, minimum)
