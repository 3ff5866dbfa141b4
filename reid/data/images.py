"""Image decoding with errors that name the file, and a whole-dataset integrity check.

Decision on corrupt images: **fail with the full list**, never skip. Skipping silently changes
the protocol (a query that vanishes changes the mAP denominator; a training image that vanishes
changes an identity's count, which is exactly what the imbalance tools measure). A user with a
few broken files gets every name at once and can remove them or list the rest in a manifest.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError

from .records import DatasetError, ImageRecord


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with 8 bits per channel. High-bit-depth greyscale (16-bit PNG opens as ``I;16`` or
    ``I``, floats as ``F``) is rescaled to 0–255 first: a plain ``convert("RGB")`` clips every
    value above 255, and a 16-bit image becomes all white."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values / 257.0
        elif image.mode == "F" and values.max(initial=0) <= 1.0:
            values = values * 255.0
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


def read_image(path: str) -> Image.Image:
    """Open an image as RGB; raise ``DatasetError`` naming the file if it cannot be decoded."""
    try:
        with Image.open(path) as image:
            return to_rgb(image)
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable or corrupt image ({exc})") from None


def verify_images(records: Iterable[ImageRecord]) -> int:
    """Decode every image fully; raise one ``DatasetError`` listing all failures. Returns count."""
    bad, count = [], 0
    for record in records:
        count += 1
        try:
            read_image(record.path)
        except DatasetError as exc:
            bad.append(str(exc))
    if bad:  # the whole list is the message: the error path prints every line of it
        shown = "\n  ".join(bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise DatasetError(f"{len(bad)} of {count} images cannot be read:\n  {shown}{more}")
    return count
