"""Gallery-index benchmark: Flat vs IVF-Flat vs IVF-PQ vs HNSW on ≥100k synthetic features.

For 512-d and 2048-d unit vectors with identity structure (clusters of ~10 images, like a
re-ID gallery), reports build time (train + add), index size on disk, queries/s (1,000 queries,
one batch, all threads) and recall@1/10 against exact search. Each index is saved and loaded
through ``GalleryIndex`` like a user's export.

    python benchmarks/bench_index.py            # writes benchmarks/results/index.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from reid.index import GalleryIndex

RESULTS = Path(__file__).parent / "results"


def clustered(n, dim, seed=0, per_cluster=10, spread=0.9):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n // per_cluster + 1, dim), dtype=np.float32)
    labels = rng.integers(0, len(centers), n)
    x = centers[labels] + spread * rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), centers, labels


def factories(dim: int) -> dict[str, str]:
    return {
        "Flat": "Flat",
        "IVF-Flat": "IVF1024,Flat",
        "IVF-PQ": f"IVF1024,PQ{dim // 16}",
        "HNSW": "HNSW32",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dims", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--ef-search", type=int, default=64)
    args = parser.parse_args()
    rows = []
    for dim in args.dims:
        gallery, centers, _ = clustered(args.n, dim)
        rng = np.random.default_rng(1)
        picked = rng.integers(0, len(centers) - 1, args.queries)
        queries = centers[picked] + 0.9 * rng.standard_normal((args.queries, dim), dtype=np.float32)
        exact = faiss.IndexFlatIP(dim)
        exact.add(gallery)
        _, truth = exact.search(queries / np.linalg.norm(queries, axis=1, keepdims=True), 10)
        paths = [f"g{i}.jpg" for i in range(args.n)]
        for name, factory in factories(dim).items():
            start = time.perf_counter()
            index = GalleryIndex.build(gallery, paths, factory=factory)
            build_s = time.perf_counter() - start
            with tempfile.TemporaryDirectory() as tmp:
                index.save(Path(tmp) / "idx")
                size = (Path(tmp) / "idx/index.faiss").stat().st_size
                index = GalleryIndex.load(Path(tmp) / "idx", verify=False)
            if "IVF" in factory:
                faiss.extract_index_ivf(index.index).nprobe = args.nprobe
            if "HNSW" in factory:
                index.index.hnsw.efSearch = args.ef_search
            unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
            start = time.perf_counter()
            _, found = index.index.search(unit, 10)
            search_s = time.perf_counter() - start
            row = {
                "dim": dim,
                "index": name,
                "factory": factory,
                "n": args.n,
                "build_s": round(build_s, 2),
                "size_mb": round(size / 2**20, 1),
                "qps": round(args.queries / search_s),
                "recall@1": float(np.mean(found[:, 0] == truth[:, 0])),
                "recall@10": float(
                    np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])
                ),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "threads": faiss.omp_get_max_threads(),
        "faiss": faiss.__version__,
        "nprobe": args.nprobe,
        "efSearch": args.ef_search,
        "queries": args.queries,
    }
    (RESULTS / "index.json").write_text(json.dumps({"settings": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
