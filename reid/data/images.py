"""Image decoding with errors that name the file, and a whole-dataset integrity check.

Decision on corrupt images: **fail with the full list**, never skip. Skipping silently changes
the protocol (a query that vanishes changes the mAP denominator; a training image that vanishes
changes an identity's count, which is exactly what the imbalance tools measure). A user with a
few broken files gets every name at once and can remove them or list the rest in a manifest.
"""

from __future__ import annotations

from collections.abc import Iterable

from PIL import Image, UnidentifiedImageError

from .records import DatasetError, ImageRecord


def read_image(path: str) -> Image.Image:
    """Open an image as RGB; raise ``DatasetError`` naming the file if it cannot be decoded."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
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
    if bad:
        shown = "\n  ".join(bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise DatasetError(f"{len(bad)} of {count} images cannot be read:\n  {shown}{more}")
    return count
