"""What every route reaches through ``Depends``: the app's :class:`Service` (model, served
gallery, micro-batcher, counters, pixel budget, settings), the token checks (FastAPI's
``HTTPBearer``; compared in constant time), and :class:`UploadRoute`, which parses an upload's
form in memory under this app's own byte limit (no process-wide parser setting)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Annotated

from ..optional import require

require("fastapi", "the search service (reid serve)")
require("python_multipart", "the search service's uploads (reid serve)")

from fastapi import Depends, HTTPException, Request  # noqa: E402
from fastapi.routing import APIRoute  # noqa: E402
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer  # noqa: E402
from starlette.formparsers import MultiPartException, MultiPartParser  # noqa: E402

from ..index.sources import Embedder  # noqa: E402
from .batcher import MicroBatcher  # noqa: E402
from .gallery import ServedGallery  # noqa: E402
from .metrics import Stats  # noqa: E402
from .uploads import MAX_FILES, PixelBudget, UploadLimits  # noqa: E402


@dataclass
class ServiceSettings:
    index: str
    checkpoint: str
    token: str | None = None
    device: str | None = None
    max_batch: int = 16
    max_wait_ms: float = 5.0
    enrol_dir: str | None = None
    runtime: str | None = None  # an exported model's runtime
    limits: UploadLimits = field(default_factory=UploadLimits)


@dataclass
class Service:
    settings: ServiceSettings
    embedder: Embedder
    served: ServedGallery
    batcher: MicroBatcher
    stats: Stats
    pixels: PixelBudget


def service(request: Request) -> Service:
    return request.app.state.service


Served = Annotated[Service, Depends(service)]
_bearer = HTTPBearer(auto_error=False, description="the token the server was started with")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _authorised(app: Service, credentials: HTTPAuthorizationCredentials | None) -> bool:
    token = app.settings.token
    return (
        token is not None
        and credentials is not None
        and hmac.compare_digest(credentials.credentials.strip().encode(), token.encode())
    )


def read_access(app: Served, credentials: Credentials) -> None:
    """Reads need the token when the server has one."""
    if app.settings.token is not None and not _authorised(app, credentials):
        raise HTTPException(401, "a bearer token is needed", {"WWW-Authenticate": "Bearer"})


def write_access(app: Served, credentials: Credentials) -> None:
    """Writes always need it: a server started without one refuses them."""
    if app.settings.token is None:
        raise HTTPException(401, "writes are disabled: start the server with a token")
    if not _authorised(app, credentials):
        raise HTTPException(401, "a bearer token is needed", {"WWW-Authenticate": "Bearer"})


class UploadRoute(APIRoute):
    """A route whose multipart form is parsed here, in memory up to the app's request limit
    (the parser would spool bigger parts to temporary files), before FastAPI reads its fields."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def parse_in_memory(request: Request):
            if request.headers.get("content-type", "").startswith("multipart/form-data"):
                limits = request.app.state.service.settings.limits
                parser = MultiPartParser(request.headers, request.stream(),
                                         max_files=4 * MAX_FILES, max_fields=32)  # fmt: skip
                parser.spool_max_size = limits.max_request_bytes + 1  # this parser only
                try:
                    request._form = await parser.parse()  # Request.form() answers with it
                except MultiPartException as exc:
                    raise HTTPException(
                        413 if "files" in exc.message else 400, exc.message
                    ) from None
            return await handler(request)

        return parse_in_memory
