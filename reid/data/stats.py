"""Dataset statistics: images per identity, imbalance ratio and Gini coefficient.

Identity statistics count real identities only: distractors (pid 0) and junk (pid −1) are left
out of them and counted apart (``distractors``).

Gini of the images-per-id counts ``n_1 <= ... <= n_C`` (sorted ascending):
``G = (2 Σ_i i·n_i) / (C Σ_i n_i) − (C + 1)/C``; 0 for a balanced set, → 1 when one id has all.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from .records import ImageRecord


def gini(counts) -> float:
    values = np.sort(np.asarray(counts, dtype=np.float64))
    if values.size == 0 or values.sum() == 0:
        return 0.0
    ranks = np.arange(1, values.size + 1)
    return float(
        2 * (ranks * values).sum() / (values.size * values.sum()) - (values.size + 1) / values.size
    )


@dataclass
class SplitStats:
    ids: int
    images: int
    cameras: int
    min_per_id: int
    median_per_id: float
    max_per_id: int
    imbalance_ratio: float
    gini: float
    distractors: int = 0  # images of pid 0 (distractor) or −1 (junk), outside the statistics

    def as_dict(self) -> dict:
        return asdict(self)


def images_per_id(records: list[ImageRecord]) -> np.ndarray:
    """Images per identity (distractors and junk excluded), sorted descending."""
    counts = Counter(r.pid for r in records if r.pid > 0 or r.split == "train")
    return np.array(sorted(counts.values(), reverse=True), dtype=np.int64)


def split_stats(records: list[ImageRecord]) -> SplitStats:
    counts = images_per_id(records)
    others = len(records) - int(counts.sum())
    if counts.size == 0:
        return SplitStats(0, 0, 0, 0, 0.0, 0, 0.0, 0.0, others)
    return SplitStats(
        ids=int(counts.size),
        images=int(counts.sum()),
        cameras=len({r.camid for r in records}),
        min_per_id=int(counts.min()),
        median_per_id=float(np.median(counts)),
        max_per_id=int(counts.max()),
        imbalance_ratio=float(counts.max() / counts.min()),
        gini=gini(counts),
        distractors=others,
    )


def plot_images_per_id(counts: np.ndarray, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(np.arange(len(counts)), counts, width=1.0, color="#3a6ea5")
    ax.set_xlabel("identity (sorted by image count)")
    ax.set_ylabel("images")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
