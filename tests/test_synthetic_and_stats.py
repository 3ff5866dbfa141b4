"""Synthetic generator (layout, naming, determinism) and dataset statistics."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from reid.data import load_dataset
from reid.data.records import ImageRecord
from reid.data.splits import longtail_caps
from reid.data.stats import gini, split_stats
from reid.data.synthetic import SyntheticSpec, generate
from tests.conftest import REPO


def digest(root):
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.jpg")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_layout_and_market_rules(synthetic_root):
    names = {p.parent.name for p in synthetic_root.rglob("*.jpg")}
    assert names == {"bounding_box_train", "query", "bounding_box_test"}
    gallery_names = [p.name for p in (synthetic_root / "bounding_box_test").glob("*.jpg")]
    assert any(n.startswith("0000_") for n in gallery_names) and any(
        n.startswith("-1_") for n in gallery_names
    )
    ds = load_dataset(synthetic_root)
    # one query per identity per camera
    pairs = [(r.pid, r.camid) for r in ds.query]
    assert len(pairs) == len(set(pairs))
    # train and test identities are disjoint
    train_raw = {
        int(p.name.split("_")[0]) for p in (synthetic_root / "bounding_box_train").glob("*.jpg")
    }
    assert train_raw.isdisjoint({r.pid for r in ds.query})
    assert ds.num_train_pids == 20
    # every query identity was seen by at least two cameras
    cams = {}
    for r in ds.query + ds.gallery:
        cams.setdefault(r.pid, set()).add(r.camid)
    assert all(len(cams[r.pid]) >= 2 for r in ds.query)


def test_deterministic_for_a_seed(tmp_path):
    spec = SyntheticSpec(ids=8, images_per_id=5, longtail_ratio=2, distractors=3, junk=2, seed=11)
    generate(tmp_path / "a", spec)
    generate(tmp_path / "b", spec)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    generate(
        tmp_path / "c",
        SyntheticSpec(ids=8, images_per_id=5, longtail_ratio=2, distractors=3, junk=2, seed=12),
    )
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_longtail_profile_of_train(tmp_path):
    generate(
        tmp_path, SyntheticSpec(ids=40, images_per_id=20, longtail_ratio=10, distractors=0, junk=0)
    )
    counts = sorted(split_stats_counts(load_dataset(tmp_path).train), reverse=True)
    assert counts == sorted(longtail_caps(20, 20, 10).tolist(), reverse=True)


def split_stats_counts(records):
    from collections import Counter

    return list(Counter(r.pid for r in records).values())


def test_longtail_caps_formula():
    caps = longtail_caps(5, 100, 100)
    assert caps.tolist() == [
        100,
        31,
        10,
        3,
        2,
    ]  # floor(100·100^(-i/4)) = 100, 31.6, 10, 3.16, 1 → ≥ 2
    assert longtail_caps(4, 7, 1).tolist() == [7, 7, 7, 7]
    with pytest.raises(ValueError, match="ratio must be >= 1"):
        longtail_caps(4, 7, 0.5)


def test_bad_generator_options(tmp_path):
    with pytest.raises(ValueError, match="--cams must be at least 2"):
        generate(tmp_path, SyntheticSpec(cams=1))


def test_gini_and_stats_hand_computed():
    assert gini([5, 5, 5, 5]) == pytest.approx(0.0)
    # counts 1,2,3,4: G = 2·(1·1+2·2+3·3+4·4)/(4·10) − 5/4 = 60/40 − 1.25 = 0.25
    assert gini([4, 1, 3, 2]) == pytest.approx(0.25)
    records = [
        ImageRecord(f"{i}.jpg", pid, cam, "train")
        for i, (pid, cam) in enumerate([(0, 0)] * 1 + [(1, 1)] * 2 + [(2, 0)] * 3 + [(3, 2)] * 4)
    ]
    s = split_stats(records)
    assert (s.ids, s.images, s.cameras, s.min_per_id, s.median_per_id, s.max_per_id) == (
        4,
        10,
        3,
        1,
        2.5,
        4,
    )
    assert s.imbalance_ratio == 4.0 and s.gini == pytest.approx(0.25)


def test_tools_run(tmp_path):
    out = tmp_path / "syn"
    run = subprocess.run(
        [
            sys.executable,
            "tools/make_synthetic.py",
            "--out",
            str(out),
            "--ids",
            "10",
            "--images-per-id",
            "6",
            "--distractors",
            "2",
            "--junk",
            "1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "contact sheet" in run.stdout and (out / "contact_sheet.png").is_file()
    run = subprocess.run(
        [sys.executable, "tools/dataset_stats.py", str(out), "--plot", str(tmp_path / "h.png")],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "train" in run.stdout and (tmp_path / "h.png").is_file()
    bad = subprocess.run(
        [sys.executable, "tools/dataset_stats.py", str(tmp_path / "missing")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert (
        bad.returncode == 2
        and "missing: dataset root not found" in bad.stderr
        and "Traceback" not in bad.stderr
    )


def test_color_histogram_baseline_is_far_from_saturated(synthetic_root):
    """The synthetic set must not be solvable by colour alone (the difficulty check)."""
    from tests.color_baseline import histogram_baseline

    result = histogram_baseline(synthetic_root)
    assert result["rank1"] < 0.5, result
    assert np.isfinite(result["mAP"]) and result["queries"] > 20
