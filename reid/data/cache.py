"""A decoded in-memory training set (``data.cache=memory``): the image path's batches, to the
bit, without reading or decoding a file after the first pass.

Every training image is decoded and resized once (PIL bilinear, as ``Resize`` in the image
path) into one uint8 tensor (N, 3, H, W): Market's training folder at 128×64 is 12,936 × 24 KiB ≈
0.3 GB. Each batch then runs the image path's own training transforms (the same torchvision
objects, ``reid.data.transforms``: flip, pad + random crop, the float conversion, normalisation,
random erasing) on those tensors, in the training process, with no loader workers competing with
the model for the cores, and with the image path's random stream: the DataLoader's base seed
drawn from the global generator when an epoch's iteration starts, worker k's generator seeded
with base + k, batch b drawn by worker b mod W (W = ``data.workers``; with 0 workers, the global
generator itself, between the training steps). So a seeded run gives the same batches and the
same numbers from the cache as from the files (``tests/test_cache.py``), and the choice is one of
speed only. Colour jitter computes differently on tensors than on PIL images: with
``data.color_jitter`` > 0, or when the decoded set would exceed ``data.cache_gib``, training falls
back to the image path (and says so).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image
from torch.utils.data import BatchSampler, RandomSampler
from torchvision import transforms as T

from .images import read_image
from .transforms import tensor_steps, train_steps

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


def shuffled_batches(num_images: int, batch_size: int) -> BatchSampler:
    """The batches of a ``DataLoader(shuffle=True, drop_last=True)``: the same sampler objects,
    so the same draws from the global generator."""
    return BatchSampler(RandomSampler(range(num_images)), batch_size, drop_last=True)


class CachedLoader:
    """Batches of (images, pids, camids, indices) from decoded images, as the DataLoader over
    the files with ``workers`` worker processes gives them."""

    def __init__(
        self,
        records,
        size,
        batches,
        *,
        flip: bool = True,
        pad: int = 10,
        random_erasing: float = 0.5,
        workers: int = 0,
        threads: int = 2,
    ):
        self.images = decode_all(records, size, threads)
        self.pids = torch.tensor([r.pid for r in records], dtype=torch.long)
        self.camids = torch.tensor([r.camid for r in records], dtype=torch.long)
        self.batches, self.workers = batches, int(workers)
        self.steps = T.Compose(train_steps(tuple(size), flip, pad))
        self.tensor_steps = T.Compose(tensor_steps(random_erasing))

    def __len__(self) -> int:
        return len(self.batches)

    def augment(self, indices: torch.Tensor) -> torch.Tensor:
        """One batch through the image path's transforms, image by image (their draws come from
        the current global generator, in the image path's order)."""
        # between the two: ToTensor's conversion of uint8
        return torch.stack(
            [
                self.tensor_steps(self.steps(image).float().div(255))
                for image in self.images[indices]
            ]
        )

    def __iter__(self):
        base = int(torch.empty((), dtype=torch.int64).random_().item())  # as a DataLoader iterator
        states = [torch.Generator().manual_seed(base + k).get_state() for k in range(self.workers)]
        for b, batch in enumerate(self.batches):
            indices = torch.as_tensor(list(batch), dtype=torch.long)
            if self.workers:  # worker b mod W's generator, as torch seeds it: base + worker id
                with torch.random.fork_rng(devices=[]):
                    torch.set_rng_state(states[b % self.workers])
                    images = self.augment(indices)
                    states[b % self.workers] = torch.get_rng_state()
            else:
                images = self.augment(indices)
            yield images, self.pids[indices], self.camids[indices], indices
