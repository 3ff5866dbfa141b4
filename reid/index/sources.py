"""Where embeddings come from (a checkpoint or an exported model) and which images a gallery has."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data import load_dataset
from ..data.market1501 import IMAGE_SUFFIXES, parse_name_or_unknown
from ..data.records import DatasetError, ImageRecord
from ..loading import load_model
from ..models import FeatureExtractor
from ..models.checkpoint import preprocessing
from ..models.export import is_export, open_export
from ..models.runtime import RuntimeModule, check_checkpoint_runtime
from ..outputs import sha256


class Embedder:
    """``Embedder.open(path)``: a training checkpoint, or a ``.pt2`` / ``.onnx`` / legacy ``.ts`` export.

    Calling it on image paths returns L2-normalised float32 embeddings through the one embedding
    path, :class:`~reid.models.FeatureExtractor`; ``model_hash`` is the SHA-256 of the checkpoint
    the embeddings come from (an export records it in its sidecar).
    """

    def __init__(self, extractor: FeatureExtractor, image_size, model_hash: str,
                 runtime: str = "torch", precision: str = "fp32"):  # fmt: skip
        self.extractor, self.image_size, self.model_hash = extractor, tuple(image_size), model_hash
        self.runtime, self.precision = runtime, precision

    @classmethod
    def open(cls, path: str | Path, device: str | None = None, batch_size: int = 64,
             runtime: str | None = None) -> Embedder:  # fmt: skip
        """``runtime``: for an export, the runtime to run it on (default: the one its export
        was verified with, else the format's); a checkpoint runs on torch."""
        path = Path(path)
        if not path.is_file():
            raise DatasetError(f"{path}: model file not found")
        if is_export(path):
            opened = open_export(path, runtime)
            meta = opened.sidecar
            extractor = FeatureExtractor(RuntimeModule(opened.run), tuple(meta.image_size), "cpu",
                                         batch_size, source=str(path))  # fmt: skip
            return cls(extractor, meta.image_size, meta.source_hash, opened.runtime, meta.precision)
        check_checkpoint_runtime(runtime, path)
        model, cfg = load_model(path)
        extractor = FeatureExtractor(
            model, tuple(cfg.data.image_size), device, batch_size, source=str(path)
        )
        return cls(extractor, cfg.data.image_size, sha256(path))

    @property
    def embedding(self) -> dict:
        """What embeds: the runtime and precision (recorded in an index's manifest)."""
        return {"runtime": self.runtime, "precision": self.precision}

    def __call__(self, paths, progress: bool = False) -> np.ndarray:
        records = [ImageRecord(str(p), -1, -1, "gallery") for p in paths]
        if not records:
            return np.zeros((0, 0), np.float32)
        return self.extractor.extract_records(records, progress=progress)

    @property
    def dim(self) -> int:
        """The embedding dimension (one blank image through the model, no data read)."""
        if not hasattr(self, "_dim"):
            blank = torch.zeros(1, 3, *self.image_size)
            self._dim = int(self.extractor.embed_batch(blank).shape[1])
        return self._dim

    @property
    def preprocessing(self) -> dict:
        return preprocessing(self.image_size)


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
    """Every image under ``source`` (a file or a folder, recursively). In a folder, Market-style
    junk (pid −1) is left out; a file named explicitly is always kept. Names of any other form,
    and junk named explicitly, get pid and camera −1 (unknown)."""
    source = Path(source)
    if source.is_file():
        parsed = parse_name_or_unknown(source)
        pid, camid = parsed if parsed is not None and parsed[0] >= 0 else (-1, -1)
        if parsed is not None and parsed[0] == -1:
            camid = parsed[1]
        return [ImageRecord(str(source), pid, camid, "gallery")]
    elif source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        raise DatasetError(f"{source}: not found")
    if not files:
        raise DatasetError(f"{source}: no images (*.jpg, *.jpeg, *.png)")
    records = []
    for path in files:
        parsed = parse_name_or_unknown(path)
        if parsed is None:
            records.append(ImageRecord(str(path), -1, -1, "gallery"))
        elif parsed[0] != -1:
            records.append(ImageRecord(str(path), parsed[0], parsed[1], "gallery"))
    return records
