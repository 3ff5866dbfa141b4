"""A decoded in-memory training set with batched tensor augmentations (``data.cache=memory``).

Every training image is decoded and resized once (PIL bilinear, as ``Resize`` in the image
path) into one uint8 tensor (N, 3, H, W): Market's training folder at 128×64 is 12,936 × 24 KiB ≈
0.3 GB. Each batch is then augmented as a whole in the training process, with no loader workers
competing with the model for the cores: horizontal flip, zero pad + random crop, normalisation and
random erasing (torchvision's ``RandomErasing`` rule: area 2–33 %, aspect 0.3–3.3, random normal
values, up to 10 tries), each drawn per image from a generator seeded by ``(seed, epoch)``, so a
run's batches do not depend on what runs beside it and a resumed run sees the same epochs. The
augmentations are the image path's, not its random stream: a seeded run gives other (equally
distributed) crops than with ``data.cache=off``. Colour jitter has no batched form here: with
``data.color_jitter`` > 0, or when the decoded set would exceed ``data.cache_gib``, training falls
back to the image path (and says so).
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from .images import read_image
from .transforms import MEAN, STD

log = logging.getLogger(__name__)


def decoded_bytes(num_images: int, size) -> int:
    return num_images * 3 * int(size[0]) * int(size[1])


def decode_all(records, size, threads: int = 2) -> torch.Tensor:
    """(N, 3, H, W) uint8: every record's image resized to ``size`` (PIL bilinear)."""
    height, width = int(size[0]), int(size[1])

    def one(record):
        image = read_image(record.path).resize((width, height), Image.BILINEAR)
        return np.array(image, dtype=np.uint8)

    out = torch.empty((len(records), 3, height, width), dtype=torch.uint8)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for i, pixels in enumerate(pool.map(one, records)):
            out[i] = torch.from_numpy(pixels).permute(2, 0, 1)
    return out


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) → float32, ``ToTensor`` then ``Normalize(MEAN, STD)``."""
    x = images.float().div(255)
    mean = torch.tensor(MEAN, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=x.dtype).view(1, 3, 1, 1)
    return x.sub(mean).div(std)


def flip(images: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    chosen = torch.rand(len(images), generator=generator) < p
    out = images.clone()
    out[chosen] = images[chosen].flip(-1)
    return out


def pad_crop(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``pad`` and crop each image back to its size at a random offset."""
    b, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    top = torch.randint(0, 2 * pad + 1, (b,), generator=generator).tolist()
    left = torch.randint(0, 2 * pad + 1, (b,), generator=generator).tolist()
    return torch.stack(
        [padded[i, :, t : t + h, s : s + w] for i, (t, s) in enumerate(zip(top, left))]
    )


def random_erasing(
    images: torch.Tensor, p: float, generator: torch.Generator, scale=(0.02, 0.33), ratio=(0.3, 3.3)
) -> torch.Tensor:
    """torchvision's ``RandomErasing(p, value="random")`` per image, on a normalised batch."""
    out = images.clone()
    _, c, h, w = images.shape
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for i in torch.nonzero(torch.rand(len(images), generator=generator) < p).flatten().tolist():
        for _ in range(10):
            target = area * float(torch.empty(1).uniform_(scale[0], scale[1], generator=generator))
            aspect = math.exp(float(torch.empty(1).uniform_(*log_ratio, generator=generator)))
            eh, ew = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if eh < h and ew < w:
                top = int(torch.randint(0, h - eh + 1, (1,), generator=generator))
                left = int(torch.randint(0, w - ew + 1, (1,), generator=generator))
                out[i, :, top : top + eh, left : left + ew] = torch.randn(
                    (c, eh, ew), generator=generator
                )
                break
    return out


class CachedLoader:
    """Batches of (images, pids, camids, indices) from decoded images, as the DataLoader gives."""

    def __init__(
        self,
        records,
        size,
        batches,
        *,
        flip: bool = True,
        pad: int = 10,
        random_erasing: float = 0.5,
        seed: int = 0,
        threads: int = 2,
    ):
        self.images = decode_all(records, size, threads)
        self.pids = torch.tensor([r.pid for r in records], dtype=torch.long)
        self.camids = torch.tensor([r.camid for r in records], dtype=torch.long)
        self.batches, self.flip, self.pad, self.erasing = batches, flip, pad, random_erasing
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.batches, "set_epoch"):
            self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def augment(self, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images = self.images[indices]
        if self.flip:
            images = flip(images, generator)
        if self.pad:
            images = pad_crop(images, self.pad, generator)
        images = normalise(images)
        if self.erasing:
            images = random_erasing(images, self.erasing, generator)
        return images

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        for batch in self.batches:
            indices = torch.as_tensor(list(batch), dtype=torch.long)
            yield (
                self.augment(indices, generator),
                self.pids[indices],
                self.camids[indices],
                indices,
            )


class ShuffledBatches:
    """Fixed-size shuffled batches (the ``random`` sampler), reshuffled per epoch by seed."""

    def __init__(self, num_images: int, batch_size: int, seed: int = 0):
        self.num_images, self.batch_size, self.seed, self.epoch = num_images, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_images // self.batch_size

    def __iter__(self):
        order = np.random.default_rng((self.seed, self.epoch)).permutation(self.num_images)
        for i in range(len(self)):
            yield order[i * self.batch_size : (i + 1) * self.batch_size].tolist()
