"""Image transforms. Train (BoT): resize, flip, pad 10 + random crop, normalise, random erasing."""

from __future__ import annotations

from torchvision import transforms as T

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def train_steps(size: tuple[int, int], flip: bool = True, pad: int = 10, color_jitter: float = 0.0):
    """The training augmentations between resizing and the float conversion: flip, pad + random
    crop, colour jitter. They take PIL images and uint8 tensors alike (colour jitter excepted:
    its PIL and tensor forms compute differently), so the decoded in-memory set
    (``reid/data/cache.py``) runs these same objects."""
    ops = []
    if flip:
        ops.append(T.RandomHorizontalFlip())
    if pad:
        ops += [T.Pad(pad), T.RandomCrop(tuple(size))]
    if color_jitter:
        ops.append(T.ColorJitter(color_jitter, color_jitter, color_jitter, 0))
    return ops


def build_transforms(
    size: tuple[int, int],
    train: bool,
    flip: bool = True,
    pad: int = 10,
    random_erasing: float = 0.5,
    color_jitter: float = 0.0,
):
    ops = [T.Resize(tuple(size), interpolation=T.InterpolationMode.BILINEAR)]
    if train:
        ops += train_steps(size, flip, pad, color_jitter)
    ops.append(T.ToTensor())
    return T.Compose(ops + tensor_steps(random_erasing if train else 0.0))


def tensor_steps(random_erasing: float = 0.0) -> list:
    """The steps after the float conversion: normalisation, then random erasing when > 0 (the
    decoded in-memory set runs these same objects)."""
    ops = [T.Normalize(MEAN, STD)]
    if random_erasing:
        ops.append(T.RandomErasing(p=random_erasing, value="random"))
    return ops
