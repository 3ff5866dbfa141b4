"""MSMT17 (Wei et al., CVPR 2018): images listed in ``list_{train,val,query,gallery}.txt``.

Each list line is ``RELATIVE_PATH PID``; the camera is the third ``_``-field of the file name
(1-based, 15 cameras). As in torchreid, train + val form the training set.
"""

from __future__ import annotations

from pathlib import Path

from .records import DatasetError, ImageRecord, ReIDDataset, check_duplicates, relabel

LISTS = {
    "train": ("train", ["list_train.txt", "list_val.txt"]),
    "query": ("test", ["list_query.txt"]),
    "gallery": ("test", ["list_gallery.txt"]),
}


def _read_list(root: Path, image_dir: Path, list_name: str, split: str) -> list[ImageRecord]:
    list_path = root / list_name
    if not list_path.is_file():
        raise DatasetError(f"{list_path}: list file not found")
    records = []
    for number, line in enumerate(list_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            rel, pid = parts[0], int(parts[1])
            camid = int(Path(rel).name.split("_")[2]) - 1
        except (IndexError, ValueError):
            raise DatasetError(f"{list_path}:{number}: cannot parse line {line!r}") from None
        records.append(ImageRecord(str(image_dir / rel), pid, camid, split))
    return records


def load_msmt17(root: str | Path) -> ReIDDataset:
    root = Path(root)
    for nested in ("MSMT17_V2", "MSMT17_V1", "MSMT17"):
        if (root / nested).is_dir():
            root = root / nested
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root not found")
    dataset = ReIDDataset("msmt17")
    for split, (folder, lists) in LISTS.items():
        image_dir = root / folder if (root / folder).is_dir() else root / f"mask_{folder}_v2"
        records = [r for name in lists for r in _read_list(root, image_dir, name, split)]
        setattr(dataset, split, relabel(records) if split == "train" else records)
    check_duplicates(dataset.train + dataset.query + dataset.gallery, str(root))
    return dataset
