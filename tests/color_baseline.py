"""Difficulty check for generated data (a test helper): nearest neighbour on colour histograms.

Each image is cropped to its central half in width (where the person stands, dropping most of
the per-camera background) and becomes the concatenated 8×8×8 RGB histograms of its upper and
lower halves (so the clothes' colours and their vertical order count), L2-normalised; query/gallery are ranked by
cosine similarity and scored with the toolkit's evaluator. A dataset a CNN must *learn* keeps this
baseline far below 100% rank-1: colours are shared between identities and cameras cast colours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reid.data.images import read_image
from reid.data.market1501 import load_market_format
from reid.data.records import arrays
from reid.evaluation.feature_set import FeatureSet
from reid.evaluation.rank import evaluate_rank


def colour_histogram(path: str, bins: int = 8) -> np.ndarray:
    pixels = np.asarray(read_image(path), dtype=np.int64) * bins // 256
    width = pixels.shape[1]
    pixels = pixels[:, width // 4 : width - width // 4]
    codes = pixels[..., 0] * bins * bins + pixels[..., 1] * bins + pixels[..., 2]
    half = codes.shape[0] // 2
    parts = [
        np.bincount(codes[:half].ravel(), minlength=bins**3),
        np.bincount(codes[half:].ravel(), minlength=bins**3),
    ]
    feature = np.concatenate(parts).astype(np.float32)
    return feature / np.linalg.norm(feature)


def histogram_baseline(root: str | Path) -> dict:
    dataset = load_market_format(root, "synthetic", splits=("query", "gallery"))
    query = np.stack([colour_histogram(r.path) for r in dataset.query])
    gallery = np.stack([colour_histogram(r.path) for r in dataset.gallery])
    (qp, qc), (gp, gc) = arrays(dataset.query), arrays(dataset.gallery)
    result = evaluate_rank(FeatureSet(query, qp, qc), FeatureSet(gallery, gp, gc), metric="cosine")
    return {"rank1": result.rank(1), "mAP": result.mAP, "queries": result.num_valid_queries}
