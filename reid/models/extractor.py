"""Inference object: images or paths in, L2-normalised embeddings out (batched, device-aware)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.dataset import ImageDataset
from ..data.images import read_image, to_rgb
from ..data.records import ImageRecord
from ..data.transforms import build_transforms
from ..errors import ReidError


class FeatureExtractor:
    """``FeatureExtractor(model, image_size)(paths_or_images) -> (N, D) float32, unit rows``.

    ``flip=True`` averages the embeddings of the image and its mirror before normalising.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        image_size=(256, 128),
        device: str | None = None,
        batch_size: int = 128,
        num_workers: int | None = None,
        flip: bool = False,
        channels_last: bool = False,
        source: str = "the model",
    ):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.transform = build_transforms(image_size, train=False)
        # leave a core to the model: on 2 cores 1 worker beats 2 (benchmarks/bench_train.py)
        if num_workers is None:
            num_workers = max(1, min(8, (os.cpu_count() or 2) - 1))
        self.batch_size, self.num_workers, self.flip = batch_size, num_workers, flip
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.source = source

    @torch.no_grad()
    def embed_batch(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True).contiguous(
            memory_format=self.memory_format
        )
        features = self.model(images).float()
        if self.flip:
            features = features + self.model(images.flip(3)).float()
        if not torch.isfinite(features).all():  # checked on the first batch, not after the pass
            raise ReidError(
                f"{self.source}: produced NaN or infinite embeddings (batch of {len(images)} "
                "images): its weights are damaged or training diverged"
            )
        return torch.nn.functional.normalize(features, dim=1)

    def __call__(self, inputs: Sequence[str | Image.Image]) -> np.ndarray:
        """Embeddings of image paths or PIL images, one batch in memory at a time."""
        out = []
        for start in range(0, len(inputs), self.batch_size):
            batch = [
                self.transform(to_rgb(x) if isinstance(x, Image.Image) else read_image(x))
                for x in inputs[start : start + self.batch_size]
            ]
            out.append(self.embed_batch(torch.stack(batch)).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)

    def loader(self, records: list[ImageRecord]) -> DataLoader:
        """The records, read and preprocessed in batches (order preserved): the tensors every
        model and runtime embeds (and an int8 export is calibrated on)."""
        return DataLoader(
            ImageDataset(records, self.transform),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    def extract_records(self, records: list[ImageRecord], progress: bool = False) -> np.ndarray:
        """Embeddings of dataset records through a multi-worker DataLoader (order preserved)."""
        loader = self.loader(records)
        out = [
            self.embed_batch(images).cpu()
            for images, *_ in tqdm(
                loader, disable=None if progress else True, desc="extract", leave=False
            )
        ]
        return torch.cat(out).numpy()
