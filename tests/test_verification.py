"""Open-set figures against naive references: scikit-learn's roc_curve and a plain loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reid.evaluation.feature_set import FeatureSet
from reid.evaluation.rank import feature_score_blocks
from reid.evaluation.verification import open_set_threshold, verification_metrics
from tests.numeric import assert_within_ulps, score_tolerance


def case(seed=0, q=40, g=120, ids=15, dim=8, ties=False):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(ids + 1, dim))
    g_pids = rng.integers(0, ids + 1, g)  # pid 0: distractors
    g_pids[:3] = -1  # junk
    q_pids = rng.integers(1, ids + 1, q)
    q_cams, g_cams = rng.integers(0, 3, q), rng.integers(0, 3, g)
    gf = centers[np.maximum(g_pids, 0)] + 0.9 * rng.normal(size=(g, dim))
    qf = centers[q_pids] + 0.9 * rng.normal(size=(q, dim))
    if ties:  # round features so that many scores tie exactly
        qf, gf = np.round(qf), np.round(gf)
        qf[qf.sum(1) == 0, 0] = 1
        gf[gf.sum(1) == 0, 0] = 1
    return qf.astype(np.float32), gf.astype(np.float32), q_pids, g_pids, q_cams, g_cams


def sets(qf, gf, qp, gp, qc, gc):
    return FeatureSet(qf, np.asarray(qp), np.asarray(qc)), FeatureSet(
        gf, np.asarray(gp), np.asarray(gc)
    )


def naive_pairs(qf, gf, qp, gp, qc, gc):
    # the same float32 scores as the evaluator (the reference checks counting, not the GEMM)
    scores = feature_score_blocks(qf, gf, "cosine", torch.device("cpu"))[0](0, len(qf)).numpy()
    labels, values = [], []
    for i in range(len(qf)):
        for j in range(len(gf)):
            if gp[j] == -1 or (gp[j] == qp[i] and gc[j] == qc[i]):
                continue
            labels.append(int(gp[j] == qp[i]))
            values.append(scores[i, j])
    return np.array(labels), np.array(values), scores


@pytest.mark.parametrize("ties", [False, True])
def test_tpr_at_fpr_equals_sklearn_roc(ties):
    from sklearn.metrics import roc_curve

    data = case(ties=ties)
    fprs = (0.2, 0.05, 0.01, 0.001)
    result = verification_metrics(*sets(*data), fprs=fprs, chunk_size=7)
    labels, values, _ = naive_pairs(*data)
    assert result.num_positive_pairs == labels.sum()
    assert result.num_negative_pairs == (1 - labels).sum()
    fpr, tpr, _ = roc_curve(labels, values)
    for f in fprs:
        assert result.tpr_at_fpr[f] == pytest.approx(tpr[fpr <= f + 1e-12].max(), abs=1e-12), f
        tau = result.fpr_threshold[f]  # the threshold really gives FPR ≤ f
        assert ((values > tau) & (labels == 0)).sum() <= math.floor(f * (1 - labels).sum())


@pytest.mark.parametrize("ties", [False, True])
def test_dir_at_far_equals_a_plain_loop(ties):
    """The evaluator scores in blocks of 5 queries, the loop takes one full product: two
    computations, so scores are compared within ulps and rank-1 decisions only where they are
    not within that tolerance of a tie (on AVX2, 7 of 40 impostor scores differ by 1 ulp)."""
    qf, gf, qp, gp, qc, gc = data = case(seed=1, ties=ties)
    fars = (0.5, 0.2, 0.05)
    result = verification_metrics(*sets(*data), fars=fars, chunk_size=5)
    _, _, scores = naive_pairs(*data)
    tol = score_tolerance(scores)
    impostor, mated, correct, clear = [], [], [], []
    for i in range(len(qf)):
        valid = [
            j for j in range(len(gf)) if gp[j] != -1 and not (gp[j] == qp[i] and gc[j] == qc[i])
        ]
        neg = [j for j in valid if gp[j] != qp[i]]
        pos = [j for j in valid if gp[j] == qp[i]]
        best = min(valid, key=lambda j: (-scores[i, j], j))  # rank 1: ties to the lower index
        impostor.append(max(scores[i, neg]) if neg else -np.inf)
        mated.append(max(scores[i, pos]) if pos else -np.inf)
        correct.append(bool(pos) and gp[best] == qp[i])
        clear.append(not (pos and neg) or abs(mated[-1] - impostor[-1]) > tol)
    impostor, mated, correct, clear = map(np.array, (impostor, mated, correct, clear))
    assert_within_ulps(result.impostor_scores, impostor)
    assert clear.sum() >= len(clear) // 2  # the comparison below is not vacuous
    np.testing.assert_array_equal(result.rank1_correct[clear], correct[clear])
    own = result.impostor_scores  # the FAR rule on the evaluator's own scores: exact
    for f in fars:
        tau = result.far_threshold[f]
        assert (own > tau).sum() <= math.floor(f * len(own))  # FAR ≤ f
        # τ is the lowest such threshold: one impostor at or above it would exceed the rate
        assert (own >= tau).sum() > math.floor(f * len(own))
        finite = np.isfinite(mated)
        low = (correct & clear & (mated > tau + tol))[finite].mean()
        high = ((correct | ~clear) & (mated > tau - tol))[finite].mean()
        assert low - 1e-12 <= result.dir_at_far[f] <= high + 1e-12


def test_calibrated_threshold_gives_the_requested_far_within_sampling_error():
    rng = np.random.default_rng(3)
    calibration, fresh = rng.normal(size=20000), rng.normal(size=20000)
    for far in (0.1, 0.01):
        tau = open_set_threshold(calibration, far)
        assert (calibration > tau).mean() <= far  # on the calibration data: exact
        sigma = math.sqrt(far * (1 - far) / len(fresh))
        assert abs((fresh > tau).mean() - far) < 4 * sigma  # on new data: within sampling error


def test_degenerate_inputs():
    qf, gf, qp, gp, qc, gc = case(q=3, g=6, ids=2)
    gp[:] = 0  # only distractors: no positive pair anywhere
    result = verification_metrics(*sets(qf, gf, qp, gp, qc, gc))
    assert result.num_positive_pairs == 0 and math.isnan(result.tpr_at_fpr[0.01])
    assert np.isnan(result.dir_at_far[0.01])
    assert open_set_threshold(np.array([]), 0.1) == -math.inf
