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

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..data.transforms import MEAN, STD

TOLERANCE = 1e-4


class NormalizedEmbedding(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model(images), dim=1)


def _sidecar(path: Path, image_size, dim: int, source_hash: str, fmt: str) -> None:
    Path(f"{path}.json").write_text(
        json.dumps(
            {
                "format": fmt,
                "image_size": list(image_size),
                "mean": MEAN,
                "std": STD,
                "dim": dim,
                "source_hash": source_hash,
                "output": "l2-normalised",
            },
            indent=2,
        )
    )


def _dynamic_batch():
    return {"images": {0: torch.export.Dim("batch", min=1, max=65536)}}


def load_exported(path: str | Path):
    """A callable ``images (N, 3, H, W) float32 tensor → embeddings (N, D) numpy`` for an export."""
    path = Path(path)
    if path.suffix == ".pt2":
        module = torch.export.load(str(path)).module()
        return lambda x: module(x).detach().numpy()
    if path.suffix == ".onnx":
        import onnxruntime  # optional at import time: only ONNX exports need it

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"images": x.numpy()})[0]
    if path.suffix == ".ts":
        module = torch.jit.load(str(path), map_location="cpu").eval()
        return lambda x: module(x).detach().numpy()
    raise ValueError(f"{path}: export format from the suffix: .pt2, .onnx or .ts (legacy)")


def export_model(
    model: nn.Module, path: str | Path, image_size, source_hash: str = "", check_batch: int = 3
) -> float:
    """Export to ``.pt2``, ``.onnx`` or legacy ``.ts``; returns the max abs difference to PyTorch
    on a batch of another size than the one traced (the batch axis is dynamic)."""
    path = Path(path)
    formats = {".pt2": "torch.export", ".onnx": "onnx", ".ts": "torchscript"}
    if path.suffix not in formats:
        raise ValueError(f"{path}: export format from the suffix: .pt2, .onnx or .ts (legacy)")
    wrapped = NormalizedEmbedding(model).eval()
    example = torch.randn(2, 3, *image_size)
    check = torch.randn(check_batch, 3, *image_size)
    with torch.no_grad():
        reference = wrapped(check).numpy()
    tmp = path.with_name(path.name + ".tmp" + path.suffix)
    with torch.no_grad():
        if path.suffix == ".pt2":
            program = torch.export.export(wrapped, (example,), dynamic_shapes=_dynamic_batch())
            torch.export.save(program, str(tmp))
        elif path.suffix == ".onnx":
            torch.onnx.export(
                wrapped,
                (example,),
                str(tmp),
                input_names=["images"],
                output_names=["embeddings"],
                dynamic_shapes=_dynamic_batch(),
                dynamo=True,
                verbose=False,
            )
        else:
            torch.jit.trace(wrapped, example).save(str(tmp))
        produced = load_exported(tmp)(check)
    difference = float(np.abs(produced - reference).max())
    if difference >= TOLERANCE:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(
            f"{path}: exported model differs from PyTorch by {difference:.2e} (>= {TOLERANCE})"
        )
    tmp.replace(path)
    _sidecar(path, image_size, reference.shape[1], source_hash, formats[path.suffix])
    return difference
