"""A persistent, searchable gallery: FAISS index + metadata table + manifest, in one directory.

Layout of ``INDEX_DIR``::

    index.faiss        the FAISS index (factory string: Flat, IVF…,Flat, IVF…,PQ…, HNSW…)
    metadata.parquet   one row per vector: row, path, pid, camid (pid/camid -1 where unknown)
    manifest.json      format version, dim, metric and normalisation, factory, preprocessing,
                       model hash, library versions, counts, SHA-256 of every file, creation time
    features.npy       optional (--keep-features): exact vectors, for recall reports and append
                       into approximate indexes

Vectors are L2-normalised embeddings searched by inner product (= cosine). The directory is
written to a temporary sibling and renamed into place, so a crash never leaves a half-written
index under the final name; ``load`` verifies versions and checksums before use.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from importlib.metadata import version as package_version
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import torch

from ..errors import ReidError
from ..evaluation.postprocess import l2_normalize
from ..outputs import check_replaceable

FORMAT_VERSION = 1
FILES = ("index.faiss", "metadata.parquet")
INDEX_FILES = {*FILES, "features.npy", "manifest.json"}


class IndexFormatError(ReidError):
    """A missing, corrupt or mismatched index directory; the message names the file."""


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def build_faiss_index(
    features: np.ndarray, factory: str = "Flat", use_gpu: bool | None = None
) -> faiss.Index:
    """Build (and train where needed) a FAISS index for unit vectors by inner product."""
    dim = features.shape[1]
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise IndexFormatError(
            f"bad FAISS factory string {factory!r}: {str(exc).splitlines()[-1]}"
        ) from None
    if use_gpu is None:
        use_gpu = faiss.get_num_gpus() > 0
    work = index
    if use_gpu and "HNSW" not in factory:
        work = faiss.index_cpu_to_all_gpus(index)
    if not work.is_trained:
        work.train(features)
    work.add(features)
    return faiss.index_gpu_to_cpu(work) if work is not index else index


def is_index_dir(directory: Path) -> bool:
    """True when ``directory`` holds an index manifest of this format (proof that we wrote it)."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(manifest, dict) and "format_version" in manifest and "files" in manifest


def check_index_target(directory: str | Path) -> None:
    """Refuse to replace a folder that is not an index (a run folder, a photo folder, ...)."""
    check_replaceable(
        directory,
        "index",
        "choose a new or empty --out folder, or an existing index folder to replace",
        proof=is_index_dir,
    )


def clean_stale_temporaries(parent: Path) -> None:
    """Remove what a killed export left in ``parent``: ``.NAME.tmp-*`` / ``.NAME.old-*`` folders
    holding nothing but index files."""
    for path in parent.glob(".*"):
        if not path.is_dir() or not (".tmp-" in path.name or ".old-" in path.name):
            continue
        entries = list(path.iterdir())
        if all(p.name in INDEX_FILES and p.is_file() for p in entries):
            shutil.rmtree(path, ignore_errors=True)


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
        """Write atomically; an existing ``directory`` is replaced only if it is an index."""
        directory = Path(directory)
        check_index_target(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temporaries(directory.parent)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
        try:
            faiss.write_index(self.index, str(tmp / "index.faiss"))
            self.metadata.to_parquet(tmp / "metadata.parquet", index=False)
            names = list(FILES)
            if self.features is not None:
                np.save(tmp / "features.npy", self.features)
                names.append("features.npy")
            manifest = {
                **self.manifest,
                "count": int(self.index.ntotal),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "files": {name: sha256(tmp / name) for name in names},
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
            for name in names + ["manifest.json"]:
                with open(tmp / name, "rb") as handle:
                    os.fsync(handle.fileno())
            old = None
            if directory.exists():
                old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
                os.replace(directory, old)
            os.replace(tmp, directory)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            self.manifest = manifest
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def load(cls, directory: str | Path, verify: bool = True) -> GalleryIndex:
        directory = Path(directory)
        if not directory.is_dir():
            raise IndexFormatError(f"{directory}: index directory not found")
        manifest_path = directory / "manifest.json"
        if not manifest_path.is_file():
            raise IndexFormatError(
                f"{manifest_path}: missing (not an index directory, or an interrupted export)"
            )
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise IndexFormatError(f"{manifest_path}: not valid JSON ({exc})") from None
        if manifest.get("format_version") != FORMAT_VERSION:
            raise IndexFormatError(
                f"{manifest_path}: format version {manifest.get('format_version')!r}, "
                f"this reid reads version {FORMAT_VERSION}"
            )
        for name, expected in manifest.get("files", {}).items():
            path = directory / name
            if not path.is_file():
                raise IndexFormatError(f"{path}: missing")
            if verify and sha256(path) != expected:
                raise IndexFormatError(f"{path}: checksum mismatch (file changed or corrupt)")
        try:
            index = faiss.read_index(str(directory / "index.faiss"))
            metadata = pd.read_parquet(directory / "metadata.parquet")
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
        features = (
            np.load(directory / "features.npy") if (directory / "features.npy").is_file() else None
        )
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
