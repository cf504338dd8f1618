"""Every sink under a failing disk, through the real pipeline: a full disk (ENOSPC), a read-only (EROFS) or failing
(EIO) device ends the run at once with one SinkError naming the file and the cause; nothing half-written is left
committed or behind, and the files the run had not finished are removed (an older file under the final name stays
as it was). At every fill level the run either fails that way or succeeds with complete, correct files.

Two ways to fill the disk: an injected byte budget (any errno, runs unprivileged) and a real small tmpfs (root, as
in CI; skipped with the reason otherwise). Fill levels are fractions of what the run needs, measured on a clean run.
"""
from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import numpy as np
import pytest

from stream.frames import Frame, VideoInfo
from tracking.face import Face
from stream.outputs import MeshesOut, TracksOut, VideoOut
from stream.pipeline import Pipeline
from stream.sinks import SinkError, load_tracks
from stream.stats import Stats
from tests import faults

KINDS = ("video", "csv", "jsonl", "npz", "meshes")
FRAMES = 30
N_VERTS = 300
TRI = np.array([[0, 1, 2], [2, 1, 3]], np.int32)
LEVELS = (0.0, 0.1, 0.5, 0.97)  # of the bytes the run needs: fail at open, in the middle, at the very end
HANG_GUARD_S = 120.0  # a hang (the bug this guards) fails the test instead of blocking the suite


class Frames:
    """FRAMES frames of 64x96 with a moving square (so the video has content)."""

    def __init__(self) -> None:
        self.i = 0
        self.closed = False

    def read(self) -> Frame | None:
        if self.i >= FRAMES or self.closed:
            return None
        img = np.zeros((64, 96, 3), np.uint8)
        img[10:30, (self.i * 2) % 70:(self.i * 2) % 70 + 20] = 200
        f = Frame(self.i, self.i / 25.0, img)
        self.i += 1
        return f

    def close(self) -> None:
        self.closed = True


class TwoFaces:
    """Two faces on every frame, values a function of (frame, track), so a file read back can be checked."""

    async def analyze(self, frame: Frame, stats: Stats) -> list[Face]:
        return [record(frame.index, tid) for tid in (1, 2)]


def record(frame: int, tid: int) -> Face:
    rng = np.random.default_rng(frame * 10 + tid)
    return Face(frame=frame, time=frame / 25.0, track_id=tid,
                      box=np.array([10, 10, 40, 40], np.float32) + frame, roi=np.array([5, 5, 45, 45], np.float32),
                      pose=np.array([1, 2, 3, 0.001, 30, 30], np.float32),
                      landmarks=rng.uniform(0, 60, (68, 3)).astype(np.float32),
                      params=rng.normal(size=62).astype(np.float32),
                      vertices=rng.uniform(0, 60, (N_VERTS, 3)).astype(np.float32))


def final_path(folder: Path, kind: str) -> Path:
    return folder / {"video": "o.mp4", "csv": "t.csv", "jsonl": "t.jsonl", "npz": "t.npz", "meshes": "m"}[kind]


def make_sink(folder: Path, kind: str):
    path = final_path(folder, kind)
    if kind == "video":
        return VideoOut(str(path), VideoInfo(96, 64, 25.0))
    if kind == "meshes":
        return MeshesOut(str(path), TRI, "npz")
    return TracksOut(str(path))


def check_complete(folder: Path, kind: str) -> None:
    """The file of a finished run holds every frame (content checked)."""
    path = final_path(folder, kind)
    if kind == "video":
        import av

        with av.open(str(path)) as c:
            assert sum(1 for _ in c.decode(video=0)) == FRAMES
    elif kind == "meshes":
        for tid in (1, 2):
            with np.load(path / f"track{tid}.npz") as z:
                assert z["frames"].tolist() == list(range(FRAMES))
                np.testing.assert_array_equal(z["vertices"][-1], record(FRAMES - 1, tid).vertices)
    else:
        got = load_tracks(path)
        assert sorted(got) == [1, 2]
        for tid in (1, 2):
            assert got[tid]["frames"].tolist() == list(range(FRAMES))
            np.testing.assert_allclose(got[tid]["landmarks"][-1], record(FRAMES - 1, tid).landmarks, atol=1e-3)


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".partial" in p.name)


def run_pipeline(sinks: list) -> None:
    async def go() -> None:
        await asyncio.wait_for(Pipeline(Frames(), TwoFaces(), None, sinks, live=False).run(), HANG_GUARD_S)

    asyncio.run(go())


def open_and_run(bad: Path, good: Path, kind: str) -> SinkError | None:
    """Run with the sink under test in ``bad`` and a CSV in ``good``; None on success, else the SinkError."""
    sinks = []
    try:
        sinks.append(make_sink(bad, kind))
        sinks.append(make_sink(good, "csv"))
    except SinkError as exc:  # refused at open: nothing was started
        for s in sinks:
            s.abort()
        return exc
    try:
        run_pipeline(sinks)
    except SinkError as exc:
        return exc
    return None


def bytes_needed(tmp: Path, kind: str) -> int:
    """What a clean run of this sink writes, in bytes (files counted once, as they are at the end)."""
    folder = tmp / "measure"
    folder.mkdir()
    assert open_and_run(folder, tmp / "measure_good", kind) is None
    p = final_path(folder, kind)
    return sum(f.stat().st_size for f in p.rglob("*")) if p.is_dir() else p.stat().st_size


def check_outcome(err: SinkError | None, bad: Path, good: Path, kind: str, cause: str) -> bool:
    """Either complete files, or one line naming the file and the cause with nothing left committed/behind."""
    assert leftovers(bad) == [] and leftovers(good) == []
    if err is None:
        check_complete(bad, kind)
        check_complete(good, "csv")
        return True
    msg = str(err)
    assert "\n" not in msg and cause in msg, msg
    assert str(final_path(bad, kind)) in msg, msg
    path = final_path(bad, kind)
    if kind == "meshes":
        assert not path.exists() or [p.name for p in path.iterdir()] == []
    else:
        assert not path.exists()
    assert not final_path(good, "csv").exists()  # a failed run commits none of its outputs
    return False


@pytest.mark.parametrize("kind", KINDS)
def test_injected_full_disk_at_every_fill_level(tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    need = bytes_needed(tmp_path, kind)
    outcomes = []
    for i, level in enumerate(LEVELS + (3.0,)):
        bad, good = tmp_path / f"bad{i}", tmp_path / f"good{i}"
        bad.mkdir()
        with monkeypatch.context() as m:
            budget = faults.Budget(int(need * level) + (0 if level < 1 else 1 << 20))
            faults.install(m, budget, bad)
            err = open_and_run(bad, good, kind)
        outcomes.append(check_outcome(err, bad, good, kind, "No space left on device"))
    assert outcomes == [False, False, False, False, True], outcomes  # each shortfall fails, enough space succeeds


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("code", [errno.EROFS, errno.EIO])
def test_injected_readonly_and_io_errors(tmp_path: Path, kind: str, code: int,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    need = bytes_needed(tmp_path, kind)
    for i, level in enumerate((0.0, 0.5)):
        bad, good = tmp_path / f"bad{i}", tmp_path / f"good{i}"
        bad.mkdir()
        with monkeypatch.context() as m:
            faults.install(m, faults.Budget(int(need * level), code), bad)
            err = open_and_run(bad, good, kind)
        assert err is not None
        check_outcome(err, bad, good, kind, os.strerror(code))


def test_existing_output_survives_a_failed_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed run leaves the previous file under the final name as it was."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "t.csv").write_text("previous results\n")
    with monkeypatch.context() as m:
        faults.install(m, faults.Budget(50_000), bad)
        err = open_and_run(bad, tmp_path / "good", "csv")
    assert err is not None and "t.csv" in str(err)
    assert (bad / "t.csv").read_text() == "previous results\n"
    assert leftovers(bad) == []


@pytest.mark.parametrize("kind", KINDS)
def test_real_tmpfs_fill_levels(tmp_path: Path, kind: str) -> None:
    """A real small tmpfs (root): ENOSPC from the kernel, with the page-sized accounting of a real disk."""
    if faults.can_mount():
        pytest.skip(faults.can_mount())
    need = bytes_needed(tmp_path, kind)
    size_kb = need // 1024 + 512
    outcomes = []
    for i, level in enumerate(LEVELS + (None,)):
        with faults.tmpfs(tmp_path / f"mnt{i}", size_kb) as mnt:
            bad = mnt / "out"
            bad.mkdir()
            if level is not None:
                faults.fill(mnt, int(need * level))
            err = open_and_run(bad, tmp_path / f"good{i}", kind)
            outcomes.append(check_outcome(err, bad, tmp_path / f"good{i}", kind, "No space left on device"))
    assert outcomes[0] is False and outcomes[-1] is True, outcomes


def test_real_readonly_tmpfs(tmp_path: Path) -> None:
    """A folder on a read-only mount (root ignores chmod, not a read-only mount): refused at open, one line."""
    if faults.can_mount():
        pytest.skip(faults.can_mount())
    with faults.tmpfs(tmp_path / "ro", 1024) as mnt:
        (mnt / "out").mkdir()
        faults.remount_readonly(mnt)
        for kind in KINDS:
            err = open_and_run(mnt / "out", tmp_path / f"good_{kind}", kind)
            assert err is not None and "Read-only file system" in str(err), (kind, err)
            assert str(final_path(mnt / "out", kind)) in str(err)
            assert list((mnt / "out").iterdir()) == []


class FailingSink:
    """Fails on its 4th frame like a disk filling up; counts closes and aborts."""

    def __init__(self) -> None:
        self.n = 0
        self.closed = self.aborted = 0

    def write_job(self, job) -> None:  # noqa: ANN001
        self.n += 1
        if self.n == 4:
            raise SinkError("cannot write x.csv: No space left on device")

    def close(self) -> None:
        self.closed += 1

    def abort(self) -> None:
        self.aborted += 1


class Endless(Frames):
    def read(self) -> Frame | None:
        if self.closed:
            return None
        self.i += 1
        return Frame(self.i, self.i / 25.0, np.zeros((8, 8, 3), np.uint8))


@pytest.mark.parametrize("live", [False, True])
def test_a_failing_sink_ends_the_run_with_full_queues(live: bool) -> None:
    """The hang of issue 15: the sink stage dies while the reader waits on a full queue; the reader must not then
    wait to put its end marker on a queue nobody reads. run() raises the sink's error; the other sink is aborted."""
    failing, other, source = FailingSink(), FailingSink(), Endless()
    other.n = -10 ** 9  # never fails

    async def go() -> None:
        await asyncio.wait_for(Pipeline(source, TwoFaces(), None, [failing, other], live=live, queue_size=1).run(),
                               HANG_GUARD_S)

    with pytest.raises(SinkError, match="No space left"):
        asyncio.run(go())
    assert source.closed
    assert (other.closed, other.aborted) == (0, 1) and (failing.closed, failing.aborted) == (0, 1)
