"""Dataset parsers: Market/Duke folders, MSMT17 lists, CSV manifest, bad input, torchreid parity."""

from __future__ import annotations

import pytest

from reid.data import (
    NO_CAMERA,
    DatasetError,
    load_dataset,
    load_manifest,
    load_market1501,
    load_msmt17,
    verify_images,
)
from reid.data.records import ImageRecord

NAMES = {
    "bounding_box_train": [
        "0002_c1s1_000451_03.jpg",
        "0002_c2s1_000551_01.jpg",
        "0007_c3s3_001234_02.jpg",
        "0007_c3s3_001240_02.jpg",
        "-1_c1s1_000001_00.jpg",
        "0000_c1s1_000002_00.jpg",
    ],
    "query": ["0010_c1s1_000100_01.jpg", "0011_c2s1_000200_01.jpg"],
    "bounding_box_test": [
        "0010_c2s1_000300_01.jpg",
        "0010_c1s1_000301_01.jpg",
        "0011_c6s1_000400_01.jpg",
        "0000_c3s1_000500_01.jpg",
        "-1_c4s1_000600_01.jpg",
    ],
}


@pytest.fixture
def market(tmp_path, make_jpeg):
    for folder, names in NAMES.items():
        for i, name in enumerate(names):
            make_jpeg(tmp_path / folder / name, seed=i)
    return tmp_path


def test_market_parser(market):
    ds = load_market1501(market)
    # junk (-1) dropped everywhere; distractor (0) dropped from train, kept in gallery
    assert sorted((r.pid, r.camid) for r in ds.train) == [(0, 0), (0, 1), (1, 2), (1, 2)]
    assert sorted((r.pid, r.camid) for r in ds.query) == [(10, 0), (11, 1)]
    assert sorted((r.pid, r.camid) for r in ds.gallery) == [(0, 2), (10, 0), (10, 1), (11, 5)]
    assert ds.num_train_pids == 2
    assert all(r.split == "train" for r in ds.train)


def test_market_nested_official_layout(tmp_path, make_jpeg):
    for folder, names in NAMES.items():
        for name in names:
            make_jpeg(tmp_path / "Market-1501-v15.09.15" / folder / name)
    assert len(load_dataset(tmp_path).gallery) == 4


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_market1501(tmp_path / "nope")
    (tmp_path / "bounding_box_train").mkdir()
    with pytest.raises(DatasetError, match="bounding_box_train: folder holds no images"):
        load_market1501(tmp_path)


def test_bad_file_name_is_named(market, make_jpeg):
    make_jpeg(market / "query" / "person_12.jpg")
    with pytest.raises(DatasetError, match="person_12.jpg: file name does not match"):
        load_market1501(market)


def test_camera_out_of_range(market, make_jpeg):
    make_jpeg(market / "query" / "0012_c7s1_000100_01.jpg")
    with pytest.raises(
        DatasetError, match="0012_c7s1_000100_01.jpg: pid 12 / camera 7 out of range"
    ):
        load_market1501(market)


def test_duplicate_file_names_across_splits(market, make_jpeg):
    make_jpeg(market / "bounding_box_test" / "0010_c1s1_000100_01.jpg")  # the query image again
    with pytest.raises(DatasetError, match="duplicate file names: 0010_c1s1_000100_01.jpg"):
        load_market1501(market)


def test_corrupt_jpeg_fails_with_list(market):
    bad = market / "query" / "0012_c1s1_000100_01.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    ds = load_market1501(market)  # parsing never opens images
    with pytest.raises(
        DatasetError, match=r"1 of \d+ images cannot be read:\n  .*0012_c1s1_000100_01.jpg"
    ):
        verify_images(ds.train + ds.query + ds.gallery)


def test_manifest_with_and_without_cameras(tmp_path, make_jpeg):
    for name in ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]:
        make_jpeg(tmp_path / "img" / name)
    (tmp_path / "m.csv").write_text(
        "path,pid,camid,split\nimg/a.jpg,5,0,train\nimg/b.jpg,9,1,train\nimg/c.jpg,3,0,query\n"
        "img/d.jpg,3,1,gallery\nimg/e.jpg,0,1,gallery\n"
    )
    ds = load_dataset(tmp_path / "m.csv")
    assert [(r.pid, r.camid) for r in ds.train] == [(0, 0), (1, 1)]
    assert ds.query[0] == ImageRecord(str(tmp_path / "img/c.jpg"), 3, 0, "query")
    (tmp_path / "n.csv").write_text(
        "path,pid,split\nimg/a.jpg,5,train\nimg/c.jpg,3,query\nimg/d.jpg,3,gallery\n"
    )
    ds = load_manifest(tmp_path / "n.csv")
    assert {r.camid for r in ds.query + ds.gallery} == {NO_CAMERA}


@pytest.mark.parametrize(
    "text, message",
    [
        ("path,split\nimg/a.jpg,train\n", r"missing column\(s\) \['pid'\]"),
        ("path,pid,split\nimg/a.jpg,x,train\n", "column 'pid' must hold integers"),
        ("path,pid,split\nimg/a.jpg,1,test\n", r"unknown split value\(s\) \['test'\]"),
        ("path,pid,split\nimg/zzz.jpg,1,train\n", "listed file"),
        ("path,pid,split\nimg/a.jpg,1,train\nimg/a.jpg,1,train\n", "duplicate path"),
        ("path,pid,split\nimg/a.jpg,0,query\n", "pid 0 .* gallery only"),
        ("", "not a readable CSV"),
    ],
)
def test_manifest_bad_input(tmp_path, make_jpeg, text, message):
    make_jpeg(tmp_path / "img" / "a.jpg")
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(DatasetError, match=message):
        load_manifest(tmp_path / "m.csv")


def test_msmt17_lists(tmp_path, make_jpeg):
    root = tmp_path / "MSMT17_V2"
    lines = {
        "list_train.txt": [
            "0000/0000_000_01_0303morning_0015_0.jpg 0",
            "0001/0001_001_05_0303noon_0020_1.jpg 1",
        ],
        "list_val.txt": ["0001/0001_002_07_0303noon_0021_1.jpg 1"],
        "list_query.txt": ["0100/0100_000_03_0303morning_0001_0.jpg 100"],
        "list_gallery.txt": ["0100/0100_001_12_0303morning_0002_0.jpg 100"],
    }
    for name, rows in lines.items():
        (root).mkdir(exist_ok=True)
        (root / name).write_text("\n".join(rows) + "\n")
        folder = "train" if name in ("list_train.txt", "list_val.txt") else "test"
        for row in rows:
            make_jpeg(root / folder / row.split()[0])
    ds = load_dataset(tmp_path)
    assert [(r.pid, r.camid) for r in ds.train] == [(0, 0), (1, 4), (1, 6)]
    assert (ds.query[0].pid, ds.query[0].camid, ds.gallery[0].camid) == (100, 2, 11)
    (root / "list_val.txt").write_text("garbage\n")
    with pytest.raises(DatasetError, match=r"list_val.txt:1: cannot parse"):
        load_msmt17(tmp_path)


@pytest.mark.realdata
def test_market_train_parity_with_torchreid(market_root):
    from torchreid.reid.data.datasets.image.market1501 import Market1501

    folder = market_root / "bounding_box_train"
    peer = Market1501.process_dir(object.__new__(Market1501), str(folder), relabel=True)
    ours = load_market1501(market_root, splits=("train",)).train
    assert len(ours) == 12936 and len({r.pid for r in ours}) == 751
    assert sorted((r.path, r.pid, r.camid) for r in ours) == sorted(peer)
