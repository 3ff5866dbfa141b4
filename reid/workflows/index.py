"""What ``tools/export_index.py`` and ``tools/search.py`` do."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..data import arrays, load_dataset
from ..errors import ReidError
from ..evaluation.plots import hit_caption, query_caption, ranked_list_image, save_ranked_lists
from ..evaluation.verification import verification_metrics
from ..index.gallery import GalleryIndex, IndexFormatError, check_index_target
from ..index.sources import Embedder, gallery_records, image_folder_records
from ..outputs import check_no_overlap, check_writable_parent


def export_index(
    model: str,
    gallery: str,
    out: str,
    factory: str = "Flat",
    append: bool = False,
    keep_features: bool = False,
    device=None,
    batch_size: int = 64,
    report_recall: bool = False,
    calibrate: str | None = None,
    far: float = 1e-3,
) -> dict:
    """Embed ``gallery`` with ``model`` into a new (or appended) index at ``out``.

    ``calibrate``: a labelled split (Market-format root with query/ and bounding_box_test/, or a
    CSV manifest) embedded with the same model; the open-set threshold at false-alarm rate
    ``far`` (``evaluation/verification.py``) is stored in the manifest for ``search``.
    """
    # every check before the embedding pass: the output, the inputs, the model
    check_no_overlap(out, [gallery])
    check_writable_parent(out)
    if append:
        index = GalleryIndex.load(out)
    else:
        check_index_target(out)
    if calibrate is not None:
        if not 0 < far < 1:
            raise ReidError(f"--far {far}: must be between 0 and 1")
        calibration_set = calibration_split(calibrate)
    embedder = Embedder.open(model, device, batch_size)
    # absolute paths: search results open the images from any working directory
    records = [replace(r, path=os.path.abspath(r.path)) for r in gallery_records(gallery)]
    skipped = 0
    if append:
        known = set(index.metadata["path"].map(os.path.abspath))
        kept = [r for r in records if r.path not in known]
        skipped = len(records) - len(kept)
        if not kept:
            raise IndexFormatError(
                f"{gallery}: all {len(records)} images are already in the index {out}; nothing to append"
            )
        records = kept
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
            factory=factory,
            model_hash=embedder.model_hash,
            preprocessing=embedder.preprocessing,
            keep_features=keep_features or report_recall,
        )
    if calibrate is not None:
        index.manifest["calibration"] = calibrate_threshold(
            embedder, calibration_set, far, calibrate
        )
    if report_recall:
        sample = np.random.default_rng(0).choice(
            len(features), size=min(1000, len(features)), replace=False
        )
        index.manifest["recall"] = index.recall_at(features[sample])
    index.save(out)
    return {
        "count": int(index.index.ntotal),
        "added": len(records),
        "skipped": skipped,
        "manifest": index.manifest,
    }


def remove_from_index(out: str, pids=(), paths_file: str | None = None) -> dict:
    """Remove identities and/or listed images from the index at ``out`` (atomic, like append)."""
    index = GalleryIndex.load(out)
    drop = index.metadata["pid"].isin([int(p) for p in pids]).to_numpy().copy()
    missing: list[str] = []
    if paths_file is not None:
        listed = Path(paths_file)
        if not listed.is_file():
            raise ReidError(f"--remove-paths {paths_file}: file not found")
        wanted = {
            os.path.abspath(line.strip())
            for line in listed.read_text().splitlines()
            if line.strip()
        }
        stored = index.metadata["path"].map(os.path.abspath)
        drop |= stored.isin(wanted).to_numpy()
        missing = sorted(wanted - set(stored))
    unknown = sorted(set(int(p) for p in pids) - set(index.metadata["pid"].tolist()))
    removed = index.remove(drop)
    if removed == 0:
        raise ReidError(f"{out}: nothing to remove (no such pid or path in the index)")
    index.save(out)
    return {"removed": removed, "count": int(index.index.ntotal), "unknown_pids": unknown,
            "missing_paths": missing}  # fmt: skip


def calibration_split(source: str):
    """The labelled query/gallery a threshold is calibrated on (checked before any embedding)."""
    path = Path(source)
    if path.suffix in (".npz", ".parquet"):
        raise ReidError(
            f"--calibrate {source}: a feature file does not record which model made it; "
            "calibrate on a labelled split (query/ + bounding_box_test/, or a CSV manifest)"
        )
    dataset = load_dataset(path, all_splits=False)
    if not dataset.query or not dataset.gallery:
        raise ReidError(f"--calibrate {source}: needs labelled query and gallery images")
    return dataset


def calibrate_threshold(embedder: Embedder, dataset, far: float, source: str) -> dict:
    """Open-set threshold τ at false-alarm rate ``far`` on a labelled split, for this model."""
    (q_pids, q_camids), (g_pids, g_camids) = arrays(dataset.query), arrays(dataset.gallery)
    result = verification_metrics(
        embedder([r.path for r in dataset.query]),
        embedder([r.path for r in dataset.gallery]),
        q_pids,
        g_pids,
        q_camids,
        g_camids,
        fars=(far,),
        fprs=(),
    )
    tau = result.far_threshold[far]
    impostors = result.impostor_scores[np.isfinite(result.impostor_scores)]
    return {
        "threshold": tau,
        "far": far,
        "measured_far": float((impostors > tau).mean()) if len(impostors) else None,
        "dir_at_far": result.dir_at_far[far],
        "queries": int(len(impostors)),
        "source": str(Path(source).resolve()),
        "model_hash": embedder.model_hash,
        "rule": "accept a hit when its score is > threshold",
    }


def search(
    index_dir: str,
    images: list[str],
    model: str | None = None,
    topk: int = 10,
    exclude_same_camera=False,
    out: str | None = None,
    device=None,
    report_recall: bool = False,
    nprobe: int | None = None,
) -> dict:
    if topk < 1:
        raise IndexFormatError(f"--topk {topk}: must be at least 1")
    index = GalleryIndex.load(index_dir)
    if model is None:
        raise ValueError("--checkpoint (or an exported model) is needed to embed the query images")
    embedder = Embedder.open(model, device)
    index.check_compatible(index.manifest["dim"], "cosine", embedder.model_hash or None)
    records = [r for source in images for r in image_folder_records(source)]
    features = embedder([r.path for r in records])
    q_pids, q_camids = arrays(records)
    table = index.search(features, topk, q_camids, exclude_same_camera, nprobe)
    table.insert(1, "query_path", [records[q].path for q in table["query"]])
    result = {"table": table, "no_match": []}
    calibration = index.manifest.get("calibration")
    if calibration is not None:
        if calibration.get("model_hash") != index.manifest.get("model_hash"):
            raise IndexFormatError(
                f"{index_dir}: its calibration was made with another model than its vectors; "
                "re-export with --calibrate"
            )
        table["match"] = table["score"] > calibration["threshold"]
        result["threshold"] = calibration
        matched = set(table.loc[table["match"], "query"])
        result["no_match"] = [r.path for q, r in enumerate(records) if q not in matched]
    if report_recall:
        result["recall"] = index.recall_at(features, ks=(1, min(10, topk)))
    if out:
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        table.to_csv(out_dir / "results.csv", index=False)
        (out_dir / "results.json").write_text(table.to_json(orient="records", indent=1))
        size = tuple(index.manifest.get("preprocessing", {}).get("image_size", (128, 64)))
        rows = []
        for q, group in table.groupby("query"):
            known = q_pids[q] >= 0
            matches = [bool(p == q_pids[q]) if known and p >= 0 else None for p in group["pid"]]
            rows.append(
                ranked_list_image(
                    records[q].path,
                    list(group["path"]),
                    matches,
                    size,
                    query_label=query_caption(records[q].path, int(q_pids[q]), int(q_camids[q])),
                    hit_labels=[
                        hit_caption(int(r.rank), float(r.score), int(r.pid), int(r.camid))
                        + (["match" if r.match else "below thr."] if "match" in group else [])
                        for r in group.itertuples()
                    ],
                )
            )
        if rows:
            save_ranked_lists(rows[:16], str(out_dir / "results.png"))
        if "recall" in result:
            (out_dir / "recall.json").write_text(json.dumps(result["recall"]))
        result["files"] = [str(out_dir / n) for n in ("results.csv", "results.json", "results.png")]
    return result
