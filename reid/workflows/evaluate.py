"""What ``reid evaluate`` does: features (from a checkpoint or a file) → metrics → files."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import DatasetError, arrays, load_dataset
from ..errors import ReidError
from ..evaluation.feature_set import FeatureSet
from ..evaluation.features_io import check_feature_suffix, load_features, save_features
from ..evaluation.pipeline import evaluate_features, top_k
from ..evaluation.plots import Hit, RankedList, draw_ranked_lists, plot_cmc, plot_verification
from ..evaluation.verification import verification_metrics
from ..loading import load_model
from ..models import FeatureExtractor
from ..models.export import is_export, open_export
from ..models.runtime import RuntimeModule, check_checkpoint_runtime
from ..outputs import OutputFolder, output_file

EVALUATION_FILES = ("result.json", "cmc.png", "verification.png", "ranked_lists.png")


def features_from_checkpoint(
    checkpoint: str, data: str | None, extraction: Extraction
) -> tuple[FeatureSet, FeatureSet, tuple]:
    """Query and gallery features of ``data`` (default: the checkpoint's dataset) by a
    checkpoint on torch, or by an exported model on its runtime (``extraction.runtime``)."""
    device = extraction.device
    if is_export(checkpoint):
        if data is None:
            raise ReidError(
                f"--data: {checkpoint} is an exported model; name the split to evaluate"
            )
        opened = open_export(checkpoint, extraction.runtime)
        model = RuntimeModule(opened.run)
        root, kind, size, device = data, "auto", tuple(opened.sidecar.image_size), "cpu"
    else:
        check_checkpoint_runtime(extraction.runtime, checkpoint)
        model, cfg = load_model(checkpoint)
        # the run's own data is read the way the run read it (its data.kind), another root is
        # auto-detected
        root, kind = data or cfg.data.root, "auto" if data else cfg.data.kind
        size = tuple(cfg.data.image_size)
    # evaluation reads query and gallery only (a test-only folder is fine)
    dataset = load_dataset(root, kind, False)
    if not dataset.query or not dataset.gallery:
        raise DatasetError(f"{root}: needs query and gallery images to evaluate")
    extractor = FeatureExtractor(model, size, device, extraction.batch_size, extraction.workers,
                                 extraction.flip, source=str(checkpoint))  # fmt: skip
    sets = []
    for records in (dataset.query, dataset.gallery):
        pids, camids = arrays(records)
        sets.append(
            FeatureSet(
                extractor.extract_records(records, progress=True),
                pids,
                camids,
                np.array([r.path for r in records]),
            )
        )
    return sets[0], sets[1], size


def top_k_scores(query, gallery, metric: str, q: int, neighbours: list[int]) -> list[float]:
    """The scores of query ``q`` against its listed neighbours (cosine, or −squared distance)."""
    a = query.features[q].astype(np.float64)
    b = gallery.features[neighbours].astype(np.float64)
    if metric == "cosine":
        return list((b @ a) / (np.linalg.norm(b, axis=1) * np.linalg.norm(a) + 1e-12))
    return list(-((b - a) ** 2).sum(1))


@dataclass(frozen=True)
class Scoring:
    """How query and gallery are compared: the metric, the AP protocol, re-ranking, AQE."""

    metric: str = "cosine"
    ap: str = "torchreid"
    rerank: bool = False
    query_expansion: int = 0


@dataclass(frozen=True)
class Extraction:
    """How features are extracted from a checkpoint: flip averaging, device, batches."""

    flip: bool = False
    device: str | None = None
    batch_size: int = 128
    workers: int = 2
    runtime: str | None = None  # an exported model's runtime


@dataclass(frozen=True)
class Drawing:
    """The ranked lists drawn: how many queries (0: none), hits each, worst AP first."""

    ranked: int = 8
    topk: int = 10
    worst_first: bool = False


def run_evaluation(
    *,
    checkpoint=None,
    data=None,
    features=None,
    out="runs/eval",
    scoring: Scoring = Scoring(),
    extraction: Extraction = Extraction(),
    drawing: Drawing = Drawing(),
    save_feature_file=None,
) -> dict:
    metric, ap, rerank, query_expansion = (
        scoring.metric, scoring.ap, scoring.rerank, scoring.query_expansion
    )  # fmt: skip
    device = extraction.device
    ranked, topk, worst_first = drawing.ranked, drawing.topk, drawing.worst_first
    # every output name checked (free, or written by reid) before the feature extraction
    outputs = OutputFolder(out, "evaluate")
    outputs.prepare(EVALUATION_FILES)
    feature_file = None
    if save_feature_file:
        feature_file = output_file(save_feature_file, "evaluate", "--save-features")
        check_feature_suffix(save_feature_file)
        feature_file[0].prepare([feature_file[1]])
    out = outputs.folder
    start = time.perf_counter()
    size = (128, 64)
    if features:
        query, gallery = load_features(features)
    elif checkpoint:
        query, gallery, size = features_from_checkpoint(checkpoint, data, extraction)
    else:
        raise ReidError("give --checkpoint (with --data or the checkpoint's dataset) or --features")
    extract_s = time.perf_counter() - start
    if feature_file is not None:
        folder, name = feature_file
        folder.write(name, lambda tmp: save_features(tmp, query, gallery))
    result = evaluate_features(
        query,
        gallery,
        metric=metric,
        ap=ap,
        rerank=rerank,
        query_expansion=query_expansion,
        device=device,
    )
    result.timings["extract_s"] = extract_s
    verification = verification_metrics(
        query,
        gallery,
        metric=metric,
        device=device,
    )
    summary = {**result.as_dict(), "verification": verification.as_dict()}
    summary.update(
        {
            "queries": len(query),
            "gallery": len(gallery),
            "metric": metric,
            "ap": ap,
            "rerank": rerank,
            "query_expansion": query_expansion,
            "source": features or checkpoint,
        }
    )
    outputs.write_json("result.json", summary, indent=2)
    outputs.write(
        "cmc.png", lambda tmp: plot_cmc({"re-ranked" if rerank else metric: result}, str(tmp))
    )
    outputs.write("verification.png", lambda tmp: plot_verification(verification, str(tmp)))
    files = {
        "json": str(out / "result.json"),
        "cmc": str(out / "cmc.png"),
        "verification": str(out / "verification.png"),
    }
    can_draw = (
        ranked
        and len(query.paths)
        and all(Path(p).is_file() for p in list(query.paths[:1]) + list(gallery.paths[:1]))
    )
    if can_draw:
        valid = np.nonzero(result.first_hit > 0)[0]
        rows = valid[np.argsort(result.ap[valid], kind="stable")] if worst_first else valid
        rows = rows[:ranked]
        lists = []
        for q, nb in zip(rows, top_k(query, gallery, metric, topk, rows)):
            nb = list(nb)
            scores = top_k_scores(query, gallery, metric, q, nb)
            hits = [
                Hit(gallery.paths[g], scores[r], int(gallery.pids[g]), int(gallery.camids[g]),
                    bool(gallery.pids[g] == query.pids[q]))
                for r, g in enumerate(nb)
            ]  # fmt: skip
            lists.append(RankedList(query.paths[q], int(query.pids[q]), int(query.camids[q]),
                                    hits, result.ap[q]))  # fmt: skip
        outputs.write("ranked_lists.png", lambda tmp: draw_ranked_lists(lists, size, str(tmp)))
        files["ranked_lists"] = str(out / "ranked_lists.png")
    return {
        "result": result,
        "verification": verification,
        "summary": summary,
        "files": files,
        "query_paths": list(query.paths),
    }
