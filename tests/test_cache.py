"""data.cache=memory: the decoded in-memory set gives the image path's batches, to the bit."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torchvision import transforms as T

from reid.config import load_config
from reid.data import load_dataset
from reid.data.cache import CachedLoader
from reid.data.transforms import MEAN, STD
from reid.engine.build import build_sampler, build_train_loader
from reid.engine.checkpoint import load_checkpoint
from reid.engine.trainer import fit
from tests.conftest import TINY_TRAIN


def epochs_of_batches(cfg, records, epochs=2) -> tuple[list, list]:
    """Every batch of ``epochs`` epochs from ``cfg``'s training loader, and the global
    generator's state after each epoch; between batches the global generator is drawn from,
    as a training step may."""
    torch.manual_seed(11)
    sampler = build_sampler(
        cfg, [r.pid for r in records], [r.camid for r in records], rank=0, world_size=1
    )
    loader = build_train_loader(cfg, records, sampler, torch.device("cpu"))
    batches, states = [], []
    for epoch in range(epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        for batch in loader:
            batches.append([t.clone() for t in batch])
            torch.rand(3)
        states.append(torch.get_rng_state())
    return batches, states, loader


@pytest.mark.parametrize(
    "workers, sampler, augment",
    [
        (0, "pk", "all"),
        (2, "pk", "all"),
        (0, "random", "all"),
        (2, "random", "all"),
        (0, "pk", "none"),
    ],
)
def test_the_cache_gives_the_image_paths_batches_to_the_bit(
    synthetic_root, workers, sampler, augment
):
    """Same seed, same batches: images (flip, pad + crop, normalisation, random erasing with
    random values), pids, camids and indices equal to the bit, over two epochs, with the image
    path's loader workers (2: batches alternate between their generators) or none, with an
    identity sampler or shuffled batches; and the global
    generator is left where the image path leaves it (the next epoch, the next run step)."""
    records = load_dataset(synthetic_root).train[:96]
    off = ["data.flip=false", "data.pad=0", "data.random_erasing=0"] if augment == "none" else []
    common = [f"data.root={synthetic_root}", *TINY_TRAIN, f"data.workers={workers}",
              f"sampler.name={sampler}", "data.random_erasing=0.5", *off]  # fmt: skip
    files, files_states, file_loader = epochs_of_batches(
        load_config(None, [*common, "data.cache=off"]), records
    )
    cached, cached_states, cache_loader = epochs_of_batches(
        load_config(None, [*common, "data.cache=memory"]), records
    )
    assert isinstance(cache_loader, CachedLoader) and not isinstance(file_loader, CachedLoader)
    assert len(files) == len(cached) > 2
    for b, (a, c) in enumerate(zip(files, cached)):
        for name, x, y in zip(("images", "pids", "camids", "indices"), a, c):
            assert x.dtype == y.dtype and torch.equal(x, y), f"batch {b}: {name} differ"
    assert all(torch.equal(x, y) for x, y in zip(files_states, cached_states))
    images, _, _, indices = cached[0]
    plain = T.Normalize(MEAN, STD)(cache_loader.images[indices].float().div(255))
    assert torch.equal(images, plain) == (augment == "none")  # the augmentations did draw


def test_training_from_the_cache_gives_the_numbers_from_the_files(synthetic_root, tmp_path):
    """One seeded run from the files and from the cache: the same losses and the same weights
    exactly (one computation on the same batches)."""
    base = [f"data.root={synthetic_root}", *TINY_TRAIN, "train.max_iters_per_epoch=3"]
    for cache in ("off", "memory"):
        fit(load_config(None, [*base, f"data.cache={cache}"]), tmp_path / cache, progress=False)
    logs = [(tmp_path / c / "metrics.jsonl").read_text().splitlines() for c in ("off", "memory")]
    losses = [[json.loads(line)["loss"] for line in log] for log in logs]
    assert losses[0] == losses[1]
    a, b = (load_checkpoint(tmp_path / c)["module"] for c in ("off", "memory"))
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_the_cache_falls_back_to_the_files_where_it_cannot_serve(synthetic_root, caplog):
    base = [f"data.root={synthetic_root}", *TINY_TRAIN, "data.cache=memory"]
    records = load_dataset(synthetic_root).train
    with caplog.at_level(logging.INFO):
        jitter = build_train_loader(
            load_config(None, [*base, "data.color_jitter=0.2"]), records, None, torch.device("cpu")
        )
        small = build_train_loader(
            load_config(None, [*base, "data.cache_gib=0.000001"]),
            records,
            None,
            torch.device("cpu"),
        )
    assert not isinstance(jitter, CachedLoader) and not isinstance(small, CachedLoader)
    assert "colour jitter computes otherwise" in caplog.text and "data.cache_gib" in caplog.text
