"""One shared Aligner for many streams: concurrent requests are batched into one forward pass.

Every pipeline (a file, a webcam, each WebRTC peer) awaits ``service.align(image, rois)``; while the network runs on
one batch, new requests queue up and go together in the next one. The network runs in a single worker thread.
When one stream is open (a file, a webcam: ``open_stream`` / ``close_stream``) and nothing is queued or running, a
request goes straight to that thread, skipping the hand-off through the batching task.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from model.aligner import AlignResult, Aligner


class AlignService:
    """Batches ``align`` calls of concurrent tasks. ``max_faces`` caps the faces in one forward pass."""

    def __init__(self, aligner: Aligner, max_faces: int = 64) -> None:
        self.aligner = aligner
        self.max_faces = max_faces
        self._pending: list[tuple[np.ndarray, np.ndarray, bool, asyncio.Future]] = []
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="align")
        self.batches = 0
        self.batched_requests = 0
        self.direct_requests = 0  # lone requests that skipped the batching task
        self.streams = 0  # open streams (see open_stream)
        self._in_flight = 0  # forward passes submitted to the thread and not finished

    async def align(self, image: np.ndarray, rois: np.ndarray, dense: bool = False) -> AlignResult:
        """Align the faces at ``rois`` (N, 4) in ``image``; returns when its batch is done."""
        loop = asyncio.get_running_loop()
        if len(rois) == 0:
            return self.aligner.decode(np.zeros((0, 62), np.float32), np.zeros((0, 4), np.float32), dense)
        rois = np.asarray(rois, np.float32)
        if self.streams == 1 and not self._pending and not self._in_flight:  # alone: no one to batch with
            res = await self._forward([(image, rois)], dense)
            self.direct_requests += 1
            return res[0]
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            self._wake = asyncio.Event()
            self._worker = loop.create_task(self._run())
        fut = loop.create_future()
        self._pending.append((image, rois, dense, fut))
        self._wake.set()
        return await fut

    async def _forward(self, items: list, dense: bool) -> list[AlignResult]:
        """One forward pass over ``items`` [(image, rois)] on the network thread, counted as in flight."""
        self._in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, self.aligner.align_many, items, dense)
        finally:
            self._in_flight -= 1

    def _take_batch(self) -> list:
        batch, faces = [], 0
        while self._pending and (not batch or faces + len(self._pending[0][1]) <= self.max_faces):
            item = self._pending.pop(0)
            batch.append(item)
            faces += len(item[1])
        return batch

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._take_batch()
                dense = any(item[2] for item in batch)
                try:
                    results = await self._forward([(img, rois) for img, rois, _, _ in batch], dense)
                except Exception as exc:  # hand the error to every waiter
                    for *_, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                self.batches += 1
                self.batched_requests += len(batch)
                for (_, _, want_dense, fut), res in zip(batch, results):
                    if not want_dense:
                        res.vertices = None
                    if not fut.done():
                        fut.set_result(res)

    def open_stream(self) -> None:
        """A stream (one FaceAnalyzer) starts using the service."""
        self.streams += 1

    def close_stream(self) -> None:
        """That stream is done."""
        self.streams = max(0, self.streams - 1)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._pool.shutdown(wait=False)
