"""Open-set figures: pair verification (ROC, TPR at FPR) and open-set identification (DIR at FAR).

Both answer "is this person in the gallery at all?", exactly and block by block like the ranking
metrics (memory O(block × G) plus the scores an operating point needs; no Q × G matrix).

**Pairs** (query × gallery, Market protocol): same-id-same-camera items and junk are excluded;
a pair is *positive* when the ids match, *negative* otherwise (distractors included). A pair is
accepted when its score is **strictly above** the threshold τ. For a target false-positive rate f
with N negatives, ``k = ⌊f·N⌋`` and τ is the (k+1)-th largest negative score, so at most k
negatives are accepted; ``TPR@f = #{positives > τ} / P``. This equals the best TPR over the
thresholds of scikit-learn's ``roc_curve`` with FPR ≤ f, ties included (tests/test_verification.py).

**Open-set identification**, by leaving each query's identity out: a query's *impostor score* is
its best score against other identities' items (what it would get if its identity were not
enrolled); its *mated score* its best score against its own identity's valid items. With τ at
false-alarm rate f (k = ⌊f·Q⌋, τ = the (k+1)-th largest impostor score), ``DIR@f`` is the share
of queries that are ranked correctly at rank 1 (mated score beats every impostor; exact ties go to
the lower gallery index, as in ``rank.py``) **and** whose mated score is above τ. The same τ,
computed on calibration data, is what ``reid export-index --calibrate`` stores in an index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .feature_set import FeatureSet, labels
from .rank import (
    _block_size,
    _check_labels,
    feature_score_blocks,
    resolve_device,
)

FPRS = (1e-2, 1e-3, 1e-4)
FARS = (1e-2, 1e-3)
HIST_BINS = np.linspace(-1.0, 1.0, 201)  # cosine scores


def threshold_at(top_desc: np.ndarray, total: int, rate: float) -> float:
    """τ accepting at most ⌊rate·total⌋ of ``total`` scores (``top_desc``: the largest ones,
    descending, at least ⌊rate·total⌋ + 1 of them unless ``total`` is smaller)."""
    k = int(math.floor(rate * total + 1e-9))
    return float(top_desc[k]) if k < len(top_desc) else -math.inf


@dataclass
class VerificationResult:
    num_positive_pairs: int
    num_negative_pairs: int
    tpr_at_fpr: dict  # {fpr: tpr}
    fpr_threshold: dict  # {fpr: τ}
    dir_at_far: dict  # {far: dir}
    far_threshold: dict  # {far: τ}
    num_open_set_queries: int
    positive_hist: np.ndarray | None = field(default=None, repr=False)  # counts per HIST_BINS
    negative_hist: np.ndarray | None = field(default=None, repr=False)
    impostor_scores: np.ndarray = field(default=None, repr=False)  # per query (−inf: none)
    mated_scores: np.ndarray = field(default=None, repr=False)  # per query (−inf: none)
    rank1_correct: np.ndarray = field(default=None, repr=False)

    def as_dict(self) -> dict:
        return {
            "num_positive_pairs": self.num_positive_pairs,
            "num_negative_pairs": self.num_negative_pairs,
            **{f"TPR@FPR={f:g}": v for f, v in self.tpr_at_fpr.items()},
            **{f"threshold@FPR={f:g}": v for f, v in self.fpr_threshold.items()},
            **{f"DIR@FAR={f:g}": v for f, v in self.dir_at_far.items()},
            **{f"threshold@FAR={f:g}": v for f, v in self.far_threshold.items()},
        }

    def table(self) -> str:
        lines = [
            f"verification over {self.num_positive_pairs:,} positive / "
            f"{self.num_negative_pairs:,} negative pairs (accept: score > τ)"
        ]
        for f, tpr in self.tpr_at_fpr.items():
            lines.append(f"  TPR@FPR={f:g}: {tpr:7.2%}   τ = {self.fpr_threshold[f]:.4f}")
        lines.append(f"open-set identification over {self.num_open_set_queries} queries")
        for f, d in self.dir_at_far.items():
            lines.append(f"  DIR@FAR={f:g}: {d:7.2%}   τ = {self.far_threshold[f]:.4f}")
        return "\n".join(lines)


def _merge_top(buffer: np.ndarray, values: np.ndarray, keep: int) -> np.ndarray:
    """The ``keep`` largest of ``buffer`` ∪ ``values`` (unordered)."""
    if keep <= 0:
        return buffer[:0]
    both = np.concatenate([buffer, values])
    if len(both) <= keep:
        return both
    return np.partition(both, len(both) - keep)[len(both) - keep :]


@torch.no_grad()
def verification_metrics(
    query: FeatureSet,
    gallery: FeatureSet,
    *,
    fprs=FPRS,
    fars=FARS,
    metric: str = "cosine",
    device=None,
    chunk_size: int | None = None,
) -> VerificationResult:
    device = resolve_device(device)
    score_block, num_query, num_gallery = feature_score_blocks(
        query.features, gallery.features, metric, device
    )
    protocol = _check_labels(num_query, num_gallery, *labels(query, gallery))
    # negatives per query = valid gallery − same-id items: known before scoring
    same = np.array([len(protocol.by_pid.get(int(p), ())) for p in protocol.query_pids])
    num_negative = int((num_gallery - len(protocol.junk) - same).sum())
    keep = int(math.floor(max(fprs) * num_negative + 1e-9)) + 1 if fprs else 0
    top_negatives = np.zeros(0, np.float32)
    positives, pos_hist, neg_hist = [], np.zeros(len(HIST_BINS) - 1), np.zeros(len(HIST_BINS) - 1)
    impostor = np.full(num_query, -np.inf)
    mated = np.full(num_query, -np.inf)
    correct = np.zeros(num_query, bool)
    block = _block_size(num_gallery, chunk_size, bytes_per_item=24)  # several (B, G) masks
    junk = torch.from_numpy(protocol.junk).to(device)
    for start in range(0, num_query, block):
        end = min(start + block, num_query)
        scores = score_block(start, end).float()
        pos_rows, pos_cols, rm_rows, rm_cols = protocol.block(start, end)
        excluded = torch.zeros_like(scores, dtype=torch.bool)
        if rm_rows.size:
            excluded[torch.from_numpy(rm_rows).to(device), torch.from_numpy(rm_cols).to(device)] = (
                True
            )
        if junk.numel():
            excluded[:, junk] = True
        positive = torch.zeros_like(excluded)
        if pos_rows.size:
            positive[
                torch.from_numpy(pos_rows).to(device), torch.from_numpy(pos_cols).to(device)
            ] = True
        negative = ~(excluded | positive)
        pos_values = scores[positive].cpu().numpy()
        neg_values = scores[negative].cpu().numpy()
        positives.append(pos_values)
        top_negatives = _merge_top(top_negatives, neg_values, keep)
        if metric == "cosine":
            pos_hist += np.histogram(pos_values, HIST_BINS)[0]
            neg_hist += np.histogram(neg_values, HIST_BINS)[0]
        # open set: best impostor and best mated score per query, rank-1 with index tie-break
        neg_scores = scores.masked_fill(~negative, -math.inf)
        pos_scores = scores.masked_fill(~positive, -math.inf)
        best_neg, best_pos = neg_scores.max(1).values, pos_scores.max(1).values
        first_neg = (neg_scores == best_neg[:, None]).float().argmax(1)
        first_pos = (pos_scores == best_pos[:, None]).float().argmax(1)
        wins = (best_pos > best_neg) | ((best_pos == best_neg) & (first_pos < first_neg))
        impostor[start:end] = best_neg.cpu().numpy()
        mated[start:end] = best_pos.cpu().numpy()
        correct[start:end] = (wins & torch.isfinite(best_pos)).cpu().numpy()
    positives = np.concatenate(positives) if positives else np.zeros(0, np.float32)
    top_negatives = np.sort(top_negatives)[::-1]
    tpr, fpr_tau = {}, {}
    for f in fprs:
        tau = threshold_at(top_negatives, num_negative, f)
        fpr_tau[f] = tau
        tpr[f] = float((positives > tau).mean()) if len(positives) else float("nan")
    mated_queries = np.isfinite(mated)
    dir_at, far_tau = {}, {}
    for f in fars:
        tau = open_set_threshold(impostor, f)
        far_tau[f] = tau
        hits = correct & (mated > tau)
        dir_at[f] = float(hits[mated_queries].mean()) if mated_queries.any() else float("nan")
    return VerificationResult(
        num_positive_pairs=len(positives),
        num_negative_pairs=num_negative,
        tpr_at_fpr=tpr,
        fpr_threshold=fpr_tau,
        dir_at_far=dir_at,
        far_threshold=far_tau,
        num_open_set_queries=int(np.isfinite(impostor).sum()),
        positive_hist=pos_hist if metric == "cosine" else None,
        negative_hist=neg_hist if metric == "cosine" else None,
        impostor_scores=impostor,
        mated_scores=mated,
        rank1_correct=correct,
    )


def open_set_threshold(impostor_scores: np.ndarray, far: float) -> float:
    """τ at false-alarm rate ``far`` from per-query impostor scores (calibration)."""
    scores = np.sort(np.asarray(impostor_scores)[np.isfinite(impostor_scores)])[::-1]
    return threshold_at(scores, len(scores), far)
