"""Uploaded images: decoded for real, with limits checked before the pixels are decoded.

Gallery and query images are pictures of people: an upload is decoded in memory and never
written to disk (enrolment writes the images it accepts, under names the server generates).
Every refusal is an :class:`UploadError` carrying the HTTP status and one line for the user.

Memory is bounded per file (bytes, declared pixels), **per request** (the declared pixels of all
its files: many small, flat PNGs can each declare 36 megapixels) and **per process**
(:class:`PixelBudget`: the pixels of every request being decoded or embedded at once; past it a
request is answered 503 and may retry). Every check reads the declared size, before decoding.
Pixels become RGB through the same function as every image the command-line tools read
(``reid.data.images.to_rgb``): a 16-bit PNG is its real grey values, not white.
"""

from __future__ import annotations

import io
import threading
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from ..data.images import to_rgb
from ..errors import first_line

#: defaults: 8 MiB per file, 40 megapixels (a decompression bomb declares far more), at least
#: 16 × 8 pixels (a person crop; Market's are 128 × 64)
MAX_BYTES = 8 << 20
MAX_REQUEST_BYTES = 32 << 20
MAX_PIXELS = 40_000_000
MAX_REQUEST_PIXELS = 64_000_000
MAX_PROCESS_PIXELS = 256_000_000
MIN_SIDE = (16, 8)  # height, width
#: query or enrolment images per request
MAX_FILES = 64


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
    #: the declared pixels of all the files of one request
    max_request_pixels: int = MAX_REQUEST_PIXELS
    #: the declared pixels of every request held by the process at once
    max_process_pixels: int = MAX_PROCESS_PIXELS
    min_height: int = MIN_SIDE[0]
    min_width: int = MIN_SIDE[1]


class PixelBudget:
    """The pixels a process holds for requests at once; a request reserves its images' declared
    pixels before each is decoded and gives them back when it has been answered."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self._lock = threading.Lock()

    def request(self) -> Reservation:
        return Reservation(self)


class Reservation:
    def __init__(self, budget: PixelBudget):
        self.budget, self.held = budget, 0

    def take(self, pixels: int, label: str) -> None:
        with self.budget._lock:
            if self.budget.used + pixels > self.budget.limit:
                raise UploadError(
                    503, f"{label}: the server is decoding as many pixels as it may; retry shortly"
                )
            self.budget.used += pixels
            self.held += pixels

    def release(self) -> None:
        with self.budget._lock:
            self.budget.used -= self.held
            self.held = 0


def decode(
    data: bytes,
    name: str,
    limits: UploadLimits = UploadLimits(),
    reservation: Reservation | None = None,
) -> Image.Image:
    """RGB image from uploaded bytes, or :class:`UploadError` (413 too large, 415 not an image,
    422 an image that cannot be used, 503 the process is at its pixel budget). CMYK, palette,
    grey, 16-bit and alpha images are converted to RGB like the training pipeline does
    (``to_rgb``); the declared size is checked before decoding, against the file's limit, the
    request's (``request_pixels`` already held by it) and the process's (``reservation``)."""
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
            held = reservation.held if reservation is not None else 0
            if held + width * height > limits.max_request_pixels:
                raise UploadError(
                    413,
                    f"{label}: this request's images declare more than "
                    f"{limits.max_request_pixels} pixels in all; send fewer or smaller images",
                )
            if reservation is not None:
                reservation.take(width * height, label)
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
            422, f"{label}: damaged or truncated image ({first_line(exc, 120)})"
        ) from None
    if height < limits.min_height or width < limits.min_width:
        raise UploadError(
            422,
            f"{label}: {width}×{height} pixels is too small for a person crop "
            f"(at least {limits.min_width}×{limits.min_height})",
        )
    return to_rgb(image)


def _label(name: str | None) -> str:
    """The client's file name, for messages only (never used as a path)."""
    text = "".join(ch for ch in (name or "upload") if ch.isprintable())[:80]
    return repr(text)


async def read_images(
    files, limits: UploadLimits, reservation: Reservation
) -> list[tuple[str, Image.Image]]:
    """The uploaded files of one request, each checked and decoded (``decode``): at most
    ``MAX_FILES``, each read up to one byte past its limit (so a bigger one is refused)."""
    if not files:
        raise UploadError(422, "no image uploaded")
    if len(files) > MAX_FILES:
        raise UploadError(413, f"{len(files)} files, at most {MAX_FILES} per request")
    images = []
    for upload in files:
        data = await upload.read(limits.max_bytes + 1)
        images.append(
            (upload.filename or "upload", decode(data, upload.filename, limits, reservation))
        )
    return images
