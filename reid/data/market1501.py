"""Market-1501 and DukeMTMC-reID folders (same file naming).

File names ``PPPP_cCsS_FFFFFF_BB.jpg`` (Duke: ``PPPP_cC_fFFFFFFF.jpg``) are parsed with the regex
``([-\\d]+)_c(\\d)`` on the *file name* (torchreid applies it to the whole path). Junk pid -1 is
dropped everywhere; distractor pid 0 is kept in the gallery only (it is never a query and is
dropped from train); cameras 1..C become 0..C-1; train pids are relabelled 0..C-1 in ascending
order of the original pid, which is what torchreid's ``Market1501`` yields.

Zheng et al., "Scalable Person Re-identification: A Benchmark", ICCV 2015.
"""

from __future__ import annotations

import re
from pathlib import Path

from .records import DatasetError, ImageRecord, ReIDDataset, check_duplicates, relabel

PATTERN = re.compile(r"([-\d]+)_c(\d)")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def parse_name(path: Path, max_camid: int = 8) -> tuple[int, int]:
    """Return ``(pid, camid 1-based)`` from a Market/Duke file name or raise ``DatasetError``."""
    match = PATTERN.match(path.name)
    if match is None:
        raise DatasetError(f"{path}: file name does not match the Market-1501 pattern PPPP_cC...")
    pid, camid = int(match.group(1)), int(match.group(2))
    if pid < -1 or not 1 <= camid <= max_camid:
        raise DatasetError(
            f"{path}: pid {pid} / camera {camid} out of range (camera 1..{max_camid})"
        )
    return pid, camid


def parse_name_or_unknown(path: Path) -> tuple[int, int] | None:
    """``(pid, camid 0-based)`` of a Market-style name, ``None`` for any other file name (image
    folders and galleries of unlabelled photos)."""
    try:
        pid, camid = parse_name(Path(path))
    except DatasetError:
        return None
    return pid, camid - 1


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DatasetError(f"{folder}: folder holds no images (*.jpg, *.jpeg, *.png)")
    return paths


def parse_folder(folder: str | Path, split: str, max_camid: int = 8) -> list[ImageRecord]:
    """Parse one Market-format folder into records (junk dropped, no relabelling)."""
    records = []
    for path in list_images(Path(folder)):
        pid, camid = parse_name(path, max_camid)
        if pid == -1 or (pid == 0 and split != "gallery"):
            continue
        records.append(ImageRecord(str(path), pid, camid - 1, split))
    if not records:
        raise DatasetError(f"{folder}: no usable images (all junk or distractors)")
    return records


def load_market_format(
    root: str | Path,
    name: str = "market1501",
    splits: tuple[str, ...] | None = ("train", "query", "gallery"),
    max_camid: int = 8,
) -> ReIDDataset:
    """Load a Market-format root holding ``bounding_box_train/``, ``query/``, ``bounding_box_test/``.

    ``splits=None`` loads whichever of the three folders exist (at least one). Also accepts the
    official archive's nesting (``ROOT/Market-1501-v15.09.15/...``).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root not found")
    for nested in ("Market-1501-v15.09.15", "DukeMTMC-reID"):
        if (root / nested).is_dir():
            root = root / nested
    if splits is None:
        splits = tuple(s for s, folder in FOLDERS.items() if (root / folder).is_dir())
        if not splits:
            raise DatasetError(f"{root}: none of {', '.join(FOLDERS.values())} found")
    dataset = ReIDDataset(name)
    for split in splits:
        records = parse_folder(root / FOLDERS[split], split, max_camid)
        setattr(dataset, split, relabel(records) if split == "train" else records)
    check_duplicates(dataset.train + dataset.query + dataset.gallery, str(root))
    return dataset


def load_market1501(root: str | Path, **kwargs) -> ReIDDataset:
    return load_market_format(root, "market1501", max_camid=6, **kwargs)


def load_dukemtmc(root: str | Path, **kwargs) -> ReIDDataset:
    return load_market_format(root, "dukemtmcreid", max_camid=8, **kwargs)
