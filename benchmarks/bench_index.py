"""Gallery-index benchmark: the FAISS store and the Milvus store on the same vectors.

For unit vectors with identity structure (clusters of ~10 images, like a re-ID gallery), each
index type of each backend is built through ``GalleryIndex`` like a user's export (FAISS:
Flat, IVF-Flat, IVF-PQ, HNSW; Milvus: FLAT, IVF_FLAT, HNSW on a real Milvus standalone server
started here, or ``--uri`` for one of yours) and reports: build/insert rate (vectors/s, train
and add, or insert and index build), queries/s for one batch of ``--queries`` queries and for
``--single`` queries sent one at a time, recall@1/10 against exact search, and memory (FAISS:
the index file, which is what the process holds; Milvus: the server's resident memory
growth, measured on its process tree).

    python benchmarks/bench_index.py                       # FAISS, 100k x 512 and 2048
    python benchmarks/bench_index.py --backends faiss milvus --sizes 100000 300000 --dims 512 \\
        --out benchmarks/results/index_milvus.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from reid.evaluation.postprocess import exact_top_k
from reid.index import GalleryIndex
from reid.index.faiss_store import VERSION as FAISS_VERSION
from reid.index.faiss_store import FaissOptions
from reid.index.milvus_store import MilvusOptions
from reid.index.store import SearchOptions
from reid.machine import cpu_description

RESULTS = Path(__file__).parent / "results"


def clustered(n, dim, seed=0, per_cluster=10, spread=0.9):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n // per_cluster + 1, dim), dtype=np.float32)
    labels = rng.integers(0, len(centers), n)
    x = centers[labels] + spread * rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), centers, labels


def faiss_types(dim: int) -> dict[str, FaissOptions]:
    return {
        "Flat": FaissOptions(factory="Flat"),
        "IVF-Flat": FaissOptions(factory="IVF1024,Flat"),
        "IVF-PQ": FaissOptions(factory=f"IVF1024,PQ{dim // 16}"),
        "HNSW": FaissOptions(factory="HNSW32"),
    }


def milvus_types(uri: str, tag: str) -> dict[str, MilvusOptions]:
    def make(kind, params):
        return MilvusOptions(uri=uri, collection=f"bench_{tag}_{kind.lower()}", index_type=kind,
                             params=params)  # fmt: skip

    return {
        "FLAT": make("FLAT", {}),
        "IVF_FLAT": make("IVF_FLAT", {"nlist": 1024}),
        "HNSW": make("HNSW", {"M": 32, "efConstruction": 200}),
    }


def tree_rss(pid: int | None) -> int:
    if pid is None:
        return 0
    try:
        root = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
    except psutil.Error:
        return 0


def measure(backend, name, options, gallery, unit, truth, args, server_pid, tmp):
    out = Path(tmp) / f"{backend}-{name}"
    paths = [f"/g/{i}.jpg" for i in range(len(gallery))]
    rss_before, rss_growth = tree_rss(server_pid), 0
    start = time.perf_counter()
    index = GalleryIndex.build(gallery, paths, options=options, directory=out)
    index.save(out)
    build_s = time.perf_counter() - start
    index = GalleryIndex.load(out, verify=False)
    if backend == "faiss":
        memory = sum(p.stat().st_size for p in out.glob("index.*.faiss"))
    else:  # the loaded segments' size as the server reports it (its RSS growth is noisier)
        from pymilvus import utility

        segments = utility.get_query_segment_info(index.store.physical, using=index.store._using)
        memory = sum(int(s.mem_size) for s in segments)
        rss_growth = tree_rss(server_pid) - rss_before
    search = SearchOptions(
        nprobe=args.nprobe if "IVF" in name else None, ef=args.ef if "HNSW" in name else None
    )
    index.store.search(unit[:8], 10, None, search)  # warm
    start = time.perf_counter()
    _, found = index.store.search(unit, 10, None, search)
    batch_s = time.perf_counter() - start
    single = unit[: args.single]
    start = time.perf_counter()
    for q in single:
        index.store.search(q[None], 10, None, search)
    single_s = time.perf_counter() - start
    row = {
        "backend": backend,
        "index": name,
        "describe": options.describe(),
        "n": len(gallery),
        "dim": gallery.shape[1],
        "build_s": round(build_s, 2),
        "build_vectors_per_s": round(len(gallery) / build_s),
        "memory_mb": round(memory / 2**20, 1),
        "server_rss_growth_mb": round(rss_growth / 2**20, 1) if backend == "milvus" else None,
        "qps_batch": round(len(unit) / batch_s),
        "qps_single": round(len(single) / single_s, 1),
        "recall@1": float(np.mean(found[:, 0] == truth[:, 0])),
        "recall@10": float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])),
    }
    if backend == "milvus":  # leave the server as found
        from pymilvus import MilvusClient, utility

        utility.drop_alias(options.collection, using=index.store._using)
        MilvusClient(uri=options.uri).drop_collection(index.store.physical)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", nargs="+", default=["faiss"], choices=["faiss", "milvus"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--single", type=int, default=200, help="queries sent one at a time")
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--ef", type=int, default=64)
    parser.add_argument("--uri", help="an existing Milvus server (default: start one here)")
    parser.add_argument("--out", default=str(RESULTS / "index.json"))
    args = parser.parse_args()
    server, server_pid, uri = None, None, args.uri
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if "milvus" in args.backends and uri is None:
            from milvus import MilvusServer

            server = MilvusServer()
            server.set_base_dir(str(Path(tmp) / "milvus"))
            server.start()
            uri = f"http://127.0.0.1:{server.listen_port}"
            server_pid = server.server_proc.pid
        try:
            for n in args.sizes:
                for dim in args.dims:
                    gallery, centers, _ = clustered(n, dim)
                    rng = np.random.default_rng(1)
                    picked = rng.integers(0, len(centers) - 1, args.queries)
                    queries = centers[picked] + 0.9 * rng.standard_normal(
                        (args.queries, dim), dtype=np.float32
                    )
                    unit = np.ascontiguousarray(
                        queries / np.linalg.norm(queries, axis=1, keepdims=True)
                    )
                    truth = exact_top_k(gallery, unit, 10)
                    kinds = []
                    if "faiss" in args.backends:
                        kinds += [("faiss", k, o) for k, o in faiss_types(dim).items()]
                    if "milvus" in args.backends:
                        kinds += [
                            ("milvus", k, o) for k, o in milvus_types(uri, f"{n}_{dim}").items()
                        ]
                    for backend, name, options in kinds:
                        row = measure(
                            backend, name, options, gallery, unit, truth, args, server_pid, tmp
                        )
                        rows.append(row)
                        print(json.dumps(row), flush=True)
        finally:
            if server is not None:
                server.stop()
    meta = {
        "command": "python benchmarks/bench_index.py "
        + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items()
            if v is not None and k != "out"
        ),
        "machine": cpu_description(),
        "faiss": FAISS_VERSION,
        "nprobe": args.nprobe,
        "ef": args.ef,
        "queries": args.queries,
        "single": args.single,
    }
    if "milvus" in args.backends:
        from importlib.metadata import version

        meta["milvus_server"] = version("milvus") if server is not None else "external"
        meta["pymilvus"] = version("pymilvus")
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps({"settings": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
