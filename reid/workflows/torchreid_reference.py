"""The IR study's reference arm: torchreid's own training engine on the same data and budget.

torchreid 0.2.5's ``ImageSoftmaxEngine`` with its own recipe (``mobilenetv2_x1_0``-style model:
backbone → global average pooling → linear classifier, no BNNeck; label-smoothed softmax; Adam
lr 3e-4, weight decay 5e-4 via ``torchreid.optim``; ``random_flip`` and torchreid's
``RandomSampler``), on the **same** trunk and ImageNet initialisation as our arms (torchvision's
MobileNetV2 ``features`` loaded from the same state dict: torchreid's own pretrained weights need a
download), the same image size, batch size and number of iterations. Its features are scored by
our evaluator (equal to torchreid's ``evaluate_rank``, tests/test_rank.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from ..data import load_dataset
from ..engine.trainer import evaluate, intra_op_threads
from ..models.backbone import build_backbone
from ..optional import require_torchreid


class TorchreidMobileNet(nn.Module):
    """torchreid's model contract: logits in train mode, pooled features in eval mode."""

    def __init__(self, backbone: str, pretrained: str | None, num_classes: int):
        super().__init__()
        self.backbone = build_backbone(backbone, last_stride=2, pretrained=pretrained)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.backbone.out_channels, num_classes)

    def forward(self, images):
        features = self.pool(self.backbone(images)).flatten(1)
        return self.classifier(features) if self.training else features


class _Limited:
    """At most ``n`` batches of ``loader`` per pass (the study's iterations per epoch)."""

    def __init__(self, loader, n):
        self.loader, self.n = loader, n

    def __len__(self):
        return min(self.n, len(self.loader)) if self.n else len(self.loader)

    def __iter__(self):
        for index, batch in enumerate(self.loader):
            if self.n and index >= self.n:
                break
            yield batch


def train_torchreid(cfg, run_dir: Path) -> dict:
    """The peer's engine on the study's trunk, data and budget (``train.threads`` as ours)."""
    with intra_op_threads(cfg.train.threads):
        return _train_torchreid(cfg, run_dir)


def _train_torchreid(cfg, run_dir: Path) -> dict:
    require_torchreid("the study's torchreid engine arm")
    import torchreid.reid.data as tdata
    from torchreid.reid.data.datasets.dataset import ImageDataset as TorchreidImageDataset
    from torchreid.reid.engine import ImageSoftmaxEngine
    from torchreid.reid.optim import build_lr_scheduler, build_optimizer

    torch.manual_seed(cfg.train.seed)
    dataset = load_dataset(cfg.data.root, cfg.data.kind)
    triples = {
        split: [(r.path, r.pid, r.camid) for r in getattr(dataset, split)]
        for split in ("train", "query", "gallery")
    }

    class Split(TorchreidImageDataset):
        def __init__(self, root="", **kwargs):
            super().__init__(triples["train"], triples["query"], triples["gallery"], **kwargs)

    name = f"reid_study_{Path(cfg.data.root).name}"
    try:
        tdata.register_image_dataset(name, Split)
    except ValueError:  # torchreid refuses to register a name twice in one process
        pass
    height, width = cfg.data.image_size
    manager = tdata.ImageDataManager(
        root=str(cfg.data.root),
        sources=name,
        height=height,
        width=width,
        transforms=["random_flip"],
        batch_size_train=cfg.sampler.batch_size,
        workers=cfg.data.workers,
        train_sampler="RandomSampler",
        use_gpu=False,
    )
    model = TorchreidMobileNet(cfg.model.backbone, cfg.model.pretrained, dataset.num_train_pids)
    optimizer = build_optimizer(model, optim="adam", lr=0.0003)
    scheduler = build_lr_scheduler(optimizer, lr_scheduler="single_step", stepsize=20)
    engine = ImageSoftmaxEngine(
        manager, model, optimizer, scheduler=scheduler, use_gpu=False, label_smooth=True
    )
    engine.train_loader = _Limited(manager.train_loader, cfg.train.max_iters_per_epoch)
    engine.max_epoch = cfg.train.epochs
    start = time.perf_counter()
    for epoch in range(cfg.train.epochs):
        engine.epoch = epoch
        engine.train(print_freq=10**9)
    train_s = time.perf_counter() - start
    result = evaluate(
        model,
        dataset.query,
        dataset.gallery,
        image_size=(height, width),
        device=torch.device("cpu"),
        batch_size=cfg.eval.batch_size,
        workers=cfg.data.workers,
    ).as_dict()
    (run_dir / "torchreid_done.txt").write_text(f"trained {train_s:.0f} s\n")
    return {k: result[k] for k in ("rank1", "mAP", "mINP")}
