"""Uploaded images: decoded for real, with limits checked before the pixels are decoded.

Gallery and query images are pictures of people: an upload is decoded in memory and never
written to disk (enrolment writes the images it accepts, under names the server generates).
Every refusal is an :class:`UploadError` carrying the HTTP status and one line for the user.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

#: defaults: 8 MiB per file, 40 megapixels (a decompression bomb declares far more), at least
#: 16 × 8 pixels (a person crop; Market's are 128 × 64)
MAX_BYTES = 8 << 20
MAX_REQUEST_BYTES = 32 << 20
MAX_PIXELS = 40_000_000
MIN_SIDE = (16, 8)  # height, width


class UploadError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = MAX_BYTES
    #: a whole upload request; bodies are held in memory up to this size, so nothing spools to disk
    max_request_bytes: int = MAX_REQUEST_BYTES
    max_pixels: int = MAX_PIXELS
    min_height: int = MIN_SIDE[0]
    min_width: int = MIN_SIDE[1]


def decode(data: bytes, name: str, limits: UploadLimits = UploadLimits()) -> Image.Image:
    """RGB image from uploaded bytes, or :class:`UploadError` (413 too large, 415 not an image,
    422 an image that cannot be used). CMYK, palette, grey and alpha images are converted to
    RGB like the training pipeline does; the declared size is checked before decoding."""
    label = _label(name)
    if len(data) > limits.max_bytes:
        raise UploadError(413, f"{label}: {len(data)} bytes, the limit is {limits.max_bytes}")
    if not data:
        raise UploadError(422, f"{label}: empty upload")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limits.max_pixels:
                raise UploadError(
                    413, f"{label}: {width}×{height} pixels, the limit is {limits.max_pixels}"
                )
            image.load()
    except UploadError:
        raise
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        if isinstance(exc, UnidentifiedImageError):
            raise UploadError(415, f"{label}: not an image this server can decode") from None
        raise UploadError(413, f"{label}: declares too many pixels (decompression bomb)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UploadError(
            422, f"{label}: damaged or truncated image ({_first_line(exc)})"
        ) from None
    if height < limits.min_height or width < limits.min_width:
        raise UploadError(
            422,
            f"{label}: {width}×{height} pixels is too small for a person crop "
            f"(at least {limits.min_width}×{limits.min_height})",
        )
    return image.convert("RGB")


def _label(name: str | None) -> str:
    """The client's file name, for messages only (never used as a path)."""
    text = "".join(ch for ch in (name or "upload") if ch.isprintable())[:80]
    return repr(text)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:120] if lines else type(exc).__name__
