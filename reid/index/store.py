"""The vector-store seam under :class:`~reid.index.GalleryIndex`.

A store holds unit vectors under integer row ids with two integer fields per row (``pid``,
``camid``) and answers inner-product top-k searches, optionally excluding, per query, the rows
whose field equals the query's value (camera exclusion). Everything else a gallery index is —
paths, the manifest and its checksums, the model hash, the calibrated threshold, append of only
new images, removal by identity or path, validation — belongs to ``GalleryIndex`` and is the
same for every store.

Stores: ``faiss`` (embedded, the index is a file in the index folder; the default) and
``milvus`` (a Milvus server or cluster; the index is a collection, the folder holds the
manifest that points to it). Options are typed and checked here, before any work: an option
that does not apply to the chosen backend is an error that names it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import ReidError

BACKENDS = ("faiss", "milvus")
#: the exact and approximate index types a Milvus store builds (``--milvus-index``)
MILVUS_INDEX_TYPES = ("FLAT", "IVF_FLAT", "HNSW")
#: each Milvus index type's build parameters, with their defaults and ranges
MILVUS_BUILD_PARAMS = {
    "FLAT": {},
    "IVF_FLAT": {"nlist": (1024, 1, 65536)},
    "HNSW": {"M": (16, 2, 2048), "efConstruction": (200, 1, 1 << 20)},
}


class IndexFormatError(ReidError):
    """A missing, corrupt or mismatched index directory; the message names the file."""


class StoreError(IndexFormatError):
    """A backend option that is missing, malformed or does not apply; names the flag."""


@dataclass(frozen=True)
class NotEqual:
    """Exclude, for query ``q``, the rows whose ``field`` equals ``values[q]`` (negative: no
    exclusion for that query). ``gallery`` is the field's value per stored row position, for
    stores that filter after searching (FAISS); stores with stored fields (Milvus) filter inside
    the search by expression."""

    field: str
    values: np.ndarray
    gallery: np.ndarray | None = None


#: the fields every store keeps per row and can filter on
FILTER_FIELDS = ("pid", "camid")


def check_filter(exclude: NotEqual | None) -> None:
    if exclude is not None and exclude.field not in FILTER_FIELDS:
        raise StoreError(
            f"filter on {exclude.field!r}: not a stored field (fields: {', '.join(FILTER_FIELDS)})"
        )


@dataclass(frozen=True)
class StoreOptions:
    """What an export is asked to build; ``describe`` is what the manifest records."""

    backend: str = "faiss"
    factory: str = "Flat"  # faiss
    uri: str | None = None  # milvus
    collection: str | None = None
    index_type: str = "FLAT"
    params: dict = field(default_factory=dict)

    def describe(self) -> str:
        if self.backend == "faiss":
            return self.factory
        extra = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"milvus:{self.index_type}" + (f"({extra})" if extra else "")


class VectorStore(Protocol):
    """What ``GalleryIndex`` needs of a backend. Row ids are int64; searches return (scores,
    rows) arrays of shape (queries, k), rows −1 and scores −inf where fewer than k qualify."""

    backend: str
    dim: int

    def count(self) -> int: ...

    def add(self, vectors: np.ndarray, rows: np.ndarray, pids: np.ndarray, camids: np.ndarray,
            paths: list[str]) -> None: ...  # fmt: skip

    def search(self, queries: np.ndarray, k: int, exclude: NotEqual | None = None,
               nprobe: int | None = None, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]: ...  # fmt: skip

    def remove(self, rows: np.ndarray) -> np.ndarray: ...  # the kept rows' new ids, in order

    def vectors(self) -> np.ndarray | None: ...  # exact vectors in row order, or None

    def save(self, directory: Path, generation: str) -> dict: ...  # role → file written

    def describe(self) -> dict: ...  # the manifest's "store" section


def parse_store_options(
    backend: str | None = None,
    factory: str | None = None,
    uri: str | None = None,
    collection: str | None = None,
    index_type: str | None = None,
    params: str | dict | None = None,
) -> StoreOptions:
    """The export's backend options, checked before any work. ``None`` means not given: an
    option given for a backend it does not apply to is refused with its flag's name."""
    backend = backend or "faiss"
    if backend not in BACKENDS:
        raise StoreError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    given = {
        "--index": factory,
        "--uri": uri,
        "--collection": collection,
        "--milvus-index": index_type,
        "--milvus-params": params,
    }
    applies = {
        "faiss": {"--index"},
        "milvus": {"--uri", "--collection", "--milvus-index", "--milvus-params"},
    }
    wrong = [
        flag for flag, value in given.items() if value is not None and flag not in applies[backend]
    ]
    if wrong:
        raise StoreError(f"{', '.join(wrong)}: does not apply to --backend {backend}")
    if backend == "faiss":
        return StoreOptions(backend="faiss", factory=factory if factory is not None else "Flat")
    from .milvus_store import check_collection_name, check_uri

    if uri is None or collection is None:
        raise StoreError("--backend milvus needs --uri http://HOST:19530 and --collection NAME")
    check_uri(uri)
    check_collection_name(collection)
    index_type = (index_type or "FLAT").upper()
    if index_type not in MILVUS_INDEX_TYPES:
        raise StoreError(
            f"--milvus-index {index_type!r}: choose one of {', '.join(MILVUS_INDEX_TYPES)}"
        )
    return StoreOptions(
        backend="milvus",
        uri=uri,
        collection=collection,
        index_type=index_type,
        params=_build_params(index_type, params),
    )


def _build_params(index_type: str, given: str | dict | None) -> dict:
    """``nlist=1024`` / ``M=16,efConstruction=200`` → typed, ranged build parameters."""
    allowed = MILVUS_BUILD_PARAMS[index_type]
    if isinstance(given, str):
        pairs = {}
        for item in filter(None, (p.strip() for p in given.split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise StoreError(f"--milvus-params {given!r}: expected KEY=VALUE[,KEY=VALUE]")
            pairs[key.strip()] = value.strip()
        given = pairs
    given = dict(given or {})
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        names = ", ".join(allowed) or "none"
        raise StoreError(
            f"--milvus-params {', '.join(unknown)}: not a parameter of {index_type} (its: {names})"
        )
    params = {}
    for key, (default, low, high) in allowed.items():
        value = given.get(key, default)
        try:
            value = int(value)
        except (TypeError, ValueError):
            raise StoreError(f"--milvus-params {key}={value!r}: not an integer") from None
        if not low <= value <= high:
            raise StoreError(f"--milvus-params {key}={value}: must be in [{low}, {high}]")
        params[key] = value
    return params


def check_search_options(manifest: dict, nprobe: int | None, ef: int | None) -> None:
    """``--nprobe`` applies to IVF indexes, ``--ef`` to HNSW ones, of either backend."""
    kind = str(manifest.get("factory", "Flat")).upper()
    if nprobe is not None and "IVF" not in kind:
        raise StoreError(f"--nprobe: applies to IVF indexes; this one is {manifest.get('factory')}")
    if ef is not None and "HNSW" not in kind:
        raise StoreError(f"--ef: applies to HNSW indexes; this one is {manifest.get('factory')}")
