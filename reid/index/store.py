"""The vector-store contract under :class:`~reid.index.GalleryIndex`.

A store holds unit vectors under integer row ids with two integer fields per row (``pid``,
``camid``) and answers inner-product top-k searches, optionally excluding, per query, the rows
whose field equals the query's value (camera exclusion). Everything else a gallery index is —
paths, the manifest and its checksums, the model hash, the calibrated threshold, append of only
new images, removal by identity or path, validation, the "fetch more until k hits survive"
loop — belongs to ``GalleryIndex`` and is the same for every store.

Every store implements :class:`VectorStore` in full (a store that needs no write lifecycle
implements ``commit`` / ``abandon`` / ``recover`` as no-ops) and declares what it is
(:class:`Capabilities`) and what it takes (:class:`Flag`: its export flags, their ranges and
help; its ``parse_options`` checks them; its manifest section is its own ``describe()`` and
``open`` reads it back). The registry is ``reid/index/stores.py``: a store is one file plus one
line there. Nothing above this seam names a backend.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np

from ..arguments import Bounded
from ..errors import ReidError


class IndexFormatError(ReidError):
    """A missing, corrupt or mismatched index directory; the message names the file."""


class StoreError(IndexFormatError):
    """A backend option that is missing, malformed or does not apply; names the flag."""


@dataclass(frozen=True)
class NotEqual:
    """Exclude, for query ``q``, the rows whose ``field`` equals ``values[q]`` (negative: no
    exclusion for that query). Stores that filter inside the search use ``field`` and
    ``values``; for the others ``GalleryIndex`` filters the hits after the search."""

    field: str
    values: np.ndarray

    def __post_init__(self):
        if self.field not in FILTER_FIELDS:
            raise StoreError(
                f"filter on {self.field!r}: not a stored field (fields: {', '.join(FILTER_FIELDS)})"
            )


#: the fields every store keeps per row and can filter on
FILTER_FIELDS = ("pid", "camid")


@dataclass(frozen=True)
class Capabilities:
    """What a store is, so that the index above it need not ask its name.

    ``stable_rows``: row ids survive removals (the index then never reuses an id and records
    the ids' checksum); otherwise rows are positions 0..n−1, renumbered by a removal.
    ``filters_inside``: ``search`` applies the :class:`NotEqual` filter itself; otherwise the
    index drops the excluded hits and fetches more. ``files``: the roles of the data files the
    store writes into the index folder (their names come from ``planned``)."""

    stable_rows: bool
    filters_inside: bool
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class Flag:
    """One export option of a store: its flag, the option name ``parse_options`` receives, its
    help, and for numbers its range (the one range system, ``reid.arguments.Bounded``)."""

    flag: str
    option: str
    help: str
    metavar: str | None = None
    kind: Bounded | None = None


@dataclass(frozen=True)
class SearchOptions:
    """Per-search knobs of approximate indexes: ``nprobe`` (IVF lists probed), ``ef`` (HNSW
    candidate list); a store refuses the one that does not apply to its index."""

    nprobe: int | None = None
    ef: int | None = None


#: no per-search knobs: the index's own defaults
EXACT = SearchOptions()


class StoreOptions(Protocol):
    """What ``parse_options`` returns: the backend's name, and ``describe()``, the short string
    the manifest records as ``factory`` (``Flat``, ``milvus:HNSW(M=16,…)``)."""

    backend: str

    def describe(self) -> str: ...


class VectorStore(Protocol):
    """What ``GalleryIndex`` needs of a backend. Row ids are int64; searches return (scores,
    rows) arrays of shape (queries, k), rows −1 and scores −inf where fewer than k qualify."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for ``--backend``'s help
    capabilities: ClassVar[Capabilities]
    flags: ClassVar[tuple[Flag, ...]]
    dim: int

    # -- options, checked before any work
    @classmethod
    def parse_options(cls, given: dict) -> StoreOptions: ...  # option → value or None

    @classmethod
    def check_target(cls, options, directory: Path | None, previous: dict | None) -> None:
        """Before any work: what needs no model (a server that answers, a name free or ours);
        ``previous``: the store section of the index the folder holds, if any."""

    @classmethod
    def check_fits(cls, options, dim: int, count: int) -> None:
        """Once the model and the gallery are known, before embedding: the options fit a
        ``dim``-wide embedding of ``count`` images."""

    @classmethod
    def check_search(cls, section: dict, search: SearchOptions) -> None: ...

    @classmethod
    def versions(cls) -> dict: ...  # library → version, recorded in the manifest

    # -- lifecycle
    @classmethod
    def create(cls, options, dim: int, directory: Path | None, model_hash: str,
               previous: dict | None) -> VectorStore: ...  # fmt: skip

    @classmethod
    def open(cls, directory: Path, manifest: dict, files: dict, writer: bool,
             uri: str | None) -> VectorStore: ...  # fmt: skip

    def check(self, directory: Path, rows: np.ndarray, manifest: dict, thorough: bool) -> None:
        """Raise unless the store holds exactly the committed ``rows``."""

    def recover(self, directory: Path, rows: np.ndarray) -> int: ...  # a dead writer's work

    def planned(self, generation: str) -> dict: ...  # role → file ``save`` will write

    def save(self, directory: Path, generation: str) -> dict: ...  # role → file written

    def commit(self) -> None: ...  # the manifest naming this store's state is in

    def abandon(self) -> None: ...  # what was written ahead of a manifest that never came

    @classmethod
    def release(cls, previous: dict, current: dict) -> str | None: ...  # a replaced section

    def close(self) -> None: ...

    # -- data
    def count(self) -> int: ...

    def add(self, vectors: np.ndarray, rows: np.ndarray, pids: np.ndarray, camids: np.ndarray,
            paths: list[str], progress: Callable | None = None) -> None: ...  # fmt: skip

    def remove(self, rows: np.ndarray, exact: np.ndarray | None) -> None: ...  # exact: kept copy

    def search(self, queries: np.ndarray, k: int, exclude: NotEqual | None,
               search: SearchOptions) -> tuple[np.ndarray, np.ndarray]: ...  # fmt: skip

    def vectors(self) -> np.ndarray | None: ...  # exact vectors in row order, or None

    def describe(self) -> dict: ...  # the manifest's "store" section


def ids_digest(rows: np.ndarray) -> str:
    """SHA-256 of the sorted row ids: the manifest's check that a store's rows are unchanged."""
    return hashlib.sha256(np.sort(np.asarray(rows, dtype="<i8")).tobytes()).hexdigest()


def parse_pairs(flag: str, given: str | dict | None, allowed: dict[str, tuple], what: str) -> dict:
    """``K=V[,K=V]`` (or a dict) → typed, ranged values: ``allowed`` maps each key to its
    default and its range (``Bounded``); a key not allowed, a bad value or one out of range is
    one :class:`StoreError` line naming ``flag`` (and ``what`` the keys belong to)."""
    if isinstance(given, str):
        pairs = {}
        for item in filter(None, (p.strip() for p in given.split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise StoreError(f"{flag} {given!r}: expected KEY=VALUE[,KEY=VALUE]")
            pairs[key.strip()] = value.strip()
        given = pairs
    given = dict(given or {})
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        names = ", ".join(allowed) or "none"
        raise StoreError(f"{flag} {', '.join(unknown)}: not a parameter of {what} (its: {names})")
    values = {}
    for key, (default, bounds) in allowed.items():
        value = given.get(key, default)
        try:
            values[key] = bounds(str(value))
        except Exception as exc:
            raise StoreError(f"{flag} {key}={value}: {exc}") from None
    return values
