"""``POST /search``: uploaded images → each one's ranked hits and the no-match answer."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool

from ...data.market1501 import parse_name_or_unknown
from ...workflows.index import operating_point
from ..context import Served, UploadRoute, read_access
from ..models import Hit, QueryResult, SearchAnswer, Threshold
from ..uploads import read_images

router = APIRouter(route_class=UploadRoute)


@router.post("/search", dependencies=[Depends(read_access)], response_model=SearchAnswer)
async def search(
    app: Served,
    files: Annotated[list[UploadFile], File(description="query images")],
    topk: int = Form(10, ge=1, le=100),
    exclude_same_camera: bool = Form(False),
    camid: int | None = Form(None, ge=0, le=99, description="the queries' camera (0-based)"),
    far: float | None = Form(None, gt=0, lt=1),
    threshold: float | None = Form(None, ge=-1, le=1),
    no_threshold: bool = Form(False),
) -> SearchAnswer:
    index = app.served.snapshot()  # this request uses this index only
    point = operating_point(index.manifest, far, threshold, no_threshold)
    reservation = app.pixels.request()
    try:
        return await _answer(
            app, index, point, files, topk, exclude_same_camera, camid, reservation
        )
    finally:
        reservation.release()


async def _answer(app, index, point, files, topk, exclude_same_camera, camid, reservation):
    app.batcher.expect()
    start = time.perf_counter()
    try:
        images = await read_images(files, app.settings.limits, reservation)
    except BaseException:
        app.batcher.cancel()
        raise
    app.stats.decoded(len(images), time.perf_counter() - start)
    start = time.perf_counter()
    features = await asyncio.wrap_future(
        app.batcher.submit([image for _, image in images], expected=True)
    )
    embedded = time.perf_counter()
    cams = [camid if camid is not None else _camera(name) for name, _ in images]
    table = await run_in_threadpool(
        index.search, features, topk, np.asarray(cams), exclude_same_camera
    )
    done = time.perf_counter()
    app.stats.embedded(len(images), (embedded - start) / len(images), done - embedded)
    tau = point["threshold"] if point else None
    results = []
    for q, (name, _) in enumerate(images):
        hits = [
            Hit(rank=int(h.rank), score=float(h.score), row=int(h.row), pid=int(h.pid),
                camid=int(h.camid), match=None if tau is None else bool(h.score > tau))
            for h in table[table["query"] == q].itertuples()
        ]  # fmt: skip
        no_match = None if tau is None else not any(h.match for h in hits)
        results.append(QueryResult(query=Path(name).name, camid=int(cams[q]), hits=hits,
                                   no_match=no_match))  # fmt: skip
    return SearchAnswer(
        threshold=None if point is None else Threshold(
            value=tau, far=point.get("far"), source=point.get("source"),
            measured_far=point.get("measured_far"),
        ),
        results=results,
        timing_ms={"embed": round((embedded - start) * 1000, 2),
                   "search": round((done - embedded) * 1000, 2)},
        generation=app.served.generation,
    )  # fmt: skip


def _camera(name: str) -> int:
    """The camera a Market-style file name states (``0001_c3s1_…``: 2), else −1 (unknown)."""
    parsed = parse_name_or_unknown(Path(Path(name).name))
    return parsed[1] if parsed else -1
