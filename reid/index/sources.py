"""Where embeddings come from (a checkpoint or an exported model) and which images a gallery has."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..data import load_dataset
from ..data.images import read_image
from ..data.market1501 import IMAGE_SUFFIXES, PATTERN
from ..data.records import DatasetError, ImageRecord
from ..data.transforms import build_transforms
from .gallery import sha256


class Embedder:
    """``Embedder.open(path)``: a training checkpoint, a TorchScript ``.pt/.ts`` or an ``.onnx`` export.

    Calling it on image paths returns L2-normalised float32 embeddings; ``model_hash`` is the
    SHA-256 of the checkpoint the embeddings come from (an export records it in its sidecar).
    """

    def __init__(self, run_batch, image_size, model_hash: str, batch_size: int = 64):
        self.run_batch, self.image_size, self.model_hash = run_batch, tuple(image_size), model_hash
        self.transform = build_transforms(self.image_size, train=False)
        self.batch_size = batch_size

    @classmethod
    def open(cls, path: str | Path, device: str | None = None, batch_size: int = 64) -> Embedder:
        path = Path(path)
        if not path.is_file():
            raise DatasetError(f"{path}: model file not found")
        if path.suffix in (".onnx", ".ts") or Path(f"{path}.json").is_file():
            sidecar = Path(f"{path}.json")
            if not sidecar.is_file():
                raise DatasetError(f"{sidecar}: missing (export with tools/export_model.py)")
            meta = json.loads(sidecar.read_text())
            if path.suffix == ".onnx":
                import onnxruntime

                session = onnxruntime.InferenceSession(
                    str(path), providers=["CPUExecutionProvider"]
                )
                run = lambda x: session.run(None, {"images": x.numpy()})[0]  # noqa: E731
            else:
                module = torch.jit.load(str(path), map_location="cpu").eval()

                def run(x):
                    with torch.no_grad():
                        return module(x).numpy()

            return cls(run, meta["image_size"], meta.get("source_hash", ""), batch_size)
        from ..models import FeatureExtractor
        from ..models.checkpoint import load_model

        model, cfg = load_model(path)
        extractor = FeatureExtractor(model, tuple(cfg.data.image_size), device, batch_size)
        return cls(
            lambda x: extractor.embed_batch(x).cpu().numpy(),
            cfg.data.image_size,
            sha256(path),
            batch_size,
        )

    def __call__(self, paths, progress: bool = False) -> np.ndarray:
        from tqdm import tqdm

        out = []
        for start in tqdm(
            range(0, len(paths), self.batch_size),
            disable=None if progress else True,
            desc="embed",
            leave=False,
        ):
            batch = torch.stack(
                [self.transform(read_image(p)) for p in paths[start : start + self.batch_size]]
            )
            out.append(np.asarray(self.run_batch(batch), dtype=np.float32))
        return np.vstack(out) if out else np.zeros((0, 0), np.float32)

    @property
    def preprocessing(self) -> dict:
        from ..data.transforms import MEAN, STD

        return {"image_size": list(self.image_size), "resize": "bilinear", "mean": MEAN, "std": STD}


def _parse_optional(path: Path) -> tuple[int, int]:
    match = PATTERN.match(path.name)
    if match is None:
        return -1, -1
    return int(match.group(1)), int(match.group(2)) - 1


def gallery_records(source: str | Path) -> list[ImageRecord]:
    """Images of a gallery: a Market-format root (its bounding_box_test), a CSV manifest (gallery
    rows), or any folder of images (recursively; pid/camera parsed from Market-style names, else -1)."""
    source = Path(source)
    if source.suffix.lower() == ".csv":
        return load_dataset(source).gallery
    if (source / "bounding_box_test").is_dir():
        return load_dataset(source, all_splits=False).gallery
    return image_folder_records(source)


def image_folder_records(source: str | Path) -> list[ImageRecord]:
    source = Path(source)
    if source.is_file():
        files = [source]
    elif source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        raise DatasetError(f"{source}: not found")
    if not files:
        raise DatasetError(f"{source}: no images (*.jpg, *.jpeg, *.png)")
    records = []
    for path in files:
        pid, camid = _parse_optional(path)
        if pid != -1 or not PATTERN.match(path.name):
            records.append(ImageRecord(str(path), pid, camid, "gallery"))
    return records
