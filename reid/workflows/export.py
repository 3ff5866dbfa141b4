"""What ``reid export-model`` does: export a checkpoint's embedding model, at fp32 or at a
reduced precision that is verified when it is made.

``--precision bf16`` keeps the fp32 ONNX graph and runs it on OpenVINO in bf16 (only where the
CPU has bf16: elsewhere the export is refused before any work). ``--precision int8`` quantizes
the graph (``models/quantize.py``), calibrated on ``--calibration-crops`` crops of the user's
``--calibrate`` folder (its ``bounding_box_train/`` when it is a Market-format root). Either is
then measured on a labelled split (``--verify``, or the calibration folder when it has
``query/`` and ``bounding_box_test/``): R1 / mAP of the fp32 model and of the reduced one, the
top-10 overlap of their rankings and the worst cosine gap between an image's two embeddings.
The numbers go into the sidecar and are printed. An int8 model over the bound
(``--max-map-loss``, mAP points) keeps its most sensitive nodes in fp32, more of them each
round, until it is within the bound; when none is, the export is refused in one line and
nothing is written.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import arrays
from ..data.records import DatasetError
from ..evaluation.feature_set import FeatureSet
from ..evaluation.rank import evaluate_rank
from ..index.sources import image_folder_records
from ..loading import load_model
from ..models import FeatureExtractor
from ..models.export import ExportError, check_export_targets, export_model
from ..models.quantize import METHOD, quantize_int8, sensitivity
from ..models.runtime import PRECISION_RUNTIMES, RuntimeModule, cpu_has_bf16, open_runtime
from ..models.torchreid_model import IMAGE_SIZE, is_torchreid, load_torchreid
from ..optional import require
from ..outputs import sha256
from .index import labelled_split

#: how many of the most sensitive nodes an int8 export keeps in fp32, round by round
FP32_ROUNDS = (0, 2, 4, 8, 16, 32)
SENSITIVITY_CROPS = 64


@dataclass(frozen=True)
class Reduction:
    """The precision asked for and how it is made and verified."""

    precision: str = "fp32"
    calibrate: str | None = None
    crops: int = 256
    verify: str | None = None
    max_map_loss: float = 1.0
    runtime: str | None = None


@dataclass(frozen=True)
class Foreign:
    """A model torchreid saved (``--checkpoint torchreid:NAME``): its weights file and the input
    size it runs at (torchreid's FeatureExtractor default: 256×128)."""

    weights: str | None = None
    image_size: tuple | None = None


def export_models(checkpoint: str, outs: list[str], reduction: Reduction = Reduction(),
                  foreign: Foreign = Foreign()) -> list:  # fmt: skip
    """Export ``checkpoint`` (a reid checkpoint, or ``torchreid:NAME`` with ``foreign.weights``)
    to every file of ``outs``; each is checked against PyTorch, and a reduced precision against
    the fp32 model on the verification split. Every check that needs no model runs first."""
    if is_torchreid(checkpoint) != (foreign.weights is not None):
        raise ExportError(
            "--weights goes with --checkpoint torchreid:NAME (a model torchreid saved)"
        )
    if foreign.image_size is not None and not is_torchreid(checkpoint):
        raise ExportError("--image-size: a reid checkpoint runs at its own training size")
    check_export_targets(outs)
    plan = _plan(outs, reduction)
    if is_torchreid(checkpoint):
        model = load_torchreid(checkpoint, foreign.weights)
        size, digest = tuple(foreign.image_size or IMAGE_SIZE), sha256(foreign.weights)
    else:
        model, cfg = load_model(checkpoint)
        size, digest = tuple(cfg.data.image_size), sha256(checkpoint)
    done = []
    for target in outs:
        fields: dict = {}

        def reduce(fp32: Path, final: Path, fields=fields) -> dict:
            fields.update(_reduce(model, size, fp32, final, reduction, plan))
            return fields

        difference = export_model(model, target, size, digest,
                                  reduce=None if reduction.precision == "fp32" else reduce)  # fmt: skip
        done.append({"out": target, "difference": difference, **fields})
    return done


@dataclass
class _Plan:
    runtime: str
    split: object = None
    split_source: str = ""
    crops: list = None


def _plan(outs, r: Reduction) -> _Plan:
    """Every check of a reduced-precision export before the first conversion."""
    if r.precision == "fp32":
        if r.calibrate or r.verify:
            raise ExportError("--calibrate, --verify: for --precision int8 or bf16")
        return _Plan(runtime="torch")
    not_onnx = [o for o in outs if Path(o).suffix != ".onnx"]
    if not_onnx:
        raise ExportError(f"--out {not_onnx[0]}: a {r.precision} export is an .onnx model")
    allowed = [x for x in PRECISION_RUNTIMES[r.precision] if x != "torch"]
    runtime = r.runtime or allowed[0]
    if runtime not in allowed:
        raise ExportError(f"--runtime {runtime}: {r.precision} runs on {', '.join(allowed)}")
    require(runtime, f"--precision {r.precision} on {runtime}")
    if r.precision == "bf16" and not cpu_has_bf16():
        raise ExportError(
            "--precision bf16: this CPU has no bf16 (AVX-512 BF16 or AMX); OpenVINO would emulate "
            "it slower than fp32. Export fp32 or int8"
        )
    if r.precision == "int8" and not r.calibrate:
        raise ExportError("--precision int8 needs --calibrate FOLDER (your own images)")
    crops = _calibration_records(r.calibrate, r.crops) if r.calibrate else None
    source = r.verify or (r.calibrate if _market_shaped(r.calibrate) else None)
    if source is None:
        raise ExportError(
            f"--precision {r.precision} is verified on a labelled split: give --verify SPLIT "
            "(query/ + bounding_box_test/, or a CSV manifest)"
        )
    try:
        split = labelled_split(source, "--verify")
    except DatasetError as exc:
        raise ExportError(f"--verify {source}: {exc}") from None
    return _Plan(runtime, split, str(source), crops)


def _market_shaped(folder) -> bool:
    return folder is not None and all(
        (Path(folder) / name).is_dir() for name in ("query", "bounding_box_test")
    )


def _calibration_records(folder: str, crops: int) -> list:
    root = Path(folder)
    if not root.exists():
        raise ExportError(f"--calibrate {folder}: not found")
    source = root / "bounding_box_train" if (root / "bounding_box_train").is_dir() else root
    records = image_folder_records(source)
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(records), size=min(crops, len(records)), replace=False)
    return [records[i] for i in sorted(chosen)]


def _batches(extractor: FeatureExtractor, records) -> list[np.ndarray]:
    """The calibration crops, preprocessed as every runtime sees them (the extractor's batches)."""
    loader = extractor.loader(records)
    return [images.numpy() for images, *_ in loader]


def _embed(run, size, records) -> np.ndarray:
    return FeatureExtractor(RuntimeModule(run), size, "cpu", 64).extract_records(records)


def _reduce(model, size, fp32: Path, final: Path, r: Reduction, plan: _Plan) -> dict:
    split = plan.split
    records = split.query + split.gallery
    reference = _embed(open_runtime(fp32, "onnxruntime"), size, records)
    if r.precision == "bf16":
        for produced in fp32.parent.iterdir():  # the fp32 graph (and its data) is the model
            shutil.move(produced, final.parent / produced.name)
        verification = _verify(reference, _embed(open_runtime(final, plan.runtime, "bf16"), size,
                                                 records), split, plan, r)  # fmt: skip
        _check_bound(verification, r, final.name, kept=None)
        return {"precision": "bf16", "runtime": plan.runtime, "verification": verification}
    extractor = FeatureExtractor(RuntimeModule(lambda x: x), size, "cpu", 32)
    batches = _batches(extractor, plan.crops)
    ranked, verification, kept = [], None, []
    for round_, count in enumerate(FP32_ROUNDS):
        if round_:
            if not ranked:  # measured once, on the all-int8 model
                sample = np.concatenate(batches)[:SENSITIVITY_CROPS]
                ranked = [name for name, _ in sensitivity(fp32, final, [sample])]
            count = min(count, len(ranked))
            if count <= len(kept):  # every ranked node is fp32 already
                break
        kept = ranked[:count]
        quantize_int8(fp32, final, batches, exclude=kept)
        produced = _embed(open_runtime(final, plan.runtime, "int8"), size, records)
        verification = _verify(reference, produced, split, plan, r)
        if verification["map_loss"] <= r.max_map_loss:
            break
    _check_bound(verification, r, final.name, kept)
    calibration = {"folder": str(Path(r.calibrate).resolve()), "crops": len(plan.crops),
                   "method": METHOD, "fp32_nodes": kept}  # fmt: skip
    return {"precision": "int8", "runtime": plan.runtime, "verification": verification,
            "calibration": calibration}  # fmt: skip


def _check_bound(verification: dict, r: Reduction, name: str, kept) -> None:
    if verification["map_loss"] > r.max_map_loss:
        tried = f" even with its {len(kept)} most sensitive nodes in fp32" if kept else ""
        raise ExportError(
            f"{name}: {r.precision} loses {verification['map_loss']:.2f} mAP points on "
            f"{verification['split']} (fp32 {verification['fp32']['mAP']:.2f}, {r.precision} "
            f"{verification['reduced']['mAP']:.2f}){tried}, more than --max-map-loss "
            f"{r.max_map_loss:g}; nothing written"
            + (
                "; --precision bf16 is the verified fallback where the CPU has it"
                if r.precision == "int8"
                else ""
            )
        )


def _verify(reference: np.ndarray, produced: np.ndarray, split, plan: _Plan, r: Reduction) -> dict:
    """R1 / mAP of both embeddings, their top-10 overlap and the worst cosine gap."""
    nq = len(split.query)
    (qp, qc), (gp, gc) = arrays(split.query), arrays(split.gallery)
    scores = {}
    for name, e in (("fp32", reference), ("reduced", produced)):
        result = evaluate_rank(FeatureSet(e[:nq], qp, qc), FeatureSet(e[nq:], gp, gc))
        scores[name] = {"rank1": round(100 * result.rank(1), 2), "mAP": round(100 * result.mAP, 2)}
    top = [np.argsort(-(e[:nq] @ e[nq:].T), axis=1, kind="stable")[:, :10]
           for e in (reference, produced)]  # fmt: skip
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(*top)])
    gap = float(np.max(1.0 - np.sum(reference * produced, axis=1)))
    return {
        "split": plan.split_source,
        "runtime": plan.runtime,
        "queries": nq,
        "gallery": len(split.gallery),
        "fp32": scores["fp32"],
        "reduced": scores["reduced"],
        "map_loss": round(scores["fp32"]["mAP"] - scores["reduced"]["mAP"], 2),
        "max_map_loss": r.max_map_loss,
        "top10_overlap": round(float(overlap), 4),
        "worst_cosine_gap": round(gap, 6),
    }


__all__ = ["Foreign", "Reduction", "export_models"]
