"""Embedding-model export on the maintained PyTorch path, each checked against PyTorch.

* ``.pt2`` — a ``torch.export`` program (``torch.export.save``; load with ``torch.export.load``);
* ``.onnx`` — the ``torch.export``-based ONNX exporter (``dynamo=True``), run by onnxruntime;
* ``.ts`` — TorchScript (``torch.jit.trace``), deprecated in torch 2.14 and kept only as an
  explicitly requested legacy format.

The exported graph takes a float32 batch ``(N, 3, H, W)`` already resized to the training size
and normalised with ImageNet mean/std (``reid.data.transforms.MEAN/STD``), and returns
L2-normalised embeddings ``(N, D)``; the batch axis is dynamic. A JSON sidecar
(``MODEL.json``) records image size, mean, std, dimension and the source checkpoint's hash.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from ..atomic import json_text, temp_path, user_error
from ..boundary import Finite, Strict, parse, read_json
from ..data.transforms import MEAN, STD
from ..errors import ReidError
from ..optional import require
from ..outputs import output_file
from .runtime import choose_runtime, open_runtime

TOLERANCE = 1e-4
FORMATS = {".pt2": "torch.export", ".onnx": "onnx", ".ts": "torchscript"}


class ExportError(ReidError):
    """An export that cannot be written, or whose result differs from PyTorch."""


def export_names(path: Path) -> list[str]:
    """Every file an export to ``path`` writes: the model, its sidecar, ONNX external data."""
    names = [path.name, f"{path.name}.json"]
    if path.suffix == ".onnx":
        names.append(f"{path.name}.data")
    return names


def check_export_targets(paths) -> None:
    """Every target checked before the first conversion: format, name, ownership, writability."""
    seen = set()
    for target in paths:
        path = Path(target)
        if path.suffix not in FORMATS:
            raise ExportError(
                f"--out {target}: the format comes from the suffix: .pt2, .onnx or .ts (legacy)"
            )
        if path.resolve() in seen:
            raise ExportError(f"--out {target}: given twice")
        seen.add(path.resolve())
        folder, _ = output_file(path, "export_model", "--out")
        folder.prepare(export_names(path))


class NormalizedEmbedding(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model(images), dim=1)


def _sidecar(image_size, dim: int, source_hash: str, fmt: str, extra: dict | None = None) -> str:
    return json_text(
        {
            "format": fmt,
            "image_size": list(image_size),
            "mean": MEAN,
            "std": STD,
            "dim": dim,
            "source_hash": source_hash,
            "output": "l2-normalised",
            "precision": "fp32",
            **(extra or {}),
        },
        indent=2,
    )


class Scores(Strict):
    rank1: Finite
    mAP: Finite


class Verification(Strict):
    """What an export's reduced precision costs, measured when it was made: R1 / mAP of the
    fp32 model and of this one on a labelled split, the top-10 overlap of their rankings and
    the worst cosine gap between the two embeddings of one image."""

    split: str
    runtime: str
    queries: int = Field(ge=0)
    gallery: int = Field(ge=0)
    fp32: Scores
    reduced: Scores
    map_loss: Finite
    max_map_loss: Finite
    top10_overlap: Finite
    worst_cosine_gap: Finite


class CalibrationRecord(Strict):
    """How an int8 export was calibrated: on which folder, how many crops, the method, and the
    nodes kept in fp32 (mixed precision, by measured sensitivity)."""

    folder: str
    crops: int = Field(ge=1)
    method: str
    fp32_nodes: list[str] = Field(default_factory=list)


class Sidecar(Strict):
    """An export's sidecar (``MODEL.json``), parsed where it is read (``reid.boundary``)."""

    format: Literal["torch.export", "onnx", "torchscript"]
    image_size: Annotated[
        list[Annotated[int, Field(ge=1, le=4096)]], Field(min_length=2, max_length=2)
    ]
    mean: Annotated[list[Finite], Field(min_length=3, max_length=3)]
    std: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=3, max_length=3)]
    dim: int = Field(ge=1, le=65536)
    source_hash: str = ""
    output: Literal["l2-normalised"]
    precision: Literal["fp32", "bf16", "int8"] = "fp32"  # sidecars before precision: fp32
    runtime: Literal["torch", "onnxruntime", "openvino"] | None = None  # verified with
    verification: Verification | None = None
    calibration: CalibrationRecord | None = None


def read_sidecar(path: str | Path) -> Sidecar:
    """The sidecar of the export at ``path`` (``PATH.json``), or one line naming the field."""
    sidecar = Path(f"{path}.json")
    if not sidecar.is_file():
        raise ExportError(f"{sidecar}: missing (export with reid export-model)")
    meta = parse(Sidecar, read_json(sidecar, ExportError, "export sidecar"), sidecar, ExportError)
    if not (np.allclose(meta.mean, MEAN) and np.allclose(meta.std, STD)):
        raise ExportError(
            f"{sidecar}: field mean/std: {meta.mean} / {meta.std}; the embedding path normalises "
            f"with ImageNet's ({MEAN} / {STD}), so every runtime sees the tensors it was made for"
        )
    return meta


def _dynamic_batch():
    return {"images": {0: torch.export.Dim("batch", min=1, max=65536)}}


def is_export(path: str | Path) -> bool:
    """Whether ``path`` names an exported model (by its suffix, or a sidecar beside it)."""
    return Path(path).suffix in FORMATS or Path(f"{path}.json").is_file()


@dataclass(frozen=True)
class OpenedExport:
    """An export ready to run: its sidecar (None for a file being checked before it has one),
    the runtime chosen for it, and ``run``: ``images (N, 3, H, W) float32 tensor → embeddings
    (N, D) numpy``."""

    sidecar: Sidecar | None
    runtime: str
    run: Callable


def open_export(path: str | Path, runtime: str | None = None, sidecar: bool = True) -> OpenedExport:
    """The one way an export is opened: its sidecar read (required unless ``sidecar`` is
    False), then its precision run on the runtime asked for, or the one it was verified with."""
    path = Path(path)
    meta = read_sidecar(path) if sidecar or Path(f"{path}.json").is_file() else None
    precision = meta.precision if meta else "fp32"
    chosen = choose_runtime(path, precision, runtime, meta.runtime if meta else None)
    return OpenedExport(meta, chosen, open_runtime(path, chosen, precision))


def load_exported(path: str | Path, runtime: str | None = None) -> Callable:
    """The callable of an export, its sidecar read when it has one (``open_export``)."""
    return open_export(path, runtime, sidecar=False).run


def export_model(
    model: nn.Module,
    path: str | Path,
    image_size,
    source_hash: str = "",
    check_batch: int = 3,
    reduce: Callable[[Path, Path], dict] | None = None,
) -> float:
    """Export to ``.pt2``, ``.onnx`` or legacy ``.ts``; returns the max abs difference to PyTorch
    on a batch of another size than the one traced (the batch axis is dynamic).

    ``reduce(fp32_file, final_file) -> sidecar fields``: turns the checked fp32 export into the
    final file at reduced precision (and verifies it); raising refuses the export, and nothing
    is written.

    The export is made under its final name in a staging folder beside the target (so that ONNX
    external data, ``NAME.onnx.data``, is named after the final file), checked, then each file
    is moved into place (data first, the model file, then its sidecar). Only names that are free
    or that reid wrote are replaced (``check_export_targets``)."""
    path = Path(path)
    check_export_targets([path])
    folder, name = output_file(path, "export_model", "--out")
    wrapped = NormalizedEmbedding(model).eval()
    example = torch.randn(2, 3, *image_size)
    check = torch.randn(check_batch, 3, *image_size)
    with torch.no_grad():
        reference = wrapped(check).numpy()
    staging = temp_path(path, ".d")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        staged = staging / name
        converted = staged
        if reduce is not None:  # the fp32 export, apart: the reduced one takes the final name
            (staging / "fp32").mkdir()
            converted = staging / "fp32" / name
        with torch.no_grad():
            if path.suffix == ".pt2":
                program = torch.export.export(wrapped, (example,), dynamic_shapes=_dynamic_batch())
                torch.export.save(program, str(converted))
            elif path.suffix == ".onnx":
                for module in ("onnx", "onnxscript", "onnxruntime"):
                    require(module, f"--out {path} (ONNX export)")
                torch.onnx.export(
                    wrapped,
                    (example,),
                    str(converted),
                    input_names=["images"],
                    output_names=["embeddings"],
                    dynamic_shapes=_dynamic_batch(),
                    dynamo=True,
                    verbose=False,
                )
            else:
                torch.jit.trace(wrapped, example).save(str(converted))
            produced = load_exported(converted)(check)
        difference = float(np.abs(produced - reference).max())
        if difference >= TOLERANCE:
            raise ExportError(
                f"{path}: exported model differs from PyTorch by {difference:.2e} (>= {TOLERANCE})"
            )
        fields = {}
        if reduce is not None:
            fields = reduce(converted, staged)
            shutil.rmtree(staging / "fp32")
        extra = sorted(p.name for p in staging.iterdir() if p.name != name)
        unexpected = [n for n in extra if n not in export_names(path)]
        if unexpected:
            raise ExportError(f"{path}: the exporter wrote unexpected files {unexpected}")
        for file_name in [*extra, name]:  # the model file last: it names its data
            folder.write(file_name, lambda tmp, src=staging / file_name: shutil.move(src, tmp))
        stale = f"{name}.data"
        if path.suffix == ".onnx" and stale not in extra:
            folder.remove([stale])  # an earlier export's data this model no longer uses
        folder.write_text(f"{name}.json", _sidecar(image_size, reference.shape[1], source_hash,
                                                   FORMATS[path.suffix], fields))  # fmt: skip
    except (OSError, RuntimeError) as exc:  # a full disk while the exporter writes, say
        error = user_error(exc, path)
        if error is None:
            raise
        raise error from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return difference
