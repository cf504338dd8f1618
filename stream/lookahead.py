"""Look-ahead for file sources: a new track's first frames wait until the track is confirmed.

The tracker confirms a track only after ``min_hits`` frames that the detector saw (``tracking.tracker``), so a
false detection of a frame or two is never reported. Live sources report a face from its confirmation on. Files
need complete tracks, so the pipeline holds the frames where an unconfirmed track has a face: when the track is
confirmed its held rows are reported with it (a real face keeps its first frame), when it dies they are dropped.
Frames leave in order; a frame waits at most ``size`` frames, then its undecided rows are dropped (as live would).

    window = ConfirmWindow(size=10)
    for item, faces in window.push(item, faces, confirmed={1}, alive={1, 2}): ...   # zero or more frames, in order
    for item, faces in window.flush(): ...                                          # at the end of the source
"""
from __future__ import annotations

from collections import deque
from typing import Generic, Iterable, Protocol, Sequence, TypeVar

T = TypeVar("T")


class HasTrack(Protocol):
    track_id: int


R = TypeVar("R", bound=HasTrack)


class ConfirmWindow(Generic[T, R]):
    """Frames (any ``item``) with their faces (anything with ``track_id``), held until each face's track is decided.

    ``size``: most frames a frame may wait (0: nothing is held, unconfirmed faces are dropped at once).
    """

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"look-ahead size must be >= 0: {size}")
        self.size = size
        self._held: deque[tuple[T, list[R]]] = deque()
        self._confirmed: set[int] = set()  # tracks confirmed at some frame (their earlier rows are reported)
        self._alive: set[int] = set()
        self.dropped_rows = 0  # faces of tracks that died unconfirmed, or were still undecided after ``size`` frames

    def push(self, item: T, faces: Sequence[R], confirmed: Iterable[int], alive: Iterable[int]
             ) -> list[tuple[T, list[R]]]:
        """Add the next frame: ``faces`` every validly aligned face of it (confirmed or not), ``confirmed`` the ids of
        its tracks confirmed now, ``alive`` the ids of every track still alive after it. Returns the frames that can
        leave, in order, each with its reported faces."""
        self._confirmed.update(int(i) for i in confirmed)
        self._alive = {int(i) for i in alive}
        self._held.append((item, list(faces)))
        out = []
        while self._held and (len(self._held) > self.size or not self._pending(self._held[0][1])):
            out.append(self._release(*self._held.popleft()))
        return out

    def flush(self) -> list[tuple[T, list[R]]]:
        """The end of the source: every held frame, with the faces of unconfirmed tracks dropped."""
        out = [self._release(*entry) for entry in self._held]
        self._held.clear()
        return out

    def _pending(self, faces: list[R]) -> bool:
        return any(f.track_id not in self._confirmed and f.track_id in self._alive for f in faces)

    def _release(self, item: T, faces: list[R]) -> tuple[T, list[R]]:
        kept = [f for f in faces if f.track_id in self._confirmed]
        self.dropped_rows += len(faces) - len(kept)
        return item, kept

    def __len__(self) -> int:
        return len(self._held)
