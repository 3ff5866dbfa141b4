"""The HTTP API and the page: ``create_app(ServiceSettings(...))`` → a FastAPI app.

Endpoints (OpenAPI schema at ``/openapi.json``, interactive docs at ``/docs``):

- ``POST /search`` — one or more uploaded images → per image the ranked hits (rank, score,
  row, pid, camid, match), the threshold in force with its false-alarm rate, and ``no_match``
  when nothing is above it. Form fields: ``topk``, ``exclude_same_camera``, ``camid`` (else
  parsed from a Market-style file name), and one operating point: ``far`` (a calibrated rate),
  ``threshold`` or ``no_threshold``.
- ``GET /gallery`` — counts, model hash, backend, the calibrated operating points.
- ``GET /gallery/rows/{row}/thumbnail`` — a JPEG thumbnail of an indexed image, by row only.
- ``GET /gallery/identities/{pid}`` — the rows of one identity, across cameras.
- ``POST /gallery/enrol`` (images + ``pid``, ``camid``), ``POST /gallery/remove``
  (``{"pids": [...], "rows": [...]}``) — writes; always need the token.
- ``GET /health``, ``GET /stats`` (requests, latency percentiles, batch sizes), ``GET /metrics``
  (the same counters in the Prometheus text format).

The routes live in ``routes/`` (one router per concern), their answers in ``models.py``, what
they share (the app's state, the token checks, in-memory upload parsing) in ``context.py``.

Security: the token (``ServiceSettings.token``, an ``Authorization: Bearer`` header) is compared
in constant time; reads need it too
when one is set; without one, writes are refused. Uploads are decoded in memory under size and
pixel limits (``uploads.py``). Thumbnails are looked up by row number in the index's metadata,
never by a path from the request.
"""

from __future__ import annotations

import errno
import time
from contextlib import asynccontextmanager

from ..optional import require

require("fastapi", "the search service (reid serve)")
require("python_multipart", "the search service's uploads (reid serve)")

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402

from ..atomic import user_error  # noqa: E402
from ..errors import OutputError, ReidError  # noqa: E402
from ..index.sources import Embedder  # noqa: E402
from .batcher import MicroBatcher  # noqa: E402
from .context import Service, ServiceSettings  # noqa: E402
from .gallery import IndexUnavailable, ServedGallery  # noqa: E402
from .metrics import Stats  # noqa: E402
from .routes import ROUTERS  # noqa: E402
from .uploads import PixelBudget, UploadError  # noqa: E402

__all__ = ["ServiceSettings", "create_app"]
UPLOADS = ("/search", "/gallery/enrol")


def os_error_status(number: int | None) -> int:
    """A full disk is 507 (Insufficient Storage); a read-only or forbidden folder is 503."""
    return 507 if number in (errno.ENOSPC, errno.EDQUOT) else 503


def error_status(exc: ReidError) -> int:
    if isinstance(exc, IndexUnavailable):
        return 503
    if isinstance(exc, OutputError) and exc.errno is not None:
        return os_error_status(exc.errno)
    return 422


def open_service(settings: ServiceSettings) -> Service:
    """Load the model and the index once and check they belong together."""
    embedder = Embedder.open(settings.checkpoint, settings.device, max(settings.max_batch, 1),
                             settings.runtime)  # fmt: skip
    served = ServedGallery(settings.index, settings.enrol_dir, check=lambda index: (
        index.check_compatible(embedder.dim, "cosine", embedder.model_hash or None)))  # fmt: skip
    batcher = MicroBatcher(embedder.extractor, settings.max_batch, settings.max_wait_ms)
    pixels = PixelBudget(settings.limits.max_process_pixels)
    return Service(settings, embedder, served, batcher, Stats(), pixels)


def create_app(settings: ServiceSettings) -> FastAPI:
    """The app over one model and one index folder: its routers, the upload size gate, the
    counters, and one error answer per kind of failure."""
    service = open_service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.batcher.close()

    app = FastAPI(title="reid gallery search", version="1", lifespan=lifespan,
                  description="Who is this? Search a re-ID gallery with a calibrated no-match answer.")  # fmt: skip
    app.state.service = service
    for router in ROUTERS:
        app.include_router(router)

    @app.middleware("http")
    async def gate_and_count(request: Request, call_next):
        start = time.perf_counter()
        refused = _upload_refusal(request, settings.limits.max_request_bytes)
        response = refused or await call_next(request)
        route = getattr(request.scope.get("route"), "path", "other")
        service.stats.record(route, response.status_code, time.perf_counter() - start)
        return response

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(ReidError)
    async def reid_error(request: Request, exc: ReidError):
        return JSONResponse({"detail": str(exc)}, status_code=error_status(exc))

    @app.exception_handler(OSError)
    async def os_error(request: Request, exc: OSError):
        error = user_error(exc, exc.filename or settings.index)  # the tools' one error path
        if error is None:
            raise exc
        return JSONResponse({"detail": str(error)}, status_code=error_status(error))

    return app


def _upload_refusal(request: Request, limit: int) -> JSONResponse | None:
    """An upload without a Content-Length (411) or over the request limit (413), refused before
    its body is read."""
    if request.method != "POST" or request.url.path not in UPLOADS:
        return None
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        return JSONResponse({"detail": "uploads need a Content-Length"}, status_code=411)
    if int(length) > limit:
        return JSONResponse({"detail": f"request of {length} bytes, the limit is {limit}"},
                            status_code=413)  # fmt: skip
    return None
