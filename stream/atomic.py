"""Atomic file output: write under a temporary name in the destination folder, rename when finished.

An interrupted run then leaves either the previous file or a complete new one, never a half-written file under the
final name. The temporary name keeps the extension (``.out.mp4.partial-PID.mp4``) because some writers (PyAV)
choose the format from it; it starts with a dot so it is hidden, and a crash leaves only such hidden leftovers.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

_counter = 0
_counter_lock = threading.Lock()


def temp_path_for(path: str | os.PathLike[str]) -> Path:
    """Hidden temporary path beside ``path`` with the same extension (unique per process and call)."""
    global _counter
    path = Path(path)
    with _counter_lock:
        _counter += 1
        n = _counter
    return path.with_name(f".{path.name}.partial-{os.getpid()}-{n}{path.suffix}")


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a closed file's data to disk (best effort: ignored where the OS refuses)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicPath:
    """A temporary path that becomes ``final`` on :meth:`commit` or disappears on :meth:`abort`.

    Usage::

        target = AtomicPath("out/video.mp4")   # creates out/ if needed
        write_somehow(target.tmp)
        target.commit()                        # fsync + os.replace(tmp, final)
    """

    def __init__(self, final: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.final = Path(final)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_path_for(self.final)
        self.fsync = fsync
        self.done = False

    def commit(self) -> Path:
        """Move the finished temporary file to the final name (atomic on one filesystem)."""
        if self.done:
            return self.final
        if self.fsync:
            fsync_path(self.tmp)
        os.replace(self.tmp, self.final)
        self.done = True
        return self.final

    def abort(self) -> None:
        """Delete the temporary file; the final name is left untouched."""
        if self.done:
            return
        self.done = True
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    target = AtomicPath(path)
    try:
        with open(target.tmp, "wb") as f:
            f.write(data)
        return target.commit()
    except BaseException:
        target.abort()
        raise
