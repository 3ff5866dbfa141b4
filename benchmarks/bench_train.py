"""Training throughput vs torchreid's ImageSoftmaxEngine, and feature-extraction throughput.

Both engines train the *same* module (our BNNeck ResNet + bias-free softmax head, wrapped so
torchreid's engine sees a model that returns logits), starting from the same weights, on the same
synthetic images, image size, batch size, worker count, random sampling and transforms (resize,
flip, normalise), with label-smoothed cross-entropy and Adam. Our loop is measured in fp32 with the
same settings, then with channels_last, then with channels_last + ``torch.compile`` of the
backbone (``train.compile``: inductor; the compilation, in the first steps, is timed apart as
``compile_s``), then with channels_last + decoded images in memory (``data.cache=memory``: flip
applied to whole batches in the training process, no loader workers; the one-off decode is timed
apart), the same + compile, then with channels_last + bf16 autocast (CPU with AVX512-BF16 or
AMX). Both loops are timed alike: from the moment their loader hands out the third batch to the
end (worker start-up and two warm-up steps excluded); torchreid and our fp32 loop run
interleaved, ``--rounds`` times each, and their means are compared. Feature extraction (``FeatureExtractor.extract_records``: decoding, transforms,
DataLoader) is compared with a bare forward pass of the same model on ready tensors.

    python benchmarks/bench_train.py        # writes benchmarks/results/train_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from reid.atomic import write_json
from reid.config import load_config
from reid.data import load_dataset
from reid.data.cache import CachedLoader, shuffled_batches
from reid.data.dataset import ImageDataset
from reid.data.synthetic import SyntheticSpec, generate
from reid.data.transforms import build_transforms
from reid.engine.build import (
    LoopSettings,
    build_losses,
    build_optimizer,
    build_scheduler,
    build_training_module,
)
from reid.engine.trainer import Optimization, train_one_epoch
from reid.machine import cpu_description
from reid.models import FeatureExtractor

RESULTS = Path(__file__).parent / "results"


class TorchreidView(nn.Module):
    """What torchreid's engine expects: logits in train mode, features in eval mode."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, images):
        features = self.module.model(images)
        return self.module.head(features) if self.training else features


class _limited:
    """``n`` batches of ``loader``; ``start`` is set when batch ``skip`` is handed out, so both
    loops are timed the same way: worker start-up and the first ``skip`` steps excluded."""

    def __init__(self, loader, n, skip=2):
        self.loader, self.n, self.skip, self.start, self.first = loader, n, skip, None, None

    def __len__(self):
        return self.n

    def __iter__(self):
        for index, (batch, _) in enumerate(zip(self.loader, range(self.n))):
            if index == 0:
                self.first = time.perf_counter()  # the first batch is ready
            if index == self.skip:
                self.start = time.perf_counter()
            yield batch

    def warmup_excess_s(self, step_s: float) -> float:
        """What the untimed first steps took beyond ``skip`` steady steps (compilation)."""
        return self.start - self.first - self.skip * step_s


def torchreid_images_per_s(module, root, size, batch, iters, workers) -> float:
    import torchreid.reid.data as tdata
    from torchreid.reid.data.datasets.dataset import ImageDataset as TorchreidImageDataset
    from torchreid.reid.engine import ImageSoftmaxEngine

    dataset = load_dataset(root)
    train = [(r.path, r.pid, r.camid) for r in dataset.train]

    class Synthetic(TorchreidImageDataset):
        def __init__(self, root="", **kwargs):
            query = [(r.path, r.pid, r.camid) for r in dataset.query]
            gallery = [(r.path, r.pid, r.camid) for r in dataset.gallery]
            super().__init__(train, query, gallery, **kwargs)

    name = (
        f"reid_bench_synthetic_{len(train)}_{size[0]}"  # torchreid refuses to register a name twice
    )
    try:
        tdata.register_image_dataset(name, Synthetic)
    except ValueError:
        pass
    manager = tdata.ImageDataManager(
        root=str(root),
        sources=name,
        height=size[0],
        width=size[1],
        transforms=["random_flip"],
        batch_size_train=batch,
        workers=workers,
        train_sampler="RandomSampler",
        use_gpu=False,
    )
    model = TorchreidView(module)
    optimizer = torch.optim.Adam(model.parameters(), lr=3.5e-4, weight_decay=5e-4)
    engine = ImageSoftmaxEngine(manager, model, optimizer, use_gpu=False, label_smooth=True)
    engine.epoch, engine.max_epoch = 0, 1
    loader = manager.train_loader
    engine.train_loader = timed = _limited(loader, iters + 2)  # its own DataLoader, as users run it
    engine.train(print_freq=10**9)
    return iters * batch / (time.perf_counter() - timed.start)


def cached_loader(records, size, batch) -> tuple[CachedLoader, float]:
    """The ``data.cache=memory`` loader with the benchmark's transforms (flip only), and the
    seconds its one-off decode took."""
    start = time.perf_counter()
    loader = CachedLoader(
        records, size, shuffled_batches(len(records), batch), flip=True, pad=0, random_erasing=0.0
    )
    return loader, time.perf_counter() - start


def file_loader(records, size, batch, workers) -> DataLoader:
    """Our image-file path: per-image PIL transforms (flip) in ``workers`` loader processes."""
    transform = build_transforms(size, True, flip=True, pad=0, random_erasing=0.0)
    return DataLoader(
        ImageDataset(records, transform),
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=False,
    )


def ours_images_per_s(
    module, cfg, loader, batch, iters, channels_last, amp_dtype, compiled=False
) -> tuple[float, float]:
    """Our ``train_one_epoch`` on ``loader``: (img/s of the timed steps, seconds the first steps
    took beyond two steady ones: the compilation with ``compiled``, about 0 without)."""
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    if compiled:
        module.model.compile_for_training()  # as train.compile does
    losses = build_losses(cfg, module.head.num_classes)
    optimizer = build_optimizer(cfg, module)
    scheduler = build_scheduler(cfg, optimizer, iters + 2)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    timed = _limited(loader, iters + 2)
    train_one_epoch(
        module,
        losses,
        timed,
        Optimization(optimizer, scheduler, scaler, amp_dtype),
        torch.device("cpu"),
        loop=LoopSettings(epochs=1, channels_last=channels_last),
        progress=False,
    )
    elapsed = time.perf_counter() - timed.start
    return iters * batch / elapsed, timed.warmup_excess_s(elapsed / iters)


def extraction(module, records, size, batch=128) -> dict:
    model = module.model.eval()
    extractor = FeatureExtractor(model, size, "cpu", batch)  # its default workers for this machine
    extractor.extract_records(records[:batch])  # warm-up
    start = time.perf_counter()
    extractor.extract_records(records)
    pipeline = len(records) / (time.perf_counter() - start)
    images = torch.randn(batch, 3, *size)
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(0, len(records), batch):
            model(images)
    bare = (len(range(0, len(records), batch)) * batch) / (time.perf_counter() - start)
    return {
        "extract_images_per_s": pipeline,
        "bare_forward_images_per_s": bare,
        "extract_over_bare": pipeline / bare,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="datasets/bench_synthetic")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2", "resnet50"])
    parser.add_argument(
        "--rounds", type=int, default=2, help="interleaved torchreid/ours fp32 repetitions"
    )
    parser.add_argument(
        "--iterations", type=int, help="timed steps per leg (default: per model, as committed)"
    )
    parser.add_argument("--out", default=str(RESULTS / "train_cpu.json"))
    args = parser.parse_args()
    if not Path(args.data, "bounding_box_train").is_dir():
        generate(args.data, SyntheticSpec(ids=400, images_per_id=24, longtail_ratio=2, seed=5))
    dataset = load_dataset(args.data)
    settings = {
        "resnet18": ((128, 64), 64, 24),
        "mobilenet_v2": ((128, 64), 64, 24),
        "resnet50": ((256, 128), 32, 10),
    }
    report = {
        "command": "python benchmarks/bench_train.py " + " ".join(sys.argv[1:]),
        "threads": torch.get_num_threads(),
        "cpu": cpu_description(),
        "torch": torch.__version__,
        "workers": args.workers,
        "rows": [],
    }
    for name in args.models:
        size, batch, iters = settings[name]
        iters = args.iterations or iters
        cfg = load_config(
            None,
            [
                f"model.backbone={name}",
                "loss.triplet=0",
                "optim.warmup_epochs=0",
                "optim.weight_decay=0.0005",
                "sampler.name=random",
            ],
        )
        torch.manual_seed(0)
        reference = build_training_module(cfg, dataset.num_train_pids)
        state = {k: v.clone() for k, v in reference.state_dict().items()}

        def fresh(cfg=cfg, state=state):
            module = build_training_module(cfg, dataset.num_train_pids)
            module.load_state_dict(state)
            return module

        row = {"model": name, "image_size": list(size), "batch": batch, "iterations": iters}
        # interleaved and repeated: warm-up and drift on 2 shared cores are larger than the gaps
        runs = {"torchreid": [], "ours_fp32": []}
        for _ in range(args.rounds):
            runs["torchreid"].append(
                torchreid_images_per_s(fresh(), args.data, size, batch, iters, args.workers)
            )
            files = file_loader(dataset.train, size, batch, args.workers)
            runs["ours_fp32"].append(
                ours_images_per_s(fresh(), cfg, files, batch, iters, False, None)[0]
            )
        row["runs"] = runs
        row["torchreid_img_s"] = sum(runs["torchreid"]) / len(runs["torchreid"])
        row["ours_fp32_img_s"] = sum(runs["ours_fp32"]) / len(runs["ours_fp32"])
        cached, row["cache_decode_s"] = cached_loader(dataset.train, size, batch)
        # leg → (loader, amp dtype, compile); every leg channels_last, as the study recipe
        legs = {
            "channels_last": (False, None, False),
            "channels_last_compile": (False, None, True),
            "channels_last_cache": (True, None, False),
            "channels_last_cache_compile": (True, None, True),
            "channels_last_bf16": (False, torch.bfloat16, False),
        }
        for leg, (in_memory, dtype, compiled) in legs.items():
            loader = cached if in_memory else file_loader(dataset.train, size, batch, args.workers)
            rate, excess = ours_images_per_s(
                fresh(), cfg, loader, batch, iters, True, dtype, compiled
            )
            row[f"ours_{leg}_img_s"] = rate
            if compiled:
                row[f"ours_{leg}_compile_s"] = excess
        for leg in ("fp32", *legs):
            row[f"ours_{leg}_ratio"] = row[f"ours_{leg}_img_s"] / row["torchreid_img_s"]
        row.update(extraction(fresh(), dataset.query + dataset.gallery, size))
        report["rows"].append(row)
        print(json.dumps(row), flush=True)
        write_json(args.out, report, indent=2)  # after every row: a run cut short keeps its rows


if __name__ == "__main__":
    main()
