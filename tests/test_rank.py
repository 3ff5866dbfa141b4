"""Evaluator: naive reference (ties, junk, distractors, invalid queries), torchreid parity, AP by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reid.evaluation import _counting as counting
from reid.evaluation import evaluate_distmat, evaluate_rank
from reid.evaluation import rank as rank_module
from reid.evaluation.feature_set import FeatureSet


def naive_reference(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=50, ap="torchreid"):
    """Plain per-query loop: stable sort (ties → lower gallery index first)."""
    cmc_rows, aps, inps = [], [], []
    for q in range(len(q_pids)):
        order = np.argsort(distmat[q], kind="stable")
        keep = []
        for g in order:
            if g_pids[g] == -1:
                continue
            if g_pids[g] == q_pids[q] and g_cams[g] == q_cams[q] and q_cams[q] != -1:
                continue
            keep.append(g)
        hits = [i + 1 for i, g in enumerate(keep) if g_pids[g] == q_pids[q]]
        if not hits:
            continue
        cmc_rows.append(
            [1.0 if hits[0] <= k else 0.0 for k in range(1, min(max_rank, len(g_pids)) + 1)]
        )
        total = 0.0
        for i, r in enumerate(hits, 1):
            if ap == "torchreid":
                total += i / r
            else:
                before = 1.0 if r == 1 else (i - 1) / (r - 1)
                total += (i / r + before) / 2
        aps.append(total / len(hits))
        inps.append(len(hits) / hits[-1])
    return np.mean(cmc_rows, axis=0), float(np.mean(aps)), float(np.mean(inps)), len(aps)


def problem(seed, num_query=60, num_gallery=400, dim=8, ids=25, ties=False):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(ids + 1, dim))
    g_pids = rng.integers(1, ids + 1, size=num_gallery)
    g_pids[:20] = 0  # distractors
    g_pids[20:30] = -1  # junk
    q_pids = rng.integers(
        1, ids + 3, size=num_query
    )  # ids + 1, ids + 2 never in the gallery → invalid
    q_pids[q_pids > ids] = ids + 5
    q_cams, g_cams = rng.integers(0, 3, size=num_query), rng.integers(0, 3, size=num_gallery)
    centers = np.vstack([centers, rng.normal(size=(5, dim))])
    gf = centers[np.clip(g_pids, 0, None)] + rng.normal(size=(num_gallery, dim))
    qf = centers[np.clip(q_pids, 0, len(centers) - 1)] + rng.normal(size=(num_query, dim))
    if ties:  # coarse integer features → many exactly equal distances
        gf, qf = np.round(gf), np.round(qf)
    return qf.astype(np.float32), gf.astype(np.float32), q_pids, g_pids, q_cams, g_cams


def sq_dist(qf, gf):
    return ((qf[:, None, :].astype(np.float64) - gf[None, :, :]) ** 2).sum(-1).astype(np.float32)


@pytest.mark.parametrize("ap", ["torchreid", "market-official"])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("chunk", [None, 7])
@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("slice_rows", [None, 3])
def test_distmat_matches_naive_reference(ap, ties, chunk, hard, slice_rows, monkeypatch):
    if slice_rows:  # the CPU counting walks each block in slices of rows
        monkeypatch.setattr(rank_module, "COUNT_BYTES", slice_rows * 4 * 400)
    qf, gf, qp, gp, qc, gc = problem(1, ties=ties)
    if hard:  # weak features: positives rank deep, most items are counted
        qf = qf + np.random.default_rng(5).normal(scale=3.0, size=qf.shape).astype(np.float32)
        qf = np.round(qf) if ties else qf
    dist = sq_dist(qf, gf)
    if ties:
        assert len(np.unique(dist)) < dist.size / 4  # the case really has many ties
    cmc, mAP, mINP, valid = naive_reference(dist, qp, gp, qc, gc, ap=ap)
    result = evaluate_distmat(dist, qp, gp, qc, gc, ap=ap, chunk_size=chunk)
    np.testing.assert_allclose(result.cmc, cmc, atol=1e-12)
    assert result.mAP == pytest.approx(mAP, abs=1e-12)
    assert result.mINP == pytest.approx(mINP, abs=1e-12)
    assert result.num_valid_queries == valid and result.num_invalid_queries == len(qp) - valid > 0


def naive_positive_ranks(scores, pos_rows, pos_cols, countable):
    """1 + #{countable g ≠ p : s_g > s_p, or s_g == s_p and g < p}, sorted per row."""
    ranks = [[] for _ in range(len(scores))]
    for r, p in zip(pos_rows, pos_cols):
        row = scores[r]
        ahead = (row > row[p]) | ((row == row[p]) & (np.arange(len(row)) < p))
        ranks[r].append(1 + int((ahead & countable).sum()))
    width = max(1, max(len(x) for x in ranks))
    return np.array([sorted(x) + [2**62] * (width - len(x)) for x in ranks])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_torch_and_numpy_counting_agree_with_naive(seed):
    """The CPU path (NumPy) and the device path (torch, used on CUDA) count the same ranks,
    with exact ties (coarse scores, -0.0 and 0.0), junk and removed (-inf) items."""
    rng = np.random.default_rng(seed)
    rows, cols = 9, 300
    scores = np.round(rng.normal(size=(rows, cols)) * 4).astype(np.float32) / 4
    scores[scores == 0] = rng.choice([0.0, -0.0], size=int((scores == 0).sum()))
    scores[rng.random((rows, cols)) < 0.05] = -np.inf  # removed
    pos_rows = np.repeat(np.arange(rows - 1), rng.integers(1, 8, rows - 1))  # last row: none
    pos_cols = np.concatenate(
        [np.sort(rng.choice(cols, size=(pos_rows == r).sum(), replace=False)) for r in range(rows)]
    )
    finite = np.isfinite(scores[pos_rows, pos_cols])
    scores[pos_rows[~finite], pos_cols[~finite]] = 0.5  # positives are never removed
    countable = rng.random(cols) > 0.1
    countable[pos_cols] = True  # positives are never junk
    expected = naive_positive_ranks(scores, pos_rows, pos_cols, countable)
    mask = np.empty(scores.shape, bool)
    by_numpy = counting.positive_ranks_np(scores, pos_rows, pos_cols, countable, mask)
    by_torch = counting.positive_ranks(
        torch.from_numpy(scores), pos_rows, pos_cols, torch.from_numpy(countable)
    ).numpy()
    np.testing.assert_array_equal(by_numpy, expected)
    np.testing.assert_array_equal(by_torch, expected)


def test_order_keys_follow_float_order():
    values = torch.tensor(
        [-math.inf, -3e38, -1.0, -1e-45, -0.0, 0.0, 1e-45, 1e-38, 0.5, 1.0, 3e38, math.inf]
    )
    keys = counting.order_keys(values)
    for i in range(len(values)):
        for j in range(len(values)):
            assert (keys[i] < keys[j]) == (values[i] < values[j]).item()
            assert (keys[i] == keys[j]) == (values[i] == values[j]).item()  # -0.0 == 0.0
    assert int(keys.min()) >= 0 and int(keys.max()) < 2**32


def test_signed_zero_and_negative_scores_tie_exactly():
    # distances 0.0 and -0.0 are equal: the positive at index 2 ties with item 0 (lower index,
    # first), and the negative distance of item 1 ranks above both: first hit at rank 3
    dist = np.array([[0.0, -1.5, -0.0, 2.0, 1.0]], dtype=np.float32)
    result = evaluate_distmat(dist, [1], [2, 3, 1, 1, 1], [0], [1, 1, 1, 1, 1])
    cmc, mAP, mINP, _ = naive_reference(dist, [1], [2, 3, 1, 1, 1], [0], [1, 1, 1, 1, 1])
    assert result.first_hit[0] == 3 == cmc.tolist().index(1.0) + 1
    assert result.mAP == pytest.approx(mAP, abs=1e-12) and result.mINP == pytest.approx(mINP)


def test_features_and_distmat_paths_agree():
    qf, gf, qp, gp, qc, gc = problem(2)
    for metric in ("euclidean", "cosine"):
        q, g = torch.from_numpy(qf), torch.from_numpy(gf)
        if metric == "cosine":
            q, g = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(g, dim=1)
            dist = (1 - q @ g.T).numpy()
        else:
            dist = ((q * q).sum(1, keepdim=True) + (g * g).sum(1)).addmm(q, g.T, alpha=-2).numpy()
        by_features = evaluate_rank(
            FeatureSet(qf, qp, qc), FeatureSet(gf, gp, gc), metric=metric, chunk_size=9
        )
        by_matrix = evaluate_distmat(dist, qp, gp, qc, gc)
        naive = naive_reference(dist, qp, gp, qc, gc)
        np.testing.assert_allclose(by_features.cmc, by_matrix.cmc)
        assert (
            by_features.mAP
            == pytest.approx(by_matrix.mAP, abs=1e-9)
            == pytest.approx(naive[1], abs=1e-9)
        )
        np.testing.assert_allclose(by_features.ap, by_matrix.ap, atol=1e-9)


def test_no_camera_ids_count_every_pair_as_cross_camera():
    # query pid 1 camera unknown; gallery has its own other image under the same (unknown) camera
    dist = np.array([[0.1, 0.2, 0.3]], dtype=np.float32)
    result = evaluate_distmat(dist, [1], [2, 1, 1], [-1], [-1, -1, -1])
    assert result.first_hit[0] == 2 and result.ap[0] == pytest.approx((1 / 2 + 2 / 3) / 2)
    result = evaluate_distmat(dist, [1], [2, 1, 1], [0], [0, 0, 1])  # with cameras: index 1 removed
    assert result.first_hit[0] == 2 and result.ap[0] == pytest.approx(1 / 2)


def test_both_ap_definitions_hand_worked():
    # one query, positives (pid 7, other camera) at ranks 1, 3 and 6 of 7 gallery items
    dist = np.arange(7, dtype=np.float32)[None, :]
    g_pids = [7, 1, 7, 2, 3, 7, 4]
    torchreid_ap = (1 / 1 + 2 / 3 + 3 / 6) / 3  # 0.72222
    official_ap = ((1 + 1) / 2 + (2 / 3 + 1 / 2) / 2 + (3 / 6 + 2 / 5) / 2) / 3  # 0.67778
    result = evaluate_distmat(dist, [7], g_pids, [0], [1] * 7)
    assert result.mAP == pytest.approx(torchreid_ap) and result.mAP == pytest.approx(0.7222222)
    assert evaluate_distmat(
        dist, [7], g_pids, [0], [1] * 7, ap="market-official"
    ).mAP == pytest.approx(0.6777778)
    assert official_ap == pytest.approx(0.6777778)
    assert result.mINP == pytest.approx(3 / 6)
    assert result.cmc[0] == 1.0 and len(result.cmc) == 7  # max_rank capped at gallery size


def test_parity_with_torchreid_evaluate_rank():
    from torchreid.reid.metrics import evaluate_rank as torchreid_evaluate_rank

    rng = np.random.default_rng(5)
    num_query, num_gallery, ids = 400, 3000, 150
    g_pids = rng.integers(1, ids + 1, size=num_gallery)
    q_pids = rng.integers(1, ids + 1, size=num_query)
    g_cams, q_cams = rng.integers(0, 6, size=num_gallery), rng.integers(0, 6, size=num_query)
    centers = rng.normal(size=(ids + 1, 64))
    gf = (centers[g_pids] + 1.2 * rng.normal(size=(num_gallery, 64))).astype(np.float32)
    qf = (centers[q_pids] + 1.2 * rng.normal(size=(num_query, 64))).astype(np.float32)
    for metric in ("euclidean", "cosine"):
        ours = evaluate_rank(
            FeatureSet(qf, q_pids, q_cams), FeatureSet(gf, g_pids, g_cams), metric=metric
        )
        q, g = torch.from_numpy(qf), torch.from_numpy(gf)
        from torchreid.reid.metrics import compute_distance_matrix

        dist = compute_distance_matrix(q, g, metric).numpy()
        # tie-free where it matters: no positive shares its distance with another gallery item
        for row, pid in zip(dist, q_pids):
            positive = row[g_pids == pid]
            assert not np.isin(positive, row[g_pids != pid]).any()
        cmc, mAP = torchreid_evaluate_rank(
            dist, q_pids, g_pids, q_cams, g_cams, max_rank=50, use_cython=False
        )
        np.testing.assert_allclose(ours.cmc, cmc, atol=1e-6)
        assert ours.mAP == pytest.approx(mAP, abs=1e-6)
        assert 0.05 < ours.mAP < 0.95  # a non-trivial problem


@pytest.mark.slow
def test_parity_with_fastreid_compiled_evaluator(tmp_path):
    """fast-reid's Cython evaluator, built from its released package as benchmarks/bench_eval.py
    does (needs the bench extra, a C compiler and the package registry): same CMC, mAP and mINP
    on weak features (positives deep in the ranking), with and without ties in the distances."""
    pytest.importorskip(
        "Cython", reason="fast-reid's evaluator needs Cython: pip install -e .[bench]"
    )
    import subprocess
    import sys

    from tests.conftest import REPO

    sys.path.insert(0, str(REPO / "benchmarks"))
    import peers

    try:
        module = peers.load_module(peers.build_fastreid_cython(tmp_path))
    except subprocess.CalledProcessError as error:
        pytest.skip(f"could not download or build fast-reid's evaluator: {error}")
    qf, gf, qp, gp, qc, gc = problem(3, num_query=150, num_gallery=1200, dim=16, ids=40)
    gp = np.where(gp == -1, 0, gp)  # the peers keep junk as negatives; no junk here
    qf = qf + np.random.default_rng(4).normal(scale=2.0, size=qf.shape).astype(np.float32)
    for dist in (sq_dist(qf, gf), np.round(sq_dist(qf, gf))):
        cmc, mAP, mINP = peers.fastreid_evaluate(module, dist, qp, gp, qc, gc)
        ours = evaluate_distmat(dist, qp, gp, qc, gc)
        if len(np.unique(dist)) == dist.size:  # tie-free: identical to float32 rounding
            np.testing.assert_allclose(ours.cmc, cmc, atol=1e-6)
            assert ours.mAP == pytest.approx(mAP, abs=1e-6)
            assert ours.mINP == pytest.approx(mINP, abs=1e-6)
            assert 0.05 < ours.mAP < 0.6
        else:  # the peer's quicksort orders ties arbitrarily; ours is the stable reference
            naive = naive_reference(dist, qp, gp, qc, gc)
            assert ours.mAP == pytest.approx(naive[1], abs=1e-12)
            assert abs(ours.mAP - mAP) < 0.02


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"qf": np.zeros((3, 4), np.float32), "gf": np.zeros((5, 3), np.float32)},
            "feature dims differ",
        ),
        ({"qp": [1, 2]}, "query_pids has 2 entries but there are 3 rows"),
        ({"gc": [0] * 4}, "gallery_camids has 4 entries"),
        ({"qf": np.zeros((0, 4), np.float32), "qp": [], "qc": []}, "query_features is empty"),
        ({"gf": np.zeros((0, 4), np.float32), "gp": [], "gc": []}, "gallery_features is empty"),
        (
            {"qf": np.array([[0, 1, 2, np.nan]] * 3, np.float32)},
            "query_features holds NaN or inf values",
        ),
        (
            {"gf": np.array([[0, 1, 2, np.inf]] * 5, np.float32)},
            "gallery_features holds NaN or inf",
        ),
        ({"qp": [1.5, 2, 3]}, "query_pids must hold integers"),
        ({"metric": "manhattan"}, "unknown metric"),
        ({"qp": [7, 8, 9]}, "no valid query"),
        ({"qp": [-1, 1, 2]}, "junk pid -1"),
    ],
)
def test_bad_input(kwargs, message):
    rng = np.random.default_rng(0)
    args = {
        "qf": rng.normal(size=(3, 4)).astype(np.float32),
        "gf": rng.normal(size=(5, 4)).astype(np.float32),
        "qp": [1, 2, 3],
        "gp": [1, 2, 3, 1, 2],
        "qc": [0, 0, 0],
        "gc": [1, 1, 1, 1, 1],
        "metric": "cosine",
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        evaluate_rank(
            FeatureSet(args["qf"], args["qp"], args["qc"]),
            FeatureSet(args["gf"], args["gp"], args["gc"]),
            metric=args["metric"],
        )


def test_distmat_bad_input():
    with pytest.raises(ValueError, match="distmat holds NaN"):
        evaluate_distmat(np.array([[np.nan, 1.0]]), [1], [1, 2], [0], [1, 1])
    with pytest.raises(ValueError, match="unknown ap"):
        evaluate_distmat(np.array([[0.0, 1.0]]), [1], [1, 2], [0], [1, 1], ap="interpolated")
