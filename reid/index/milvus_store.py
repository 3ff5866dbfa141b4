"""A Milvus store: the gallery's vectors and fields in a collection on a Milvus server or
cluster (standalone or distributed: sharding and replication are Milvus's). The index folder
keeps the manifest, which points to the collection, and the metadata table; the collection
holds every row's ``row`` (primary key), ``pid``, ``camid``, ``path`` and vector, so the
toolkit's metadata lives in the collection's fields too.

Names: ``--collection NAME`` is an alias; each export creates a physical collection
``NAME_GEN`` and moves the alias to it when the manifest commits, then drops the old one (ours
by the manifest and the collection's description). Credentials come from the environment
(``MILVUS_TOKEN``: ``user:password`` or an API key), never from the URI or the manifest.

Writes are journalled like the FAISS files: before an append inserts, a journal in the index
folder names the rows it adds; before a removal, the rows it deletes (deleted only after the
manifest without them committed); before an export, the collection it creates. A writer that
dies leaves its journal; the next writer (export, append, removal) deletes the journal's rows
the committed metadata does not list and drops a created collection the manifest does not
name — the partial batch is rolled back, a committed removal is finished. In-process failures
roll back at once (the append's rows are deleted before the error is raised).
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from .. import atomic
from ..arguments import Int
from ..boundary import Open, parse
from .store import (
    EXACT,
    Capabilities,
    Flag,
    IndexFormatError,
    NotEqual,
    SearchOptions,
    StoreError,
    ids_digest,
    parse_pairs,
)

TOKEN_ENV = "MILVUS_TOKEN"
#: the exact and approximate index types a Milvus store builds (``--milvus-index``), each
#: with its build parameters' defaults and ranges (``--milvus-params``)
INDEX_TYPES = {
    "FLAT": {},
    "IVF_FLAT": {"nlist": (1024, Int(1, 65536))},
    "HNSW": {"M": (16, Int(2, 2048)), "efConstruction": (200, Int(1, 1 << 20))},
}
MARKER = "reid-gallery-index"
JOURNAL = ".milvus"  # journal files: .~reid.PID.XXXXXX.milvus.json
MAX_PATH = 4096
#: bulk insert batch size in bytes (vectors + paths): below the server's 64 MiB gRPC message
BATCH_BYTES = 16 << 20
_QUERY_PAGE = 16384
CONNECT_TIMEOUT_S = 10
#: how long one server call may take, retries included, before it is one error line (a server
#: that died mid-write: pymilvus alone retries for minutes); ``REID_MILVUS_TIMEOUT`` sets it
TIMEOUT_ENV = "REID_MILVUS_TIMEOUT"
DEFAULT_TIMEOUT_S = 60.0


def call_timeout() -> float:
    text = os.environ.get(TIMEOUT_ENV, "")
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86400:
        raise StoreError(f"{TIMEOUT_ENV}={text!r}: seconds, more than 0 and at most 86400")
    return value


#: journals this process's stores hold open; one of ours not in here was left to recovery
_OPEN_JOURNALS: set[str] = set()


def _abandoned(path: Path, pid: int) -> bool:
    return pid == os.getpid() and path.name not in _OPEN_JOURNALS


class _Timed:
    """A pymilvus object whose every call is bounded by ``call_timeout()`` and whose failures
    are one :class:`StoreError` line naming the server: the one place server calls go through."""

    def __init__(self, target, where: str):
        self._target, self._where = target, where

    def __getattr__(self, name):
        value = getattr(self._target, name)
        if not callable(value):
            return value

        def call(*args, **kwargs):
            # pymilvus bounds its retries by ``timeout`` only when it is an int
            kwargs.setdefault("timeout", max(1, math.ceil(call_timeout())))
            try:
                return value(*args, **kwargs)
            except StoreError:
                raise
            except Exception as exc:
                if type(exc).__module__.split(".")[0] != "pymilvus" and not isinstance(
                    exc, (TimeoutError, ConnectionError)
                ):
                    raise
                raise StoreError(
                    f"{self._where}: {name} failed ({_short(exc)}); the committed index is "
                    f"unchanged (a call waits at most {kwargs['timeout']:g} s: {TIMEOUT_ENV})"
                ) from None

        return call


def folder_identity(directory: Path) -> dict:
    """What tells an index folder from a copy of it: the host, the file system and the folder's
    inode (a copy has another inode; a move within one file system keeps it), and its path."""
    stat = os.stat(directory)
    return {"host": socket.gethostname(), "dev": int(stat.st_dev), "ino": int(stat.st_ino),
            "path": str(Path(directory).resolve())}  # fmt: skip


def same_folder(owner: dict, identity: dict) -> bool:
    return all(owner.get(k) == identity.get(k) for k in ("host", "dev", "ino"))


def check_uri(uri: str) -> None:
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https", "tcp", "grpc") or not parts.hostname:
        raise StoreError(f"--uri {uri!r}: expected http://HOST:PORT (e.g. http://127.0.0.1:19530)")
    if parts.username or parts.password or "token" in parts.query.lower():
        raise StoreError(
            f"--uri: credentials do not belong in the URI (they would be logged and stored); "
            f"set {TOKEN_ENV} in the environment"
        )


def check_collection_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,200}", name or ""):
        raise StoreError(
            f"--collection {name!r}: letters, digits and underscores, starting with a letter or _"
        )


def _pymilvus():
    try:
        import pymilvus
    except ImportError:
        raise StoreError(
            "--backend milvus needs the Milvus client: pip install 'reid[milvus]'"
        ) from None
    return pymilvus


@dataclass(frozen=True)
class MilvusOptions:
    uri: str
    collection: str
    index_type: str = "FLAT"
    params: dict = field(default_factory=dict)
    backend: str = "milvus"

    def describe(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"milvus:{self.index_type}" + (f"({extra})" if extra else "")


class MilvusSection(Open):
    """The manifest's ``store`` section of a Milvus index (what ``describe`` wrote)."""

    backend: str
    uri: str
    collection: str
    physical: str
    index_type: str = "FLAT"
    params: dict[str, int] = {}
    write_ts: int = 0


class MilvusStore:
    """Rows keep their ids (the primary key); the camera filter is an expression inside the
    search; writes are journalled, committed after the manifest, recovered by the next writer."""

    name = "milvus"
    summary = "a collection on a Milvus server or cluster; --out holds the manifest"
    capabilities = Capabilities(stable_rows=True, filters_inside=True)
    flags = (
        Flag("--uri", "uri", "Milvus server, e.g. http://127.0.0.1:19530 (credentials: "
             f"{TOKEN_ENV} in the environment, never the command line)"),
        Flag("--collection", "collection", "collection name (an alias the export manages)"),
        Flag("--milvus-index", "index_type", f"{', '.join(INDEX_TYPES)} (default FLAT)",
             metavar="TYPE"),
        Flag("--milvus-params", "params", "build parameters: nlist=1024 (IVF_FLAT), "
             "M=16,efConstruction=200 (HNSW)", metavar="K=V,…"),
    )  # fmt: skip

    def __init__(self, uri: str, alias: str, physical: str, dim: int, index_type: str,
                 params: dict, journal_dir: Path | None = None):  # fmt: skip
        self.uri, self.alias, self.physical, self.dim = uri, alias, physical, int(dim)
        self.index_type, self.params = index_type, dict(params)
        self.journal_dir = Path(journal_dir) if journal_dir is not None else None
        self._pending_delete: np.ndarray | None = None
        #: the server timestamp of our last write: reads ask for a view at least that new, not
        #: for the newest (Strong waits for the next time tick, ~200 ms per call)
        self.write_ts = 0
        self._replaces: str | None = None
        self._journal: Path | None = None
        self.owner: dict | None = None
        self._connect()

    # ------------------------------------------------------------------ connection
    def _connect(self) -> None:
        m = _pymilvus()
        self._using = f"reid-{os.getpid()}-{id(self)}"
        try:
            m.connections.connect(
                alias=self._using, uri=self.uri, token=os.environ.get(TOKEN_ENV, ""),
                timeout=CONNECT_TIMEOUT_S,
            )  # fmt: skip
        except Exception as exc:
            raise StoreError(
                f"--uri {self.uri}: cannot connect to Milvus ({_short(exc)})"
            ) from None

    def _collection(self, name: str | None = None):
        where = f"{self.uri} collection {name or self.physical}"
        make = _Timed(_pymilvus(), where).Collection  # the constructor asks the server too
        return _Timed(make(name or self.physical, using=self._using), where)

    def _utility(self):
        return _Timed(_pymilvus().utility, self.uri)

    def _has(self, name: str) -> bool:
        return self._utility().has_collection(name, using=self._using)

    def _description(self, name: str) -> dict:
        try:
            text = self._collection(name).description
            value = json.loads(text)
        except Exception:
            return {}
        return value if isinstance(value, dict) else {}

    # ------------------------------------------------------------------ create / open
    # ------------------------------------------------------------------ options
    @classmethod
    def parse_options(cls, given: dict) -> MilvusOptions:
        uri, collection = given.get("uri"), given.get("collection")
        if uri is None or collection is None:
            raise StoreError("--backend milvus needs --uri http://HOST:19530 and --collection NAME")
        check_uri(uri)
        check_collection_name(collection)
        index_type = (given.get("index_type") or "FLAT").upper()
        if index_type not in INDEX_TYPES:
            raise StoreError(
                f"--milvus-index {index_type!r}: choose one of {', '.join(INDEX_TYPES)}"
            )
        params = parse_pairs("--milvus-params", given.get("params"), INDEX_TYPES[index_type],
                             index_type)  # fmt: skip
        return MilvusOptions(uri, collection, index_type, params)

    @classmethod
    def check_search(cls, section: dict, search: SearchOptions) -> None:
        kind = str(section.get("index_type", "FLAT"))
        if search.nprobe is not None and kind != "IVF_FLAT":
            raise StoreError(f"--nprobe: applies to IVF indexes; this one is milvus:{kind}")
        if search.ef is not None and kind != "HNSW":
            raise StoreError(f"--ef: applies to HNSW indexes; this one is milvus:{kind}")

    @classmethod
    def versions(cls) -> dict:
        from importlib.metadata import version

        return {"pymilvus": version("pymilvus")}

    @classmethod
    def check_target(cls, options, directory, previous) -> None:
        """Before any work: the server answers and ``--collection`` is free or ours (and, when
        it points to the collection this folder's manifest names, this folder owns it)."""
        store = cls(options.uri, options.collection, "", 1, options.index_type, options.params)
        owned = previous.get("physical") if previous else None
        try:
            store._check_alias(
                options, owned, directory if directory and Path(directory).is_dir() else None
            )
        finally:
            store.close()

    @classmethod
    def check_fits(cls, options, dim, count) -> None:
        pass  # any width and count: the collection is made for the model's dimension

    def check_owner(self, name: str, directory: Path) -> None:
        """A collection belongs to the index folder that made it (recorded in its description
        and the manifest): a write from another folder (a copy: ``cp -a idx idx_bak``) would
        move the alias or drop the collection under the owner's manifest, so it is refused.
        Collections made before owners were recorded have none and are not checked."""
        owner = self._description(name).get("owner")
        if not isinstance(owner, dict) or not Path(directory).is_dir():
            return
        if not same_folder(owner, folder_identity(Path(directory))):
            raise StoreError(
                f"{directory}: its collection {name} on {self.uri} belongs to the index folder "
                f"{owner.get('path')} (host {owner.get('host')}); this folder is a copy, and "
                "writing from it would leave that index unloadable. Export this gallery to a "
                f"new --collection, or write from {owner.get('path')}"
            )

    def _check_alias(
        self, options, owned_physical: str | None, directory: Path | None = None
    ) -> str | None:
        current = self.resolve_alias()
        if current is not None and current != owned_physical:
            raise StoreError(
                f"--collection {options.collection}: already exists on {options.uri} and is not "
                "the collection this index folder points to; choose another name"
            )
        if current is not None and directory is not None:
            self.check_owner(current, directory)
        if current is None and self._has(options.collection):
            raise StoreError(
                f"--collection {options.collection}: a collection of that name exists on "
                f"{options.uri} (not made by this toolkit); choose another name"
            )
        return current

    @classmethod
    def create(cls, options, dim: int, directory: Path | None, model_hash: str,
               previous: dict | None) -> MilvusStore:  # fmt: skip
        """A new physical collection for an export to ``directory`` (its journal's folder).
        The alias may already exist only when it points to the collection the folder's
        committed manifest names (``previous``): anything else under that name belongs to
        someone else and is refused."""
        import secrets

        if directory is None:
            raise StoreError("a Milvus index needs its index folder (--out) to journal in")
        journal_dir = Path(directory)
        owned_physical = previous.get("physical") if previous else None

        physical = f"{options.collection}_{secrets.token_hex(4)}"
        store = cls(options.uri, options.collection, physical, dim, options.index_type,
                    options.params, journal_dir)  # fmt: skip
        current = store._check_alias(options, owned_physical, journal_dir)
        Path(journal_dir).mkdir(parents=True, exist_ok=True)  # the journal's folder, owning it
        store.owner = folder_identity(journal_dir)
        store._replaces = current
        store._begin({"create": physical, "replaces": current})
        m = _pymilvus()
        fields = [
            m.FieldSchema("row", m.DataType.INT64, is_primary=True),
            m.FieldSchema("pid", m.DataType.INT64),
            m.FieldSchema("camid", m.DataType.INT64),
            m.FieldSchema("path", m.DataType.VARCHAR, max_length=MAX_PATH),
            m.FieldSchema("vec", m.DataType.FLOAT_VECTOR, dim=int(dim)),
        ]
        description = json.dumps(
            {"marker": MARKER, "model_hash": model_hash, "dim": int(dim), "owner": store.owner}
        )
        schema = m.CollectionSchema(fields, description=description)
        _Timed(m, f"{store.uri} collection {physical}").Collection(
            physical, schema, using=store._using, consistency_level="Strong"
        )
        store._collection().create_index("vec", store._index_params())
        store._collection().load()
        return store

    @classmethod
    def open(cls, directory: Path, manifest: dict, files: dict, writer: bool = False,
             uri: str | None = None) -> MilvusStore:  # fmt: skip
        """Reconnect to the collection a manifest names and check it is the same one: our
        marker, the model hash and the dimension (``check`` compares its rows with the
        metadata's). ``writer``: the journal goes to ``directory``, which must own it."""
        directory = Path(directory)
        section = parse(MilvusSection, manifest.get("store"), directory / "manifest.json",
                        IndexFormatError).model_dump()  # fmt: skip
        try:
            return cls._open(section, manifest, directory if writer else None, uri)
        except StoreError as exc:
            if str(exc).startswith(f"{directory}:"):
                raise
            raise IndexFormatError(f"{directory}: {exc}") from None

    @classmethod
    def _open(cls, description, manifest, journal_dir, uri) -> MilvusStore:
        store = cls(uri or description["uri"], description["collection"], description["physical"],
                    manifest["dim"], description["index_type"], description.get("params", {}),
                    journal_dir)  # fmt: skip
        where = f"{store.uri} collection {store.physical}"
        if not store._has(store.physical):
            raise StoreError(f"{where}: not found (dropped behind the manifest's back?)")
        info = store._description(store.physical)
        if info.get("marker") != MARKER:
            raise StoreError(f"{where}: not a collection this toolkit made")
        if (
            info.get("model_hash") != manifest.get("model_hash")
            or info.get("dim") != manifest["dim"]
        ):
            raise StoreError(
                f"{where}: made for another model or dimension than the manifest's "
                f"({str(info.get('model_hash'))[:12]}…, {info.get('dim')}-d)"
            )
        if journal_dir is not None:  # a writer: only from the folder that owns the collection
            store.check_owner(store.physical, journal_dir)
        store.owner = info.get("owner")
        store.write_ts = int(description.get("write_ts", 0))
        store._collection().load()
        return store

    def check(
        self, directory: Path, rows: np.ndarray, manifest: dict, thorough: bool = True
    ) -> None:
        """The collection holds the committed rows: their count, and (``thorough``) the ids'
        checksum. A write in flight (or one to recover) is not checked: search drops its rows."""
        if self.journal_dir is None and (
            self.live_journal(directory) or self.dead_journals(directory)
        ):
            return
        stored = self.count()
        if (
            stored == len(rows)
            and thorough
            and ids_digest(self.rows()) != manifest.get("ids_sha256")
        ):
            raise IndexFormatError(
                f"{directory}: collection {self.physical} holds other rows than the manifest "
                "lists (changed behind the manifest's back)"
            )
        if stored != len(rows):
            raise IndexFormatError(
                f"{directory}: collection {self.physical} holds {stored} vectors, the "
                f"manifest lists {len(rows)} (changed behind the manifest's back)"
            )

    def _read(self) -> dict:
        if self.write_ts:
            return {"consistency_level": "Customized", "guarantee_timestamp": self.write_ts}
        return {"consistency_level": "Strong"}

    def _wrote(self, result) -> None:
        self.write_ts = max(self.write_ts, int(getattr(result, "timestamp", 0) or 0))

    def resolve_alias(self) -> str | None:
        """The physical collection the alias points to, or None when there is no such alias."""
        if not self._has(self.alias):
            return None
        name = self._collection(self.alias).describe().get("collection_name")
        return name if name and name != self.alias else None

    def _index_params(self) -> dict:
        return {"index_type": self.index_type, "metric_type": "IP", "params": dict(self.params)}

    # ------------------------------------------------------------------ journal
    def _begin(self, entry: dict) -> None:
        if self.journal_dir is None:
            return
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        if self._journal is None:
            self._journal = atomic.temp_path(self.journal_dir / "manifest.json", JOURNAL)
            state = {"physical": self.physical}
            _OPEN_JOURNALS.add(self._journal.name)
        else:
            state = json.loads(self._journal.read_text())
        for key, value in entry.items():
            if key == "rows":
                state.setdefault("rows", []).extend(value)
            else:
                state[key] = value
        self._journal.write_text(json.dumps(state))

    def _end(self) -> None:
        if self._journal is not None:
            self._journal.unlink(missing_ok=True)
            self._release()

    def _release(self) -> None:
        """Leave the journal to the next writer (this process's included): its rows could not
        be rolled back here."""
        if self._journal is not None:
            _OPEN_JOURNALS.discard(self._journal.name)
            self._journal = None

    @staticmethod
    def dead_journals(directory: Path) -> list[tuple[Path, dict]]:
        found = []
        for path in Path(directory).glob(atomic.TEMP_PREFIX + "*" + JOURNAL + ".json"):
            pid = atomic.temp_owner(path.name)
            if pid is not None and atomic.process_alive(pid) and not _abandoned(path, pid):
                continue
            try:
                found.append((path, json.loads(path.read_text())))
            except (OSError, ValueError):
                found.append((path, {}))
        return found

    @staticmethod
    def live_journal(directory: Path) -> bool:
        for path in Path(directory).glob(atomic.TEMP_PREFIX + "*" + JOURNAL + ".json"):
            pid = atomic.temp_owner(path.name)
            if pid is not None and atomic.process_alive(pid) and pid != os.getpid():
                return True
        return False

    def recover(self, directory: Path, known_rows: np.ndarray) -> int:
        """Undo or finish what dead writers journalled: delete their rows the committed
        metadata (``known_rows``) does not list, drop collections they created that the
        manifest does not name. Returns the number of rows deleted."""
        deleted = 0
        known = set(np.asarray(known_rows, dtype=np.int64).tolist())
        for path, state in self.dead_journals(directory):
            for name in (state.get("create"), state.get("replaces")):
                if (
                    name
                    and name != self.physical
                    and self._has(name)
                    and (self._description(name).get("marker") == MARKER)
                ):
                    self._utility().drop_collection(name, using=self._using)
            if state.get("physical") == self.physical:
                stale = [r for r in state.get("rows", []) if r not in known]
                if stale:
                    self._delete(np.asarray(stale, dtype=np.int64))
                    deleted += len(stale)
            path.unlink(missing_ok=True)
        return deleted

    # ------------------------------------------------------------------ data
    def count(self) -> int:
        result = self._collection().query(expr="", output_fields=["count(*)"], **self._read())
        return int(result[0]["count(*)"])

    def rows(self) -> np.ndarray:
        """Every stored row id (the manifest's ids checksum is taken over these)."""
        iterator = self._collection().query_iterator(
            batch_size=_QUERY_PAGE, expr="row >= 0", output_fields=["row"], **self._read()
        )  # fmt: skip
        found = []
        try:
            while True:
                page = iterator.next()
                if not page:
                    break
                found.append(np.fromiter((r["row"] for r in page), dtype=np.int64, count=len(page)))
        finally:
            iterator.close()
        return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)

    def add(self, vectors, rows, pids, camids, paths, progress=None) -> None:
        """Insert in batches of about ``BATCH_BYTES``, column-wise; on any failure the rows of
        this call are deleted again before the error propagates (the collection is as before)."""
        rows = np.asarray(rows, dtype=np.int64)
        too_long = [p for p in paths if len(p.encode()) > MAX_PATH]
        if too_long:
            raise StoreError(f"{too_long[0]}: path longer than Milvus's {MAX_PATH} bytes")
        self._begin({"rows": rows.tolist()})
        per_row = 4 * self.dim + 24 + max((len(p) for p in paths), default=0)
        step = max(1, BATCH_BYTES // per_row)
        collection = self._collection()
        try:
            for start in range(0, len(rows), step):
                end = min(len(rows), start + step)
                result = collection.insert([
                    rows[start:end], np.asarray(pids[start:end], dtype=np.int64),
                    np.asarray(camids[start:end], dtype=np.int64), list(paths[start:end]),
                    np.ascontiguousarray(vectors[start:end], dtype=np.float32),
                ])  # fmt: skip
                self._wrote(result)
                if progress is not None:
                    progress(end, len(rows))
            collection.flush()
        except BaseException:
            try:
                self._delete(rows)
            except Exception:
                self._release()  # the server is gone: the next writer deletes the rows
            else:
                self._end()
            raise

    def _delete(self, rows: np.ndarray) -> None:
        collection = self._collection()
        for start in range(0, len(rows), _QUERY_PAGE):
            chunk = ",".join(str(int(r)) for r in rows[start : start + _QUERY_PAGE])
            self._wrote(collection.delete(f"row in [{chunk}]"))
        collection.flush()

    def remove(self, rows: np.ndarray, exact: np.ndarray | None = None) -> None:
        """Journal the rows; they are deleted after the manifest without them commits."""
        rows = np.asarray(rows, dtype=np.int64)
        self._begin({"rows": rows.tolist()})
        self._pending_delete = (
            rows if self._pending_delete is None else np.concatenate([self._pending_delete, rows])
        )

    def commit(self) -> None:
        """The manifest now names this collection and its rows: apply pending deletions, point
        the alias here, drop the collection this export replaced, close the journal."""
        if self._pending_delete is not None and len(self._pending_delete):
            self._delete(self._pending_delete)
        self._pending_delete = None
        utility = self._utility()
        current = self.resolve_alias()
        if current is None:
            utility.create_alias(self.physical, self.alias, using=self._using)
        elif current != self.physical:
            utility.alter_alias(self.physical, self.alias, using=self._using)
        if self._replaces and self._replaces != self.physical and self._has(self._replaces):
            if self._description(self._replaces).get("marker") == MARKER:
                utility.drop_collection(self._replaces, using=self._using)
        self._replaces = None
        self._end()

    def abandon(self) -> None:
        """A build that will not be committed (an error before the manifest): drop what it made."""
        if self._journal is None:
            return
        state = json.loads(self._journal.read_text())
        if state.get("create") and self._has(state["create"]):
            self._utility().drop_collection(state["create"], using=self._using)
        elif state.get("rows") and self._pending_delete is None:
            self._delete(np.asarray(state["rows"], dtype=np.int64))
        self._pending_delete = None
        self._end()

    def vectors(self) -> np.ndarray | None:
        return None  # exact vectors stay on the server; recall uses the kept features

    def search(self, queries, k, exclude: NotEqual | None = None, search: SearchOptions = EXACT):
        params = {}
        if self.index_type == "IVF_FLAT":
            params["nprobe"] = int(search.nprobe or 16)
        if self.index_type == "HNSW":
            params["ef"] = max(int(search.ef or 64), k)
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_rows = np.full((len(queries), k), -1, dtype=np.int64)
        groups = {None: np.arange(len(queries))}
        if exclude is not None:
            values = np.asarray(exclude.values, dtype=np.int64)
            groups = {
                int(v) if v >= 0 else None: np.flatnonzero(values == v) for v in np.unique(values)
            }
        collection = self._collection()
        for value, members in groups.items():
            expr = f"{exclude.field} != {value}" if value is not None else ""
            for start in range(0, len(members), 1024):
                chunk = members[start : start + 1024]
                result = collection.search(
                    data=[q for q in np.ascontiguousarray(queries[chunk], dtype=np.float32)],
                    anns_field="vec",
                    param={"metric_type": "IP", "params": params},
                    limit=k,
                    expr=expr or None,
                    output_fields=[],
                    **self._read(),
                )
                for q, hits in zip(chunk, result):
                    n = len(hits.ids)
                    out_rows[q, :n] = hits.ids
                    out_scores[q, :n] = hits.distances
        return out_scores, out_rows

    def planned(self, generation: str) -> dict:
        return {}  # the vectors live on the server

    def save(self, directory: Path, generation: str) -> dict:
        """Flush, and wait until the server has built the index over every sealed segment:
        until then Milvus answers from an interim index (approximate even for ``FLAT``
        neighbours' types), so an export is done only when its index type is in force."""
        self._collection().flush()
        self._utility().wait_for_index_building_complete(self.physical, using=self._using)
        return {}

    def describe(self) -> dict:
        host = urlsplit(self.uri)
        return {
            "backend": self.name,
            "uri": f"{host.scheme}://{host.hostname}" + (f":{host.port}" if host.port else ""),
            "collection": self.alias,
            "physical": self.physical,
            "index_type": self.index_type,
            "params": self.params,
            "metric": "IP",
            "write_ts": self.write_ts,
            **({"owner": self.owner} if self.owner else {}),
        }

    def close(self) -> None:
        try:
            _pymilvus().connections.disconnect(self._using)
        except Exception:
            pass

    @classmethod
    def release(cls, previous: dict, current: dict) -> str | None:
        """After a commit that replaced the index ``previous`` described: when the new one no
        longer points to its collection (another backend, server or collection), drop it."""
        if (previous["uri"], previous["physical"]) == (current.get("uri"), current.get("physical")):
            return None
        return _drop_replaced(previous)


def _drop_replaced(section: dict) -> str | None:
    """Drop the collection ``section`` names when it is ours (our marker) and no alias of a
    committed index points to it. Returns a warning instead of raising: the new index is in."""
    try:
        store = MilvusStore(section["uri"], section["collection"], section["physical"], 1,
                            section.get("index_type", "FLAT"), {})  # fmt: skip
    except StoreError as exc:
        return f"the replaced collection {section['physical']} was not dropped: {exc}"
    try:
        if (
            store._has(section["physical"])
            and store._description(section["physical"]).get("marker") == MARKER
        ):
            if store.resolve_alias() == section["physical"]:
                store._utility().drop_alias(section["collection"], using=store._using)
            store._utility().drop_collection(section["physical"], using=store._using)
    except Exception as exc:
        return f"the replaced collection {section['physical']} was not dropped: {_short(exc)}"
    finally:
        store.close()
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:200] if text else type(exc).__name__
