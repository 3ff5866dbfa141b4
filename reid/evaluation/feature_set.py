"""The query or gallery side of an evaluation: features and their labels, one object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np


@dataclass
class FeatureSet:
    features: np.ndarray  # (N, D) float32
    pids: np.ndarray
    camids: np.ndarray
    paths: np.ndarray = field(default_factory=lambda: np.array([]))

    def __len__(self) -> int:
        return len(self.pids)


class Labels(NamedTuple):
    """The labels of an evaluation without its features (``evaluate_blocks``)."""

    query_pids: np.ndarray
    gallery_pids: np.ndarray
    query_camids: np.ndarray
    gallery_camids: np.ndarray


def labels(query: FeatureSet, gallery: FeatureSet) -> Labels:
    return Labels(query.pids, gallery.pids, query.camids, gallery.camids)
