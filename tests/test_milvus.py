"""The Milvus store against a real Milvus standalone server (the ``milvus`` wheel, started once
per session): parity with FAISS Flat (same top-k rows and scores, with camera exclusion and after
a removal), append, reconnect checks, ownership of collection names, a client killed mid-append,
an in-process failure mid-append, approximate index types, the tools end to end; and the
backend options, checked before any work (no server needed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from reid.index import GalleryIndex, IndexFormatError
from reid.index.faiss_store import FaissOptions
from reid.index.milvus_store import MilvusOptions
from reid.index.store import StoreError
from reid.index.stores import parse_store_options
from tests.conftest import REPO
from tests.numeric import assert_topk_tie_aware, score_tolerance
from tests.test_faults import one_error_line, run_tool

SCORE_TOL_ULPS = 8  # FAISS and Milvus (knowhere) are two inner-product kernels


def gallery(n=400, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, dim)).astype(np.float32)
    return (
        features,
        [f"/g/{i}.jpg" for i in range(n)],
        rng.integers(1, 30, n),
        rng.integers(0, 6, n),
    )


def options(uri, name, index_type="FLAT", params=None):
    return MilvusOptions(uri=uri, collection=name, index_type=index_type, params=params or {})


def unit(x):
    return x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)


def export(tmp_path, uri, name, features, paths, pids, camids, **kw):
    out = tmp_path / name
    index = GalleryIndex.build(features, paths, pids, camids, options=options(uri, name, **kw),
                               directory=out, model_hash="m1")  # fmt: skip
    index.save(out)
    return out


def assert_same_hits(a, b, queries, features, excluded=None):
    """Two backends' tables: tie-aware same rows per query, scores within ulps of each other.
    ``excluded[q]``: the gallery rows query q may not return (its camera)."""
    for q in range(len(queries)):
        ra, rb = a[a["query"] == q], b[b["query"] == q]
        assert len(ra) == len(rb)
        exact = unit(queries[q : q + 1]) @ unit(features).T
        tol = score_tolerance(exact, SCORE_TOL_ULPS)
        if excluded is not None:
            exact[0, excluded[q]] = -np.inf
        assert_topk_tie_aware(rb["row"].to_numpy()[None], exact, tol)
        assert_topk_tie_aware(ra["row"].to_numpy()[None], exact, tol)
        np.testing.assert_allclose(ra["score"], rb["score"], rtol=0, atol=tol)


def test_backend_options_are_checked_before_any_work():
    assert parse_store_options() == FaissOptions()
    cases = {
        "--uri, --collection: does not apply to --backend faiss": dict(uri="http://h:1", collection="c"),
        "--index: does not apply to --backend milvus": dict(backend="milvus", factory="Flat", uri="http://h:1", collection="c"),
        "needs --uri": dict(backend="milvus", collection="c"),
        "credentials do not belong in the URI": dict(backend="milvus", uri="http://u:pw@h:1", collection="c"),
        "--collection '9bad-name'": dict(backend="milvus", uri="http://h:1", collection="9bad-name"),
        "--milvus-index 'IVF_PQ'": dict(backend="milvus", uri="http://h:1", collection="c", index_type="ivf_pq"),
        "nlist: not a parameter of HNSW": dict(backend="milvus", uri="http://h:1", collection="c", index_type="HNSW", params="nlist=8"),
        "nlist=0: must be an integer in": dict(backend="milvus", uri="http://h:1", collection="c", index_type="IVF_FLAT", params="nlist=0"),
        "--backend 'annoy'": dict(backend="annoy"),
    }  # fmt: skip
    for message, given in cases.items():
        with pytest.raises(StoreError, match=message.replace("(", r"\(").replace("'", "'")):
            parse_store_options(**given)
    ok = parse_store_options(backend="milvus", uri="http://h:1", collection="c",
                             index_type="hnsw", params="M=8")  # fmt: skip
    assert (
        ok.params == {"M": 8, "efConstruction": 200}
        and ok.describe() == "milvus:HNSW(M=8,efConstruction=200)"
    )


def test_flat_matches_faiss_flat_with_camera_exclusion_and_after_removal(milvus_uri, tmp_path):
    features, paths, pids, camids = gallery()
    out = export(tmp_path, milvus_uri, "parity", features, paths, pids, camids)
    faiss_index = GalleryIndex.build(features, paths, pids, camids, model_hash="m1")
    milvus_index = GalleryIndex.load(out)
    queries = np.random.default_rng(1).normal(size=(12, 32)).astype(np.float32)
    qcams = np.arange(12) % 6
    for exclude in (False, True):
        a = faiss_index.search(queries, 10, qcams, exclude)
        b = milvus_index.search(queries, 10, qcams, exclude)
        assert_same_hits(a, b, queries, features, [camids == c for c in qcams] if exclude else None)
        if exclude:
            assert (b["camid"].to_numpy() != qcams[b["query"].to_numpy()]).all()
    # removal: identity 5 and 7 go from both; FAISS renumbers, Milvus keeps row ids
    drop = np.isin(pids, [5, 7])
    writer = GalleryIndex.load(out, writer=True)
    writer.remove(drop)
    writer.save(out)
    faiss_index.remove(drop)
    after = GalleryIndex.load(out)
    assert after.count == faiss_index.count == int((~drop).sum())
    kept = features[~drop]
    a = faiss_index.search(queries, 10, qcams, True)
    b = after.search(queries, 10, qcams, True)
    assert not b["pid"].isin([5, 7]).any()
    # same images, compared by path (row ids differ after FAISS's renumbering)
    for q in range(len(queries)):
        exact = unit(queries[q : q + 1]) @ unit(kept).T
        tol = score_tolerance(exact, SCORE_TOL_ULPS)
        exact[0, camids[~drop] == qcams[q]] = -np.inf
        np.testing.assert_allclose(
            a[a["query"] == q]["score"], b[b["query"] == q]["score"], atol=tol, rtol=0
        )
        position = {p: i for i, p in enumerate(np.asarray(paths)[~drop])}
        assert_topk_tie_aware(
            np.array([[position[p] for p in b[b["query"] == q]["path"]]]), exact, tol
        )


def test_append_reconnect_and_changed_behind_the_manifest(milvus_uri, tmp_path):
    features, paths, pids, camids = gallery()
    out = export(
        tmp_path, milvus_uri, "grow", features[:150], paths[:150], pids[:150], camids[:150]
    )
    index = GalleryIndex.load(out, writer=True)
    index.append(features[150:], paths[150:], pids[150:], camids[150:], model_hash="m1")
    index.save(out)
    whole = GalleryIndex.build(features, paths, pids, camids, model_hash="m1")
    queries = features[:9] + 0.05
    assert_same_hits(
        whole.search(queries, 8), GalleryIndex.load(out).search(queries, 8), queries, features
    )
    manifest = json.loads((out / "manifest.json").read_text())
    store = manifest["store"]
    assert (
        store["backend"] == "milvus" and store["collection"] == "grow" and "@" not in store["uri"]
    )
    assert manifest["count"] == 400 and "roles" in manifest and "index" not in manifest["roles"]
    with pytest.raises(IndexFormatError, match="model hash .* differs"):
        GalleryIndex.load(out).append(features[:2], paths[:2], model_hash="other")
    # a row inserted behind the manifest's back: count differs → refused
    from pymilvus import Collection, connections

    connections.connect("t", uri=milvus_uri)
    collection = Collection(store["physical"], using="t")
    collection.insert([[10_000], [1], [1], ["/x.jpg"], unit(features[:1]).astype(np.float32)])
    collection.flush()
    with pytest.raises(IndexFormatError, match="holds 401 vectors, the manifest lists 400"):
        GalleryIndex.load(out)
    # same count, other ids: the ids checksum catches it
    collection.delete("row in [0]")
    collection.flush()
    with pytest.raises(IndexFormatError, match="other rows than the manifest lists"):
        GalleryIndex.load(out)


def test_collection_names_are_owned(milvus_uri, tmp_path):
    features, paths, pids, camids = gallery(n=60)
    from pymilvus import MilvusClient

    client = MilvusClient(uri=milvus_uri)
    client.create_collection("someone_else", dimension=32)
    with pytest.raises(StoreError, match="not made by this toolkit"):
        export(tmp_path, milvus_uri, "someone_else", features, paths, pids, camids)
    out = export(tmp_path, milvus_uri, "mine", features, paths, pids, camids)
    first = json.loads((out / "manifest.json").read_text())["store"]["physical"]
    with pytest.raises(StoreError, match="not the collection this index folder points to"):
        export(tmp_path / "other", milvus_uri, "mine", features, paths, pids, camids)
    export(tmp_path, milvus_uri, "mine", features[:30], paths[:30], pids[:30], camids[:30])
    second = json.loads((out / "manifest.json").read_text())["store"]["physical"]
    assert second != first and not client.has_collection(first) and client.has_collection(second)
    assert GalleryIndex.load(out).count == 30 and client.has_collection("someone_else")
    assert not [p.name for p in out.iterdir() if p.name.startswith(".~reid")]
    GalleryIndex.build(features, paths, pids, camids).save(out)  # the folder turns FAISS
    assert not client.has_collection(second) and not client.has_collection("mine")
    assert GalleryIndex.load(out).backend == "faiss" and client.has_collection("someone_else")


def test_failure_mid_append_rolls_the_batch_back(milvus_uri, tmp_path, monkeypatch):
    features, paths, pids, camids = gallery()
    out = export(
        tmp_path, milvus_uri, "rollback", features[:100], paths[:100], pids[:100], camids[:100]
    )
    before = (out / "manifest.json").read_bytes()
    from pymilvus import Collection

    from reid.index import milvus_store

    monkeypatch.setattr(milvus_store, "BATCH_BYTES", 8 * 1024)  # several batches
    calls = {"n": 0}
    real = Collection.insert

    def failing(self, data, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise ConnectionError("network gone")
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(Collection, "insert", failing)
    index = GalleryIndex.load(out, writer=True)
    with pytest.raises(StoreError, match="insert failed .network gone.; the committed index"):
        index.append(features[100:], paths[100:], pids[100:], camids[100:], model_hash="m1")
    monkeypatch.undo()
    assert calls["n"] == 3 and (out / "manifest.json").read_bytes() == before
    assert GalleryIndex.load(out).count == 100  # validates: count and ids as the manifest says
    assert not list(out.glob(".~reid*"))


KILLED_APPEND = """
import sys, time, numpy as np
from reid.index import GalleryIndex, milvus_store
milvus_store.BATCH_BYTES = 4096
out, n = sys.argv[1], 400
rng = np.random.default_rng(0)
x = rng.normal(size=(n, 32)).astype(np.float32)
index = GalleryIndex.load(out, writer=True)
def slow(done, total):
    print(done, flush=True)
    time.sleep(0.3)
index.append(x[100:], [f"/g/{i}.jpg" for i in range(100, n)], rng.integers(1, 30, 300),
             rng.integers(0, 6, 300), model_hash="m1", progress=slow)
index.save(out)
"""


def test_client_killed_mid_append_is_rolled_back_by_the_next_writer(milvus_uri, tmp_path):
    features, paths, pids, camids = gallery()
    out = export(
        tmp_path, milvus_uri, "killed", features[:100], paths[:100], pids[:100], camids[:100]
    )
    before = (out / "manifest.json").read_bytes()
    child = subprocess.Popen([sys.executable, "-c", KILLED_APPEND, str(out)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    lines = [child.stdout.readline() for _ in range(3)]  # three batches are in
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert all(line.strip() for line in lines)
    assert (out / "manifest.json").read_bytes() == before
    assert list(out.glob(".~reid*.milvus.json"))  # the dead writer's journal
    reader = GalleryIndex.load(out)  # a reader tolerates the journalled rows and skips them
    hits = reader.search(features[:3], 10)
    assert hits["row"].max() < 100
    writer = GalleryIndex.load(out, writer=True)  # the next writer rolls them back
    assert writer.count == 100 and not list(out.glob(".~reid*"))
    assert GalleryIndex.load(out).store.count() == 100
    writer.append(features[100:], paths[100:], pids[100:], camids[100:], model_hash="m1")
    writer.save(out)
    whole = GalleryIndex.build(features, paths, pids, camids, model_hash="m1")
    queries = features[:5] + 0.05
    a, b = whole.search(queries, 8), GalleryIndex.load(out).search(queries, 8)
    assert_same_hits(
        a.assign(row=a["path"].str.extract(r"(\d+)")[0].astype(int)), b, queries, features
    )


@pytest.mark.parametrize(
    "index_type,params", [("IVF_FLAT", {"nlist": 16}), ("HNSW", {"M": 8, "efConstruction": 64})]
)
def test_approximate_types_report_recall(milvus_uri, tmp_path, index_type, params):
    features, paths, pids, camids = gallery(n=2000)
    out = tmp_path / index_type
    index = GalleryIndex.build(features, paths, pids, camids, options=options(milvus_uri, f"a_{index_type}", index_type, params),
                               directory=out, keep_features=True)  # fmt: skip
    index.save(out)
    recall = GalleryIndex.load(out).recall_at(features[:50] + 0.01, ks=(1, 10), nprobe=8, ef=32)
    assert 0.5 < recall["recall@10"] <= 1.0


def test_tools_end_to_end_with_milvus(milvus_uri, tiny_checkpoint, synthetic_root, tmp_path):
    def tool(name, *args):
        done = run_tool(name, *args)
        assert done.returncode == 0, done.stderr + done.stdout
        return done

    out = tmp_path / "idx"
    common = ["--backend", "milvus", "--uri", milvus_uri, "--collection", "tools_demo"]
    tool(
        "export_index",
        "--checkpoint",
        tiny_checkpoint,
        "--gallery",
        synthetic_root,
        "--out",
        out,
        *common,
    )
    query = sorted((synthetic_root / "query").glob("*.jpg"))[0]
    found = tool(
        "search",
        "--index",
        out,
        "--checkpoint",
        tiny_checkpoint,
        "--topk",
        5,
        "--exclude-same-camera",
        query,
    )
    assert len(found.stdout.strip().splitlines()) == 6
    pid = int(query.name.split("_")[0])
    tool("export_index", "--out", out, "--remove-pids", pid)
    assert not GalleryIndex.load(out).metadata["pid"].eq(pid).any()
    bad = run_tool("export_index", "--out", out, "--remove-pids", 1, "--uri", milvus_uri)
    assert one_error_line(bad).startswith("error: --uri")
    wrong = run_tool(
        "search", "--index", out, "--checkpoint", tiny_checkpoint, "--nprobe", 4, query
    )
    one_error_line(wrong, "--nprobe: applies to IVF indexes")


def test_wrong_server_collection_model_dim_and_field_are_one_line_before_any_write(
    milvus_uri, tiny_checkpoint, synthetic_root, tmp_path
):
    """Server down, a collection dropped behind the manifest, another model's collection, a
    dimension mismatch, a filter on a field that does not exist: one ``error:`` line each,
    before anything is written."""
    import socket

    from reid.index.store import NotEqual

    def tool(name, *args):
        return one_error_line(run_tool(name, *args))  # exit 2, one error line, no traceback

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    fresh = tmp_path / "never"
    line = tool("export_index", "--checkpoint", tiny_checkpoint, "--gallery", synthetic_root, "--out", fresh,
                "--backend", "milvus", "--uri", dead, "--collection", "x")  # fmt: skip
    assert f"--uri {dead}: cannot connect to Milvus" in line and not fresh.exists()
    features, paths, pids, camids = gallery(n=80)
    query = sorted((synthetic_root / "query").glob("*.jpg"))[0]

    def search_error(out):
        return tool("search", "--index", out, "--checkpoint", tiny_checkpoint, query)

    out = export(tmp_path, milvus_uri, "tampered", features, paths, pids, camids)
    manifest = json.loads((out / "manifest.json").read_text())
    for key, value, message in [
        ("model_hash", "0" * 64, "made for another model or dimension"),
        ("dim", 16, "made for another model or dimension"),
    ]:
        (out / "manifest.json").write_text(json.dumps({**manifest, key: value}))
        assert message in search_error(out)
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="filter on 'colour': not a stored field"):
        GalleryIndex.load(out).store.search(
            features[:1], 3, NotEqual("colour", np.zeros(1, np.int64))
        )
    with pytest.raises(StoreError, match="filter on 'colour'"):
        GalleryIndex.build(features, paths).store.search(
            features[:1], 3, NotEqual("colour", np.zeros(1))
        )
    from pymilvus import MilvusClient

    MilvusClient(uri=milvus_uri).drop_collection(manifest["store"]["physical"])
    assert "not found (dropped behind the manifest's back?)" in search_error(out)
    before = sorted(p.name for p in out.iterdir())
    line = tool("export_index", "--out", out, "--remove-pids", int(pids[0]))
    assert "not found" in line and sorted(p.name for p in out.iterdir()) == before


def test_a_copied_index_folder_cannot_write_the_owners_collection(milvus_uri, tmp_path):
    """cp -a IDX IDX_BAK, then an export or a removal into the copy with the same collection:
    refused with one line (it would move the alias and drop the collection under IDX's
    manifest); the copy still searches, and the owner still loads and writes."""
    import shutil

    features, paths, pids, camids = gallery(n=80)
    out = export(tmp_path, milvus_uri, "owned", features, paths, pids, camids)
    copy = tmp_path / "owned_bak"
    shutil.copytree(out, copy, symlinks=True)
    owner = json.loads((out / "manifest.json").read_text())["store"]["owner"]
    assert owner["path"] == str(out.resolve())
    for attempt in (
        lambda: GalleryIndex.build(features, paths, pids, camids, directory=copy,
                                   options=options(milvus_uri, "owned"), model_hash="m1"),
        lambda: GalleryIndex.load(copy, writer=True),
    ):  # fmt: skip
        with pytest.raises(StoreError, match="belongs to the index folder .*this folder is a copy"):
            attempt()
    assert GalleryIndex.load(copy).count == 80  # reading from a copy is fine
    index = GalleryIndex.load(out, writer=True)
    index.remove(index.metadata["pid"].to_numpy() == pids[0])
    index.save(out)
    assert GalleryIndex.load(out).count < 80


class Proxy:
    """A TCP relay to the Milvus server that the test can kill: to the client, the server died
    (connections reset, nothing listening), while the real server lives on for other tests."""

    def __init__(self, uri: str):
        import socket
        import threading
        from urllib.parse import urlsplit

        self.target = ("127.0.0.1", urlsplit(uri).port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port, self.sockets, self.alive = self.listener.getsockname()[1], [], True
        self._socket, self._thread = socket, threading
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while self.alive:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = self._socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                self._thread.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass

    def kill(self):
        self.alive = False
        self.listener.close()
        for sock in self.sockets:
            try:
                sock.shutdown(self._socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def test_a_server_killed_mid_append_is_one_line_and_the_index_is_unchanged(
    milvus_uri, tmp_path, monkeypatch
):
    """The Milvus server dies during an append (seen through a relay the test kills): one
    StoreError line after a bounded wait (REID_MILVUS_TIMEOUT), not minutes of retries and a
    traceback; the committed manifest unchanged; the journal kept, so the next writer (reaching
    the server again) rolls the rows already inserted back."""
    import time

    from reid.index import milvus_store

    proxy = Proxy(milvus_uri)
    uri = f"http://127.0.0.1:{proxy.port}"
    features, paths, pids, camids = gallery(n=300)
    out = export(tmp_path, uri, "dies", features[:100], paths[:100], pids[:100], camids[:100])
    before = (out / "manifest.json").read_bytes()
    monkeypatch.setattr(milvus_store, "BATCH_BYTES", 4096)
    monkeypatch.setenv(milvus_store.TIMEOUT_ENV, "5")
    index = GalleryIndex.load(out, writer=True)
    start = time.monotonic()
    with pytest.raises(StoreError, match="failed .*the committed index is unchanged"):
        index.append(features[100:], paths[100:], pids[100:], camids[100:], model_hash="m1",
                     progress=lambda done, total: proxy.kill())  # fmt: skip
    assert time.monotonic() - start < 60
    assert (out / "manifest.json").read_bytes() == before
    assert list(out.glob(".~reid.*.milvus.json"))  # the next writer's to recover
    assert GalleryIndex.load(out, writer=True, uri=milvus_uri).count == 100
    assert GalleryIndex.load(out, uri=milvus_uri).count == 100  # checked: ids as the manifest
