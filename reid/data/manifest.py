"""Custom datasets from a CSV manifest (pandas).

Columns: ``path`` (absolute, or relative to the CSV's folder), ``pid`` (int), ``split``
(train | query | gallery) and optionally ``camid`` (int, 0-based). Without ``camid`` every image
gets ``NO_CAMERA`` and the evaluator treats every query/gallery pair as cross-camera: no gallery
item is removed for sharing the query's camera, so a query's own other images all count as
positives. Pid -1 rows are junk and dropped; pid 0 is a distractor, allowed in the gallery only.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .records import (
    LABEL_LIMIT,
    NO_CAMERA,
    SPLITS,
    DatasetError,
    ImageRecord,
    ReIDDataset,
    check_duplicates,
    relabel,
)

REQUIRED = ("path", "pid", "split")
COLUMNS = (*REQUIRED, "camid")


def _integers(values: pd.Series, column: str, csv_path: Path) -> pd.Series:
    """``values`` as int64, or one line naming the first line whose value is not an integer
    (empty, a fraction, a word, or too large for an id)."""
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() | (numbers % 1 != 0) | (numbers.abs() > LABEL_LIMIT)
    if bad.any():
        line = int(bad.idxmax()) + 2
        value = values[bad.idxmax()]
        shown = (
            "empty" if pd.isna(value) else repr(value.item() if hasattr(value, "item") else value)
        )
        raise DatasetError(
            f"{csv_path}: column {column!r} must hold integers (line {line}: {shown})"
        )
    return numbers.astype("int64")


def load_manifest(csv_path: str | Path, check_files: bool = True) -> ReIDDataset:
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"{csv_path}: manifest not found")
    try:
        table = pd.read_csv(csv_path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{csv_path}: not a readable CSV ({exc})") from None
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise DatasetError(
            f"{csv_path}: missing column(s) {missing}; required {list(REQUIRED)}, optional ['camid']"
        )
    unknown = [c for c in table.columns if c not in COLUMNS]
    if unknown:
        raise DatasetError(
            f"{csv_path}: unknown column(s) {unknown}; a manifest has {list(COLUMNS)}"
        )
    if table.empty:
        raise DatasetError(f"{csv_path}: manifest has no rows")
    for column in ("pid", "camid"):
        if column in table.columns:
            table[column] = _integers(table[column], column, csv_path)
    paths = table["path"]
    empty = paths.isna() | (paths.astype(str).str.strip() == "")
    if empty.any():
        raise DatasetError(f"{csv_path}: column 'path' is empty on line {empty.idxmax() + 2}")
    table["path"] = paths.astype(str)
    bad_split = sorted(set(table["split"].astype(str)) - set(SPLITS))
    if bad_split:
        raise DatasetError(f"{csv_path}: unknown split value(s) {bad_split}; valid: {list(SPLITS)}")
    table = table[table["pid"] != -1]
    distractor_rows = table[(table["pid"] == 0) & (table["split"] != "gallery")]
    if len(distractor_rows):
        raise DatasetError(
            f"{csv_path}: pid 0 (distractor) allowed in the gallery only, found in line {distractor_rows.index[0] + 2}"
        )
    has_cam = "camid" in table.columns
    base = csv_path.parent
    dataset = ReIDDataset(csv_path.stem)
    missing_files = []
    for split in SPLITS:
        rows = table[table["split"] == split]
        records = []
        for path, pid, camid in zip(
            rows["path"], rows["pid"], rows["camid"] if has_cam else [NO_CAMERA] * len(rows)
        ):
            full = Path(path) if Path(path).is_absolute() else base / path
            if check_files and not full.is_file():
                missing_files.append(str(full))
            records.append(ImageRecord(str(full), int(pid), int(camid), split))
        setattr(dataset, split, relabel(records) if split == "train" else records)
    if missing_files:
        raise DatasetError(
            f"{csv_path}: {len(missing_files)} listed file(s) not found, e.g. {missing_files[:5]}"
        )
    paths = pd.Series([r.path for r in dataset.train + dataset.query + dataset.gallery])
    if paths.duplicated().any():
        raise DatasetError(
            f"{csv_path}: duplicate path(s) {paths[paths.duplicated()].tolist()[:10]}"
        )
    check_duplicates(dataset.query + dataset.gallery, str(csv_path))
    return dataset
