"""What ``reid export-index`` and ``reid search`` do."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..atomic import json_safe
from ..data import arrays, load_dataset
from ..errors import ReidError
from ..evaluation.feature_set import FeatureSet
from ..evaluation.plots import Hit, RankedList, draw_ranked_lists
from ..evaluation.verification import verification_metrics
from ..index.gallery import GalleryIndex, IndexFormatError, check_index_target, read_manifest
from ..index.sources import Embedder, gallery_records, image_folder_records
from ..index.store import EXACT, SearchOptions, StoreOptions
from ..index.stores import parse_store_options, section, store_class
from ..outputs import (
    ENROL_TOOL,
    OutputFolder,
    check_no_overlap,
    lock_folder,
    probe_writable,
    remove_owned,
)

#: false-alarm rates whose thresholds every calibration stores (``search --far`` picks one)
CALIBRATED_FARS = (1e-1, 1e-2, 1e-3, 1e-4)
SEARCH_FILES = ("results.csv", "results.json", "results.png", "recall.json")


@dataclass(frozen=True)
class ExportOptions:
    """How ``export_index`` writes: the store and its options (``stores.parse_store_options``;
    the default store when None; an append keeps the index's own), whether the exact vectors
    are kept, whether recall is reported, the open-set calibration split and its rate."""

    store: StoreOptions | None = None
    keep_features: bool = False
    report_recall: bool = False
    calibrate: str | None = None
    far: float = 1e-3
    runtime: str | None = None  # an exported model's runtime (default: the one it was verified on)


def export_index(
    model: str,
    gallery: str,
    out: str,
    options: ExportOptions = ExportOptions(),
    append: bool = False,
    device=None,
    batch_size: int = 64,
) -> dict:
    """Embed ``gallery`` with ``model`` into a new (or appended) index at ``out``.

    ``calibrate``: a labelled split (Market-format root with query/ and bounding_box_test/, or a
    CSV manifest) embedded with the same model; the open-set thresholds at ``far`` and at every
    rate of ``CALIBRATED_FARS`` (``evaluation/verification.py``) are stored in the manifest, and
    ``far`` is the one ``search`` uses unless told otherwise.

    Every check runs before the embedding pass: the output (no overlap with the gallery, a
    folder an index may be written into, writable), the inputs, the model, the factory string
    against the model's dimension and the gallery's size, and for ``append`` the index's model
    and dimension.
    """
    calibrate, far = options.calibrate, options.far
    check_no_overlap(out, [gallery])
    check_index_target(out)
    probe_writable(out, "--out")
    calibration_set = None
    if calibrate is not None:
        if not 0 < far < 1:
            raise ReidError(f"--far {far}: must be between 0 and 1")
        calibration_set = labelled_split(calibrate)
    store = options.store or parse_store_options()
    kind = store_class(store.backend)
    old = read_manifest(Path(out)) if Path(out).is_dir() else None
    previous = section(old) if old else None
    if not append:  # what needs no model (a server that answers, a name that is free or ours)
        kind.check_target(store, Path(out), previous)
    with lock_folder(out, "index export or removal", "--out"):
        index = GalleryIndex.load(out, writer=True) if append else None
        embedder = Embedder.open(model, device, batch_size, options.runtime)
        # absolute paths: search results open the images from any working directory
        records = [replace(r, path=os.path.abspath(r.path)) for r in gallery_records(gallery)]
        skipped = 0
        if append:
            index.check_compatible(embedder.dim, "cosine", embedder.model_hash or None)
            if embedding_of(index.manifest) != embedder.embedding:
                raise IndexFormatError(
                    f"{out}: its vectors were embedded on {_described(embedding_of(index.manifest))}, "
                    f"this model runs on {_described(embedder.embedding)}: append with the same "
                    "runtime and precision, so that one index holds one kind of vector"
                )
            known = set(index.metadata["path"].map(os.path.abspath))
            kept = [r for r in records if r.path not in known]
            skipped = len(records) - len(kept)
            if not kept:
                raise IndexFormatError(
                    f"{gallery}: all {len(records)} images are already in the index {out}; nothing to append"
                )
            records = kept
        else:  # what needs the model's dimension and the gallery's size
            kind.check_fits(store, embedder.dim, len(records))
        pids, camids = arrays(records)
        paths = [r.path for r in records]
        features = embedder(paths, progress=True)
        if append:
            index.append(features, paths, pids, camids, model_hash=embedder.model_hash)
        else:
            index = GalleryIndex.build(
                features,
                paths,
                pids,
                camids,
                options=store,
                directory=out,
                model_hash=embedder.model_hash,
                preprocessing=embedder.preprocessing,
                keep_features=options.keep_features or options.report_recall,
            )
            index.manifest["embedding"] = embedder.embedding
        _finish_export(index, out, embedder, features, options, calibration_set)
    return {
        "count": index.count,
        "added": len(records),
        "skipped": skipped,
        "manifest": index.manifest,
    }


def remove_from_index(out: str, pids=(), paths_file: str | None = None) -> dict:
    """Remove identities and/or listed images from the index at ``out`` (atomic, like append)."""
    if paths_file is not None and not Path(paths_file).is_file():
        raise ReidError(f"--remove-paths {paths_file}: file not found")
    if not Path(out).is_dir():  # before the lock, which would create the folder
        raise IndexFormatError(f"{out}: index directory not found")
    with lock_folder(out, "index export or removal", "--out"):
        index = GalleryIndex.load(out, writer=True)
        drop = index.metadata["pid"].isin([int(p) for p in pids]).to_numpy().copy()
        missing: list[str] = []
        if paths_file is not None:
            wanted = {
                os.path.abspath(line.strip())
                for line in Path(paths_file).read_text().splitlines()
                if line.strip()
            }
            stored = index.metadata["path"].map(os.path.abspath)
            drop |= stored.isin(wanted).to_numpy()
            missing = sorted(wanted - set(stored))
        unknown = sorted(set(int(p) for p in pids) - set(index.metadata["pid"].tolist()))
        gone = list(index.metadata.loc[drop, "path"])
        removed = index.remove(drop)
        if removed == 0:
            raise ReidError(f"{out}: nothing to remove (no such pid or path in the index)")
        _save_or_abandon(index, out)
        deleted = remove_owned(gone, ENROL_TOOL)  # images the service enrolled: gone with them
    return {"removed": removed, "count": index.count, "unknown_pids": unknown,
            "missing_paths": missing, "deleted_images": deleted}  # fmt: skip


def _finish_export(index, out, embedder, features, options: ExportOptions, calibration_set):
    """Calibrate, report recall and commit; on any failure a store that wrote ahead of the
    manifest (Milvus) undoes that write, so the collection stays as the committed manifest
    describes it."""
    try:
        if options.calibrate is not None:
            index.manifest["calibration"] = calibrate_threshold(
                embedder, calibration_set, options.far, options.calibrate
            )
        if options.report_recall:
            sample = np.random.default_rng(0).choice(
                len(features), size=min(1000, len(features)), replace=False
            )
            index.manifest["recall"] = index.recall_at(features[sample])
    except BaseException:
        index.store.abandon()
        raise
    _save_or_abandon(index, out)


def _save_or_abandon(index: GalleryIndex, out: str) -> None:
    try:
        index.save(out)
    except BaseException:
        index.store.abandon()
        raise


def embedding_of(manifest: dict) -> dict:
    """What embedded an index (an index written before runtimes: torch, fp32)."""
    return {"runtime": "torch", "precision": "fp32", **(manifest.get("embedding") or {})}


def _described(embedding: dict) -> str:
    return f"{embedding['runtime']} {embedding['precision']}"


def compare_embedding(manifest: dict, embedder: Embedder) -> dict:
    """The index's embedding and the queries': another runtime or precision of the same model
    (the model hash was checked) is allowed and reported, with what its export verified."""
    index, queries = embedding_of(manifest), embedder.embedding
    found = {"index": index, "queries": queries, "same": index == queries}
    if not found["same"]:
        found["note"] = (
            f"the index was embedded on {_described(index)}, the queries on "
            f"{_described(queries)}: the same model; how far the two agree is what the reduced "
            "export measured when it was made (its sidecar's verification)"
        )
    return found


def labelled_split(source: str, flag: str = "--calibrate"):
    """The labelled query/gallery a model is measured on — a threshold calibrated (``flag``
    ``--calibrate``), a reduced export verified (``--verify``) — checked before any embedding."""
    path = Path(source)
    if path.suffix in (".npz", ".parquet"):
        raise ReidError(
            f"{flag} {source}: a feature file does not record which model made it; "
            "give a labelled split (query/ + bounding_box_test/, or a CSV manifest)"
        )
    dataset = load_dataset(path, all_splits=False)
    if not dataset.query or not dataset.gallery:
        raise ReidError(f"{flag} {source}: needs labelled query and gallery images")
    return dataset


def calibrate_threshold(embedder: Embedder, dataset, far: float, source: str) -> dict:
    """Open-set thresholds on a labelled split, for this model: one per false-alarm rate of
    ``CALIBRATED_FARS`` and ``far``; ``far``'s is the default operating point."""
    (q_pids, q_camids), (g_pids, g_camids) = arrays(dataset.query), arrays(dataset.gallery)
    fars = tuple(sorted({*CALIBRATED_FARS, far}, reverse=True))
    result = verification_metrics(
        FeatureSet(embedder([r.path for r in dataset.query]), q_pids, q_camids),
        FeatureSet(embedder([r.path for r in dataset.gallery]), g_pids, g_camids),
        fars=fars,
        fprs=(),
    )
    impostors = result.impostor_scores[np.isfinite(result.impostor_scores)]
    points = [
        {
            "far": f,
            "threshold": result.far_threshold[f],
            "measured_far": float((impostors > result.far_threshold[f]).mean())
            if len(impostors)
            else None,
            # NaN when no query has a match in this split: stored as null (strict JSON)
            "dir_at_far": result.dir_at_far[f],
        }
        for f in fars
    ]
    chosen = next(p for p in points if p["far"] == far)
    return json_safe(
        {
            **chosen,
            "operating_points": points,
            "queries": int(len(impostors)),
            "source": str(Path(source).resolve()),
            "model_hash": embedder.model_hash,
            "rule": "accept a hit when its score is > threshold",
        }
    )


def operating_point(
    manifest: dict, far: float | None = None, threshold: float | None = None, none: bool = False
) -> dict | None:
    """The no-match threshold a search applies: ``none``, an explicit ``threshold``, one of the
    calibrated rates (``far``), or by default the calibration's own; checked before embedding."""
    if sum([none, far is not None, threshold is not None]) > 1:
        raise ReidError("--far, --threshold and --no-threshold exclude each other: give one")
    if none:
        return None
    if threshold is not None:
        if not -1.0 <= threshold <= 1.0:
            raise ReidError(f"--threshold {threshold}: cosine scores lie in [-1, 1]")
        return {"threshold": float(threshold), "far": None, "source": "--threshold"}
    calibration = manifest.get("calibration")
    if calibration is None:
        if far is not None:
            raise ReidError(
                f"--far {far}: this index has no calibrated thresholds; export it with "
                "--calibrate SPLIT, or give --threshold"
            )
        return None
    if calibration.get("model_hash") != manifest.get("model_hash"):
        raise IndexFormatError(
            "the index's calibration was made with another model than its vectors; "
            "re-export with --calibrate"
        )
    points = calibration.get("operating_points") or [calibration]
    if far is None:
        far = calibration["far"]
    for point in points:
        if point["far"] is not None and abs(point["far"] - far) <= 1e-9 * far:
            return {**point, "operating_points": points, "source": "calibration"}
    stored = ", ".join(f"{p['far']:g}" for p in points)
    raise ReidError(f"--far {far:g}: not calibrated for this index (stored: {stored})")


@dataclass(frozen=True)
class Runs:
    """Where the query model runs: a checkpoint's torch ``device``, an export's ``runtime``."""

    device: str | None = None
    runtime: str | None = None


@dataclass(frozen=True)
class NoMatch:
    """Which no-match threshold a search applies (``operating_point``): the calibration's by
    default, another calibrated rate (``far``), an explicit ``threshold``, or ``none``."""

    far: float | None = None
    threshold: float | None = None
    none: bool = False


def search(
    index_dir: str,
    images: list[str],
    model: str | None = None,
    topk: int = 10,
    exclude_same_camera=False,
    out: str | None = None,
    runs: Runs = Runs(),
    report_recall: bool = False,
    knobs: SearchOptions = EXACT,
    no_match: NoMatch = NoMatch(),
) -> dict:
    """Embed the query images and search the index; every check before the embedding pass.
    ``knobs``: the approximate index's per-search settings (``--nprobe``, ``--ef``)."""
    nprobe, ef = knobs.nprobe, knobs.ef
    far, threshold, no_threshold = no_match.far, no_match.threshold, no_match.none
    if topk < 1:
        raise IndexFormatError(f"--topk {topk}: must be at least 1")
    index = GalleryIndex.load(index_dir)
    index.store.check_search(index.manifest["store"], SearchOptions(nprobe, ef))
    if model is None:
        raise ReidError("--checkpoint (or an exported model) is needed to embed the query images")
    point = operating_point(index.manifest, far, threshold, no_threshold)
    if report_recall and index.features is None:
        raise IndexFormatError(
            f"--report-recall: {index_dir} holds no exact vectors (export with --keep-features)"
        )
    records = [r for source in images for r in image_folder_records(source)]
    outputs = None
    if out:
        outputs = OutputFolder(out, "search")
        outputs.prepare(SEARCH_FILES)
    embedder = Embedder.open(model, runs.device, runtime=runs.runtime)
    index.check_compatible(embedder.dim, "cosine", embedder.model_hash or None)
    embedding = compare_embedding(index.manifest, embedder)
    features = embedder([r.path for r in records])
    q_pids, q_camids = arrays(records)
    table = index.search(features, topk, q_camids, exclude_same_camera, nprobe, ef)
    table.insert(1, "query_path", [records[q].path for q in table["query"]])
    result = {"table": table, "no_match": [], "embedding": embedding}
    if point is not None:
        table["match"] = table["score"] > point["threshold"]
        result["threshold"] = point
        matched = set(table.loc[table["match"], "query"])
        result["no_match"] = [r.path for q, r in enumerate(records) if q not in matched]
    if report_recall:
        result["recall"] = index.recall_at(features, ks=(1, min(10, topk)), nprobe=nprobe, ef=ef)
    if outputs is not None:
        written = [
            outputs.write("results.csv", lambda tmp: table.to_csv(tmp, index=False)),
            outputs.write_text("results.json", table.to_json(orient="records", indent=1)),
        ]
        size = tuple(index.manifest.get("preprocessing", {}).get("image_size", (128, 64)))
        lists = []
        for q, group in table.groupby("query"):
            known = q_pids[q] >= 0
            hits = [
                Hit(r.path, float(r.score), int(r.pid), int(r.camid),
                    bool(r.pid == q_pids[q]) if known and r.pid >= 0 else None,
                    ("match" if r.match else "below thr.") if "match" in group else None)
                for r in group.itertuples()
            ]  # fmt: skip
            lists.append(RankedList(records[q].path, int(q_pids[q]), int(q_camids[q]), hits))
        if lists:
            written.append(
                outputs.write(
                    "results.png", lambda tmp: draw_ranked_lists(lists[:16], size, str(tmp))
                )
            )
        if "recall" in result:
            written.append(outputs.write_json("recall.json", result["recall"]))
        result["files"] = [str(path) for path in written]  # this run's files only
    return result
