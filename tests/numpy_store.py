"""A vector store that exists only in the tests: exact search over a NumPy array, its vectors
and fields saved as one ``.npz`` in the index folder. It is here to prove the store seam: a new
backend is this one file plus its registration (``register``); nothing else in ``reid/``
changes, and ``tests/test_store_contract.py`` runs the same contract over it as over FAISS and
Milvus. It takes the capabilities neither shipped store has together: stable row ids (like
Milvus) with the camera filter applied by the index after the search (like FAISS)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reid import atomic
from reid.arguments import Int
from reid.index.store import EXACT, Capabilities, Flag, IndexFormatError, SearchOptions, StoreError
from reid.index.stores import STORES

NAME = "numpy"


@dataclass(frozen=True)
class NumpyOptions:
    block: int = 4096
    backend: str = NAME

    def describe(self) -> str:
        return f"numpy(block={self.block})"


class NumpyStore:
    name = NAME
    summary = "exact search over an in-memory array (tests only)"
    capabilities = Capabilities(stable_rows=True, filters_inside=False, files=("vectors",))
    flags = (Flag("--numpy-block", "block", "queries per matrix product", kind=Int(1, 1 << 20)),)

    def __init__(self, vectors, rows, block):
        self.data, self.rows, self.block = vectors, rows, block
        self.dim = vectors.shape[1]

    @classmethod
    def parse_options(cls, given: dict) -> NumpyOptions:
        return NumpyOptions(block=given.get("block") or 4096)

    @classmethod
    def check_target(cls, options, directory, previous) -> None:
        pass

    @classmethod
    def check_fits(cls, options, dim, count) -> None:
        pass

    @classmethod
    def check_search(cls, section: dict, search: SearchOptions) -> None:
        if search.nprobe is not None or search.ef is not None:
            raise StoreError("--nprobe, --ef: an exact store takes neither")

    @classmethod
    def versions(cls) -> dict:
        return {"numpy": np.__version__}

    @classmethod
    def create(cls, options, dim, directory=None, model_hash="", previous=None):
        return cls(np.zeros((0, dim), np.float32), np.zeros(0, np.int64), options.block)

    @classmethod
    def open(cls, directory, manifest, files, writer=False, uri=None):
        with np.load(Path(directory) / files["vectors"], allow_pickle=False) as data:
            vectors, rows = data["vectors"], data["rows"]
        block = int(manifest["store"].get("block", 4096))
        if vectors.shape[1:] != (manifest["dim"],):
            raise IndexFormatError(f"{directory}: stored vectors are {vectors.shape}")
        return cls(vectors, rows, block)

    def check(self, directory, rows, manifest, thorough=True) -> None:
        if not np.array_equal(self.rows, rows):
            raise IndexFormatError(f"{directory}: stored rows and metadata disagree")

    def recover(self, directory, rows) -> int:
        return 0

    def planned(self, generation: str) -> dict:
        return {"vectors": f"vectors.{generation}.npz"}

    def save(self, directory, generation) -> dict:
        files = self.planned(generation)
        with atomic.atomic_path(Path(directory) / files["vectors"]) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, vectors=self.data, rows=self.rows)
        return files

    def commit(self) -> None:
        pass

    def abandon(self) -> None:
        pass

    @classmethod
    def release(cls, previous: dict, current: dict):
        return None

    def close(self) -> None:
        pass

    def count(self) -> int:
        return len(self.rows)

    def add(self, vectors, rows, pids, camids, paths, progress=None) -> None:
        self.data = np.vstack([self.data, vectors]).astype(np.float32)
        self.rows = np.concatenate([self.rows, np.asarray(rows, np.int64)])

    def remove(self, rows, exact=None) -> None:
        keep = ~np.isin(self.rows, rows)
        self.data, self.rows = self.data[keep], self.rows[keep]

    def search(self, queries, k, exclude=None, search: SearchOptions = EXACT):
        scores = np.concatenate(
            [queries[i : i + self.block] @ self.data.T for i in range(0, len(queries), self.block)]
        ) if len(queries) else np.zeros((0, len(self.rows)), np.float32)  # fmt: skip
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        out_scores = np.full((len(queries), k), -np.inf, np.float32)
        out_rows = np.full((len(queries), k), -1, np.int64)
        out_scores[:, : order.shape[1]] = np.take_along_axis(scores, order, 1)
        out_rows[:, : order.shape[1]] = self.rows[order]
        return out_scores, out_rows

    def vectors(self):
        return self.data

    def describe(self) -> dict:
        return {"backend": NAME, "block": self.block}


def register() -> None:
    """The one registration line a shipped store has in ``reid/index/stores.py``."""
    STORES[NAME] = NumpyStore
