"""What ``tools/evaluate.py`` does: features (from a checkpoint or a file) → metrics → files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..data import arrays, load_dataset
from ..evaluation.features_io import FeatureSet, load_features, save_features
from ..evaluation.pipeline import evaluate_features, top_k
from ..evaluation.plots import (
    hit_caption,
    plot_cmc,
    plot_verification,
    query_caption,
    ranked_list_image,
    save_ranked_lists,
)
from ..evaluation.verification import verification_metrics
from ..models import FeatureExtractor
from ..models.checkpoint import load_model


def features_from_checkpoint(
    checkpoint: str, data: str | None, device: str | None, flip: bool, batch_size: int, workers: int
) -> tuple[FeatureSet, FeatureSet, tuple]:
    model, cfg = load_model(checkpoint)
    dataset = load_dataset(data or cfg.data.root)
    size = tuple(cfg.data.image_size)
    extractor = FeatureExtractor(model, size, device, batch_size, workers, flip)
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


def run_evaluation(
    *,
    checkpoint=None,
    data=None,
    features=None,
    out="runs/eval",
    metric="cosine",
    ap="torchreid",
    rerank=False,
    query_expansion=0,
    flip=False,
    device=None,
    batch_size=128,
    workers=2,
    ranked=8,
    topk=10,
    worst_first=False,
    save_feature_file=None,
) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    size = (128, 64)
    if features:
        query, gallery = load_features(features)
    elif checkpoint:
        query, gallery, size = features_from_checkpoint(
            checkpoint, data, device, flip, batch_size, workers
        )
    else:
        raise ValueError(
            "give --checkpoint (with --data or the checkpoint's dataset) or --features"
        )
    extract_s = time.perf_counter() - start
    if save_feature_file:
        save_features(save_feature_file, query, gallery)
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
        query.features,
        gallery.features,
        query.pids,
        gallery.pids,
        query.camids,
        gallery.camids,
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
    (out / "result.json").write_text(json.dumps(summary, indent=2))
    plot_cmc({"re-ranked" if rerank else metric: result}, str(out / "cmc.png"))
    plot_verification(verification, str(out / "verification.png"))
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
        lists = top_k(query, gallery, metric, topk, rows)
        images = []
        for q, nb in zip(rows, lists):
            nb = list(nb)
            scores = top_k_scores(query, gallery, metric, q, nb)
            images.append(
                ranked_list_image(
                    query.paths[q],
                    [gallery.paths[g] for g in nb],
                    [bool(gallery.pids[g] == query.pids[q]) for g in nb],
                    size,
                    query_label=query_caption(
                        query.paths[q], int(query.pids[q]), int(query.camids[q]), result.ap[q]
                    ),
                    hit_labels=[
                        hit_caption(r + 1, scores[r], int(gallery.pids[g]), int(gallery.camids[g]))
                        for r, g in enumerate(nb)
                    ],
                )
            )
        save_ranked_lists(images, str(out / "ranked_lists.png"))
        files["ranked_lists"] = str(out / "ranked_lists.png")
    return {"result": result, "verification": verification, "summary": summary, "files": files}
