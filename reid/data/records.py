"""Common record type for every dataset parser, and the error raised on bad input.

Every parser (Market-1501, DukeMTMC-reID, MSMT17, CSV manifest) returns a :class:`ReIDDataset`
holding three lists of :class:`ImageRecord`: ``train`` (pids relabelled 0..C-1), ``query`` and
``gallery`` (original pids; 0 = distractor, kept in the gallery only; junk pid -1 dropped).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..errors import ReidError

SPLITS = ("train", "query", "gallery")
#: Camera id used when a dataset has no camera information (CSV manifest without ``camid``).
NO_CAMERA = -1
#: identities and cameras are ids, not quantities: a larger one read from a file is damage
LABEL_LIMIT = 2**53


class DatasetError(ReidError):
    """Bad dataset input; the message names the offending file or folder."""


@dataclass(frozen=True)
class ImageRecord:
    """One image: its path, identity, camera (0-based; ``NO_CAMERA`` if unknown) and split."""

    path: str
    pid: int
    camid: int
    split: str


@dataclass
class ReIDDataset:
    """Train/query/gallery records of one dataset."""

    name: str
    train: list[ImageRecord] = field(default_factory=list)
    query: list[ImageRecord] = field(default_factory=list)
    gallery: list[ImageRecord] = field(default_factory=list)

    @property
    def num_train_pids(self) -> int:
        return len({r.pid for r in self.train})

    def split(self, name: str) -> list[ImageRecord]:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; valid: {', '.join(SPLITS)}")
        return getattr(self, name)

    def summary(self) -> str:
        rows = []
        for name in SPLITS:
            records = self.split(name)
            pids = {r.pid for r in records}
            cams = {r.camid for r in records}
            rows.append(
                f"  {name:<8} {len(pids):>6} ids {len(records):>8} images {len(cams):>3} cams"
            )
        return f"{self.name}\n" + "\n".join(rows)


def arrays(records: list[ImageRecord]) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(pids, camids)`` as int64 arrays, the form the evaluator takes."""
    pids = np.fromiter((r.pid for r in records), dtype=np.int64, count=len(records))
    camids = np.fromiter((r.camid for r in records), dtype=np.int64, count=len(records))
    return pids, camids


def relabel(records: list[ImageRecord]) -> list[ImageRecord]:
    """Map pids to 0..C-1 in ascending order of the original pid (torchreid's order)."""
    mapping = {pid: label for label, pid in enumerate(sorted({r.pid for r in records}))}
    return [ImageRecord(r.path, mapping[r.pid], r.camid, r.split) for r in records]


def check_duplicates(records: list[ImageRecord], what: str) -> None:
    """Fail if two records share a file name: a leak between splits or a doubled manifest row."""
    counts = Counter(r.path.replace("\\", "/").rsplit("/", 1)[-1] for r in records)
    dupes = sorted(name for name, n in counts.items() if n > 1)
    if dupes:
        shown = ", ".join(dupes[:10]) + (f" ... ({len(dupes)} in all)" if len(dupes) > 10 else "")
        raise DatasetError(f"{what}: duplicate file names: {shown}")
