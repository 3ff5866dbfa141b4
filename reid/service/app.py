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
- ``GET /health``, ``GET /stats`` (requests, latency percentiles, batch sizes).

Security: the token (``ServiceSettings.token``) is compared in constant time; reads need it too
when one is set; without one, writes are refused. Uploads are decoded in memory under size and
pixel limits (``uploads.py``). Thumbnails are looked up by row number in the index's metadata,
never by a path from the request.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import io
import time
from collections import defaultdict, deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np

from ..optional import require

require("fastapi", "the search service (reid serve)")
require("python_multipart", "the search service's uploads (reid serve)")

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from PIL import Image
from pydantic import BaseModel, Field
from starlette.formparsers import MultiPartParser

from ..atomic import user_error
from ..data.images import to_rgb
from ..data.market1501 import parse_name_or_unknown
from ..errors import OutputError, ReidError
from ..index.sources import Embedder
from ..workflows.index import operating_point
from .batcher import MicroBatcher
from .gallery import IndexUnavailable, ServedGallery
from .uploads import PixelBudget, UploadError, UploadLimits, decode

STATIC = Path(__file__).parent / "static"
UPLOADS = ("/search", "/gallery/enrol")
MAX_FILES = 64
THUMBNAIL = (128, 256)  # width, height bound


def os_error_status(number: int | None) -> int:
    """A full disk is 507 (Insufficient Storage); a read-only or forbidden folder is 503."""
    return 507 if number in (errno.ENOSPC, errno.EDQUOT) else 503


def error_status(exc: ReidError) -> int:
    if isinstance(exc, IndexUnavailable):
        return 503
    if isinstance(exc, OutputError) and exc.errno is not None:
        return os_error_status(exc.errno)
    return 422


@dataclass
class ServiceSettings:
    index: str
    checkpoint: str
    token: str | None = None
    device: str | None = None
    max_batch: int = 16
    max_wait_ms: float = 5.0
    enrol_dir: str | None = None
    limits: UploadLimits = field(default_factory=UploadLimits)


class RemoveRequest(BaseModel):
    pids: list[int] = Field(default_factory=list)
    rows: list[int] = Field(default_factory=list)


class Stats:
    def __init__(self, keep: int = 10_000):
        self.requests: dict[str, int] = defaultdict(int)
        self.errors: dict[str, int] = defaultdict(int)
        self.latency: dict[str, deque] = defaultdict(lambda: deque(maxlen=keep))
        self.timing: dict[str, deque] = defaultdict(lambda: deque(maxlen=keep))

    def summary(self, batch_sizes: list[int]) -> dict:
        def pct(values):
            if not values:
                return None
            v = np.asarray(values) * 1000
            return {f"p{p}": round(float(np.percentile(v, p)), 2) for p in (50, 90, 99)}

        sizes = np.asarray(batch_sizes[-10_000:] or [0])
        return {
            "requests": dict(self.requests),
            "errors": dict(self.errors),
            "latency_ms": {k: pct(v) for k, v in self.latency.items()},
            "per_search_ms": {k: pct(v) for k, v in self.timing.items()},
            "batches": {
                "count": len(batch_sizes),
                "mean_images": round(float(sizes.mean()), 2),
                "max_images": int(sizes.max()),
            },  # fmt: skip
        }


def create_app(settings: ServiceSettings) -> FastAPI:
    """Load the model and the index once, check they belong together, and build the app."""
    embedder = Embedder.open(
        settings.checkpoint, settings.device, batch_size=max(settings.max_batch, 1)
    )
    served = ServedGallery(
        settings.index,
        settings.enrol_dir,
        check=lambda index: index.check_compatible(
            embedder.dim, "cosine", embedder.model_hash or None
        ),
    )
    batcher = MicroBatcher(embedder.extractor, settings.max_batch, settings.max_wait_ms)
    stats = Stats()
    pixels = PixelBudget(settings.limits.max_process_pixels)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        batcher.close()

    app = FastAPI(
        title="reid gallery search",
        version="1",
        description="Who is this? Search a re-ID gallery with a calibrated no-match answer.",
        lifespan=lifespan,
    )
    app.state.settings, app.state.served, app.state.batcher = settings, served, batcher

    def authorised(request: Request) -> bool:
        if settings.token is None:
            return False
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), settings.token.encode()
        )

    def read_access(request: Request) -> None:
        if settings.token is not None and not authorised(request):
            raise HTTPException(401, "a bearer token is needed", {"WWW-Authenticate": "Bearer"})

    def write_access(request: Request) -> None:
        if settings.token is None:
            raise HTTPException(401, "writes are disabled: start the server with a token")
        if not authorised(request):
            raise HTTPException(401, "a bearer token is needed", {"WWW-Authenticate": "Bearer"})

    # uploads stay in memory: the multipart parser spools a part to a temporary file beyond this
    MultiPartParser.spool_max_size = max(
        MultiPartParser.spool_max_size, settings.limits.max_request_bytes + 1
    )

    @app.middleware("http")
    async def measure(request: Request, call_next):
        start = time.perf_counter()
        if request.method == "POST" and request.url.path in UPLOADS:
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                return JSONResponse({"detail": "uploads need a Content-Length"}, status_code=411)
            if int(length) > settings.limits.max_request_bytes:
                return JSONResponse(
                    {
                        "detail": f"request of {length} bytes, the limit is {settings.limits.max_request_bytes}"
                    },
                    status_code=413,
                )
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "other")
        stats.requests[name] += 1
        if response.status_code >= 400:
            stats.errors[name] += 1
        stats.latency[name].append(time.perf_counter() - start)
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

    async def read_images(files: list[UploadFile], reservation) -> list[tuple[str, Image.Image]]:
        if not files:
            raise UploadError(422, "no image uploaded")
        if len(files) > MAX_FILES:
            raise UploadError(413, f"{len(files)} files, at most {MAX_FILES} per request")
        images = []
        for upload in files:
            data = await upload.read(settings.limits.max_bytes + 1)
            image = decode(data, upload.filename, settings.limits, reservation)
            images.append((upload.filename or "upload", image))
        return images

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/health")
    def health():
        index = served.snapshot()
        return {"status": "ok", "count": index.count, "generation": served.generation}

    @app.get("/stats", dependencies=[Depends(read_access)])
    def service_stats():
        return stats.summary(batcher.batch_sizes)

    @app.get("/gallery", dependencies=[Depends(read_access)])
    def gallery_info():
        index = served.snapshot()
        manifest = index.manifest
        calibration = manifest.get("calibration") or {}
        return {
            "count": index.count,
            "identities": int(index.metadata.loc[index.metadata["pid"] >= 0, "pid"].nunique()),
            "cameras": sorted(int(c) for c in index.metadata["camid"].unique() if c >= 0),
            "model_hash": manifest.get("model_hash", ""),
            "backend": index.backend,
            "index": manifest.get("factory"),
            "dim": manifest["dim"],
            "default_far": calibration.get("far"),
            "operating_points": [
                {"far": p["far"], "threshold": p["threshold"]}
                for p in calibration.get("operating_points", [])
            ],
            "writes": settings.token is not None,
        }

    @app.get("/gallery/rows/{row}/thumbnail", dependencies=[Depends(read_access)])
    def thumbnail(row: int):
        index = served.snapshot()
        found = index.metadata.loc[index.metadata["row"] == row, "path"] if row >= 0 else []
        if len(found) == 0:
            raise HTTPException(404, f"no row {row} in the index")
        try:
            with Image.open(found.iloc[0]) as image:
                image = to_rgb(image)
                image.thumbnail(THUMBNAIL)
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=90)
        except OSError:
            raise HTTPException(410, f"row {row}: its image is no longer readable") from None
        return Response(buffer.getvalue(), media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=60"})  # fmt: skip

    @app.get("/gallery/identities/{pid}", dependencies=[Depends(read_access)])
    def identity(pid: int):
        index = served.snapshot()
        rows = index.metadata[index.metadata["pid"] == pid]
        if pid < 0 or rows.empty:
            raise HTTPException(404, f"no identity {pid} in the index")
        return {
            "pid": pid,
            "images": [{"row": int(r.row), "camid": int(r.camid)} for r in rows.itertuples()],
            "cameras": sorted({int(c) for c in rows["camid"]}),
        }

    @app.post("/search", dependencies=[Depends(read_access)])
    async def search(
        files: Annotated[list[UploadFile], File(description="query images")],
        topk: int = Form(10, ge=1, le=100),
        exclude_same_camera: bool = Form(False),
        camid: int | None = Form(None, ge=0, le=99, description="the queries' camera (0-based)"),
        far: float | None = Form(None, gt=0, lt=1),
        threshold: float | None = Form(None, ge=-1, le=1),
        no_threshold: bool = Form(False),
    ):
        index = served.snapshot()  # this request uses this index only
        point = operating_point(index.manifest, far, threshold, no_threshold)
        reservation = pixels.request()
        try:
            return await answer_search(index, point, files, topk, exclude_same_camera, camid,
                                       reservation)  # fmt: skip
        finally:
            reservation.release()

    async def answer_search(index, point, files, topk, exclude_same_camera, camid, reservation):
        batcher.expect()
        try:
            images = await read_images(files, reservation)
        except BaseException:
            batcher.cancel()
            raise
        start = time.perf_counter()
        future = batcher.submit([image for _, image in images], expected=True)
        features = await asyncio.wrap_future(future)
        embedded = time.perf_counter()
        cams = []
        for name, _ in images:
            parsed = parse_name_or_unknown(Path(Path(name).name))
            cams.append(camid if camid is not None else (parsed[1] if parsed else -1))
        table = await run_in_threadpool(
            index.search, features, topk, np.asarray(cams), exclude_same_camera
        )
        done = time.perf_counter()
        stats.timing["embed_per_image"].append((embedded - start) / len(images))
        stats.timing["search"].append(done - embedded)
        tau = point["threshold"] if point else None
        results = []
        for q, (name, _) in enumerate(images):
            hits = table[table["query"] == q]
            rows = [
                {"rank": int(h.rank), "score": float(h.score), "row": int(h.row), "pid": int(h.pid),
                 "camid": int(h.camid), "match": None if tau is None else bool(h.score > tau)}
                for h in hits.itertuples()
            ]  # fmt: skip
            results.append({
                "query": Path(name).name, "camid": int(cams[q]), "hits": rows,
                "no_match": None if tau is None else not any(r["match"] for r in rows),
            })  # fmt: skip
        return {
            "threshold": None
            if point is None
            else {
                "value": tau,
                "far": point.get("far"),
                "source": point.get("source"),
                "measured_far": point.get("measured_far"),
            },  # fmt: skip
            "results": results,
            "timing_ms": {
                "embed": round((embedded - start) * 1000, 2),
                "search": round((done - embedded) * 1000, 2),
            },  # fmt: skip
            "generation": served.generation,
        }

    @app.post("/gallery/enrol", dependencies=[Depends(write_access)])
    async def enrol(
        files: Annotated[list[UploadFile], File(description="images of one identity")],
        pid: int = Form(..., ge=0, le=10**9),
        camid: int = Form(..., ge=0, le=8, description="0-based camera of these images"),
    ):
        served.snapshot()  # an index the disk holds but this server cannot serve: 503
        reservation = pixels.request()
        try:
            images = [image for _, image in await read_images(files, reservation)]
            features = await run_in_threadpool(batcher, images)
            return await run_in_threadpool(
                served.enrol, images, features, pid, camid, embedder.model_hash
            )
        finally:
            reservation.release()

    @app.post("/gallery/remove", dependencies=[Depends(write_access)])
    async def remove(request: RemoveRequest):
        if not request.pids and not request.rows:
            raise HTTPException(422, "give pids and/or rows to remove")
        done = await run_in_threadpool(served.remove, request.pids, request.rows)
        if done["removed"] == 0:
            raise HTTPException(404, "nothing to remove: no such pid or row in the index")
        return done

    return app
