"""Atomic file output: write under a temporary name in the destination folder, rename when finished.

An interrupted run then leaves either the previous file or a complete new one, never a half-written file under the
final name. The temporary name keeps the extension (``.out.mp4.partial-PID.mp4``) because some writers (PyAV)
choose the format from it; it starts with a dot so it is hidden, and a crash leaves only such hidden leftovers.
"""
from __future__ import annotations

import errno
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

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


_FSYNC_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EACCES, errno.EPERM}


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a closed file's data to disk. Ignored where the file system has no fsync; a real failure (EIO,
    ENOSPC on a delayed write) raises OSError, so a file whose data may be lost is never committed."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _FSYNC_UNSUPPORTED:
            raise
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
        self.tmp = temp_path_for(self.final)
        self.done = False
        self.final.parent.mkdir(parents=True, exist_ok=True)
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
        """Delete the temporary file; the final name is left untouched. Never raises: it runs on error paths
        (a read-only or full folder, where the temporary file may never have been created)."""
        if self.done:
            return
        self.done = True
        try:
            if os.path.lexists(self.tmp):
                os.unlink(self.tmp)
        except FileNotFoundError:
            pass
        except OSError as exc:  # pragma: no cover - a file we created but may not delete
            log.warning("could not remove the temporary file %s: %s", self.tmp, exc.strerror or exc)


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
