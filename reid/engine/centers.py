"""The IR-Softmax centers' life in a training run (state and update rules: ``heads/centers.py``).

:class:`CenterLifecycle` is all the trainer knows of centers: ``start`` (a new run),
``begin_epoch`` (refresh every ``centers.refresh`` epochs), ``observe`` (each step, before the
update: the angle between each batch class's weight or center and its batch-mean feature, tracked
for learned weights too, as the comparison) and ``end_epoch`` (those angles per frequency tercile,
and the warning when rare classes' centers lag their features).

Centers must start where the *training* features of their class are. An untrained (or freshly
attached) BNNeck in eval mode uses running statistics (0, 1): it is then an identity, every image
maps to nearly the same direction, and centers initialised from eval-mode features start almost
parallel (measured: mean pairwise cosine 0.995 for ResNet-18 from scratch on real Market). So the
pass here runs the network in **train mode** — BatchNorm normalises with batch statistics, as in a
training step — on shuffled batches of the training batch size, without gradients, and restores
every BatchNorm buffer afterwards, so the pass leaves the network exactly as it found it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data import arrays
from ..data.dataset import ImageDataset
from ..data.transforms import build_transforms
from ..heads.centers import CenterSettings

log = logging.getLogger(__name__)

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


@dataclass
class FeaturePass:
    """How a train-mode feature pass reads the training set (plain settings, from the config)."""

    image_size: tuple
    batch_size: int
    workers: int = 2
    seed: int = 0
    channels_last: bool = False


def init_head_centers(core, records, feature_pass: FeaturePass, device) -> None:
    """Set every IR center to its class's mean train-mode feature (start, refresh, fine-tune)."""
    p = feature_pass
    features, labels = train_mode_features(
        core.model, records, p.image_size, device, p.batch_size, p.workers, p.seed, p.channels_last
    )
    core.head.centers.init_from_features(features, labels)


def frequency_groups(records, num_classes: int) -> torch.Tensor:
    """Class → 0 (rare), 1 (middle), 2 (frequent) tercile of training images (ties by class)."""
    counts = np.bincount(arrays(records)[0], minlength=num_classes)
    order = np.argsort(counts, kind="stable")
    groups = np.empty(num_classes, dtype=np.int64)
    groups[order] = np.arange(num_classes) * 3 // max(num_classes, 1)
    return torch.from_numpy(groups)


#: a run whose rare-tercile center angle stays above this is not testing IR-Softmax
CENTER_ANGLE_WARN = 20.0
TERCILES = ("rare", "mid", "frequent")


class CenterLifecycle:
    """The hooks of a training run for its head's class weights (see the module docstring)."""

    def __init__(
        self, core, records, settings: CenterSettings, feature_pass: FeaturePass, device
    ) -> None:
        self.core, self.records, self.settings = core, records, settings
        self.feature_pass, self.device = feature_pass, device
        num_classes = core.head.num_classes
        self.groups = frequency_groups(records, num_classes)
        self.angle_sum = torch.zeros(num_classes, dtype=torch.float64)
        self.angle_n = torch.zeros(num_classes, dtype=torch.float64)

    @property
    def active(self) -> bool:
        return self.core.head.uses_centers

    def start(self) -> None:
        """A new run (not a resumed one): centers start at their classes' mean features."""
        if self.active and self.settings.init == "features":
            init_head_centers(self.core, self.records, self.feature_pass, self.device)

    def begin_epoch(self, epoch: int) -> None:
        refresh = self.settings.refresh
        if self.active and refresh and epoch > 1 and (epoch - 1) % refresh == 0:
            init_head_centers(self.core, self.records, self.feature_pass, self.device)

    @torch.no_grad()
    def observe(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Before this step's update: the lag the update must close."""
        classes, angles = self.core.head.weight_angles(features, labels)
        self.angle_sum.index_add_(0, classes.cpu(), angles.cpu().double())
        self.angle_n.index_add_(0, classes.cpu(), torch.ones(len(classes), dtype=torch.float64))

    def end_epoch(self) -> dict:
        """The epoch's mean angle per tercile (``center_angle_rare/mid/frequent``); resets."""
        per_class = self.angle_sum / self.angle_n.clamp(min=1)
        angles = {}
        for group, name in enumerate(TERCILES):
            chosen = (self.groups == group) & (self.angle_n > 0)
            if bool(chosen.any()):
                angles[f"center_angle_{name}"] = float(per_class[chosen].mean())
        self.angle_sum.zero_()
        self.angle_n.zero_()
        return angles

    def warn_if_lagging(self, stats: dict) -> None:
        """At the end of a run: centers still far from their rare classes' features."""
        rare = stats.get("center_angle_rare", float("nan"))
        if self.active and rare > CENTER_ANGLE_WARN:
            log.warning(
                "rare classes' IR centers ended %.1f° from their batch features (> %.0f°): the "
                "centers lag the features, so this run says little about IR-Softmax "
                "(see centers.update, centers.refresh)",
                rare,
                CENTER_ANGLE_WARN,
            )
