"""The page, liveness, and what the service counts."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, Response

from ..context import Served, read_access
from ..models import Health

STATIC = Path(__file__).resolve().parent.parent / "static"
router = APIRouter()


@router.get("/", include_in_schema=False)
def page():
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/health", response_model=Health)
def health(app: Served):
    index = app.served.snapshot()
    return Health(status="ok", count=index.count, generation=app.served.generation)


@router.get("/stats", dependencies=[Depends(read_access)])
def service_stats(app: Served) -> dict:
    """Requests and errors per route, latency percentiles (ms), micro-batch sizes."""
    return app.stats.summary(app.batcher.batch_sizes)


@router.get("/metrics", dependencies=[Depends(read_access)],
            response_class=Response, responses={200: {"content": {"text/plain": {}}}})  # fmt: skip
def metrics(app: Served):
    """The counters in the Prometheus text format."""
    return Response(app.stats.prometheus(), media_type="text/plain; version=0.0.4")
