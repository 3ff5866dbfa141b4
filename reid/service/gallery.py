"""The served gallery: one open index, swapped whole on every write.

Searches take the current :class:`~reid.index.GalleryIndex` reference once and use only it,
so a search running during a write sees the old index or the new one, never a mix. A write
(enrol, remove) holds the index folder's lock, loads its own copy, changes and commits it
(``GalleryIndex.save``: atomic, journalled), and only then replaces the reference. Enrolled
images are written under names the server generates, in the enrolment folder, before the
index commit; a failed write removes them again.
"""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path

import numpy as np

from .. import atomic
from ..index import GalleryIndex
from ..outputs import lock_folder


class ServedGallery:
    def __init__(self, index_dir: str | Path, enrol_dir: str | Path | None = None):
        self.index_dir = Path(index_dir)
        self.enrol_dir = Path(enrol_dir) if enrol_dir else self.index_dir / "enrolled"
        self.current = GalleryIndex.load(self.index_dir)
        self._write = threading.Lock()
        self.generation = 0

    def snapshot(self) -> GalleryIndex:
        return self.current

    def enrol(self, images, features: np.ndarray, pid: int, camid: int, model_hash: str) -> dict:
        """Write the images (JPEG, generated names), append them, commit, swap."""
        with self._write, lock_folder(self.index_dir, "index export or removal", "--index"):
            index = GalleryIndex.load(self.index_dir, writer=True)
            index.check_compatible(features.shape[1], "cosine", model_hash or None)
            self.enrol_dir.mkdir(parents=True, exist_ok=True)
            batch = secrets.token_hex(6)
            paths = []
            try:
                for i, image in enumerate(images):
                    path = self.enrol_dir / f"{pid:05d}_c{camid + 1}_enrol_{batch}_{i:03d}.jpg"
                    with atomic.atomic_path(path) as tmp:
                        image.save(tmp, format="JPEG", quality=95)
                    paths.append(str(path.resolve()))
                n = len(paths)
                index.append(features, paths, [pid] * n, [camid] * n, model_hash=model_hash)
                index.save(self.index_dir)
            except BaseException:
                for path in paths:
                    Path(path).unlink(missing_ok=True)
                raise
            self.current, self.generation = index, self.generation + 1
            rows = index.metadata["row"].to_numpy()[-n:]
            return {"added": n, "rows": rows.tolist(), "count": index.count}

    def remove(self, pids=(), rows=()) -> dict:
        """Remove identities and/or rows; enrolled files of removed rows (ours) are deleted."""
        with self._write, lock_folder(self.index_dir, "index export or removal", "--index"):
            index = GalleryIndex.load(self.index_dir, writer=True)
            meta = index.metadata
            drop = (
                meta["pid"].isin([int(p) for p in pids]) | meta["row"].isin([int(r) for r in rows])
            ).to_numpy()
            gone = [p for p in meta.loc[drop, "path"] if self._enrolled(p)]
            removed = index.remove(drop)
            if removed:
                index.save(self.index_dir)
                self.current, self.generation = index, self.generation + 1
                for path in gone:
                    Path(path).unlink(missing_ok=True)
            return {"removed": removed, "count": index.count}

    def _enrolled(self, path: str) -> bool:
        try:
            return Path(
                path
            ).resolve().parent == self.enrol_dir.resolve() and "_enrol_" in os.path.basename(path)
        except OSError:
            return False
