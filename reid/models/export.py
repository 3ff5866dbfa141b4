"""Embedding-model export: TorchScript and ONNX, each checked against PyTorch after export.

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


def export_model(
    model: nn.Module, path: str | Path, image_size, source_hash: str = "", check_batch: int = 3
) -> float:
    """Export to ``.pt``/``.ts`` (TorchScript) or ``.onnx``; returns the max abs difference to PyTorch."""
    path = Path(path)
    wrapped = NormalizedEmbedding(model).eval()
    example = torch.randn(2, 3, *image_size)
    check = torch.randn(check_batch, 3, *image_size)
    with torch.no_grad():
        reference = wrapped(check).numpy()
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix in (".pt", ".ts"):
        with torch.no_grad():
            traced = torch.jit.trace(wrapped, example)
        traced.save(str(tmp))
        with torch.no_grad():
            produced = torch.jit.load(str(tmp))(check).numpy()
        fmt = "torchscript"
    elif path.suffix == ".onnx":
        import onnxruntime

        torch.onnx.export(
            wrapped,
            (example,),
            str(tmp),
            input_names=["images"],
            output_names=["embeddings"],
            dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        produced = session.run(None, {"images": check.numpy()})[0]
        fmt = "onnx"
    else:
        raise ValueError(f"{path}: export format from the suffix: .pt/.ts (TorchScript) or .onnx")
    difference = float(np.abs(produced - reference).max())
    if difference >= TOLERANCE:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(
            f"{path}: exported model differs from PyTorch by {difference:.2e} (>= {TOLERANCE})"
        )
    tmp.replace(path)
    _sidecar(path, image_size, reference.shape[1], source_hash, fmt)
    return difference
