"""Gallery index: round trip vs exact ranking, append, corrupt/missing files, crash mid-write,
tools end to end with a tiny checkpoint, TorchScript/ONNX export parity."""

from __future__ import annotations

import json
import subprocess
import sys

import faiss
import numpy as np
import pytest

from reid.data import arrays
from reid.evaluation.feature_set import FeatureSet
from reid.index import GalleryIndex, IndexFormatError
from reid.index.gallery import index_file
from reid.index.stores import parse_store_options
from tests.conftest import REPO
from tests.numeric import assert_topk_tie_aware


def gallery(n=300, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, dim)).astype(np.float32)
    return features, [f"g{i}.jpg" for i in range(n)], rng.integers(1, 30, n), rng.integers(0, 6, n)


def exact_scores(queries, features):
    """Cosine scores in float64: the reference FAISS's float32 ranking is held to."""
    q = queries / np.linalg.norm(queries.astype(np.float64), axis=1, keepdims=True)
    g = features / np.linalg.norm(features.astype(np.float64), axis=1, keepdims=True)
    return q @ g.T


def test_round_trip_matches_exact_ranking(tmp_path):
    features, paths, pids, camids = gallery()
    GalleryIndex.build(features, paths, pids, camids).save(tmp_path / "idx")
    index = GalleryIndex.load(tmp_path / "idx")
    queries = np.random.default_rng(1).normal(size=(7, 32)).astype(np.float32)
    table = index.search(queries, k=10)
    found = table.sort_values(["query", "rank"])["row"].to_numpy().reshape(7, 10)
    # FAISS and NumPy are two computations: the ranking is compared tie-aware, within ulps
    assert_topk_tie_aware(found, exact_scores(queries, features), tol=1e-6)
    assert list(table.columns) == ["query", "rank", "score", "row", "path", "pid", "camid"]
    manifest = json.loads((tmp_path / "idx/manifest.json").read_text())
    assert (
        manifest["dim"] == 32
        and manifest["count"] == 300
        and set(manifest["roles"]) == {"index", "metadata"}
        and set(manifest["files"]) == set(manifest["roles"].values())
    )


def test_exclude_same_camera(tmp_path):
    features, paths, pids, camids = gallery()
    index = GalleryIndex.build(features, paths, pids, camids)
    table = index.search(features[:5], k=10, query_camids=camids[:5], exclude_same_camera=True)
    for q in range(5):
        assert (table[table["query"] == q]["camid"] != camids[q]).all() and (
            table["query"] == q
        ).sum() == 10


def test_append_equals_exporting_everything_at_once(tmp_path):
    features, paths, pids, camids = gallery()
    GalleryIndex.build(features, paths, pids, camids, model_hash="abc").save(tmp_path / "all")
    part = GalleryIndex.build(
        features[:120], paths[:120], pids[:120], camids[:120], model_hash="abc"
    )
    part.save(tmp_path / "parts")
    loaded = GalleryIndex.load(tmp_path / "parts")
    loaded.append(features[120:], paths[120:], pids[120:], camids[120:], model_hash="abc")
    loaded.save(tmp_path / "parts")
    queries = features[:9] + 0.1
    a = GalleryIndex.load(tmp_path / "all").search(queries, 8)
    b = GalleryIndex.load(tmp_path / "parts").search(queries, 8)
    assert a.equals(b)
    with pytest.raises(IndexFormatError, match="model hash .* differs"):
        loaded.append(features[:2], paths[:2], model_hash="other")
    with pytest.raises(
        IndexFormatError, match="embedding dimension 16 does not match the index \\(32\\)"
    ):
        loaded.append(features[:2, :16], paths[:2], model_hash="abc")


@pytest.mark.parametrize("factory", ["IVF8,Flat", "IVF8,PQ8", "HNSW16"])
def test_approximate_indexes_and_recall(tmp_path, factory):
    features, paths, pids, camids = gallery(n=2000)
    index = GalleryIndex.build(
        features,
        paths,
        pids,
        camids,
        options=parse_store_options(factory=factory),
        keep_features=True,
    )
    index.save(tmp_path / "idx")
    loaded = GalleryIndex.load(tmp_path / "idx")
    recall = loaded.recall_at(features[:50] + 0.01, ks=(1, 10))
    assert 0.2 < recall["recall@10"] <= 1.0
    flat = GalleryIndex.build(features, paths, pids, camids, keep_features=True)
    assert flat.recall_at(features[:50], ks=(1, 10)) == {"recall@1": 1.0, "recall@10": 1.0}
    with pytest.raises(IndexFormatError, match="not a FAISS factory string"):
        GalleryIndex.build(features, paths, options=parse_store_options(factory="Nonsense42"))


def test_corrupt_missing_and_mismatched_files(tmp_path):
    features, paths, pids, camids = gallery()
    GalleryIndex.build(features, paths, pids, camids).save(tmp_path / "idx")
    with pytest.raises(IndexFormatError, match="index directory not found"):
        GalleryIndex.load(tmp_path / "nope")
    metadata, vectors = (
        index_file(tmp_path / "idx", "metadata"),
        index_file(tmp_path / "idx", "index"),
    )
    metadata.rename(tmp_path / "meta.bak")
    with pytest.raises(IndexFormatError, match=f"{metadata.name}: missing"):
        GalleryIndex.load(tmp_path / "idx")
    (tmp_path / "meta.bak").rename(metadata)
    data = bytearray(vectors.read_bytes())
    data[-10] ^= 0xFF
    vectors.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=f"{vectors.name}: checksum mismatch"):
        GalleryIndex.load(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx/manifest.json").read_text())
    manifest["format_version"] = 99
    (tmp_path / "idx/manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="format version 99"):
        GalleryIndex.load(tmp_path / "idx")
    GalleryIndex.build(features, paths).save(tmp_path / "ok")
    with pytest.raises(IndexFormatError, match="embedding dimension 8 does not match"):
        GalleryIndex.load(tmp_path / "ok").search(features[:1, :8], 3)


def test_crash_mid_write_keeps_the_previous_index(tmp_path, monkeypatch):
    features, paths, pids, camids = gallery()
    GalleryIndex.build(features[:50], paths[:50]).save(tmp_path / "idx")
    bigger = GalleryIndex.build(features, paths)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    before = sorted(p.name for p in (tmp_path / "idx").iterdir())
    monkeypatch.setattr("pandas.DataFrame.to_parquet", crash)  # after the FAISS file was written
    with pytest.raises(KeyboardInterrupt):
        bigger.save(tmp_path / "idx")
    with pytest.raises(KeyboardInterrupt):
        bigger.save(tmp_path / "fresh")
    monkeypatch.undo()
    assert GalleryIndex.load(tmp_path / "idx").count == 50
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == before  # nothing half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no empty new folder


@pytest.mark.parametrize("suffix", [".pt2", ".onnx", ".ts"])
def test_exports_match_pytorch_and_rank_the_same(tiny_checkpoint, synthetic_root, tmp_path, suffix):
    """torch.export (.pt2), the torch.export-based ONNX exporter and legacy TorchScript: same
    embeddings within 1e-4 on a dynamic batch, and the same ranking on a held-out set."""
    import warnings

    from reid.data import load_dataset
    from reid.evaluation import evaluate_rank
    from reid.index.sources import Embedder
    from reid.loading import load_model
    from reid.models.export import export_model

    model, cfg = load_model(tiny_checkpoint)
    with warnings.catch_warnings():
        if suffix != ".ts":  # the maintained path must not use deprecated APIs
            warnings.simplefilter("error", FutureWarning)
            warnings.simplefilter("error", DeprecationWarning)
        assert export_model(model, tmp_path / f"m{suffix}", (64, 32), check_batch=5) < 1e-4
    dataset = load_dataset(synthetic_root)
    exported, reference = (
        Embedder.open(tmp_path / f"m{suffix}"),
        Embedder.open(tiny_checkpoint, "cpu"),
    )
    scores = {}
    for name, embed in (("export", exported), ("pytorch", reference)):
        q = embed([r.path for r in dataset.query])
        g = embed([r.path for r in dataset.gallery])
        scores[name] = (q, g)
    np.testing.assert_allclose(scores["export"][0], scores["pytorch"][0], atol=1e-4)
    ranks = [np.argsort(-(q @ g.T), axis=1, kind="stable")[:, :10] for q, g in scores.values()]
    assert (ranks[0] == ranks[1]).mean() > 0.99  # same top-10 (ties within 1e-4 aside)
    labels = [arrays(dataset.query), arrays(dataset.gallery)]
    maps = [
        evaluate_rank(FeatureSet(q, *labels[0]), FeatureSet(g, *labels[1])).mAP
        for q, g in scores.values()
    ]
    assert abs(maps[0] - maps[1]) < 1e-4
    assert json.loads((tmp_path / f"m{suffix}.json").read_text())["dim"] == q.shape[1]


def test_unknown_export_suffix_is_refused(tiny_checkpoint, tmp_path):
    from reid.loading import load_model
    from reid.models.export import export_model

    model, _ = load_model(tiny_checkpoint)
    with pytest.raises(ValueError, match="format comes from the suffix"):
        export_model(model, tmp_path / "m.h5", (64, 32))


def test_tools_end_to_end(tiny_checkpoint, synthetic_root, tmp_path):
    run = lambda *a: subprocess.run([sys.executable, *a], cwd=REPO, capture_output=True, text=True)  # noqa: E731
    out = run(
        "tools/export_index.py",
        "--checkpoint",
        str(tiny_checkpoint),
        "--gallery",
        str(synthetic_root),
        "--out",
        str(tmp_path / "idx"),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    query = sorted((synthetic_root / "query").glob("*.jpg"))[0]
    out = run(
        "tools/search.py",
        "--index",
        str(tmp_path / "idx"),
        "--checkpoint",
        str(tiny_checkpoint),
        "--topk",
        "3",
        "--out",
        str(tmp_path / "s"),
        str(query),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert {p.name for p in (tmp_path / "s").iterdir()} == {
        ".reid-output.json",  # the ledger: these files are provably the search's own
        "results.csv",
        "results.json",
        "results.png",
    }
    out = run(
        "tools/evaluate.py",
        "--checkpoint",
        str(tiny_checkpoint),
        "--out",
        str(tmp_path / "e"),
        "--ranked",
        "2",
    )
    assert out.returncode == 0 and "mAP" in out.stdout, out.stderr[-2000:]
    assert {"result.json", "cmc.png", "ranked_lists.png"} <= {
        p.name for p in (tmp_path / "e").iterdir()
    }
    out = run(
        "tools/search.py",
        "--index",
        str(tmp_path / "missing"),
        "--checkpoint",
        str(tiny_checkpoint),
        str(query),
    )
    assert (
        out.returncode != 0
        and "index directory not found" in out.stderr
        and "Traceback" not in out.stderr
    )


def test_faiss_sees_the_gpus_torch_sees():
    """The GPU path is taken exactly when CUDA devices exist (0 on a CPU machine)."""
    import torch

    assert faiss.get_num_gpus() == torch.cuda.device_count()


def test_journals_are_found_under_the_names_they_are_written_with(tmp_path):
    """A killed save's journal is found by the same rule that names it (a hand-written name in
    a test once hid that the real name did not match)."""
    from reid import atomic
    from reid.index import milvus_store
    from reid.index.gallery import _PENDING, MANIFEST, journal_pattern

    save_journal = atomic.temp_path(tmp_path / MANIFEST, _PENDING)
    save_journal.write_text("{}")
    assert list(tmp_path.glob(journal_pattern())) == [save_journal]
    store_journal = atomic.temp_path(tmp_path / MANIFEST, milvus_store.JOURNAL)
    store_journal.write_text("{}")
    milvus_store._OPEN_JOURNALS.add(store_journal.name)  # held by a store of this process
    assert [p for p, _ in milvus_store.MilvusStore.dead_journals(tmp_path)] == []  # we are alive
    assert milvus_store.MilvusStore.live_journal(tmp_path) is False  # our own: not another's
    milvus_store._OPEN_JOURNALS.discard(store_journal.name)  # a store left it to recovery
    assert [p for p, _ in milvus_store.MilvusStore.dead_journals(tmp_path)] == [store_journal]
    assert store_journal.name.endswith(milvus_store.JOURNAL + ".json")
