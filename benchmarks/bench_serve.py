"""Load test of the search service on loopback: bounded in count and time.

Starts ``reid serve`` on the demo index (``make demo`` makes it) on a free loopback port — with
``--fast MODEL`` a second server beside it, on the same index, serving an export of the same
model (the fastest verified one) — then for each concurrency level, on each server in turn, sends ``--requests`` single-image searches from that many
client threads (keep-alive connections, query images cycled from the demo's query folder) and
records every request's latency. Reports per level: errors, p50/p90/p99 latency, throughput,
and the server's own figures (``/stats``: mean images per forward pass, embedding and search
time per request). Client and server share the machine's cores, as a sidecar would.

    python benchmarks/bench_serve.py             # writes benchmarks/results/serve.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from reid.machine import cpu_description

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TOKEN = "bench-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def body_for(path: Path) -> tuple[bytes, str]:
    from reid.service.client import _multipart

    return _multipart(
        {"topk": 10, "exclude_same_camera": "true"}, [("files", path.name, path.read_bytes())]
    )


def worker(port, bodies, count, latencies, errors, offset):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for i in range(count):
        body, kind = bodies[(offset + i) % len(bodies)]
        start = time.perf_counter()
        try:
            connection.request(
                "POST", "/search", body, {"Content-Type": kind, "Authorization": f"Bearer {TOKEN}"}
            )
            response = connection.getresponse()
            response.read()
            ok = response.status == 200
        except OSError:
            ok = False
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        latencies.append(time.perf_counter() - start)
        if not ok:
            errors.append(i)


def stats(port) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/stats", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def start_server(index: str, model: str, runtime: str | None, args, token_file: Path):
    port = free_port()
    command = [sys.executable, "tools/serve.py", "--index", index, "--model", model,
               "--port", str(port), "--token-file", str(token_file), "--max-batch",
               str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]  # fmt: skip
    if runtime:
        command += ["--runtime", runtime]
    server = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.time() + 120
    while True:
        try:
            stats(port)
            return server, port
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                raise SystemExit("server did not start") from None
            time.sleep(0.3)


def measure(port: int, bodies, level: int, args) -> dict:
    before = stats(port)
    latencies, errors, threads = [], [], []
    per = args.requests // level
    start = time.perf_counter()
    for t in range(level):
        thread = threading.Thread(
            target=worker, args=(port, bodies, per, latencies, errors, t * 7), daemon=True
        )
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(timeout=max(1.0, args.time_limit - (time.perf_counter() - start)))
    wall = time.perf_counter() - start
    after = stats(port)
    ms = np.asarray(latencies) * 1000
    batches = after["batches"]["count"] - before["batches"]["count"]
    timing = after["per_search_ms"]
    row = {
        "concurrency": level,
        "requests": len(latencies),
        "errors": len(errors) + (level * per - len(latencies)),
        "wall_s": round(wall, 2),
        "throughput_rps": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "mean_images_per_forward": round(len(latencies) / max(batches, 1), 2),
        "server_decode_ms_per_image_p50": (timing.get("decode_per_image") or {}).get("p50"),
        "server_embed_ms_per_image_p50": timing["embed_per_image"]["p50"],
        "server_search_ms_p50": timing["search"]["p50"],
    }
    row["p99_over_p50"] = round(row["p99_ms"] / row["p50_ms"], 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--index", default="runs/demo/index")
    parser.add_argument("--checkpoint", default="runs/demo/best.pt", help="today's path")
    parser.add_argument("--fast", help="an export of the same model (the fastest verified one)")
    parser.add_argument("--fast-runtime", help="its runtime (default: the one it was verified on)")
    parser.add_argument("--queries", default="datasets/synthetic/query")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--time-limit", type=float, default=300, help="seconds per level at most")
    parser.add_argument("--out", default=str(RESULTS / "serve.json"))
    args = parser.parse_args()
    token_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"reid-bench-token-{os.getpid()}"
    token_file.write_text(TOKEN)
    paths = {"checkpoint": (args.checkpoint, None)}
    if args.fast:
        paths["fast"] = (args.fast, args.fast_runtime)
    servers = {}
    rows = {name: [] for name in paths}
    try:
        for name, (model, runtime) in paths.items():  # both up; one measured at a time
            servers[name] = start_server(args.index, model, runtime, args, token_file)
        bodies = [body_for(p) for p in sorted(Path(args.queries).glob("*.jpg"))[:200]]
        for _, port in servers.values():
            worker(port, bodies, 20, [], [], 0)  # warm
        for level in args.levels:  # interleaved: each level on each path in turn
            for name, (_, port) in servers.items():
                row = {"path": name, **measure(port, bodies, level, args)}
                rows[name].append(row)
                print(json.dumps(row), flush=True)
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait(timeout=30)
        token_file.unlink(missing_ok=True)
    base = rows["checkpoint"][0]["throughput_rps"]
    result = {
        "command": "python benchmarks/bench_serve.py "
        + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items()
            if k != "out" and v is not None
        ),
        "machine": f"{cpu_description()} (client and server share them)",
        "rows": rows["checkpoint"],
        "throughput_vs_concurrency_1": {
            r["concurrency"]: round(r["throughput_rps"] / base, 2) for r in rows["checkpoint"]
        },
    }
    if args.fast:
        result["fast_rows"] = rows["fast"]
        result["fast_vs_checkpoint"] = {
            f["concurrency"]: round(f["throughput_rps"] / c["throughput_rps"], 2)
            for c, f in zip(rows["checkpoint"], rows["fast"])
        }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
