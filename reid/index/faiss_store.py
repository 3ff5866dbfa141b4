"""The embedded store: one FAISS index file in the index folder (factory strings: Flat,
IVF…,Flat, IVF…,PQ…, HNSW…). Rows are positions 0..n−1; a removal rebuilds the index from the
kept vectors and renumbers them."""

from __future__ import annotations

import re
from pathlib import Path

import faiss
import numpy as np

from .. import atomic
from .store import NotEqual, StoreError, check_filter

SUFFIX = ".faiss"
VERSION = faiss.__version__


def parse_factory(factory: str, dim: int | None = None, count: int | None = None) -> None:
    """Check a FAISS factory string before any work: it parses (for ``dim`` when known), and an
    IVF index has no more lists than the gallery has vectors to train them (``count``)."""
    if not isinstance(factory, str) or not factory.strip():
        raise StoreError("--index: empty FAISS factory string (e.g. Flat, IVF256,Flat, HNSW32)")
    if dim is not None:
        try:
            faiss.index_factory(int(dim), factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise StoreError(
                f"--index {factory!r}: not a FAISS factory string for {dim}-d vectors "
                f"({str(exc).strip().splitlines()[-1].rsplit(': ', 1)[-1]})"
            ) from None
    lists = re.search(r"IVF(\d+)", factory)
    if lists and count is not None and count < int(lists.group(1)):
        raise StoreError(
            f"--index {factory}: {lists.group(1)} IVF lists need at least as many gallery images "
            f"to train on, the gallery has {count}; use fewer lists (about sqrt(N): "
            f"IVF{max(1, int(count**0.5))},Flat) or Flat"
        )


def build_faiss_index(
    features: np.ndarray, factory: str = "Flat", use_gpu: bool | None = None
) -> faiss.Index:
    """Build (and train where needed) a FAISS index for unit vectors by inner product."""
    dim = features.shape[1]
    parse_factory(factory, dim, len(features))
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if use_gpu is None:
        use_gpu = faiss.get_num_gpus() > 0
    work = index
    if use_gpu and "HNSW" not in factory:
        work = faiss.index_cpu_to_all_gpus(index)
    if not work.is_trained:
        work.train(features)
    work.add(features)
    return faiss.index_gpu_to_cpu(work) if work is not index else index


class FaissStore:
    backend = "faiss"

    def __init__(self, index: faiss.Index, factory: str):
        self.index, self.factory, self.dim = index, factory, int(index.d)

    @classmethod
    def build(cls, features: np.ndarray, factory: str = "Flat") -> FaissStore:
        return cls(build_faiss_index(features, factory), factory)

    @classmethod
    def open(cls, path: Path, factory: str) -> FaissStore:
        return cls(faiss.read_index(str(path)), factory)

    def count(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors, rows, pids, camids, paths) -> None:
        if len(rows) and int(rows[0]) != self.count():
            raise AssertionError("FAISS rows are positions: append continues at the count")
        self.index.add(vectors)

    def vectors(self) -> np.ndarray | None:
        """The index's own exact copies (Flat, IVF-Flat, HNSW-Flat); None when compressed."""
        if "PQ" in self.factory or "SQ" in self.factory:
            return None
        if "IVF" in self.factory:
            faiss.extract_index_ivf(self.index).make_direct_map()
        return self.index.reconstruct_n(0, self.count())

    def remove(self, rows: np.ndarray, vectors: np.ndarray | None = None) -> np.ndarray:
        """Rebuild from the kept vectors (removed ones are gone from the file, not hidden)."""
        vectors = self.vectors() if vectors is None else vectors
        keep = np.ones(self.count(), dtype=bool)
        keep[np.asarray(rows, dtype=np.int64)] = False
        self.index = build_faiss_index(np.ascontiguousarray(vectors[keep]), self.factory)
        return np.arange(int(keep.sum()), dtype=np.int64)

    def search(self, queries, k, exclude: NotEqual | None = None, nprobe=None, ef=None):
        check_filter(exclude)
        if nprobe is not None and "IVF" in self.factory:
            faiss.extract_index_ivf(self.index).nprobe = nprobe
        if ef is not None and "HNSW" in self.factory:
            faiss.downcast_index(self.index).hnsw.efSearch = ef
        total = self.count()
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_rows = np.full((len(queries), k), -1, dtype=np.int64)
        fetch = min(total, k if exclude is None else max(4 * k, k + 64))
        pending = np.arange(len(queries))
        while len(pending):
            scores, rows = self.index.search(queries[pending], fetch)
            unfinished = []
            for i, q in enumerate(pending):
                ok = rows[i] >= 0
                if exclude is not None and exclude.values[q] >= 0:
                    ok &= exclude.gallery[np.maximum(rows[i], 0)] != exclude.values[q]
                kept = np.flatnonzero(ok)[:k]
                if len(kept) < k and fetch < total:
                    unfinished.append(q)
                    continue
                out_scores[q, : len(kept)] = scores[i, kept]
                out_rows[q, : len(kept)] = rows[i, kept]
            pending = np.asarray(unfinished, dtype=np.int64)
            fetch = min(total, fetch * 4)
        return out_scores, out_rows

    def save(self, directory: Path, generation: str) -> dict:
        name = f"index.{generation}{SUFFIX}"
        with atomic.atomic_path(directory / name) as tmp:
            faiss.write_index(self.index, str(tmp))
        return {"index": name}

    def describe(self) -> dict:
        return {"backend": "faiss", "factory": self.factory}


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row ids of the exact inner-product top-k (the reference recall is measured against)."""
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    return exact.search(queries, k)[1]
