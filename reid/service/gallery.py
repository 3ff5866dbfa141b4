"""The served gallery: the index the disk holds, swapped whole on every change.

**Each request serves what the disk holds.** The index commits by replacing its
``manifest.json`` atomically, so a new file (a new inode) is a new generation, whoever wrote it:
this server, ``export_index --append`` or ``--remove-pids`` from the command line, or another
server on the same folder. :meth:`ServedGallery.snapshot` compares the manifest's identity with
the one it loaded (one ``stat``) and, when it changed, loads and checks the new index before
answering; a removal made anywhere is gone from the next request's answers, identities and
thumbnails. An index the disk holds that this server cannot serve (another model, a broken
write) answers 503 with one line until it is fixed: never the old index's answers.

Searches take the current :class:`~reid.index.GalleryIndex` reference once and use only it, so a
search running during a write sees the old index or the new one, never a mix. A write (enrol,
remove) holds the index folder's lock, loads its own copy, changes and commits it
(``GalleryIndex.save``: atomic, journalled), and only then replaces the reference. Enrolled
images are written under names the server generates, in the enrolment folder, listed in its
ledger, before the index commit; a failed write removes them again, and any removal of their
rows (here or from the command line) deletes them (``outputs.remove_owned``).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import ReidError
from ..index import GalleryIndex
from ..index.manifest import MANIFEST
from ..outputs import ENROL_TOOL, OutputFolder, lock_folder, remove_owned

log = logging.getLogger(__name__)


class IndexUnavailable(ReidError):
    """The index on disk cannot be served now (answered 503)."""


def _identity(index_dir: Path) -> tuple | None:
    try:
        stat = os.stat(index_dir / MANIFEST)
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


class ServedGallery:
    def __init__(
        self,
        index_dir: str | Path,
        enrol_dir: str | Path | None = None,
        check: Callable[[GalleryIndex], None] | None = None,
    ):
        self.index_dir = Path(index_dir)
        self.enrol_dir = Path(enrol_dir) if enrol_dir else self.index_dir / "enrolled"
        self._check = check or (lambda index: None)
        self._write = threading.Lock()
        self._reload = threading.Lock()
        self.generation = 0
        self.problem: str | None = None
        self._seen = _identity(self.index_dir)
        self.current = GalleryIndex.load(self.index_dir)
        self._check(self.current)

    def snapshot(self) -> GalleryIndex:
        """The index the disk holds now (loaded again when its manifest changed)."""
        if _identity(self.index_dir) != self._seen:
            with self._reload:
                seen = _identity(self.index_dir)
                if seen != self._seen:
                    self._load(seen)
        if self.problem is not None:
            raise IndexUnavailable(self.problem)
        return self.current

    def _load(self, seen: tuple | None) -> None:
        try:
            index = GalleryIndex.load(self.index_dir)
            self._check(index)
        except ReidError as exc:
            self.problem = f"{self.index_dir}: the index on disk cannot be served ({exc})"
            log.error(self.problem)
        else:
            self.current, self.problem = index, None
            self.generation += 1
            log.info("%s changed on disk: now serving %d vectors", self.index_dir, index.count)
        self._seen = seen

    def _commit(self, index: GalleryIndex) -> None:
        """After this server's own commit: serve it without a second load."""
        with self._reload:
            self.current, self.problem = index, None
            self._seen = _identity(self.index_dir)
            self.generation += 1

    def enrol(self, images, features: np.ndarray, pid: int, camid: int, model_hash: str) -> dict:
        """Write the images (JPEG, generated names, listed in the folder's ledger), append
        them, commit, swap."""
        with self._write, lock_folder(self.index_dir, "index export or removal", "--index"):
            index = GalleryIndex.load(self.index_dir, writer=True)
            index.check_compatible(features.shape[1], "cosine", model_hash or None)
            folder = OutputFolder(self.enrol_dir, ENROL_TOOL, "--enrol-dir")
            batch = secrets.token_hex(6)
            names = [
                f"{pid:05d}_c{camid + 1}_enrol_{batch}_{i:03d}.jpg" for i in range(len(images))
            ]
            folder.prepare(names)
            written = []
            try:
                for name, image in zip(names, images):
                    folder.write(
                        name, lambda tmp, image=image: image.save(tmp, format="JPEG", quality=95)
                    )
                    written.append(name)
                paths = [str((self.enrol_dir / name).resolve()) for name in names]
                n = len(paths)
                index.append(features, paths, [pid] * n, [camid] * n, model_hash=model_hash)
                index.save(self.index_dir)
            except BaseException:
                folder.remove(written)
                raise
            self._commit(index)
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
            gone = list(meta.loc[drop, "path"])
            removed = index.remove(drop)
            if removed:
                index.save(self.index_dir)
                self._commit(index)
                remove_owned(gone, ENROL_TOOL)
            return {"removed": removed, "count": index.count}
