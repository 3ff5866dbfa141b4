"""A small Python client for the search service (standard library only).

from reid.service.client import search
answer = search("http://127.0.0.1:8000", ["query.jpg"], topk=5, exclude_same_camera=True)
for result in answer["results"]:
    print(result["query"], "no match" if result["no_match"] else result["hits"][0])
"""

from __future__ import annotations

import json
import mimetypes
import os
import secrets
import urllib.request
from pathlib import Path

TOKEN_ENV = "REID_SERVICE_TOKEN"


def _multipart(fields: dict, files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = "reid" + secrets.token_hex(12)
    parts = []
    for name, value in fields.items():
        if value is None:
            continue
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    for name, filename, data in files:
        kind = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {kind}\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _request(
    url: str, data: bytes | None, content_type: str | None, token: str | None, timeout: float
):
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if content_type:
        request.add_header("Content-Type", content_type)
    token = token if token is not None else os.environ.get(TOKEN_ENV)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def search(url: str, images, topk: int = 10, exclude_same_camera: bool = False, camid=None,
           far=None, threshold=None, no_threshold: bool = False, token: str | None = None,
           timeout: float = 60.0) -> dict:  # fmt: skip
    """POST the images (paths or ``(name, bytes)`` pairs) to ``url``/search; the JSON answer."""
    files = []
    for image in images:
        if isinstance(image, tuple):
            files.append(("files", image[0], image[1]))
        else:
            files.append(("files", Path(image).name, Path(image).read_bytes()))
    fields = {
        "topk": topk,
        "exclude_same_camera": str(bool(exclude_same_camera)).lower(),
        "camid": camid,
        "far": far,
        "threshold": threshold,
        "no_threshold": "true" if no_threshold else None,
    }
    body, kind = _multipart(fields, files)
    return _request(url.rstrip("/") + "/search", body, kind, token, timeout)


def gallery(url: str, token: str | None = None, timeout: float = 30.0) -> dict:
    return _request(url.rstrip("/") + "/gallery", None, None, token, timeout)
