"""Dynamic micro-batching: concurrent requests' images are embedded together.

One worker thread owns the model. A request puts its images on the queue and waits; the worker
takes the first waiting request, then keeps taking requests until it holds ``max_batch`` images
or ``max_wait_ms`` have passed since the first, embeds them in one forward pass and hands each
request its rows. It waits for company only under load (the previous batch held more than one request) or while
other requests are announced (:meth:`expect`, before their uploads are decoded): a request
alone is embedded at once, and under load batches fill and throughput grows.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np


class MicroBatcher:
    def __init__(
        self, embed: Callable[[list], np.ndarray], max_batch: int = 16, max_wait_ms: float = 5.0
    ):
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError("max_batch ≥ 1 and max_wait_ms ≥ 0")
        self.embed, self.max_batch, self.max_wait = embed, int(max_batch), max_wait_ms / 1000
        self._queue: queue.Queue = queue.Queue()
        self._expected = 0
        self._last_requests = 0  # requests in the previous batch: > 1 means there is load
        self._lock = threading.Lock()
        self.batch_sizes: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reid-embed", daemon=True)
        self._thread.start()

    def expect(self) -> None:
        """A request arrived that will submit images soon (call :meth:`submit` or :meth:`cancel`)."""
        with self._lock:
            self._expected += 1

    def cancel(self) -> None:
        with self._lock:
            self._expected = max(0, self._expected - 1)

    def submit(self, images: list, expected: bool = False) -> Future:
        """A future of the images' (N, D) embeddings (``expected``: announced by :meth:`expect`)."""
        future: Future = Future()
        self._queue.put((images, future))
        if expected:
            self.cancel()
        return future

    def __call__(self, images: list) -> np.ndarray:
        return self.submit(images).result()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if first is None:
                break
            waiting, count = [first], len(first[0])
            deadline = time.monotonic() + self.max_wait
            while count < self.max_batch:
                if self._queue.empty() and self._expected == 0 and self._last_requests <= 1:
                    break  # no load and nobody announced: do not wait for company
                left = deadline - time.monotonic()
                try:
                    item = (
                        self._queue.get(timeout=max(left, 0))
                        if left > 0
                        else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
                if item is None:
                    self._stop.set()
                    break
                waiting.append(item)
                count += len(item[0])
            self._embed(waiting, count)

    def _embed(self, waiting, count) -> None:
        images = [image for batch, _ in waiting for image in batch]
        try:
            features = self.embed(images)
        except BaseException as exc:  # every waiter gets the error, the worker lives on
            for _, future in waiting:
                future.set_exception(exc)
            return
        self.batch_sizes.append(count)
        self._last_requests = len(waiting)
        start = 0
        for batch, future in waiting:
            future.set_result(features[start : start + len(batch)])
            start += len(batch)

    def close(self) -> None:
        self._queue.put(None)
        self._stop.set()
        self._thread.join(timeout=5)
