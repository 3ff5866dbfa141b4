"""Datasets: parsers to a common record type, image I/O, statistics, synthetic data, splits."""

from __future__ import annotations

from pathlib import Path

from .images import read_image, verify_images
from .manifest import load_manifest
from .market1501 import load_dukemtmc, load_market1501, load_market_format
from .msmt17 import load_msmt17
from .records import NO_CAMERA, DatasetError, ImageRecord, ReIDDataset, arrays

#: Environment variable pointing at a folder that holds the real ``market1501/bounding_box_train``.
#: environment variable naming the real Market-1501 folder (tests, README commands)
MARKET_ENV = "REID_MARKET1501_ROOT"

LOADERS = {
    "market1501": load_market1501,
    "dukemtmc": load_dukemtmc,
    "msmt17": load_msmt17,
    "market-format": load_market_format,
    "manifest": load_manifest,
}


def load_dataset(source: str | Path, kind: str = "auto", all_splits: bool = True) -> ReIDDataset:
    """Load a dataset root or CSV manifest. ``kind="auto"``: ``*.csv`` → manifest, a root with
    ``list_train.txt`` → MSMT17, otherwise a Market-format root (Market-1501, Duke, synthetic,
    held-out splits). ``all_splits=False`` lets a Market-format root lack some of its folders."""
    source = Path(source)
    if kind == "auto":
        if source.suffix.lower() == ".csv":
            kind = "manifest"
        elif any(
            (source / d / "list_train.txt").is_file()
            for d in ("", "MSMT17_V2", "MSMT17_V1", "MSMT17")
        ):
            kind = "msmt17"
        else:
            kind = "market-format"
    if kind not in LOADERS:
        raise KeyError(f"unknown dataset kind {kind!r}; valid: auto, {', '.join(LOADERS)}")
    if kind == "market-format" and not all_splits:
        return load_market_format(source, splits=None)
    return LOADERS[kind](source)


__all__ = [
    "NO_CAMERA",
    "DatasetError",
    "ImageRecord",
    "ReIDDataset",
    "arrays",
    "load_dataset",
    "load_manifest",
    "load_market1501",
    "load_dukemtmc",
    "load_msmt17",
    "load_market_format",
    "read_image",
    "verify_images",
    "MARKET_ENV",
]
