"""Held-out splits of a Market-format training folder and controlled long-tail caps (docs/methods.md §6)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from ..atomic import temp_path
from ..outputs import OutputFolder, check_no_overlap, swap_in
from .market1501 import FOLDERS, parse_folder
from .records import DatasetError
from .stats import split_stats


def longtail_caps(num_ids: int, n_max: int, ratio: float, minimum: int = 2) -> np.ndarray:
    """Per-identity caps ``n_i = floor(n_max · ρ^(−i/(C−1)))`` for i = 0..C-1, at least ``minimum``.

    ρ = 1 gives ``n_max`` for everyone. Identity *order* is the caller's (seeded) choice.
    """
    if ratio < 1:
        raise DatasetError(f"long-tail ratio must be >= 1, got {ratio}")
    if num_ids <= 0:
        return np.zeros(0, dtype=np.int64)
    if num_ids == 1:
        return np.array([max(n_max, minimum)], dtype=np.int64)
    i = np.arange(num_ids, dtype=np.float64)
    caps = np.floor(n_max * ratio ** (-i / (num_ids - 1)) + 1e-9).astype(np.int64)
    return np.maximum(caps, minimum)


def apply_longtail(records: list, ratio: float, seed: int, minimum: int = 2) -> list:
    """Cap images per identity with ``longtail_caps`` (n_max = the largest identity), identity
    order and kept images chosen by ``seed``. ρ = 1 returns the records unchanged."""
    if ratio == 1:
        return list(records)
    rng = np.random.default_rng(seed)
    by_pid: dict[int, list] = {}
    for record in records:
        by_pid.setdefault(record.pid, []).append(record)
    pids = sorted(by_pid)
    order = [pids[i] for i in rng.permutation(len(pids))]
    caps = longtail_caps(len(pids), max(len(v) for v in by_pid.values()), ratio, minimum)
    kept = []
    for pid, cap in zip(order, caps):
        images = sorted(by_pid[pid], key=lambda r: r.path)
        chosen = rng.permutation(len(images))[
            : max(min(int(cap), len(images)), min(minimum, len(images)))
        ]
        kept += [images[i] for i in sorted(chosen)]
    return sorted(kept, key=lambda r: r.path)


def make_holdout_split(
    source_root, out, holdout_ids: int, longtail_ratio: float = 1.0, seed: int = 0
) -> dict:
    """Split a Market-format ``bounding_box_train`` into train / query / gallery by identity.

    ``holdout_ids`` identities (seeded) are held out: one query image per camera (Market's rule),
    the rest gallery. The remaining identities form the training set, optionally long-tailed.
    Output is the Market layout made of symbolic links (copies where links are impossible).
    Returns the statistics that are also written to ``OUT/split.json``.
    """
    source = Path(source_root) / "bounding_box_train"
    out = Path(out)
    # never write into (or over) the data we read; in a split folder every entry must be a
    # link (or copy) the splitter wrote: anything else would become data, so it is refused
    check_no_overlap(out, [source])
    outputs = OutputFolder(out, "split")
    folders = [FOLDERS[split] for split in ("train", "query", "gallery")]
    outputs.refuse_foreign(folders, "make_split")
    outputs.prepare(["split.json"])
    records = parse_folder(source, "train")
    pids = sorted({r.pid for r in records})
    if not 0 < holdout_ids < len(pids):
        raise DatasetError(
            f"{source}: --holdout-ids must be between 1 and {len(pids) - 1} (it has {len(pids)} identities)"
        )
    rng = np.random.default_rng(seed)
    held = set(rng.choice(pids, size=holdout_ids, replace=False).tolist())
    train = [r for r in records if r.pid not in held]
    query, gallery = [], []
    for pid in sorted(held):
        images = sorted((r for r in records if r.pid == pid), key=lambda r: r.path)
        by_cam: dict[int, list] = {}
        for record in images:
            by_cam.setdefault(record.camid, []).append(record)
        for cam in sorted(by_cam):
            pick = int(rng.integers(len(by_cam[cam])))
            for i, record in enumerate(by_cam[cam]):
                (query if i == pick else gallery).append(record)
    train = apply_longtail(train, longtail_ratio, seed)
    out.mkdir(parents=True, exist_ok=True)
    written, staged = [], {}
    try:  # each folder is built aside and replaces the old one only when all three are complete
        for split, items in (("train", train), ("query", query), ("gallery", gallery)):
            name = FOLDERS[split]
            staged[name] = temp_path(out / name, ".new")
            staged[name].mkdir()
            for record in items:
                target = staged[name] / Path(record.path).name
                try:
                    os.symlink(os.path.abspath(record.path), target)
                except OSError:
                    shutil.copy2(record.path, target)
                written.append(f"{name}/{target.name}")
    except BaseException:
        for folder in staged.values():
            shutil.rmtree(folder, ignore_errors=True)
        raise
    for name, folder in staged.items():
        swap_in(folder, out / name)
    outputs.forget([n for n in outputs.entries() if n.split("/")[0] in folders])
    outputs.record(written)
    stats = {
        name: split_stats(items).as_dict()
        for name, items in (("train", train), ("query", query), ("gallery", gallery))
    }
    stats["params"] = {
        "source": str(Path(source_root).resolve()),
        "holdout_ids": holdout_ids,
        "longtail_ratio": longtail_ratio,
        "seed": seed,
    }
    outputs.write_json("split.json", stats, indent=2)
    return stats
