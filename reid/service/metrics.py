"""What the service counts: ``/stats`` (JSON: requests, errors, latency percentiles, batch
sizes) and ``/metrics`` (the same counters in the Prometheus text format, ``prometheus_client``),
one registry per app so that two apps in one process never share counters."""

from __future__ import annotations

from collections import defaultdict, deque

import numpy as np

from ..optional import require

require("prometheus_client", "the search service's /metrics (reid serve)")

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest  # noqa: E402

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Stats:
    def __init__(self, keep: int = 10_000):
        self.requests: dict[str, int] = defaultdict(int)
        self.errors: dict[str, int] = defaultdict(int)
        self.latency: dict[str, deque] = defaultdict(lambda: deque(maxlen=keep))
        self.timing: dict[str, deque] = defaultdict(lambda: deque(maxlen=keep))
        self.registry = CollectorRegistry()
        self._requests = Counter("reid_requests", "HTTP requests by route and status class",
                                 ["route", "status"], registry=self.registry)  # fmt: skip
        self._latency = Histogram("reid_request_seconds", "request latency by route", ["route"],
                                  buckets=LATENCY_BUCKETS, registry=self.registry)  # fmt: skip
        self._images = Counter("reid_embedded_images", "images embedded", registry=self.registry)

    def record(self, route: str, status: int, seconds: float) -> None:
        self.requests[route] += 1
        if status >= 400:
            self.errors[route] += 1
        self.latency[route].append(seconds)
        self._requests.labels(route, f"{status // 100}xx").inc()
        self._latency.labels(route).observe(seconds)

    def decoded(self, images: int, seconds: float) -> None:
        self.timing["decode_per_image"].append(seconds / max(images, 1))

    def embedded(self, images: int, per_image_s: float, search_s: float) -> None:
        self.timing["embed_per_image"].append(per_image_s)
        self.timing["search"].append(search_s)
        self._images.inc(images)

    def prometheus(self) -> bytes:
        return generate_latest(self.registry)

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
