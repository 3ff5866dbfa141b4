"""What the served index holds (counts, thumbnails by row, identities) and its writes
(enrolment, removal: always with the token)."""

from __future__ import annotations

import io
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from PIL import Image

from ...data.images import to_rgb
from ...workflows.index import embedding_of
from ..context import Served, UploadRoute, read_access, write_access
from ..models import Enrolled, GalleryInfo, Identity, OperatingPoint, Removed, RemoveRequest
from ..uploads import read_images

THUMBNAIL = (128, 256)  # width, height bound
router = APIRouter(prefix="/gallery", route_class=UploadRoute)


@router.get("", dependencies=[Depends(read_access)], response_model=GalleryInfo)
def gallery_info(app: Served) -> GalleryInfo:
    index = app.served.snapshot()
    manifest, metadata = index.manifest, index.metadata
    calibration = manifest.get("calibration") or {}
    return GalleryInfo(
        count=index.count,
        identities=int(metadata.loc[metadata["pid"] >= 0, "pid"].nunique()),
        cameras=sorted(int(c) for c in metadata["camid"].unique() if c >= 0),
        model_hash=manifest.get("model_hash", ""),
        backend=index.backend,
        index=manifest.get("factory"),
        dim=manifest["dim"],
        default_far=calibration.get("far"),
        operating_points=[
            OperatingPoint(far=p["far"], threshold=p["threshold"])
            for p in calibration.get("operating_points", [])
        ],  # fmt: skip
        writes=app.settings.token is not None,
        embedding=embedding_of(manifest),
        queries_embedding=app.embedder.embedding,
    )


@router.get("/rows/{row}/thumbnail", dependencies=[Depends(read_access)],
            response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})  # fmt: skip
def thumbnail(app: Served, row: int):
    """A JPEG thumbnail of an indexed image, looked up by row only (never a path)."""
    index = app.served.snapshot()
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


@router.get("/identities/{pid}", dependencies=[Depends(read_access)], response_model=Identity)
def identity(app: Served, pid: int) -> Identity:
    index = app.served.snapshot()
    rows = index.metadata[index.metadata["pid"] == pid]
    if pid < 0 or rows.empty:
        raise HTTPException(404, f"no identity {pid} in the index")
    return Identity(
        pid=pid,
        images=[{"row": int(r.row), "camid": int(r.camid)} for r in rows.itertuples()],
        cameras=sorted({int(c) for c in rows["camid"]}),
    )


@router.post("/enrol", dependencies=[Depends(write_access)], response_model=Enrolled)
async def enrol(
    app: Served,
    files: Annotated[list[UploadFile], File(description="images of one identity")],
    pid: int = Form(..., ge=0, le=10**9),
    camid: int = Form(..., ge=0, le=8, description="0-based camera of these images"),
):
    index = app.served.snapshot()  # an index the disk holds but this server cannot serve: 503
    if embedding_of(index.manifest) != app.embedder.embedding:
        held, here = embedding_of(index.manifest), app.embedder.embedding
        raise HTTPException(409, f"the index holds {held['runtime']} {held['precision']} vectors, "
                            f"this server embeds on {here['runtime']} {here['precision']}: one "
                            "index holds one kind of vector; enrol with the index's model")  # fmt: skip
    reservation = app.pixels.request()
    try:
        images = [image for _, image in await read_images(files, app.settings.limits, reservation)]
        features = await run_in_threadpool(app.batcher, images)
        return await run_in_threadpool(
            app.served.enrol, images, features, pid, camid, app.embedder.model_hash
        )
    finally:
        reservation.release()


@router.post("/remove", dependencies=[Depends(write_access)], response_model=Removed)
async def remove(app: Served, request: RemoveRequest):
    if not request.pids and not request.rows:
        raise HTTPException(422, "give pids and/or rows to remove")
    done = await run_in_threadpool(app.served.remove, request.pids, request.rows)
    if done["removed"] == 0:
        raise HTTPException(404, "nothing to remove: no such pid or row in the index")
    return done
