"""Fault injection for the output tests: a disk that fails after a byte budget (any errno, unprivileged) and small
tmpfs mounts (real ENOSPC / EROFS; root only). Used by tests/test_sink_faults.py and tests/test_bad_inputs.py."""
from __future__ import annotations

import builtins
import contextlib
import errno as _errno
import io
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest


class Budget:
    """Bytes the fake disk still takes; past them every write raises ``OSError(code)``."""

    def __init__(self, nbytes: int, code: int = _errno.ENOSPC) -> None:
        self.left = int(nbytes)
        self.code = code
        self.failures = 0

    def take(self, n: int, name: str) -> None:
        if n > self.left:
            self.failures += 1
            self.left = 0
            raise OSError(self.code, os.strerror(self.code), name)
        self.left -= n


class FaultyFile(io.FileIO):
    """A real file whose writes draw on a shared :class:`Budget` (all or nothing per write call)."""

    def __init__(self, path: str | os.PathLike[str], mode: str, budget: Budget) -> None:
        super().__init__(path, mode)
        self.budget = budget

    def write(self, b) -> int:  # noqa: ANN001 - bytes-like
        self.budget.take(len(memoryview(b)), str(self.name))
        return super().write(b)


def _under(file: object, root: Path | None) -> bool:
    if root is None:
        return True
    if not isinstance(file, (str, os.PathLike)):
        return False
    return Path(os.path.abspath(file)).is_relative_to(os.path.abspath(root))


def faulty_open(budget: Budget, root: Path | None = None):
    """An ``open`` replacement: writing modes under ``root`` (None: everywhere) go through FaultyFile (buffered as
    ``open`` would), others are real."""
    real = builtins.open

    def _open(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None, closefd=True, opener=None):
        if not any(c in mode for c in "wax+") or isinstance(file, int) or not _under(file, root):
            return real(file, mode, buffering, encoding, errors, newline, closefd, opener)
        raw = FaultyFile(file, mode.replace("b", "").replace("t", "")[:1], budget)
        buf = io.BufferedWriter(raw, 8192 if buffering in (-1, 1) else max(buffering, 1))
        if "b" in mode:
            return buf
        return io.TextIOWrapper(buf, encoding=encoding or "utf-8", errors=errors, newline=newline,
                                line_buffering=buffering == 1)

    return _open


def install(monkeypatch: pytest.MonkeyPatch, budget: Budget, root: Path | None = None) -> None:
    """Every file the sinks write under ``root`` (tracks, NPZ, meshes through ``open``; video through PyAV) draws on
    ``budget``: the disk of ``root`` holds only that many more bytes."""
    import av

    from stream.sinks import base, livelinkface, meshes, tracks, video

    for module in (base, livelinkface, meshes, tracks, video):  # each sink module's own ``open``
        monkeypatch.setattr(module, "open", faulty_open(budget, root), raising=False)
    real_av_open = av.open

    def av_open(file, mode="r", **kwargs):  # noqa: ANN001
        if mode != "w" or not _under(file, root):
            return real_av_open(file, mode, **kwargs)
        ext = Path(file).suffix.lower().lstrip(".")
        fmt = {"mkv": "matroska", "m4v": "mp4"}.get(ext, ext)
        return real_av_open(FaultyFile(file, "w", budget), "w", format=fmt, **kwargs)

    monkeypatch.setattr(av, "open", av_open)


def can_mount() -> str | None:
    """None when this process may mount a tmpfs (root with CAP_SYS_ADMIN), else why not."""
    if os.geteuid() != 0:
        return "needs root to mount a tmpfs (the injected-error tests cover this unprivileged)"
    return None


@contextlib.contextmanager
def tmpfs(path: Path, size_kb: int) -> Iterator[Path]:
    """A fresh tmpfs of ``size_kb`` KiB mounted at ``path`` (skips the test when mounting is not permitted)."""
    why = can_mount()
    if why:
        pytest.skip(why)
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=1777", "tmpfs", str(path)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount_readonly(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)


def fill(path: Path, leave_bytes: int) -> None:
    """Fill the file system of ``path`` with one file until about ``leave_bytes`` are free (tmpfs: pages of 4 KiB)."""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    n = max(0, free - leave_bytes)
    with open(path / "filler.bin", "wb") as f:
        chunk = b"\0" * (1 << 16)
        while n > 0:
            k = min(n, len(chunk))
            f.write(chunk[:k])
            n -= k
