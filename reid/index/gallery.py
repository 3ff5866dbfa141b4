"""A persistent, searchable gallery: a vector store (``store.py``, the contract; ``stores.py``,
the registry) + metadata table + manifest, in one directory.

Layout of ``INDEX_DIR`` (``GEN`` is a fresh generation tag at every save)::

    manifest.json          format version, dim, metric and normalisation, factory, the store
                           (its backend and the section the store describes itself with; the
                           row ids' checksum when they are stable), preprocessing, model hash,
                           library versions, counts,
                           the data files of each role and the SHA-256 of each, creation time
    ROLE.GEN.SUFFIX        the store's own files, when it keeps its vectors in the folder
    metadata.GEN.parquet   one row per vector: row, path, pid, camid (-1 where unknown)
    features.GEN.npy       optional (--keep-features): exact vectors, for recall reports and
                           append into approximate indexes

Vectors are L2-normalised embeddings searched by inner product (= cosine). A save writes the
new generation's files beside the old ones, then replaces ``manifest.json`` atomically (the
commit point), then removes the old generation's files (listed, with checksums, by the old
manifest). A crash at any moment leaves the old index or the new one, never a mix, and the
folder's other files are never touched. ``load`` verifies versions and checksums before use;
format-1 indexes (fixed names ``ROLE.SUFFIX``, ``manifest.SUFFIXES``) still load.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import atomic
from ..errors import OutputError
from ..evaluation.postprocess import exact_top_k, l2_normalize
from ..outputs import sha256
from .manifest import (
    MANIFEST,
    SUFFIXES,
    is_manifest_shaped,
    parse_manifest,
    read_journal,
    read_manifest_file,
)
from .store import IndexFormatError, NotEqual, SearchOptions, StoreOptions, VectorStore, ids_digest
from .stores import manifest_store, parse_store_options, section, store_class

FORMAT_VERSION = 2  # 1: fixed file names (still read); 2: generation-named data files
_PENDING = ".pending"  # journal files: .~reid.PID.XXXXXX.pending.json


def _versions(store: type[VectorStore]) -> dict:
    base = {"reid": package_version("reid"), "torch": torch.__version__, "numpy": np.__version__}
    return {**base, **store.versions()}


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise IndexFormatError(f"features must be a finite 2-D array, got shape {x.shape}")
    return l2_normalize(x)


def read_manifest(directory: Path) -> dict | None:
    """The index manifest of ``directory``, parsed (``index/manifest.py``), or None when the
    folder has none; a manifest that does not parse is one :class:`IndexFormatError` line."""
    path = Path(directory) / MANIFEST
    if not (path.exists() or path.is_symlink()):
        return None
    return read_manifest_file(path)[1]


def is_index_dir(directory: Path) -> bool:
    """True when ``directory`` holds an index manifest of this format (proof that we wrote it)."""
    try:
        return read_manifest(Path(directory)) is not None
    except IndexFormatError:
        return False


def index_file(directory: str | Path, role: str) -> Path:
    """The file of ``role`` (index, metadata, features) of the index in ``directory``."""
    path = Path(directory) / MANIFEST
    if not (path.exists() or path.is_symlink()):
        raise IndexFormatError(f"{directory}: not an index (no manifest)")
    return Path(directory) / read_manifest_file(path)[0].role_files()[role]


def check_index_target(directory: str | Path) -> None:
    """An index may be written into a new folder, or into one whose ``manifest.json`` is absent
    or an index manifest; the folder's other files are kept whatever they are."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"--out {directory}: exists and is not a folder")
    path = directory / MANIFEST
    if path.exists() or path.is_symlink():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = None
        if not is_manifest_shaped(data):
            raise OutputError(
                f"--out {directory}: {MANIFEST} already exists and is not an index manifest; "
                "choose another folder"
            )
        parse_manifest(data, path)  # an index manifest that does not parse: its field, by name


def journal_pattern() -> str:
    """The glob that finds save journals (the names ``atomic.temp_path`` gives them)."""
    return atomic.TEMP_PREFIX + "*" + _PENDING + Path(MANIFEST).suffix


def clean_index_leftovers(directory: Path) -> None:
    """What a killed save left: the data files its pending manifest (its journal) names and the
    committed manifest does not, then its temps. Only a dead writer's leftovers are touched."""
    manifest = read_manifest(directory)
    listed = set(manifest["files"]) if manifest else set()
    for pending in directory.glob(journal_pattern()):
        pid = atomic.temp_owner(pending.name)
        if pid is None or atomic.process_alive(pid):
            continue
        for name in read_journal(pending):  # plain names only: inside this folder
            if name not in listed and (directory / name).is_file():
                (directory / name).unlink()
        pending.unlink(missing_ok=True)
    atomic.clean_stale_temps(directory)


def _metadata(rows, paths, pids, camids) -> pd.DataFrame:
    n = len(rows)
    return pd.DataFrame(
        {
            "row": np.asarray(rows, dtype=np.int64),
            "path": [str(p) for p in paths],
            "pid": np.asarray(pids if pids is not None else [-1] * n, dtype=np.int64),
            "camid": np.asarray(camids if camids is not None else [-1] * n, dtype=np.int64),
        }
    )


METADATA_COLUMNS = ("row", "path", "pid", "camid")


def read_metadata(path: Path) -> pd.DataFrame:
    """The metadata table, checked: its columns and their types, rows unique and increasing."""
    try:
        metadata = pd.read_parquet(path)
    except Exception as exc:
        raise IndexFormatError(f"{path}: cannot read index files ({exc})") from None
    missing = [c for c in METADATA_COLUMNS if c not in metadata.columns]
    if missing:
        raise IndexFormatError(f"{path}: column {missing[0]}: missing")
    for column in ("row", "pid", "camid"):
        if not pd.api.types.is_integer_dtype(metadata[column]):
            raise IndexFormatError(
                f"{path}: column {column}: not integers ({metadata[column].dtype})"
            )
    rows = metadata["row"].to_numpy()
    if len(rows) and ((rows < 0).any() or (np.diff(rows) <= 0).any()):
        raise IndexFormatError(f"{path}: column row: not unique, increasing and ≥ 0")
    if not all(isinstance(p, str) and p for p in metadata["path"]):
        raise IndexFormatError(f"{path}: column path: an empty or non-text path")
    return metadata


def read_features(path: Path, count: int, dim: int) -> np.ndarray:
    """The stored exact vectors, checked against the index: (count, dim), finite float32."""
    try:
        features = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise IndexFormatError(f"{path}: cannot read index files ({exc})") from None
    if (
        features.shape != (count, dim)
        or features.dtype != np.float32
        or not np.isfinite(features).all()
    ):
        raise IndexFormatError(
            f"{path}: holds {features.dtype} {features.shape}, the index needs finite float32 "
            f"({count}, {dim})"
        )
    return features


class GalleryIndex:
    """Metadata, manifest and validation over a :class:`~reid.index.store.VectorStore`."""

    def __init__(
        self,
        store: VectorStore,
        metadata: pd.DataFrame,
        manifest: dict,
        features: np.ndarray | None = None,
    ):
        self.store, self.metadata, self.manifest, self.features = (
            store,
            metadata,
            manifest,
            features,
        )

    @property
    def count(self) -> int:
        return len(self.metadata)

    @property
    def backend(self) -> str:
        return self.store.name

    # ------------------------------------------------------------------ build / save / load
    @classmethod
    def build(
        cls,
        features,
        paths,
        pids=None,
        camids=None,
        *,
        options: StoreOptions | None = None,
        directory: str | Path | None = None,
        model_hash="",
        preprocessing=None,
        keep_features=False,
        progress=None,
    ) -> GalleryIndex:
        """A new index in the store ``options`` names (default: ``stores.DEFAULT``, Flat).
        A store that writes ahead of the manifest (a server) does so now, journalled in
        ``directory`` (the index folder ``save`` will commit); on failure it is abandoned."""
        features = _normalize(features)
        n = len(features)
        if n == 0:
            raise IndexFormatError("the gallery is empty: nothing to index")
        options = options or parse_store_options()
        kind = store_class(options.backend)
        metadata = _metadata(np.arange(n), paths, pids, camids)
        old = read_manifest(Path(directory)) if directory is not None else None
        store = kind.create(options, features.shape[1],
                            Path(directory) if directory is not None else None, model_hash,
                            section(old) if old else None)  # fmt: skip
        try:
            store.add(features, metadata["row"].to_numpy(), metadata["pid"].to_numpy(),
                      metadata["camid"].to_numpy(), list(metadata["path"]), progress)  # fmt: skip
        except BaseException:
            store.abandon()
            raise
        manifest = {
            "format_version": FORMAT_VERSION,
            "dim": int(features.shape[1]),
            "metric": "cosine",
            "normalized": True,
            "factory": options.describe(),
            "preprocessing": preprocessing or {},
            "model_hash": model_hash,
            # search opens hits by these paths: absolute ones work from any working directory
            "paths": "absolute"
            if all(os.path.isabs(p) for p in metadata["path"])
            else "relative to the export's working directory",
            "versions": _versions(kind),
            "count": n,
        }
        return cls(store, metadata, manifest, features if keep_features else None)

    def save(self, directory: str | Path) -> None:
        """Commit this index to ``directory``: new data files under fresh generation names, then
        the manifest atomically (the commit point: readers and a crash see the old index or the
        new one), then the old generation's files, which the old manifest lists. The folder's
        other files are never touched. The store then applies what waited for the commit
        (``commit``), and a store the new manifest replaced lets go of its data (``release``)."""
        directory = Path(directory)
        check_index_target(directory)
        created = not directory.exists()
        directory.mkdir(parents=True, exist_ok=True)
        clean_index_leftovers(directory)
        old = read_manifest(directory)
        generation = secrets.token_hex(4)
        journal = atomic.temp_path(directory / MANIFEST, _PENDING)
        planned = list(self.store.planned(generation).values())
        planned += [f"metadata.{generation}.parquet"] + (
            [f"features.{generation}.npy"] if self.features is not None else []
        )
        journal.write_text(json.dumps({"files": planned}))
        roles: dict = {}
        try:
            roles.update(self.store.save(directory, generation))
            roles["metadata"] = f"metadata.{generation}{SUFFIXES['metadata']}"
            with atomic.atomic_path(directory / roles["metadata"]) as tmp:
                self.metadata.to_parquet(tmp, index=False)
            if self.features is not None:
                roles["features"] = f"features.{generation}{SUFFIXES['features']}"
                with atomic.atomic_path(directory / roles["features"]) as tmp:
                    np.save(tmp, self.features)
            manifest = {
                **self.manifest,
                "format_version": FORMAT_VERSION,
                "count": self.count,
                "store": self.store.describe(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "roles": roles,
                "files": {name: sha256(directory / name) for name in roles.values()},
            }
            if self.store.capabilities.stable_rows:
                manifest["ids_sha256"] = ids_digest(self.metadata["row"].to_numpy())
                manifest["next_row"] = self._next_row()
            atomic.write_json(directory / MANIFEST, manifest, indent=2)
        except BaseException:
            for name in roles.values():
                (directory / name).unlink(missing_ok=True)
            journal.unlink(missing_ok=True)
            if created and not any(directory.iterdir()):
                directory.rmdir()
            raise
        journal.unlink(missing_ok=True)
        self.manifest = manifest
        self.store.commit()
        if old is not None:  # the previous generation: ours by its manifest and checksum
            previous = section(old)
            warning = manifest_store(old).release(previous, manifest["store"])
            if warning:
                logging.getLogger(__name__).warning(warning)
            for name, digest in old["files"].items():
                path = directory / name
                if name not in manifest["files"] and path.is_file() and sha256(path) == digest:
                    path.unlink()

    def _next_row(self) -> int:
        """Stable row ids are never reused: the next append starts past every row ever
        committed (and past the rows of a rolled-back append)."""
        top = int(self.metadata["row"].max()) + 1 if len(self.metadata) else 0
        return max(top, int(self.manifest.get("next_row", 0)))

    @classmethod
    def load(
        cls,
        directory: str | Path,
        verify: bool = True,
        writer: bool = False,
        uri: str | None = None,
    ) -> GalleryIndex:
        """Open and validate an index. ``writer`` (export, append, removal; under the folder's
        lock): first undo or finish what a killed writer journalled. ``uri``: reach the
        store's server at another address than the manifest's."""
        directory = Path(directory)
        if not directory.is_dir():
            raise IndexFormatError(f"{directory}: index directory not found")
        manifest_path = directory / MANIFEST
        if not manifest_path.is_file():
            raise IndexFormatError(
                f"{manifest_path}: missing (not an index directory, or an interrupted export)"
            )
        parsed, manifest = read_manifest_file(manifest_path)  # every field checked, names plain
        # a manifest written before the store seam has no section: it is the legacy store's
        manifest = {**manifest, "store": section(manifest)}
        kind = manifest_store(manifest)
        roles = parsed.role_files()
        for role in kind.capabilities.files:
            if role not in roles:
                raise IndexFormatError(f"{manifest_path}: field roles.{role}: missing")
        if kind.capabilities.stable_rows and manifest.get("ids_sha256") is None:
            raise IndexFormatError(f"{manifest_path}: field ids_sha256: missing (the store's "
                                   "row ids are checked against it)")  # fmt: skip
        for name, expected in parsed.files.items():
            path = directory / name
            if not path.is_file():
                raise IndexFormatError(f"{path}: missing")
            if verify and sha256(path) != expected:
                raise IndexFormatError(f"{path}: checksum mismatch (file changed or corrupt)")
        metadata = read_metadata(directory / roles["metadata"])
        store = kind.open(directory, manifest, roles, writer, uri)
        rows = metadata["row"].to_numpy()
        if writer:
            store.recover(directory, rows)
        store.check(directory, rows, manifest, verify)
        if store.dim != manifest["dim"] or len(metadata) != manifest["count"]:
            raise IndexFormatError(
                f"{directory}: index ({store.dim}-d), metadata ({len(metadata)} rows) and "
                f"manifest ({manifest['dim']}-d, {manifest['count']}) disagree"
            )
        features = (
            read_features(directory / roles["features"], len(metadata), store.dim)
            if "features" in roles
            else None
        )
        return cls(store, metadata, manifest, features)

    # ----------------------------------------------------------------------------- use
    def check_compatible(
        self, dim: int, metric: str = "cosine", model_hash: str | None = None
    ) -> None:
        if dim != self.manifest["dim"]:
            raise IndexFormatError(
                f"embedding dimension {dim} does not match the index ({self.manifest['dim']})"
            )
        if metric != self.manifest["metric"]:
            raise IndexFormatError(
                f"metric {metric!r} does not match the index ({self.manifest['metric']!r})"
            )
        if (
            model_hash is not None
            and self.manifest.get("model_hash")
            and model_hash != self.manifest["model_hash"]
        ):
            raise IndexFormatError(
                f"model hash {model_hash[:12]}… differs from the index's {self.manifest['model_hash'][:12]}…: "
                "embeddings of different models are not comparable"
            )

    def append(
        self, features, paths, pids=None, camids=None, model_hash: str | None = None, progress=None
    ) -> None:
        features = _normalize(features)
        self.check_compatible(features.shape[1], "cosine", model_hash)
        n = len(features)
        start = self._next_row() if self.store.capabilities.stable_rows else self.count
        extra = _metadata(np.arange(start, start + n), paths, pids, camids)
        self.store.add(features, extra["row"].to_numpy(), extra["pid"].to_numpy(),
                       extra["camid"].to_numpy(), list(extra["path"]), progress)  # fmt: skip
        self.metadata = pd.concat([self.metadata, extra], ignore_index=True)
        if self.features is not None:
            self.features = np.vstack([self.features, features])

    def remove(self, drop: np.ndarray) -> int:
        """Remove the rows where ``drop`` is True (right to be forgotten, mistaken enrolment).

        The store removes them its way (``remove``, given the kept exact vectors when the index
        has them): a file is rebuilt without them, a server deletes them once the manifest
        without them commits (``save``).
        Rows are renumbered 0..n−1 unless the store's row ids are stable. Returns the number
        removed.
        """
        drop = np.asarray(drop, dtype=bool)
        removed = int(drop.sum())
        if removed == 0:
            return 0
        if removed == len(drop):
            raise IndexFormatError("removing every vector would leave an empty index")
        keep = ~drop
        rows = self.metadata["row"].to_numpy()
        self.store.remove(rows[drop], self.features)
        new_rows = (
            rows[keep]
            if self.store.capabilities.stable_rows
            else np.arange(int(keep.sum()), dtype=np.int64)
        )
        self.metadata = self.metadata[keep].reset_index(drop=True)
        self.metadata["row"] = new_rows
        if self.features is not None:
            self.features = np.ascontiguousarray(self.features[keep])
        self.manifest["removed"] = int(self.manifest.get("removed", 0)) + removed
        return removed

    def search(
        self,
        features,
        k: int = 10,
        query_camids=None,
        exclude_same_camera: bool = False,
        nprobe: int | None = None,
        ef: int | None = None,
    ) -> pd.DataFrame:
        """Top-k per query: a table (query, rank, score, row, path, pid, camid).

        The one "fetch more until k hits survive" loop: a hit survives when the metadata lists
        its row (a store shared with a write in flight may hold rows the manifest does not
        yet) and, for stores that do not filter inside the search, when it is not excluded
        (its camera is the query's). Queries short of k hits are searched again, alone, with
        four times as many candidates, until the whole gallery was asked for."""
        features = _normalize(features)
        self.check_compatible(features.shape[1])
        n, total, metadata = len(features), self.count, self.metadata
        exclude = None
        if exclude_same_camera and query_camids is not None:
            exclude = NotEqual("camid", np.asarray(query_camids, dtype=np.int64))
        after = exclude is not None and not self.store.capabilities.filters_inside
        options = SearchOptions(nprobe, ef)
        stored = metadata["row"].to_numpy()  # increasing: rows are appended in order
        field = metadata[exclude.field].to_numpy() if after else None
        hits = np.full((n, k), -1, dtype=np.int64)  # positions in the metadata
        hit_scores = np.zeros((n, k), dtype=np.float32)
        fetch = min(total, max(4 * k, k + 64) if after else k)
        pending = np.arange(n)
        while len(pending):
            part = None if exclude is None else NotEqual(exclude.field, exclude.values[pending])
            scores, rows = self.store.search(features[pending], fetch, part, options)
            at = np.minimum(np.searchsorted(stored, rows), len(stored) - 1)
            ok = (rows >= 0) & (stored[at] == rows)
            if after:
                values = exclude.values[pending][:, None]
                ok &= (values < 0) | (field[at] != values)
            done = (ok.sum(axis=1) >= k) | (fetch >= total)
            for i in np.flatnonzero(done):
                kept = np.flatnonzero(ok[i])[:k]
                hits[pending[i], : len(kept)] = at[i, kept]
                hit_scores[pending[i], : len(kept)] = scores[i, kept]
            pending = pending[~done]
            fetch = min(total, fetch * 4)
        query, column = np.nonzero(hits >= 0)
        position = hits[query, column]
        return pd.DataFrame(
            {
                "query": query.astype(np.int64),
                "rank": (column + 1).astype(np.int64),
                "score": hit_scores[query, column].astype(np.float64),
                "row": stored[position].astype(np.int64),
                "path": metadata["path"].to_numpy()[position],
                "pid": metadata["pid"].to_numpy()[position],
                "camid": metadata["camid"].to_numpy()[position],
            }
        )

    def recall_at(self, queries: np.ndarray, ks=(1, 10), nprobe=None, ef=None) -> dict:
        """Recall@k of this index against exact search over the stored vectors (needs features)."""
        if self.features is None:
            raise IndexFormatError("recall needs the exact vectors: export with --keep-features")
        queries = _normalize(queries)
        kmax = max(ks)
        positions = exact_top_k(self.features, queries, kmax)
        truth = self.metadata["row"].to_numpy()[positions]
        _, found = self.store.search(queries, kmax, None, SearchOptions(nprobe, ef))
        return {
            f"recall@{k}": float(
                np.mean([len(set(t[:k]) & set(f[:k])) / k for t, f in zip(truth, found)])
            )
            for k in ks
        }
