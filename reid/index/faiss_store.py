"""The embedded store: one FAISS index file in the index folder (factory strings: Flat,
IVF…,Flat, IVF…,PQ…, HNSW…), the default backend. Rows are positions 0..n−1; a removal rebuilds
the index from the kept vectors and renumbers them. It has no write lifecycle of its own: its
file is written under a fresh generation name and committed by the index's manifest."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from .. import atomic
from .store import EXACT, Capabilities, Flag, IndexFormatError, SearchOptions, StoreError

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


@dataclass(frozen=True)
class FaissOptions:
    factory: str = "Flat"
    backend: str = "faiss"

    def describe(self) -> str:
        return self.factory


class FaissStore:
    """Rows are positions; the camera filter is applied by the index after the search."""

    name = "faiss"
    summary = "a FAISS file in --out"
    capabilities = Capabilities(stable_rows=False, filters_inside=False, files=("index",))
    flags = (
        Flag("--index", "factory", "FAISS factory string: Flat (default), IVF1024,Flat, "
             "IVF1024,PQ64, HNSW32", metavar="FACTORY"),
    )  # fmt: skip

    def __init__(self, index: faiss.Index, factory: str):
        self.index, self.factory, self.dim = index, factory, int(index.d)

    # ------------------------------------------------------------------ options
    @classmethod
    def parse_options(cls, given: dict) -> FaissOptions:
        factory = given.get("factory")
        if factory is not None:
            parse_factory(factory)
        return FaissOptions(factory="Flat" if factory is None else factory)

    @classmethod
    def check_target(cls, options, directory, previous) -> None:
        pass  # the factory string was parsed with the options

    @classmethod
    def check_fits(cls, options, dim, count) -> None:
        parse_factory(options.factory, dim, count)

    @classmethod
    def check_search(cls, section: dict, search: SearchOptions) -> None:
        kind = str(section.get("factory", "Flat")).upper()
        if search.nprobe is not None and "IVF" not in kind:
            raise StoreError(f"--nprobe: applies to IVF indexes; this one is {section['factory']}")
        if search.ef is not None and "HNSW" not in kind:
            raise StoreError(f"--ef: applies to HNSW indexes; this one is {section['factory']}")

    @classmethod
    def versions(cls) -> dict:
        return {"faiss": VERSION}

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def create(cls, options, dim, directory=None, model_hash="", previous=None) -> FaissStore:
        """An empty index; the first ``add`` trains it (IVF, PQ) on the vectors it adds."""
        parse_factory(options.factory, dim)
        return cls(faiss.index_factory(int(dim), options.factory, faiss.METRIC_INNER_PRODUCT),
                   options.factory)  # fmt: skip

    @classmethod
    def open(cls, directory, manifest, files, writer=False, uri=None) -> FaissStore:
        factory = manifest["store"].get("factory")  # GalleryIndex.load fills a legacy section
        if not isinstance(factory, str) or not factory:
            raise IndexFormatError(f"{Path(directory) / 'manifest.json'}: field store.factory: "
                                   "missing (a FAISS index records its factory string)")  # fmt: skip
        try:
            return cls(faiss.read_index(str(Path(directory) / files["index"])), factory)
        except Exception as exc:
            raise IndexFormatError(f"{directory}: cannot read index files ({exc})") from None

    def check(self, directory, rows, manifest, thorough=True) -> None:
        if self.count() != len(rows):
            raise IndexFormatError(
                f"{directory}: index ({self.count()} vectors) and metadata ({len(rows)} rows) "
                "disagree"
            )

    def recover(self, directory, rows) -> int:
        return 0  # a killed save's files are the index's journal to clean up

    def planned(self, generation: str) -> dict:
        return {"index": f"index.{generation}{SUFFIX}"}

    def save(self, directory: Path, generation: str) -> dict:
        files = self.planned(generation)
        with atomic.atomic_path(directory / files["index"]) as tmp:
            faiss.write_index(self.index, str(tmp))
        return files

    def commit(self) -> None:
        pass

    def abandon(self) -> None:
        pass

    @classmethod
    def release(cls, previous: dict, current: dict) -> str | None:
        return None  # its file goes with the old manifest's file list

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ data
    def count(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors, rows, pids, camids, paths, progress=None) -> None:
        if len(rows) and int(rows[0]) != self.count():
            raise AssertionError("FAISS rows are positions: append continues at the count")
        if self.count() == 0:  # the first add of a new index: trained on it, on CUDA if any
            self.index = build_faiss_index(vectors, self.factory)
        else:
            self.index.add(vectors)
        if progress is not None:
            progress(len(rows), len(rows))

    def vectors(self) -> np.ndarray | None:
        """The index's own exact copies (Flat, IVF-Flat, HNSW-Flat); None when compressed."""
        if "PQ" in self.factory or "SQ" in self.factory:
            return None
        if "IVF" in self.factory:
            faiss.extract_index_ivf(self.index).make_direct_map()
        return self.index.reconstruct_n(0, self.count())

    def remove(self, rows: np.ndarray, exact: np.ndarray | None = None) -> None:
        """Rebuild from the kept vectors (removed ones are gone from the file, not hidden): the
        index's exact copies, else ``exact`` (the index's kept features); a compressed index
        (PQ, SQ) without them cannot give back exact vectors and is refused."""
        vectors = exact if exact is not None else self.vectors()
        if vectors is None:
            raise IndexFormatError(
                f"a {self.factory} index holds compressed vectors only; removal needs exact "
                "vectors (export with --keep-features, or re-export without those images)"
            )
        keep = np.ones(self.count(), dtype=bool)
        keep[np.asarray(rows, dtype=np.int64)] = False
        self.index = build_faiss_index(np.ascontiguousarray(vectors[keep]), self.factory)

    def search(self, queries, k, exclude=None, search: SearchOptions = EXACT):
        """Unfiltered (``filters_inside`` is False): the index drops the excluded hits."""
        if search.nprobe is not None and "IVF" in self.factory:
            faiss.extract_index_ivf(self.index).nprobe = search.nprobe
        if search.ef is not None and "HNSW" in self.factory:
            faiss.downcast_index(self.index).hnsw.efSearch = search.ef
        return self.index.search(queries, k)

    def describe(self) -> dict:
        return {"backend": self.name, "factory": self.factory}
