"""The query or gallery side of an evaluation: features and their labels, one object."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FeatureSet:
    features: np.ndarray  # (N, D) float32
    pids: np.ndarray
    camids: np.ndarray
    paths: np.ndarray = field(default_factory=lambda: np.array([]))

    def __len__(self) -> int:
        return len(self.pids)


def labels(query: FeatureSet, gallery: FeatureSet) -> tuple:
    """``(query_pids, gallery_pids, query_camids, gallery_camids)``: the label arguments of the
    array-level evaluators (``evaluate_rank``, ``verification_metrics``, ``evaluate_blocks``)."""
    return query.pids, gallery.pids, query.camids, gallery.camids
