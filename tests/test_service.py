"""The search service: the API against a real index built from the synthetic set (FastAPI's
test client), its security cases, a write racing 50 searches and ``kill -9`` during an enrol on
a real server process, and the page in a real headless Chromium (``tests/test_service_browser.py``)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reid.index import GalleryIndex
from tests.conftest import REPO

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def fresh_copy(index_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "index"
    shutil.copytree(index_dir, copy)
    return copy


def make_client(index, checkpoint, token=TOKEN, **kw):
    from fastapi.testclient import TestClient

    from reid.service.app import ServiceSettings, create_app

    return TestClient(create_app(ServiceSettings(str(index), str(checkpoint), token, **kw)))


def jpeg_bytes(seed=0, size=(64, 32), mode="RGB") -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def queries(synthetic_root, n=3):
    return sorted((synthetic_root / "query").glob("*.jpg"))[:n]


def upload(paths):
    return [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def test_search_answers_like_the_search_tool(index_dir, tiny_checkpoint, synthetic_root, tmp_path):
    from reid.workflows.index import search

    client = make_client(index_dir, tiny_checkpoint)
    picked = queries(synthetic_root)
    answer = client.post("/search", files=upload(picked), data={"topk": 5, "exclude_same_camera": "true"},
                         headers=AUTH)  # fmt: skip
    assert answer.status_code == 200, answer.text
    body = answer.json()
    tool = search(str(index_dir), [str(p) for p in picked], str(tiny_checkpoint), 5, True)
    assert body["threshold"]["far"] == GalleryIndex.load(index_dir).manifest["calibration"]["far"]
    for q, result in enumerate(body["results"]):
        expected = tool["table"][tool["table"]["query"] == q]
        assert [h["row"] for h in result["hits"]] == expected["row"].tolist()
        np.testing.assert_allclose(
            [h["score"] for h in result["hits"]], expected["score"], atol=1e-5
        )
        assert [h["match"] for h in result["hits"]] == expected["match"].tolist()
        assert result["no_match"] == (str(picked[q]) in tool["no_match"])
        assert all(h["camid"] != result["camid"] for h in result["hits"])  # parsed from the name
    # operating points: an explicit threshold, none, and a rate the index was not calibrated for
    high = client.post(
        "/search", files=upload(picked[:1]), data={"threshold": 0.9999}, headers=AUTH
    ).json()
    assert high["results"][0]["no_match"] is True and high["threshold"]["source"] == "--threshold"
    plain = client.post(
        "/search", files=upload(picked[:1]), data={"no_threshold": "true"}, headers=AUTH
    ).json()
    assert plain["threshold"] is None and plain["results"][0]["hits"][0]["match"] is None
    bad = client.post("/search", files=upload(picked[:1]), data={"far": 0.5}, headers=AUTH)
    assert bad.status_code == 422 and "not calibrated" in bad.json()["detail"]
    info = client.get("/gallery", headers=AUTH).json()
    assert (
        info["count"] == GalleryIndex.load(index_dir).count and len(info["operating_points"]) >= 4
    )
    assert client.get("/health").json()["status"] == "ok"
    stats = client.get("/stats", headers=AUTH).json()
    assert stats["requests"]["/search"] >= 4 and stats["batches"]["count"] >= 1
    schema = client.get("/openapi.json").json()
    assert {"/search", "/gallery/enrol", "/gallery/remove"} <= set(schema["paths"])


def test_enrol_and_remove_through_the_api(index_dir, tiny_checkpoint, synthetic_root, tmp_path):
    index = fresh_copy(index_dir, tmp_path)
    client = make_client(index, tiny_checkpoint)
    before = GalleryIndex.load(index).count
    query = queries(synthetic_root, 1)
    enrolled = client.post(
        "/gallery/enrol", files=upload(query * 2), data={"pid": 4242, "camid": 5}, headers=AUTH
    )
    assert enrolled.status_code == 200, enrolled.text
    assert enrolled.json()["count"] == before + 2 == GalleryIndex.load(index).count
    top = client.post("/search", files=upload(query), data={"topk": 2}, headers=AUTH).json()[
        "results"
    ][0]["hits"]
    assert [h["pid"] for h in top] == [4242, 4242] and top[0]["score"] > 0.999
    files = sorted((index / "enrolled").glob("*.jpg"))
    assert len(files) == 2 and all("_enrol_" in f.name for f in files)  # names the server made
    identity = client.get("/gallery/identities/4242", headers=AUTH).json()
    assert identity["cameras"] == [5] and len(identity["images"]) == 2
    thumb = client.get(f"/gallery/rows/{top[0]['row']}/thumbnail", headers=AUTH)
    assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.content)).format == "JPEG"
    removed = client.post("/gallery/remove", json={"pids": [4242]}, headers=AUTH)
    assert removed.json() == {"removed": 2, "count": before}
    assert not list((index / "enrolled").glob("*.jpg"))  # our files of removed rows are gone
    assert client.post("/gallery/remove", json={"pids": [4242]}, headers=AUTH).status_code == 404
    assert GalleryIndex.load(index).count == before


def test_unauthenticated_writes_and_reads_are_refused(
    index_dir, tiny_checkpoint, synthetic_root, tmp_path
):
    index = fresh_copy(index_dir, tmp_path)
    manifest = (index / "manifest.json").read_bytes()
    client = make_client(index, tiny_checkpoint)
    query = upload(queries(synthetic_root, 1))
    cases = {
        "no token": {},
        "wrong token": {"Authorization": "Bearer " + "x" * len(TOKEN)},
        "wrong scheme": {"Authorization": f"Basic {TOKEN}"},
    }
    for headers in cases.values():
        assert (
            client.post(
                "/gallery/enrol", files=query, data={"pid": 1, "camid": 0}, headers=headers
            ).status_code
            == 401
        )
        assert (
            client.post("/gallery/remove", json={"pids": [1]}, headers=headers).status_code == 401
        )
        assert client.post("/search", files=query, headers=headers).status_code == 401
        assert client.get("/gallery/rows/0/thumbnail", headers=headers).status_code == 401
        assert client.get("/gallery", headers=headers).status_code == 401
    assert (index / "manifest.json").read_bytes() == manifest and not (index / "enrolled").exists()
    # no token configured: reads are open on loopback, writes are off
    open_client = make_client(index, tiny_checkpoint, token=None)
    assert open_client.post("/search", files=query).status_code == 200
    refused = open_client.post("/gallery/remove", json={"pids": [1]})
    assert refused.status_code == 401 and "writes are disabled" in refused.json()["detail"]
    assert (index / "manifest.json").read_bytes() == manifest


def test_thumbnails_only_by_row(index_dir, tiny_checkpoint):
    client = make_client(index_dir, tiny_checkpoint)
    count = GalleryIndex.load(index_dir).count
    for path, status in {
        "/gallery/rows/-1/thumbnail": 404,
        f"/gallery/rows/{count + 5}/thumbnail": 404,
        "/gallery/rows/1.5/thumbnail": 422,
        "/gallery/rows/..%2F..%2Fetc%2Fpasswd/thumbnail": 404,
        "/gallery/rows/../../etc/passwd": 404,
        "/gallery/rows/%2Fetc%2Fpasswd/thumbnail": 404,
        "/gallery/rows/0x10/thumbnail": 422,
        "/gallery/identities/-1": 404,
    }.items():
        response = client.get(path, headers=AUTH)
        assert response.status_code in (status, 404, 422), (path, response.status_code)
        assert response.headers["content-type"].startswith("application/json"), path
        assert b"root:" not in response.content


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` × ``height`` (a decompression bomb's shape)."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def test_malformed_and_oversized_uploads(index_dir, tiny_checkpoint):
    from reid.service.uploads import UploadLimits

    limits = UploadLimits(max_bytes=300_000, max_request_bytes=1_000_000)
    client = make_client(index_dir, tiny_checkpoint, limits=limits)
    good = jpeg_bytes()
    cases = {
        "text renamed .jpg": (b"this is not an image\n" * 10, 415),
        "truncated JPEG": (good[: len(good) // 2], 422),
        "1x1": (jpeg_bytes(size=(1, 1)), 422),
        "10,000 x 10,000": (png_declaring(10_000, 10_000), 413),
        "empty": (b"", 422),
        "over the byte limit": (b"\xff\xd8" + os.urandom(400_000), 413),
    }
    for name, (data, status) in cases.items():
        response = client.post(
            "/search", files=[("files", ("q.jpg", data, "image/jpeg"))], headers=AUTH
        )
        assert response.status_code == status, (name, response.status_code, response.text)
        assert "q.jpg" in response.json()["detail"], name
    cmyk = client.post(
        "/search", files=[("files", ("q.jpg", jpeg_bytes(mode="CMYK"), "image/jpeg"))], headers=AUTH
    )
    assert cmyk.status_code == 200  # a real image: converted to RGB like training does
    assert client.post("/search", data={"topk": 3}, headers=AUTH).status_code == 422  # no file
    too_many = [("files", (f"q{i}.jpg", good, "image/jpeg")) for i in range(65)]
    assert client.post("/search", files=too_many, headers=AUTH).status_code == 413
    whole = [
        ("files", (f"q{i}.jpg", b"\xff\xd8" + os.urandom(250_000), "image/jpeg")) for i in range(5)
    ]
    refused = client.post("/search", files=whole, headers=AUTH)  # each under, together over
    assert refused.status_code == 413 and "the limit is 1000000" in refused.json()["detail"]


def flat_png(width: int, height: int, mode: str = "L") -> bytes:
    """A real, flat PNG: a few KB on the wire, ``width × height`` pixels once decoded."""
    buffer = io.BytesIO()
    Image.new(mode, (width, height), 128).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def test_memory_is_bounded_per_request_and_per_process(index_dir, tiny_checkpoint):
    """The issue's case: many flat PNGs, each under the per-file pixel limit, in one request
    (16 × 36 MP took the server to 4.4 GB): refused by the request's pixel budget before they
    are decoded; the process budget answers 503 when concurrent requests hold it."""
    from reid.service.uploads import PixelBudget, UploadError, UploadLimits

    limits = UploadLimits(max_pixels=4_000_000, max_request_pixels=6_000_000)
    client = make_client(index_dir, tiny_checkpoint, limits=limits)
    files = [("files", (f"q{i}.png", flat_png(1800, 1800), "image/png")) for i in range(4)]
    refused = client.post("/search", files=files, headers=AUTH)
    assert refused.status_code == 413, refused.text
    assert "declare more than 6000000 pixels in all" in refused.json()["detail"]
    assert client.post("/search", files=files[:1], headers=AUTH).status_code == 200
    budget = PixelBudget(5_000_000)
    first, second = budget.request(), budget.request()
    first.take(4_000_000, "a")
    with pytest.raises(UploadError) as busy:
        second.take(2_000_000, "b")
    assert busy.value.status == 503
    first.release()
    second.take(2_000_000, "b")
    second.release()
    assert budget.used == 0


def test_a_16_bit_upload_decodes_like_the_command_line(index_dir, tiny_checkpoint, tmp_path):
    """One conversion for the service and the tools: a 16-bit PNG is its grey values (the
    upload path made it all white), and the service's embedding equals the search tool's."""
    from reid.data.images import read_image
    from reid.service.uploads import decode

    values = (np.arange(64 * 32, dtype=np.uint16).reshape(64, 32) * 30).astype(np.uint16)
    path = tmp_path / "q16.png"
    Image.fromarray(values).save(path)  # mode I;16
    served = decode(path.read_bytes(), "q16.png")
    assert np.array_equal(np.asarray(served), np.asarray(read_image(str(path))))
    assert len(np.unique(np.asarray(served))) > 10  # not all white


def test_a_removal_from_the_command_line_is_seen_by_the_next_request(
    index_dir, tiny_checkpoint, synthetic_root, tmp_path
):
    """ "Forget this person" made with export_index --remove-pids while the service runs: the
    next search, identity, thumbnail and health answer without them, and the images the service
    enrolled for them are deleted by the command line's removal too."""
    from reid.workflows.index import remove_from_index

    index = fresh_copy(index_dir, tmp_path)
    client = make_client(index, tiny_checkpoint)
    query = queries(synthetic_root, 1)
    enrolled = client.post(
        "/gallery/enrol", files=upload(query * 2), data={"pid": 4343, "camid": 1}, headers=AUTH
    )
    assert enrolled.status_code == 200, enrolled.text
    row = enrolled.json()["rows"][0]
    assert len(list((index / "enrolled").glob("*.jpg"))) == 2
    count = client.get("/health").json()["count"]
    done = remove_from_index(str(index), pids=[4343])  # the CLI's removal, beside the server
    assert done["removed"] == 2 and len(done["deleted_images"]) == 2
    assert not list((index / "enrolled").glob("*.jpg"))
    assert client.get("/health").json()["count"] == count - 2
    assert client.get("/gallery/identities/4343", headers=AUTH).status_code == 404
    assert client.get(f"/gallery/rows/{row}/thumbnail", headers=AUTH).status_code == 404
    hits = client.post("/search", files=upload(query), data={"topk": 5}, headers=AUTH).json()
    assert 4343 not in [h["pid"] for h in hits["results"][0]["hits"]]
    other = int(GalleryIndex.load(index).metadata["pid"].iloc[0])
    remove_from_index(str(index), pids=[other])
    assert client.get(f"/gallery/identities/{other}", headers=AUTH).status_code == 404


def test_an_index_the_server_cannot_serve_or_write_is_one_line(
    index_dir, tiny_checkpoint, synthetic_root, tmp_path
):
    """A read-only index folder answers an enrol with 503 and one line (it was a bare 500);
    an index replaced on disk by another model's answers 503 until it is fixed, never the old
    index's hits."""
    index = fresh_copy(index_dir, tmp_path)
    client = make_client(index, tiny_checkpoint)
    query = queries(synthetic_root, 1)
    if os.geteuid() != 0:  # root writes through permission bits: test the mount case below
        os.chmod(index, 0o555)
        try:
            answer = client.post("/gallery/enrol", files=upload(query), data={"pid": 7, "camid": 1},
                                 headers=AUTH)  # fmt: skip
        finally:
            os.chmod(index, 0o755)
        assert answer.status_code == 503 and "cannot write" in answer.json()["detail"]
    from reid import outputs

    real = outputs.probe_writable

    def read_only(folder, flag="--out"):
        raise outputs.OutputError(
            f"{flag} {folder}: cannot write there (read-only file system)", 30
        )

    outputs.probe_writable = read_only
    try:
        answer = client.post("/gallery/enrol", files=upload(query), data={"pid": 7, "camid": 1},
                             headers=AUTH)  # fmt: skip
    finally:
        outputs.probe_writable = real
    assert answer.status_code == 503, answer.text
    assert "read-only file system" in answer.json()["detail"]
    manifest = json.loads((index / "manifest.json").read_text())
    manifest["model_hash"] = "another model"
    (index / "manifest.json").write_text(json.dumps(manifest))
    answer = client.post("/search", files=upload(query), headers=AUTH)
    assert answer.status_code == 503 and "cannot be served" in answer.json()["detail"]
    assert client.get("/health").status_code == 503


# ------------------------------------------------------------------------- a real server process
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``tools/serve.py`` in its own process on a free loopback port."""

    def __init__(self, index, checkpoint, tmp_path, *extra):
        self.port = free_port()
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp_path / f"server-{self.port}.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "tools/serve.py", "--index", str(index), "--checkpoint", str(checkpoint),
             "--port", str(self.port), "--token-file", str(token_file), *extra],
            cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                from reid.service.client import gallery

                gallery(self.url, token=TOKEN, timeout=2)
                return
            except Exception:
                if self.process.poll() is not None:
                    raise RuntimeError(Path(self.log.name).read_text()) from None
                time.sleep(0.3)
        raise RuntimeError("server did not start")

    def stop(self, sig=signal.SIGTERM):
        self.process.send_signal(sig)
        self.process.wait(timeout=30)
        self.log.close()


def test_refuses_to_bind_beyond_loopback_without_a_token(index_dir, tiny_checkpoint):
    done = subprocess.run(
        [sys.executable, "tools/serve.py", "--index", str(index_dir), "--checkpoint", str(tiny_checkpoint), "--host", "0.0.0.0"],
        cwd=REPO, capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "REID_SERVICE_TOKEN"},
    )  # fmt: skip
    assert done.returncode != 0
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("error: --host 0.0.0.0: binding beyond loopback needs a token")
    )


def test_a_write_racing_50_searches_sees_old_or_new(
    index_dir, tiny_checkpoint, synthetic_root, tmp_path
):
    from reid.service.client import search

    index = fresh_copy(index_dir, tmp_path)
    server = Server(index, tiny_checkpoint, tmp_path, "--max-batch", "1")
    try:
        query = queries(synthetic_root, 1)[0]
        old = search(server.url, [query], topk=5, token=TOKEN)["results"][0]["hits"]
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(search, server.url, [query], 5, False, None, None, None, False, TOKEN)
                       for _ in range(25)]  # fmt: skip
            enrol = pool.submit(_enrol, server.url, query, 777)
            futures += [pool.submit(search, server.url, [query], 5, False, None, None, None, False, TOKEN)
                        for _ in range(25)]  # fmt: skip
            answers = [f.result()["results"][0]["hits"] for f in futures]
            assert enrol.result()["added"] == 3
        new = search(server.url, [query], topk=5, token=TOKEN)["results"][0]["hits"]
        assert [h["pid"] for h in new[:3]] == [777] * 3
        key = lambda hits: [(h["row"], h["pid"]) for h in hits]  # noqa: E731
        assert all(key(a) in (key(old), key(new)) for a in answers)
    finally:
        server.stop()
    assert GalleryIndex.load(index).count == GalleryIndex.load(index_dir).count + 3


def _enrol(url, image, pid, copies=3):
    import urllib.request

    from reid.service.client import _multipart

    body, kind = _multipart(
        {"pid": pid, "camid": 0},
        [("files", f"e{i}.jpg", Path(image).read_bytes()) for i in range(copies)],
    )
    request = urllib.request.Request(url + "/gallery/enrol", data=body, method="POST")
    request.add_header("Content-Type", kind)
    request.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


@pytest.mark.parametrize("delay", [0.05, 0.4, 1.2])
def test_kill_9_during_an_enrol_leaves_the_old_or_the_new_index(
    index_dir, tiny_checkpoint, synthetic_root, tmp_path, delay
):
    index = fresh_copy(index_dir, tmp_path)
    old = GalleryIndex.load(index).count
    server = Server(index, tiny_checkpoint, tmp_path)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(_enrol, server.url, queries(synthetic_root, 1)[0], 555, 48)
        time.sleep(delay)
        server.stop(signal.SIGKILL)
    after = GalleryIndex.load(index)  # validates: checksums, counts
    assert after.count in (old, old + 48)
    assert after.metadata["pid"].eq(555).sum() in (0, 48)
    server = Server(index, tiny_checkpoint, tmp_path)  # restarts on what was left
    try:
        from reid.service.client import gallery

        assert gallery(server.url, token=TOKEN)["count"] == after.count
    finally:
        server.stop()


def test_metrics_openapi_answers_and_per_app_upload_limits(
    index_dir, tiny_checkpoint, synthetic_root
):
    """``/metrics`` is the Prometheus text format of the app's own counters; OpenAPI shows
    each answer's schema; two apps in one process keep their own upload limits and change
    nothing process-wide (the multipart parser's class setting is untouched)."""
    from starlette.formparsers import MultiPartParser

    from reid.service.uploads import UploadLimits

    spool = MultiPartParser.spool_max_size
    small = make_client(index_dir, tiny_checkpoint, limits=UploadLimits(max_request_bytes=2_000))
    large = make_client(index_dir, tiny_checkpoint)
    assert MultiPartParser.spool_max_size == spool
    files = upload(queries(synthetic_root, 1))
    assert small.post("/search", files=files, headers=AUTH).status_code == 413
    assert large.post("/search", files=files, headers=AUTH).status_code == 200
    text = large.get("/metrics", headers=AUTH).text
    assert 'reid_requests_total{route="/search",status="2xx"} 1.0' in text
    assert "reid_request_seconds_bucket" in text and "reid_embedded_images_total 1.0" in text
    assert 'route="/search",status="2xx"' not in small.get("/metrics", headers=AUTH).text
    assert large.get("/metrics").status_code == 401  # reads need the token when one is set
    schema = large.get("/openapi.json").json()
    answers = {
        path: op["responses"]["200"]["content"]["application/json"]["schema"].get("$ref", "")
        for path, item in schema["paths"].items()
        for op in item.values()
        if "application/json" in op["responses"].get("200", {}).get("content", {})
    }
    for path, model in {"/search": "SearchAnswer", "/gallery": "GalleryInfo",
                        "/health": "Health", "/gallery/enrol": "Enrolled",
                        "/gallery/remove": "Removed"}.items():  # fmt: skip
        assert answers[path].endswith(model), (path, answers[path])
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
