"""What every sink shares: ``SinkError`` (one line for the user), closing and aborting (``_Sink``), the
pipeline adapter of record sinks (``_RecordSink``)."""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from collections.abc import Iterable
from typing import Any

import numpy as np

from model.blendshapes import N_BLEND
from model.errors import UserError
from model.expression_ext import N_EXT
from tracking.face import Face


log = logging.getLogger("stream.sinks")  # one logger for every sink, as before the split



class SinkError(UserError):
    """A problem with an output the user can fix; ``str(error)`` is one line meant for them."""


def os_reason(exc: BaseException) -> str:
    """The cause of an OS-level error in a few words (``No space left on device``), for one-line messages."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(reason).strip().rstrip(".")


def write_error(path: str | os.PathLike[str], exc: BaseException) -> SinkError:
    """``SinkError("cannot write PATH: CAUSE")`` for an OSError while writing ``path``."""
    return SinkError(f"cannot write {path}: {os_reason(exc)}")


class _Sink:
    """Shared close/abort/context-manager logic; subclasses implement ``_finish()`` and ``_discard()``.

    Record sinks (tracks, meshes) take ``write(frame_index, time, records)``; ``write_job(job)`` is the pipeline
    adapter (``job.frame.index``, ``job.frame.time``, ``job.faces``).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._closed = False
        self._result: Path | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def _finish(self) -> Path | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _discard(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"write to a closed sink ({self.path})")

    def _failed(self, exc: BaseException) -> BaseException:
        """A write failed: discard what was written (a later ``close()`` commits nothing), and return the error to
        raise (an OSError becomes a one-line ``SinkError`` naming the file and the cause)."""
        if not self._closed:
            self._closed = True
            try:
                self._discard()
            except Exception:  # the first error is the one the user needs
                log.debug("discard after a failed write of %s failed", self.path, exc_info=True)
        return write_error(self.path, exc) if isinstance(exc, OSError) else exc

    def close(self) -> Path | None:
        """Finish and rename into place; returns the final path (None when nothing was written). Idempotent.
        After a failed write it commits nothing (returns None). An OSError while finishing (a full disk on the last
        flush) removes the temporary file and raises ``SinkError``."""
        with self._lock:
            if self._closed:
                return self._result
            self._closed = True
            try:
                self._result = self._finish()
            except BaseException as exc:
                self._discard()
                if isinstance(exc, OSError):
                    raise write_error(self.path, exc) from exc
                raise
            return self._result

    def abort(self) -> None:
        """Drop what was written; the final path is left as it was. Idempotent (no-op after close())."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._discard()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _RecordSink(_Sink):
    """A sink of face records (``tracking.face.Face``): ``write(frame_index, time, records)``."""

    def write(self, frame_index: int, time: float, records: list[Face]) -> None:  # pragma: no cover
        raise NotImplementedError

    def write_job(self, job: Any) -> None:
        """Pipeline adapter: ``write(job.frame.index, job.frame.time, job.faces)``."""
        self.write(job.frame.index, job.frame.time, list(job.faces))


# values of a record as the track sinks write them
def _f(values: Iterable[float], fmt: str) -> list[str]:
    return [format(float(v), fmt) for v in values]


def _confidence(r: Face) -> float:
    """The record's face confidence, nan when unknown."""
    return float("nan") if r.confidence is None else float(r.confidence)


def _ext(r: Face) -> np.ndarray:
    """The record's extended expression (N_EXT,) float32, nan when the run had none."""
    return np.full(N_EXT, np.nan, np.float32) if r.ext is None else np.asarray(r.ext, np.float32).reshape(N_EXT)


def _blend(r: Face) -> np.ndarray:
    """The record's ARKit blendshapes (N_BLEND,) float32, nan when not computed."""
    b = r.blendshape_values
    return np.full(N_BLEND, np.nan, np.float32) if b is None else np.asarray(b, np.float32).reshape(N_BLEND)
