"""Feature passes for IR-Softmax centers (the center state and rules live in ``heads/centers.py``).

Centers must start where the *training* features of their class are. An untrained (or freshly
attached) BNNeck in eval mode uses running statistics (0, 1): it is then an identity, every image
maps to nearly the same direction, and centers initialised from eval-mode features start almost
parallel (measured: mean pairwise cosine 0.995 for ResNet-18 from scratch on real Market). So the
pass here runs the network in **train mode** — BatchNorm normalises with batch statistics, as in a
training step — on shuffled batches of the training batch size, without gradients, and restores
every BatchNorm buffer afterwards, so the pass leaves the network exactly as it found it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data import arrays
from ..data.dataset import ImageDataset
from ..data.transforms import build_transforms

BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@torch.no_grad()
def train_mode_features(
    model: nn.Module,
    records,
    image_size,
    device: torch.device,
    batch_size: int,
    workers: int = 2,
    seed: int = 0,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BNNeck features of ``records`` computed with batch statistics (train-mode BN); returns
    ``(features, labels)`` on ``device``, in a seeded shuffled order."""
    order = np.random.default_rng(seed).permutation(len(records))
    chunks = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    if len(chunks) > 1 and len(chunks[-1]) < 2:  # BatchNorm needs 2+ samples in train mode
        chunks[-2] += chunks.pop()
    loader = DataLoader(
        ImageDataset(records, build_transforms(tuple(image_size), train=False)),
        batch_sampler=chunks,
        num_workers=workers,
    )
    saved = {k: v.clone() for k, v in model.state_dict().items() if k.endswith(BN_BUFFERS)}
    was_training = model.training
    model.train()
    features, labels = [], []
    try:
        for images, pids, _, _ in loader:
            images = images.to(device)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            features.append(model(images).float())
            labels.append(pids.to(device))
    finally:
        model.load_state_dict(saved, strict=False)
        model.train(was_training)
    return torch.cat(features), torch.cat(labels)


def init_head_centers(core, records, cfg, device) -> None:
    """Set every IR center to its class's mean train-mode feature (start, refresh, fine-tune)."""
    features, labels = train_mode_features(
        core.model,
        records,
        cfg.data.image_size,
        device,
        cfg.sampler.batch_size,
        cfg.data.workers,
        cfg.train.seed,
        cfg.train.channels_last,
    )
    core.head.centers.init_from_features(features, labels)


def frequency_groups(records, num_classes: int) -> torch.Tensor:
    """Class → 0 (rare), 1 (middle), 2 (frequent) tercile of training images (ties by class)."""
    counts = np.bincount(arrays(records)[0], minlength=num_classes)
    order = np.argsort(counts, kind="stable")
    groups = np.empty(num_classes, dtype=np.int64)
    groups[order] = np.arange(num_classes) * 3 // max(num_classes, 1)
    return torch.from_numpy(groups)
