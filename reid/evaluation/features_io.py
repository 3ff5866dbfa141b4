"""Saved feature files (npz or parquet): features, pids, camids, paths, split.

Lets a user evaluate features from any model. One file holds both query and gallery rows,
told apart by ``split`` (``query`` | ``gallery``); parquet stores features as a list column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data.records import LABEL_LIMIT, DatasetError
from .feature_set import FeatureSet

__all__ = ["FeatureSet", "save_features", "load_features"]


def check_feature_suffix(path: str | Path) -> None:
    if Path(path).suffix not in (".npz", ".parquet"):
        raise DatasetError(f"{path}: feature file must end in .npz or .parquet")


def save_features(path: str | Path, query: FeatureSet, gallery: FeatureSet) -> None:
    """Write both sets to ``path`` (the caller makes it atomic: ``OutputFolder.write``)."""
    path = Path(path)
    check_feature_suffix(path)
    split = np.array(["query"] * len(query) + ["gallery"] * len(gallery))
    columns = {
        "pids": np.concatenate([query.pids, gallery.pids]),
        "camids": np.concatenate([query.camids, gallery.camids]),
        "paths": np.concatenate([query.paths, gallery.paths]).astype(str),
        "split": split,
    }
    features = np.vstack([query.features, gallery.features]).astype(np.float32)
    if path.suffix == ".parquet":
        table = pd.DataFrame(columns)
        table["features"] = list(features)
        table.to_parquet(path)
    else:
        with open(path, "wb") as handle:
            np.savez(handle, features=features, **columns)


ARRAYS = ("features", "pids", "camids", "split", "paths")


def integer_labels(values, key: str, path) -> np.ndarray:
    """``values`` as int64, refusing what a cast would silently change: a null or NaN (which
    int64 turns into a huge negative identity), a fraction (31.7 would become 31), a word."""
    array = np.asarray(values)
    if array.dtype.kind in "iu":
        outside = array > LABEL_LIMIT
        if array.dtype.kind == "i":
            outside |= array < -LABEL_LIMIT
        if outside.any():  # checked before the cast, which would wrap a uint64
            row = int(np.argmax(outside))
            raise DatasetError(f"{path}: {key} row {row} is {array[row]}, outside ±{LABEL_LIMIT}")
        return array.astype(np.int64)
    if array.dtype.kind == "b":
        raise DatasetError(f"{path}: {key} must be integers, found booleans")
    out = np.empty(len(array), dtype=np.int64)
    for row, value in enumerate(array.tolist()):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if value is None or (isinstance(value, float) and not np.isfinite(value)):
            raise DatasetError(f"{path}: {key} row {row} is missing (null or NaN)")
        if isinstance(value, float) and value != int(value):
            raise DatasetError(f"{path}: {key} row {row} is {value!r}, not an integer")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise DatasetError(f"{path}: {key} must be integers, found {value!r} (row {row})")
        if not -LABEL_LIMIT <= value <= LABEL_LIMIT:
            raise DatasetError(f"{path}: {key} row {row} is {value!r}, outside ±{LABEL_LIMIT}")
        out[row] = int(value)
    return out


def load_features(path: str | Path) -> tuple[FeatureSet, FeatureSet]:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: feature file not found")
    try:
        if path.suffix == ".parquet":
            table = pd.read_parquet(path)
            data = {c: table[c].to_numpy() for c in table.columns if c != "features"}
            data["features"] = (
                np.stack(table["features"].to_numpy()) if len(table) else np.zeros((0, 0))
            )
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
        else:
            raise DatasetError(f"{path}: feature file must end in .npz or .parquet")
    except (OSError, ValueError, KeyError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"{path}: cannot read feature file ({exc})") from None
    missing = [k for k in ("features", "pids", "camids", "split") if k not in data]
    if missing:
        raise DatasetError(
            f"{path}: missing array(s) {missing}; need features, pids, camids, split (paths optional)"
        )
    unknown = sorted(set(data) - set(ARRAYS))
    if unknown:
        raise DatasetError(
            f"{path}: unknown array(s) {unknown}; a feature file holds {', '.join(ARRAYS)}"
        )
    try:
        features = np.asarray(data["features"], dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: features are not numbers ({exc})") from None
    n = len(data["pids"]) if np.ndim(data["pids"]) == 1 else -1
    lengths = {k: len(data[k]) if np.ndim(data[k]) == 1 else None for k in ARRAYS[1:] if k in data}
    if features.ndim != 2 or len(features) != n or any(v != n for v in lengths.values()):
        shown = ", ".join(f"{k} {v if v is not None else 'not 1-D'}" for k, v in lengths.items())
        raise DatasetError(
            f"{path}: features {features.shape}, {shown} do not line up (one row each)"
        )
    if not np.isfinite(features).all():
        raise DatasetError(f"{path}: features hold NaN or inf values")
    for key in ("pids", "camids"):
        data[key] = integer_labels(data[key], key, path)
    paths = np.asarray(data.get("paths", np.array([""] * n)), dtype=str)
    split = np.asarray(data["split"], dtype=str)
    unknown = sorted(set(split.tolist()) - {"query", "gallery"})
    if unknown:
        counts = ", ".join(f"{v!r} ({int((split == v).sum())} rows)" for v in unknown[:5])
        raise DatasetError(f"{path}: split must be 'query' or 'gallery', found {counts}")
    sets = []
    for name in ("query", "gallery"):
        mask = split == name
        if not mask.any():
            raise DatasetError(f"{path}: no rows with split == {name!r}")
        sets.append(
            FeatureSet(
                features[mask],
                np.asarray(data["pids"])[mask].astype(np.int64),
                np.asarray(data["camids"])[mask].astype(np.int64),
                paths[mask],
            )
        )
    return sets[0], sets[1]
