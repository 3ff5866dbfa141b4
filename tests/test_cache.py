"""data.cache=memory: decoded images and batched augmentations against the image path."""

from __future__ import annotations

import logging

import torch

from reid.config import load_config
from reid.data import load_dataset
from reid.data.cache import CachedLoader, ShuffledBatches, flip, pad_crop, random_erasing
from reid.data.dataset import ImageDataset
from reid.data.transforms import build_transforms
from reid.engine.build import build_train_loader
from reid.engine.trainer import fit
from tests.conftest import TINY_TRAIN


def test_without_augmentation_the_cache_gives_the_image_paths_tensors(synthetic_root):
    records = load_dataset(synthetic_root).train[:20]
    loader = CachedLoader(records, (64, 32), [list(range(20))], flip=False, pad=0, random_erasing=0)
    images, pids, camids, indices = next(iter(loader))
    plain = ImageDataset(records, build_transforms((64, 32), train=False))
    expected = torch.stack([plain[i][0] for i in range(20)])
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-6)
    assert pids.tolist() == [r.pid for r in records] and indices.tolist() == list(range(20))
    assert camids.tolist() == [r.camid for r in records]


def test_flip_and_pad_crop_are_the_transforms_they_claim():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.uint8).view(2, 3, 4, 5)
    out = flip(x, g, p=1.0)
    assert torch.equal(out, x.flip(-1))
    assert torch.equal(flip(x, g, p=0.0), x)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    crops = pad_crop(x, 2, g)
    assert crops.shape == x.shape
    for i in range(2):  # every crop is a window of its own padded image
        windows = [padded[i, :, t : t + 4, s : s + 5] for t in range(5) for s in range(5)]
        assert any(torch.equal(crops[i], w) for w in windows)


def test_random_erasing_follows_torchvisions_rule():
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(200, 3, 64, 32)
    out = random_erasing(x, 0.5, g)
    erased = (out != 0).flatten(1).any(1)
    assert 70 < int(erased.sum()) < 130  # p = 0.5 of 200
    areas = (out[erased, 0] != 0).flatten(1).sum(1).float() / (64 * 32)
    assert float(areas.min()) >= 0.015 and float(areas.max()) <= 0.34


def test_epochs_are_seeded_and_differ(synthetic_root):
    records = load_dataset(synthetic_root).train[:32]
    batches = ShuffledBatches(len(records), 16, seed=3)
    loader = CachedLoader(records, (64, 32), batches, seed=3)
    loader.set_epoch(1)
    first = [b[0] for b in loader]
    again = [b[0] for b in loader]
    loader.set_epoch(2)
    other = [b[0] for b in loader]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


def test_training_runs_from_the_cache_and_falls_back_where_it_cannot(
    synthetic_root, tmp_path, caplog
):
    base = [f"data.root={synthetic_root}", *TINY_TRAIN, "data.cache=memory"]
    fit(load_config(None, base), tmp_path / "run", progress=False)
    assert (tmp_path / "run/last.pt").is_file()
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
    assert "no batched colour jitter" in caplog.text and "data.cache_gib" in caplog.text
