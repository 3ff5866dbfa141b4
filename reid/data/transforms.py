"""Image transforms. Train (BoT): resize, flip, pad 10 + random crop, normalise, random erasing."""

from __future__ import annotations

from torchvision import transforms as T

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


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
        if flip:
            ops.append(T.RandomHorizontalFlip())
        if pad:
            ops += [T.Pad(pad), T.RandomCrop(tuple(size))]
        if color_jitter:
            ops.append(T.ColorJitter(color_jitter, color_jitter, color_jitter, 0))
    ops += [T.ToTensor(), T.Normalize(MEAN, STD)]
    if train and random_erasing:
        ops.append(T.RandomErasing(p=random_erasing, value="random"))
    return T.Compose(ops)
