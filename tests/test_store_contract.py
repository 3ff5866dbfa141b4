"""One contract, every registered store: FAISS, Milvus on the real server, and the NumPy store
that exists only in ``tests/numpy_store.py`` and registers itself here. Build, save, load,
search (with and without the camera filter) against exact search, append, removal (row ids as
the store's capabilities say), abandon, the store's own options and flags, and the commands
end to end. A new backend passes this file with no edit outside its own file and its
registration line."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from reid.index import GalleryIndex, IndexFormatError
from reid.index.store import SearchOptions, StoreError
from reid.index.stores import STORES, parse_store_options
from tests import numpy_store
from tests.numeric import assert_topk_tie_aware, score_tolerance

SHIPPED = ("faiss", "milvus")


@pytest.fixture(autouse=True)
def numpy_registered(monkeypatch):
    monkeypatch.setitem(STORES, numpy_store.NAME, numpy_store.NumpyStore)


def test_the_registry_is_the_shipped_stores_plus_the_test_one():
    assert tuple(s for s in STORES if s != numpy_store.NAME) == SHIPPED


@pytest.fixture(params=[*SHIPPED, numpy_store.NAME])
def options(request):
    """Each store's options for a new index (a fresh collection name per test on Milvus)."""
    if request.param == "milvus":
        uri = request.getfixturevalue("milvus_uri")
        name = "contract_" + request.node.name.split("[")[0][-20:].replace("-", "_")
        return parse_store_options("milvus", uri=uri, collection=name)
    return parse_store_options(request.param)


def gallery(n=300, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return (
        x,
        [f"/g/{seed}_{i}.jpg" for i in range(n)],
        rng.integers(1, 25, n),
        rng.integers(0, 6, n),
    )


def unit(x):
    return (x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)).astype(np.float32)


def assert_exact(table, queries, vectors, k, excluded=None):
    """Each query's hits: the exact top-k by cosine (tie-aware), scores within ulps."""
    exact_all = unit(queries).astype(np.float64) @ unit(vectors).astype(np.float64).T
    for q in range(len(queries)):
        hits = table[table["query"] == q]
        exact = exact_all[q : q + 1].copy()
        if excluded is not None:
            exact[0, excluded[q]] = -np.inf
        expected = min(k, int(np.isfinite(exact).sum()))
        assert len(hits) == expected and list(hits["rank"]) == list(range(1, expected + 1))
        tol = score_tolerance(exact[np.isfinite(exact)], 8)
        positions = hits["position"].to_numpy()[None]
        assert_topk_tie_aware(positions, exact, tol)
        np.testing.assert_allclose(hits["score"], exact[0, positions[0]], rtol=0, atol=tol)


def positions(index, table):
    """Each hit's position in the gallery the test built (paths are unique)."""
    order = {p: int(p.split("_")[-1].split(".")[0]) for p in index.metadata["path"]}
    return table.assign(position=[order[p] for p in table["path"]])


def test_build_save_load_and_search_match_exact_search(options, tmp_path):
    x, paths, pids, camids = gallery()
    out = tmp_path / "idx"
    built = GalleryIndex.build(x, paths, pids, camids, options=options, directory=out,
                               model_hash="m")  # fmt: skip
    built.save(out)
    index = GalleryIndex.load(out)
    assert index.count == len(x) and index.backend == options.backend
    assert index.manifest["store"]["backend"] == options.backend
    assert index.manifest["factory"] == options.describe()
    queries = np.random.default_rng(1).normal(size=(9, 16)).astype(np.float32)
    qcams = np.arange(9) % 6 - 1  # −1: a query whose camera is unknown is not filtered
    for k in (1, 10, len(x) + 5):
        assert_exact(positions(index, index.search(queries, k)), queries, x, k)
        table = positions(index, index.search(queries, k, qcams, exclude_same_camera=True))
        excluded = [camids == c if c >= 0 else np.zeros(len(x), bool) for c in qcams]
        assert_exact(table, queries, x, k, excluded)
        assert all(
            c < 0 or (table.loc[table["query"] == q, "camid"] != c).all()
            for q, c in enumerate(qcams)
        )
    again = GalleryIndex.load(out).search(queries, 5)
    assert again.equals(index.search(queries, 5))  # one store, one computation: equal


def test_append_and_remove_keep_row_ids_as_the_store_declares(options, tmp_path):
    x, paths, pids, camids = gallery()
    out = tmp_path / "idx"
    GalleryIndex.build(x[:200], paths[:200], pids[:200], camids[:200], options=options,
                       directory=out, model_hash="m").save(out)  # fmt: skip
    writer = GalleryIndex.load(out, writer=True)
    writer.append(x[200:], paths[200:], pids[200:], camids[200:], model_hash="m")
    writer.save(out)
    index = GalleryIndex.load(out, writer=True)
    assert index.count == 300 and list(index.metadata["row"]) == list(range(300))
    drop = np.isin(pids, [3, 4])
    assert index.remove(drop) == int(drop.sum())
    index.save(out)
    after = GalleryIndex.load(out, writer=True)
    stable = after.store.capabilities.stable_rows
    expected_rows = np.flatnonzero(~drop) if stable else np.arange(int((~drop).sum()))
    assert list(after.metadata["row"]) == list(expected_rows)
    assert list(after.metadata["path"]) == [p for p, d in zip(paths, drop) if not d]
    queries = x[drop][:5]  # removed vectors: their own rows no longer come back
    table = positions(after, after.search(queries, 10))
    assert not table["pid"].isin([3, 4]).any()
    assert_exact(table, queries, x, 10, [drop] * len(queries))
    after.append(x[:2] + 1, ["/g/0_300.jpg", "/g/0_301.jpg"], model_hash="m")
    after.save(out)
    rows = GalleryIndex.load(out).metadata["row"].to_numpy()
    assert list(rows[-2:]) == ([300, 301] if stable else [len(rows) - 2, len(rows) - 1])


def test_an_abandoned_build_leaves_nothing_and_the_committed_index_stands(options, tmp_path):
    x, paths, pids, camids = gallery()
    out = tmp_path / "idx"
    GalleryIndex.build(x, paths, pids, camids, options=options, directory=out,
                       model_hash="m").save(out)  # fmt: skip
    before = sorted(p.name for p in out.iterdir())
    doomed = GalleryIndex.build(x[:50], paths[:50], options=options, directory=out, model_hash="m")
    doomed.store.abandon()
    assert sorted(p.name for p in out.iterdir()) == before
    index = GalleryIndex.load(out)
    assert index.count == len(x) and len(index.search(x[:3], 4)) == 12


def test_every_store_owns_its_flags_and_refuses_the_others(options):
    from reid.cli.export_index import get_args_parser

    text = get_args_parser().format_help()
    for name, store in STORES.items():
        assert f"--backend {name}" in text
        for flag in store.flags:
            assert flag.flag in text and flag.help.split()[0] in text
    own = {f.option for f in STORES[options.backend].flags}
    for other in STORES.values():
        for flag in other.flags:
            if flag.option in own:
                continue
            with pytest.raises(StoreError, match=f"{flag.flag}: does not apply"):
                parse_store_options(options.backend, **{flag.option: "1"})


def test_a_bad_value_of_a_ranged_store_flag_is_one_line():
    from reid.cli.export_index import get_args_parser

    parser = get_args_parser()
    for store in STORES.values():
        for flag in store.flags:
            if flag.kind is not None:
                with pytest.raises(SystemExit):
                    parser.parse_args(["--out", "x", flag.flag, "0" if flag.kind.low else "-1"])


def test_the_commands_use_a_registered_store_end_to_end(tiny_checkpoint, synthetic_root, tmp_path):
    """``reid export-index --backend numpy``, then search and removal, in this process (where
    the test store is registered): no command names a backend."""
    from reid.cli import export_index as cli
    from reid.workflows.index import search

    out = tmp_path / "idx"
    args = cli.get_args_parser().parse_args(
        [
            "--checkpoint",
            str(tiny_checkpoint),
            "--gallery",
            str(synthetic_root),
            "--out",
            str(out),
            "--backend",
            "numpy",
            "--numpy-block",
            "7",
        ]  # fmt: skip
    )
    cli.main(args)
    index = GalleryIndex.load(out)
    assert index.backend == "numpy" and index.manifest["store"]["block"] == 7
    found = search(str(out), [str(synthetic_root / "query")], str(tiny_checkpoint), topk=3,
                   exclude_same_camera=True)  # fmt: skip
    assert len(found["table"]) == 3 * found["table"]["query"].nunique()
    with pytest.raises(StoreError, match="an exact store takes neither"):
        search(str(out), [str(synthetic_root / "query")], str(tiny_checkpoint),
               knobs=SearchOptions(nprobe=4))  # fmt: skip
    pid = int(index.metadata["pid"].iloc[0])
    cli.main(cli.get_args_parser().parse_args(["--out", str(out), "--remove-pids", str(pid)]))
    assert pid not in set(GalleryIndex.load(out).metadata["pid"])


def test_a_manifest_naming_an_unknown_store_is_one_line(tmp_path):
    import json

    x, paths, _, _ = gallery(20)
    out = tmp_path / "idx"
    GalleryIndex.build(x, paths).save(out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["store"]["backend"] = "annoy"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="store backend 'annoy': not one this reid has"):
        GalleryIndex.load(out)


def test_store_options_parse_through_one_entry(options):
    assert parse_store_options(options.backend, **_given(options)).describe() == options.describe()
    with pytest.raises(StoreError, match="--backend 'annoy'"):
        parse_store_options("annoy")


def _given(options) -> dict:
    own = {f.option for f in STORES[options.backend].flags}
    return {k: v for k, v in vars(options).items() if k in own}


def test_parse_args_types_come_from_the_flags():
    """A ranged flag reaches ``parse_options`` typed (argparse ran its ``Bounded``)."""
    from reid.cli.export_index import get_args_parser

    args = get_args_parser().parse_args(["--out", "x", "--numpy-block", "12"])
    assert isinstance(args, argparse.Namespace)
    from reid.index.stores import store_arguments

    assert store_arguments(args)["block"] == 12
