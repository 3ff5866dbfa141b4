"""A persistent, searchable gallery: FAISS index + metadata table + manifest, in one directory.

Layout of ``INDEX_DIR`` (``GEN`` is a fresh generation tag at every save)::

    manifest.json          format version, dim, metric and normalisation, factory,
                           preprocessing, model hash, library versions, counts, the data files
                           of each role and the SHA-256 of each, creation time
    index.GEN.faiss        the FAISS index (factory string: Flat, IVF…,Flat, IVF…,PQ…, HNSW…)
    metadata.GEN.parquet   one row per vector: row, path, pid, camid (-1 where unknown)
    features.GEN.npy       optional (--keep-features): exact vectors, for recall reports and
                           append into approximate indexes

Vectors are L2-normalised embeddings searched by inner product (= cosine). A save writes the
new generation's files beside the old ones, then replaces ``manifest.json`` atomically (the
commit point), then removes the old generation's files (listed, with checksums, by the old
manifest). A crash at any moment leaves the old index or the new one, never a mix, and the
folder's other files are never touched. ``load`` verifies versions and checksums before use;
format-1 indexes (fixed names ``index.faiss``, ``metadata.parquet``, ``features.npy``) still
load.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from importlib.metadata import version as package_version
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import torch

from .. import atomic
from ..errors import OutputError, ReidError
from ..evaluation.postprocess import l2_normalize
from ..outputs import sha256

FORMAT_VERSION = 2  # 1: fixed file names (still read); 2: generation-named data files
READABLE_VERSIONS = (1, 2)
#: each role's file: ``ROLE.GEN.SUFFIX`` in format 2, ``ROLE.SUFFIX`` in format 1
SUFFIXES = {"index": ".faiss", "metadata": ".parquet", "features": ".npy"}
MANIFEST = "manifest.json"
_PENDING = ".pending.json"


class IndexFormatError(ReidError):
    """A missing, corrupt or mismatched index directory; the message names the file."""


def _versions() -> dict:
    return {
        "reid": package_version("reid"),
        "faiss": faiss.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise IndexFormatError(f"features must be a finite 2-D array, got shape {x.shape}")
    return l2_normalize(x)


def parse_factory(factory: str, dim: int | None = None, count: int | None = None) -> None:
    """Check a FAISS factory string before any work: it parses (for ``dim`` when known), and an
    IVF index has no more lists than the gallery has vectors to train them (``count``)."""
    if not isinstance(factory, str) or not factory.strip():
        raise IndexFormatError(
            "--index: empty FAISS factory string (e.g. Flat, IVF256,Flat, HNSW32)"
        )
    if dim is not None:
        try:
            faiss.index_factory(int(dim), factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise IndexFormatError(
                f"--index {factory!r}: not a FAISS factory string for {dim}-d vectors "
                f"({str(exc).strip().splitlines()[-1].rsplit(': ', 1)[-1]})"
            ) from None
    lists = re.search(r"IVF(\d+)", factory)
    if lists and count is not None and count < int(lists.group(1)):
        raise IndexFormatError(
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


def read_manifest(directory: Path) -> dict | None:
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(manifest, dict) and "format_version" in manifest and "files" in manifest:
        return manifest
    return None


def is_index_dir(directory: Path) -> bool:
    """True when ``directory`` holds an index manifest of this format (proof that we wrote it)."""
    return read_manifest(Path(directory)) is not None


def index_file(directory: str | Path, role: str) -> Path:
    """The file of ``role`` (index, metadata, features) of the index in ``directory``."""
    manifest = read_manifest(Path(directory))
    if manifest is None:
        raise IndexFormatError(f"{directory}: not an index (no manifest)")
    return Path(directory) / role_files(manifest)[role]


def role_files(manifest: dict) -> dict:
    """role → file name of an index's data files (format 1 used fixed names)."""
    if "roles" in manifest:
        return dict(manifest["roles"])
    return {
        role: role + suffix
        for role, suffix in SUFFIXES.items()
        if role + suffix in manifest["files"]
    }


def check_index_target(directory: str | Path) -> None:
    """An index may be written into a new folder, or into one whose ``manifest.json`` is absent
    or an index manifest; the folder's other files are kept whatever they are."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"--out {directory}: exists and is not a folder")
    path = directory / MANIFEST
    if (path.exists() or path.is_symlink()) and not is_index_dir(directory):
        raise OutputError(
            f"--out {directory}: {MANIFEST} already exists and is not an index manifest; "
            "choose another folder"
        )


def clean_index_leftovers(directory: Path) -> None:
    """What a killed save left: the data files its pending manifest (its journal) names and the
    committed manifest does not, then its temps. Only a dead writer's leftovers are touched."""
    manifest = read_manifest(directory)
    listed = set(manifest["files"]) if manifest else set()
    for pending in directory.glob(atomic.TEMP_PREFIX + "*" + _PENDING):
        pid = atomic.temp_owner(pending.name)
        if pid is None or atomic.process_alive(pid):
            continue
        try:
            names = json.loads(pending.read_text()).get("files", [])
        except (OSError, ValueError):
            names = []
        for name in names:
            if name not in listed and "/" not in name and (directory / name).is_file():
                (directory / name).unlink()
        pending.unlink(missing_ok=True)
    atomic.clean_stale_temps(directory)


class GalleryIndex:
    def __init__(
        self,
        index: faiss.Index,
        metadata: pd.DataFrame,
        manifest: dict,
        features: np.ndarray | None = None,
    ):
        self.index, self.metadata, self.manifest, self.features = (
            index,
            metadata,
            manifest,
            features,
        )

    # ------------------------------------------------------------------ build / save / load
    @classmethod
    def build(
        cls,
        features,
        paths,
        pids=None,
        camids=None,
        *,
        factory="Flat",
        model_hash="",
        preprocessing=None,
        keep_features=False,
    ) -> GalleryIndex:
        features = _normalize(features)
        n = len(features)
        if n == 0:
            raise IndexFormatError("the gallery is empty: nothing to index")
        metadata = pd.DataFrame(
            {
                "row": np.arange(n, dtype=np.int64),
                "path": [str(p) for p in paths],
                "pid": np.asarray(pids if pids is not None else [-1] * n, dtype=np.int64),
                "camid": np.asarray(camids if camids is not None else [-1] * n, dtype=np.int64),
            }
        )
        index = build_faiss_index(features, factory)
        manifest = {
            "format_version": FORMAT_VERSION,
            "dim": int(features.shape[1]),
            "metric": "cosine",
            "normalized": True,
            "factory": factory,
            "preprocessing": preprocessing or {},
            "model_hash": model_hash,
            # search opens hits by these paths: absolute ones work from any working directory
            "paths": "absolute"
            if all(os.path.isabs(p) for p in metadata["path"])
            else "relative to the export's working directory",
            "versions": _versions(),
            "count": n,
        }
        return cls(index, metadata, manifest, features if keep_features else None)

    def save(self, directory: str | Path) -> None:
        """Commit this index to ``directory``: new data files under fresh generation names, then
        the manifest atomically (the commit point: readers and a crash see the old index or the
        new one), then the old generation's files, which the old manifest lists. The folder's
        other files are never touched."""
        directory = Path(directory)
        check_index_target(directory)
        created = not directory.exists()
        directory.mkdir(parents=True, exist_ok=True)
        clean_index_leftovers(directory)
        old = read_manifest(directory)
        generation = secrets.token_hex(4)
        writers = {
            "index": lambda tmp: faiss.write_index(self.index, str(tmp)),
            "metadata": lambda tmp: self.metadata.to_parquet(tmp, index=False),
        }
        if self.features is not None:
            writers["features"] = lambda tmp: np.save(tmp, self.features)
        roles = {role: f"{role}.{generation}{SUFFIXES[role]}" for role in writers}
        journal = atomic.temp_path(directory / MANIFEST, _PENDING)
        journal.write_text(json.dumps({"files": list(roles.values())}))
        try:
            for role, write in writers.items():
                with atomic.atomic_path(directory / roles[role]) as tmp:
                    write(tmp)
            manifest = {
                **self.manifest,
                "format_version": FORMAT_VERSION,
                "count": int(self.index.ntotal),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "roles": roles,
                "files": {name: sha256(directory / name) for name in roles.values()},
            }
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
        if old is not None:  # the previous generation: ours by its manifest and checksum
            for name, digest in old["files"].items():
                path = directory / name
                if name not in manifest["files"] and path.is_file() and sha256(path) == digest:
                    path.unlink()

    @classmethod
    def load(cls, directory: str | Path, verify: bool = True) -> GalleryIndex:
        directory = Path(directory)
        if not directory.is_dir():
            raise IndexFormatError(f"{directory}: index directory not found")
        manifest_path = directory / MANIFEST
        if not manifest_path.is_file():
            raise IndexFormatError(
                f"{manifest_path}: missing (not an index directory, or an interrupted export)"
            )
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise IndexFormatError(f"{manifest_path}: not valid JSON ({exc})") from None
        if (
            not isinstance(manifest, dict)
            or manifest.get("format_version") not in READABLE_VERSIONS
        ):
            version = manifest.get("format_version") if isinstance(manifest, dict) else None
            raise IndexFormatError(
                f"{manifest_path}: format version {version!r}, this reid reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}"
            )
        for name, expected in manifest.get("files", {}).items():
            path = directory / name
            if not path.is_file():
                raise IndexFormatError(f"{path}: missing")
            if verify and sha256(path) != expected:
                raise IndexFormatError(f"{path}: checksum mismatch (file changed or corrupt)")
        roles = role_files(manifest)
        if "index" not in roles or "metadata" not in roles:
            raise IndexFormatError(f"{manifest_path}: lists no index or metadata file")
        try:
            index = faiss.read_index(str(directory / roles["index"]))
            metadata = pd.read_parquet(directory / roles["metadata"])
        except Exception as exc:
            raise IndexFormatError(f"{directory}: cannot read index files ({exc})") from None
        if (
            index.d != manifest["dim"]
            or index.ntotal != len(metadata)
            or index.ntotal != manifest["count"]
        ):
            raise IndexFormatError(
                f"{directory}: index ({index.d}-d, {index.ntotal} vectors), metadata ({len(metadata)} rows) "
                f"and manifest ({manifest['dim']}-d, {manifest['count']}) disagree"
            )
        features = np.load(directory / roles["features"]) if "features" in roles else None
        return cls(index, metadata, manifest, features)

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
        self, features, paths, pids=None, camids=None, model_hash: str | None = None
    ) -> None:
        features = _normalize(features)
        self.check_compatible(features.shape[1], "cosine", model_hash)
        n, start = len(features), int(self.index.ntotal)
        self.index.add(features)
        extra = pd.DataFrame(
            {
                "row": np.arange(start, start + n, dtype=np.int64),
                "path": [str(p) for p in paths],
                "pid": np.asarray(pids if pids is not None else [-1] * n, dtype=np.int64),
                "camid": np.asarray(camids if camids is not None else [-1] * n, dtype=np.int64),
            }
        )
        self.metadata = pd.concat([self.metadata, extra], ignore_index=True)
        if self.features is not None:
            self.features = np.vstack([self.features, features])

    def remove(self, drop: np.ndarray) -> int:
        """Remove the rows where ``drop`` is True (right to be forgotten, mistaken enrolment).

        The index is rebuilt from the remaining vectors (same factory), so removed vectors are
        gone from the file, not just hidden: from the stored exact features when kept, else from
        the index's own exact copies (Flat, IVF-Flat, HNSW-Flat). Compressed indexes (PQ, SQ)
        without ``features.npy`` cannot give back exact vectors and are refused. Rows are
        renumbered 0..n−1. Returns the number removed.
        """
        drop = np.asarray(drop, dtype=bool)
        removed = int(drop.sum())
        if removed == 0:
            return 0
        if removed == len(drop):
            raise IndexFormatError("removing every vector would leave an empty index")
        factory = self.manifest["factory"]
        if self.features is not None:
            vectors = self.features
        elif "PQ" in factory or "SQ" in factory:
            raise IndexFormatError(
                f"a {factory} index holds compressed vectors only; removal needs exact vectors "
                "(export with --keep-features, or re-export without those images)"
            )
        else:
            if "IVF" in factory:
                faiss.extract_index_ivf(self.index).make_direct_map()
            vectors = self.index.reconstruct_n(0, int(self.index.ntotal))
        keep = ~drop
        kept = np.ascontiguousarray(vectors[keep])
        self.index = build_faiss_index(kept, factory)
        self.metadata = self.metadata[keep].reset_index(drop=True)
        self.metadata["row"] = np.arange(len(self.metadata), dtype=np.int64)
        if self.features is not None:
            self.features = kept
        self.manifest["removed"] = int(self.manifest.get("removed", 0)) + removed
        return removed

    def search(
        self,
        features,
        k: int = 10,
        query_camids=None,
        exclude_same_camera: bool = False,
        nprobe: int | None = None,
    ) -> pd.DataFrame:
        """Top-k per query: a table (query, rank, score, row, path, pid, camid)."""
        features = _normalize(features)
        self.check_compatible(features.shape[1])
        if nprobe is not None and "IVF" in self.manifest["factory"]:
            faiss.extract_index_ivf(self.index).nprobe = nprobe
        total = int(self.index.ntotal)
        gallery_camids = self.metadata["camid"].to_numpy()
        fetch = min(total, k if not exclude_same_camera else max(4 * k, k + 64))
        while True:
            scores, rows = self.index.search(features, fetch)
            hits = []
            enough = True
            for q in range(len(features)):
                kept = 0
                for score, row in zip(scores[q], rows[q]):
                    if row < 0:
                        continue
                    if (
                        exclude_same_camera
                        and query_camids is not None
                        and query_camids[q] >= 0
                        and gallery_camids[row] == query_camids[q]
                    ):
                        continue
                    kept += 1
                    hits.append((q, kept, float(score), int(row)))
                    if kept == k:
                        break
                enough &= kept == min(k, total) or fetch == total
            if enough or fetch == total:
                break
            fetch = min(total, fetch * 4)
        table = pd.DataFrame(hits, columns=["query", "rank", "score", "row"])
        return table.join(self.metadata.set_index("row")[["path", "pid", "camid"]], on="row")

    def recall_at(self, queries: np.ndarray, ks=(1, 10)) -> dict:
        """Recall@k of this index against exact search over the stored vectors (needs features)."""
        if self.features is None:
            raise IndexFormatError("recall needs the exact vectors: export with --keep-features")
        queries = _normalize(queries)
        exact = faiss.IndexFlatIP(self.features.shape[1])
        exact.add(self.features)
        kmax = max(ks)
        _, truth = exact.search(queries, kmax)
        _, found = self.index.search(queries, kmax)
        return {
            f"recall@{k}": float(
                np.mean([len(set(t[:k]) & set(f[:k])) / k for t, f in zip(truth, found)])
            )
            for k in ks
        }
