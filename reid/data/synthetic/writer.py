"""The synthetic dataset writer: layout written under ``OUT``: ``bounding_box_train/``, ``query/`` (one image per test identity
and camera, Market's rule), ``bounding_box_test/`` (the rest, plus distractors ``0000_*`` and junk
``-1_*``). Images per identity follow the long-tail cap of docs/methods.md §6:
``n_i = floor(n_max · ρ^(−i/(C−1)))``, at least 2. Deterministic for a seed.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ...atomic import temp_path
from ...outputs import OutputFolder, swap_in
from ..market1501 import load_market_format
from ..records import DatasetError
from ..splits import longtail_caps
from .render import (
    render,
    sample_camera,
    sample_identity,
)

SPLIT_FOLDERS = ("bounding_box_train", "query", "bounding_box_test")


@dataclass
class SyntheticSpec:
    ids: int = 200
    cams: int = 6
    images_per_id: int = 24
    longtail_ratio: float = 8.0
    size: tuple[int, int] = (128, 64)
    distractors: int = 100
    junk: int = 30
    seed: int = 0


def _file_name(pid: int, cam: int, counter: int, rng) -> str:
    return (
        f"{pid:04d}_c{cam}s{int(rng.integers(1, 7))}_{counter:06d}_{int(rng.integers(1, 9)):02d}.jpg"
        if pid >= 0
        else f"-1_c{cam}s{int(rng.integers(1, 7))}_{counter:06d}_{int(rng.integers(1, 9)):02d}.jpg"
    )


def generate(out: str | Path, spec: SyntheticSpec) -> dict:
    """Write a Market-format synthetic dataset under ``out``; returns counts per folder."""
    if spec.ids < 4:
        raise DatasetError(
            f"--ids must be at least 4 (2 train + 2 test identities), got {spec.ids}"
        )
    if spec.cams < 2:
        raise DatasetError(
            f"--cams must be at least 2 (queries need a cross-camera match), got {spec.cams}"
        )
    if not 1 <= spec.cams <= 9:
        raise DatasetError(
            f"--cams must be at most 9 (one digit in the Market file name), got {spec.cams}"
        )
    out = Path(out)
    folders = {name: out / name for name in SPLIT_FOLDERS}
    # an image in a split folder that the generator did not write would become data: refused;
    # the generator's own earlier images (its ledger lists them) are replaced, nothing else
    outputs = OutputFolder(out, "synthetic")
    outputs.refuse_foreign(SPLIT_FOLDERS, "the synthetic generator")
    outputs.prepare([])
    # the new images go to staged folders; each replaces the old one only once all are complete
    out.mkdir(parents=True, exist_ok=True)
    staged = {name: temp_path(out / name, ".new") for name in SPLIT_FOLDERS}
    for folder in staged.values():
        folder.mkdir()
    written: list[str] = []
    counts = {name: 0 for name in folders}
    counter = 0

    def save(image: Image.Image, folder: str, pid: int, cam: int, rng) -> None:
        nonlocal counter
        counter += 1
        name = _file_name(pid, cam + 1, counter, rng)
        image.save(staged[folder] / name, quality=92)
        written.append(f"{folder}/{name}")
        counts[folder] += 1

    try:
        _render_all(spec, save)
    except BaseException:
        for folder in staged.values():
            shutil.rmtree(folder, ignore_errors=True)
        raise
    for name in SPLIT_FOLDERS:
        swap_in(staged[name], folders[name])
    outputs.forget([n for n in outputs.entries() if n.split("/")[0] in SPLIT_FOLDERS])
    outputs.record(written)
    return counts


def _render_all(spec: SyntheticSpec, save) -> None:
    root_rng = np.random.default_rng(spec.seed)
    cameras = [sample_camera(root_rng) for _ in range(spec.cams)]
    num_train = spec.ids // 2
    pids = np.arange(1, spec.ids + 1)

    for part, part_pids in (("train", pids[:num_train]), ("test", pids[num_train:])):
        caps = longtail_caps(len(part_pids), spec.images_per_id, spec.longtail_ratio)
        order = root_rng.permutation(len(part_pids))  # which identity gets which cap
        for rank, index in enumerate(order):
            pid = int(part_pids[index])
            rng = np.random.default_rng([spec.seed, pid])
            ident = sample_identity(rng)
            n = int(caps[rank])
            n_cams = int(rng.integers(2, spec.cams + 1))
            seen = rng.choice(spec.cams, size=n_cams, replace=False)
            cams = (
                np.concatenate([seen[:2], rng.choice(seen, size=max(0, n - 2))])[:n]
                if n >= 2
                else seen[:n]
            )
            if part == "train":
                for cam in cams:
                    save(
                        render(ident, cameras[cam], rng, spec.size),
                        "bounding_box_train",
                        pid,
                        int(cam),
                        rng,
                    )
            else:
                queried = set()
                for cam in cams:
                    folder = "bounding_box_test" if int(cam) in queried else "query"
                    queried.add(int(cam))
                    save(render(ident, cameras[cam], rng, spec.size), folder, pid, int(cam), rng)
    rng = np.random.default_rng([spec.seed, 10**6])
    for _ in range(spec.distractors):
        cam = int(rng.integers(spec.cams))
        save(
            render(None, cameras[cam], rng, spec.size, kind="distractor"),
            "bounding_box_test",
            0,
            cam,
            rng,
        )
    for _ in range(spec.junk):
        cam = int(rng.integers(spec.cams))
        save(
            render(None, cameras[cam], rng, spec.size, kind="junk"),
            "bounding_box_test",
            -1,
            cam,
            rng,
        )


def contact_sheet(
    root: str | Path, out_path: str | Path, identities: int = 8, per_id: int = 8
) -> None:
    """A grid image: one row per identity (from the test folders), its images across cameras."""
    dataset = load_market_format(root, "synthetic", splits=("query", "gallery"))
    by_pid: dict[int, list] = {}
    for record in sorted(dataset.query + dataset.gallery, key=lambda r: (r.pid, r.camid, r.path)):
        if record.pid > 0:
            by_pid.setdefault(record.pid, []).append(record)
    chosen = [pid for pid in sorted(by_pid) if len(by_pid[pid]) >= 3][:identities]
    first = Image.open(by_pid[chosen[0]][0].path)
    w, h = first.size
    sheet = Image.new("RGB", (per_id * (w + 2), len(chosen) * (h + 2)), (255, 255, 255))
    for row, pid in enumerate(chosen):
        records = by_pid[pid]
        step = max(1, math.ceil(len(records) / per_id))
        for col, record in enumerate(records[::step][:per_id]):
            sheet.paste(Image.open(record.path).convert("RGB"), (col * (w + 2), row * (h + 2)))
    out_path = Path(out_path)
    outputs = OutputFolder(out_path.parent, "synthetic")
    outputs.prepare([out_path.name])
    outputs.write(out_path.name, lambda tmp: sheet.save(tmp))
