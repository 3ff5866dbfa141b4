"""Samplers (invariants over a grid, frequencies vs theory and vs torchreid, sharding) and splits."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from reid.data import DatasetError, load_dataset
from reid.data.market1501 import parse_folder
from reid.data.samplers import (
    BalancedIdentitySampler,
    PKSampler,
    PowerLawSampler,
    RepeatFactorSampler,
)
from reid.data.splits import apply_longtail, longtail_caps, make_holdout_split
from reid.data.stats import split_stats

COUNTS = np.array([2, 3, 4, 5, 6, 8, 10, 13, 17, 22, 30, 45])  # a long tail, 12 ids


def dataset(counts=COUNTS):
    pids = np.repeat(np.arange(len(counts)), counts)
    camids = np.arange(len(pids)) % 3
    return pids, camids


def build(kind, pids, camids, batch, k, **kw):
    if kind == "balanced":
        return BalancedIdentitySampler(pids, camids, batch, k, **kw)
    return {"pk": PKSampler, "power": PowerLawSampler, "repeat": RepeatFactorSampler}[kind](
        pids, batch, k, **kw
    )


@pytest.mark.parametrize("kind", ["pk", "balanced", "power", "repeat"])
@pytest.mark.parametrize("p, k", [(2, 2), (4, 2), (3, 4), (6, 1)])
def test_every_batch_is_p_ids_times_k_images(kind, p, k):
    pids, camids = dataset()
    sampler = build(kind, pids, camids, p * k, k, seed=1)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) > 0
        for batch in batches:
            assert len(batch) == p * k
            per_id = Counter(int(pids[i]) for i in batch)
            assert len(per_id) == p and set(per_id.values()) == {k}


@pytest.mark.parametrize("kind", ["pk", "balanced", "power", "repeat"])
def test_seeded_and_epoch_aware(kind):
    pids, camids = dataset()
    a, b = build(kind, pids, camids, 8, 2, seed=5), build(kind, pids, camids, 8, 2, seed=5)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)


@pytest.mark.parametrize("kind", ["pk", "balanced", "power", "repeat"])
@pytest.mark.parametrize("world", [2, 3])
def test_ranks_are_disjoint_equal_length_and_cover_the_epoch(kind, world):
    pids, camids = dataset()
    whole = build(kind, pids, camids, 4 * world, 2, seed=2)  # the global batch: P·world ids
    shards = [
        build(kind, pids, camids, 4, 2, seed=2, rank=r, world_size=world) for r in range(world)
    ]
    assert {len(s) for s in shards} == {len(whole)}
    batches = [list(s) for s in shards]
    for step, global_batch in zip(zip(*batches), whole.global_batches()):
        ids = [set(int(pids[i]) for i in b) for b in step]
        assert all(
            a.isdisjoint(b) for i, a in enumerate(ids) for b in ids[i + 1 :]
        )  # disjoint ranks
        assert sum(step, []) == global_batch  # together they are the global batch


def epoch_frequencies(sampler, pids, epochs):
    counts = np.zeros(pids.max() + 1)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for batch in sampler:
            counts += np.bincount(pids[batch], minlength=len(counts))
    return counts / counts.sum()


def test_pk_identity_frequencies_match_torchreid():
    from torchreid.reid.data.sampler import RandomIdentitySampler

    pids, _ = dataset()
    ours = epoch_frequencies(PKSampler(pids, 8, 2, seed=0), pids, 400)
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 - torchreid samples with the global RNG
    peer = RandomIdentitySampler([(None, int(p), 0) for p in pids], 8, 2)
    counts = np.zeros(len(COUNTS))
    for _ in range(400):
        counts += np.bincount(pids[list(iter(peer))], minlength=len(COUNTS))
    theirs = counts / counts.sum()
    np.testing.assert_allclose(ours, theirs, atol=0.005)
    assert PKSampler(pids, 8, 2).nominal_length() == len(peer)  # same epoch length rule
    # and neither is the naive "∝ chunks" profile: the early stop favours the small ids
    naive = (np.maximum(COUNTS, 2) // 2) / (np.maximum(COUNTS, 2) // 2).sum()
    assert ours[0] > naive[0] + 0.003


@pytest.mark.parametrize("q", [1.0, 0.5, 0.0])
def test_power_law_frequencies(q):
    pids, _ = dataset()
    freq = epoch_frequencies(
        PowerLawSampler(pids, 6, 2, power=q, seed=3), pids, 300
    )  # P = 3: max p ≤ 1/P
    theory = COUNTS**q / (COUNTS**q).sum()
    np.testing.assert_allclose(freq, theory, atol=0.01)  # stated tolerance: 1 point of probability


def test_repeat_factor_frequencies():
    pids, _ = dataset()
    sampler = RepeatFactorSampler(pids, 8, 2, repeat_threshold=0.1, seed=4)
    expected_images = COUNTS * sampler.repeat_factors
    np.testing.assert_allclose(
        sampler.repeat_factors, np.maximum(1, np.sqrt(0.1 / (COUNTS / COUNTS.sum())))
    )
    freq = epoch_frequencies(sampler, pids, 300)
    # rarer ids are repeated: relative to plain PK the tail gains, the head loses
    plain = epoch_frequencies(PKSampler(pids, 8, 2, seed=4), pids, 300)
    assert freq[:4].sum() > plain[:4].sum() + 0.02 and freq[-1] < plain[-1]
    # the repeat step itself: E[pool size] = n_j · r_j (stochastic rounding per image)
    rng = np.random.default_rng(0)
    sizes = np.mean(
        [[len(v) for v in sampler.repeated_pools(rng).values()] for _ in range(2000)], axis=0
    )
    np.testing.assert_allclose(sizes, expected_images, rtol=0.02)


def test_balanced_sampler_once_per_pass_and_cross_camera_companions():
    pids, camids = dataset()
    sampler = BalancedIdentitySampler(pids, camids, 12, 3, seed=0)
    batches = list(sampler)
    seen = Counter(int(pids[b[i]]) for b in batches for i in range(0, len(b), 3))
    assert set(seen) == set(range(12)) and set(seen.values()) == {1}
    for batch in batches:
        for i in range(0, len(batch), 3):
            anchor, companions = batch[i], batch[i + 1 : i + 3]
            if len(set(camids[pids == pids[anchor]])) > 1:
                assert any(camids[c] != camids[anchor] for c in companions)


@pytest.mark.parametrize(
    "args, message",
    [
        (([], 8, 2), "training set is empty"),
        ((dataset()[0], 9, 2), "not a multiple of sampler.num_instances=2"),
        ((dataset()[0], 100, 50), "larger than every identity"),
        ((dataset()[0], 64, 2), "only 12"),
    ],
)
def test_sampler_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        PKSampler(*args)


# ------------------------------------------------------------------------------------ splits


def test_holdout_split_layout_and_rules(synthetic_root, tmp_path):
    out = tmp_path / "split"
    stats = make_holdout_split(synthetic_root, out, holdout_ids=6, seed=1)
    ds = load_dataset(out)
    source = load_dataset(synthetic_root, all_splits=False).train
    assert len(ds.train) + len(ds.query) + len(ds.gallery) == len(source)
    assert len({r.pid for r in ds.query}) == 6 == stats["query"]["ids"]
    pairs = [(r.pid, r.camid) for r in ds.query]
    assert len(pairs) == len(set(pairs))  # one query per id and camera
    # every (held-out id, camera) of the source has exactly one query; the rest is gallery
    original = parse_folder(synthetic_root / "bounding_box_train", "train")  # original pids
    held = {r.pid for r in ds.query}
    source_held = [r for r in original if r.pid in held]
    assert set(pairs) == {(r.pid, r.camid) for r in source_held}
    assert len(ds.gallery) == len(source_held) - len(pairs)
    held_names = {Path(r.path).name for r in source_held}
    assert held_names.isdisjoint(Path(r.path).name for r in ds.train)
    again = make_holdout_split(synthetic_root, tmp_path / "again", holdout_ids=6, seed=1)
    assert again == {**stats, "params": again["params"]} and again["params"]["seed"] == 1
    assert sorted(p.name for p in (out / "query").iterdir()) == sorted(
        p.name for p in (tmp_path / "again/query").iterdir()
    )


def test_longtail_changes_train_only(synthetic_root, tmp_path):
    flat = make_holdout_split(synthetic_root, tmp_path / "a", holdout_ids=6, seed=1)
    tail = make_holdout_split(
        synthetic_root, tmp_path / "b", holdout_ids=6, longtail_ratio=5, seed=1
    )
    for split in ("query", "bounding_box_test"):
        assert sorted(p.name for p in (tmp_path / "a" / split).iterdir()) == sorted(
            p.name for p in (tmp_path / "b" / split).iterdir()
        )
    assert (
        tail["train"]["images"] < flat["train"]["images"]
        and tail["train"]["ids"] == flat["train"]["ids"]
    )


def test_longtail_cap_profile_follows_the_formula():
    from reid.data.records import ImageRecord

    records = [
        ImageRecord(f"{pid}_{i}.jpg", pid, 0, "train") for pid in range(30) for i in range(40)
    ]
    kept = apply_longtail(records, ratio=20, seed=0)
    counts = sorted(Counter(r.pid for r in kept).values(), reverse=True)
    assert counts == sorted(longtail_caps(30, 40, 20).tolist(), reverse=True)
    assert split_stats(kept).imbalance_ratio == pytest.approx(40 / longtail_caps(30, 40, 20)[-1])


def test_split_bad_input(synthetic_root, tmp_path):
    with pytest.raises(DatasetError, match="--holdout-ids must be between 1 and"):
        make_holdout_split(synthetic_root, tmp_path / "x", holdout_ids=0)
    with pytest.raises(DatasetError, match="bounding_box_train: folder not found"):
        make_holdout_split(tmp_path, tmp_path / "x", holdout_ids=2)
