"""AlignService: a lone stream goes straight to the worker thread; concurrent streams share forward passes."""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from stream.align_batcher import AlignService


class StubAligner:
    """Records the batches it is given; each face's 'params' are its ROI's x1 so results can be checked."""

    def __init__(self, delay: float = 0.01, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.threads: set[str] = set()
        self.delay, self.fail = delay, fail

    def align_many(self, items, dense=False):
        self.threads.add(threading.current_thread().name)
        if self.fail:
            raise RuntimeError("network failed")
        time.sleep(self.delay)
        self.calls.append(sum(len(r) for _, r in items))
        return [type("R", (), {"params": np.asarray(r)[:, :1], "vertices": None})() for _, r in items]


def roi(x: float) -> np.ndarray:
    return np.array([[x, 0, x + 10, 10]], np.float32)


async def test_lone_stream_skips_the_batching_task():
    al = StubAligner()
    service = AlignService(al)
    service.open_stream()
    try:
        for i in range(5):
            res = await service.align(np.zeros((4, 4, 3), np.uint8), roi(i))
            assert res.params[0, 0] == i
    finally:
        service.close_stream()
        service.close()
    assert service.direct_requests == 5 and service.batches == 0
    assert service._worker is None  # the batching task was never needed
    assert al.threads and all(t.startswith("align") for t in al.threads)  # the network's own thread


async def test_two_streams_share_forward_passes():
    al = StubAligner(delay=0.02)
    service = AlignService(al)
    service.open_stream()
    service.open_stream()
    try:
        async def stream(offset: int) -> list[float]:
            out = []
            for i in range(6):
                await asyncio.sleep(0)
                out.append(float((await service.align(np.zeros((4, 4, 3), np.uint8), roi(100 * offset + i)))
                                 .params[0, 0]))
            return out

        a, b = await asyncio.gather(stream(0), stream(1))
    finally:
        service.close()
    assert a == list(range(6)) and b == [100 + i for i in range(6)]
    assert service.direct_requests == 0 and service.batched_requests == 12
    assert service.batches < 12 and max(al.calls) == 2  # crops of both streams in one pass


async def test_lone_request_error_reaches_the_caller_and_the_service_recovers():
    al = StubAligner(fail=True)
    service = AlignService(al)
    service.open_stream()
    try:
        with pytest.raises(RuntimeError, match="network failed"):
            await service.align(np.zeros((4, 4, 3), np.uint8), roi(1))
        al.fail = False
        assert (await service.align(np.zeros((4, 4, 3), np.uint8), roi(2))).params[0, 0] == 2
    finally:
        service.close()
    assert service._in_flight == 0


def test_stream_count_never_negative():
    service = AlignService(StubAligner())
    service.close_stream()
    assert service.streams == 0
    service.close()
