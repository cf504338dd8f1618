"""Sinks: video round trips, interrupted runs, track files (CSV/JSONL/NPZ) and meshes; all writes atomic."""
from __future__ import annotations

import json
import logging
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np

from model.blendshapes import ARKIT_NAMES, ESTIMATED_MASK
import pytest

from model.expression_ext import N_EXT

from stream import sinks
from stream.atomic import AtomicPath, atomic_write_bytes
from stream.frames import Frame, VideoInfo
from tracking.face import Face
from stream.sinks import (
    MeshSink,
    SinkError,
    TracksCSVSink,
    TracksJSONLSink,
    TracksNPZSink,
    VideoSink,
    load_tracks,
    open_tracks_sink,
    tracks_csv_header,
)
from stream.sources import open_source
from model.blendshapes import BLENDSHAPES_VERSION


def _image(i: int, h: int = 64, w: int = 96) -> np.ndarray:
    """A smooth picture with a moving bright square, so frames differ and compress well."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.linspace(0, 200, w, dtype=np.uint8)[None, :]
    img[..., 1] = np.linspace(0, 200, h, dtype=np.uint8)[:, None]
    x = (i * 3) % (w - 16)
    img[20:36, x:x + 16] = 255
    return img


def _probe(path: Path) -> tuple[int, int, int, list[float], str]:
    """(frames, width, height, times, codec) of a file read back with PyAV directly."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        times = [float(f.pts * s.time_base) for f in c.decode(s)]
        return len(times), s.width, s.height, times, s.codec_context.name


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)


# ------------------------------------------------------------------------------------------------ video


def test_video_roundtrip_keeps_variable_timestamps(tmp_path: Path) -> None:
    times = np.cumsum([0.0] + [0.033 if i % 3 else 0.05 for i in range(29)])  # 30 frames, VFR
    info = VideoInfo(width=96, height=64, fps=25.0, time_base=Fraction(1, 90000))
    out = tmp_path / "out" / "video.mp4"  # folder created on demand
    sink = VideoSink(out, info)
    for i, t in enumerate(times):
        sink.write(i, float(t), _image(i))
    assert not out.exists()  # only the hidden temporary file exists until close()
    assert sink.close() == out
    n, w, h, got, codec = _probe(out)
    assert (n, w, h) == (30, 96, 64)
    assert codec == {"libx264": "h264"}.get(sink.codec_name, sink.codec_name)
    np.testing.assert_allclose(np.array(got) - got[0], times, atol=1e-3)
    assert _leftovers(out.parent) == []
    with open_source(out) as src:  # our own reader agrees, and the picture survived
        frames = list(src)
    assert len(frames) == 30
    assert np.abs(frames[5].image.astype(int) - _image(5)).mean() < 6


def test_video_interrupted_run_is_playable(tmp_path: Path) -> None:
    """The pipeline closes the sink on Ctrl-C: the frames done so far make a valid file."""
    out = tmp_path / "partial.mp4"
    sink = VideoSink(out, VideoInfo(width=96, height=64, fps=30.0))
    for i in range(10):  # a run meant for 300 frames, stopped after 10
        sink.write(i, i / 30.0, _image(i))
    sink.close()
    sink.close()  # idempotent
    with pytest.raises(ValueError):
        sink.write(10, 10 / 30.0, _image(10))
    n, w, h, times, _ = _probe(out)
    assert (n, w, h) == (10, 96, 64)
    assert np.all(np.diff(times) > 0)
    assert _leftovers(tmp_path) == []


def test_video_odd_size_and_non_monotonic_times(tmp_path: Path) -> None:
    out = tmp_path / "odd.mp4"
    with VideoSink(out, VideoInfo(width=33, height=31, fps=25.0)) as sink:
        for i, t in enumerate([0.0, 0.04, 0.04, 0.02, None, 0.2]):  # repeats, a step back, a missing time
            sink.write(i, t, _image(i, 31, 33))
        sink.write(6, 0.24, _image(6, 40, 50))  # another size: resized to the first
    n, w, h, times, _ = _probe(out)
    assert (n, w, h) == (7, 34, 32) and sink.resized_frames == 1
    assert np.all(np.diff(times) > 0)


@pytest.mark.parametrize("ext, codec", [(".mkv", "h264"), (".webm", "vp8"), (".avi", "mpeg4"), (".mov", "h264")])
def test_video_other_containers(tmp_path: Path, ext: str, codec: str) -> None:
    out = tmp_path / f"clip{ext}"
    with VideoSink(out, VideoInfo(width=96, height=64, fps=25.0, time_base=Fraction(1, 12800))) as sink:
        for i in range(12):
            sink.write(i, i / 25.0, _image(i))
    n, w, h, times, got_codec = _probe(out)
    assert (n, w, h, got_codec) == (12, 96, 64, codec)
    np.testing.assert_allclose(np.array(times) - times[0], np.arange(12) / 25.0, atol=2e-3)


def test_video_falls_back_to_mpeg4(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   caplog: pytest.LogCaptureFixture) -> None:
    from stream.sinks import video

    real = video._encoder_available
    monkeypatch.setattr(video, "_encoder_available", lambda name: name != "libx264" and real(name))
    with caplog.at_level(logging.WARNING, logger="stream.sinks"):
        sink = VideoSink(tmp_path / "fallback.mp4", VideoInfo(width=96, height=64, fps=25.0))
    assert sink.codec_name == "mpeg4" and "libx264 is not available" in caplog.text
    for i in range(5):
        sink.write(i, i / 25.0, _image(i))
    sink.close()
    assert _probe(tmp_path / "fallback.mp4")[0] == 5


def test_video_no_frames_and_abort(tmp_path: Path) -> None:
    empty = VideoSink(tmp_path / "empty.mp4", None)
    assert empty.close() is None and not (tmp_path / "empty.mp4").exists()
    (tmp_path / "keep.mp4").write_bytes(b"previous")
    aborted = VideoSink(tmp_path / "keep.mp4", None)
    aborted.write(0, 0.0, _image(0))
    aborted.abort()
    aborted.close()
    assert (tmp_path / "keep.mp4").read_bytes() == b"previous"
    assert _leftovers(tmp_path) == []


def test_video_bad_extension() -> None:
    with pytest.raises(SinkError, match="cannot write video out.gif"):
        VideoSink("out.gif", None)


def test_video_write_job_prefers_rendered_output(tmp_path: Path) -> None:
    frame = Frame(index=0, time=0.0, image=np.zeros((64, 96, 3), np.uint8))
    with VideoSink(tmp_path / "job.mp4", None) as sink:
        sink.write_job(SimpleNamespace(frame=frame, faces=[], output=np.full((64, 96, 3), 200, np.uint8)))
    with open_source(tmp_path / "job.mp4") as src:
        assert abs(float(next(src).image.mean()) - 200) < 3


# ------------------------------------------------------------------------------------------------ tracks


def _record(frame: int, track: int, rng: np.random.Generator, dense: int | None = None) -> Face:
    return Face(
        frame=frame, time=frame / 25.0, track_id=track,
        box=rng.uniform(0, 500, 4).astype(np.float32), roi=rng.uniform(0, 500, 4).astype(np.float32),
        pose=np.array([10.5, -3.25, 1.0, 0.00123, 250.5, 260.25], np.float32),
        landmarks=rng.uniform(0, 500, (68, 3)).astype(np.float32),
        params=(rng.normal(size=62) * np.r_[np.full(12, 1e-3), np.full(50, 1e4)]).astype(np.float32),
        vertices=None if dense is None else rng.uniform(0, 500, (dense, 3)).astype(np.float32),
        confidence=float(rng.uniform(0.5, 1.0)),
        blendshape_values=(rng.uniform(0, 1, 52) * ESTIMATED_MASK).astype(np.float32),
        ext=rng.normal(0, 0.3, N_EXT).astype(np.float32),
    )


def _feed(sink: object, dense: int | None = None) -> dict[int, list[Face]]:
    """Frames 0..5; faces: track 1 in all but frame 2 (nobody), track 7 from frame 3."""
    rng = np.random.default_rng(0)
    written: dict[int, list[Face]] = {1: [], 7: []}
    for f in range(6):
        recs = []
        if f != 2:
            recs.append(_record(f, 1, rng, dense))
        if f >= 3:
            recs.append(_record(f, 7, rng, dense))
        for r in recs:
            written[r.track_id].append(r)
        sink.write(f, f / 25.0, recs)  # type: ignore[attr-defined]
    return written


def _check_roundtrip(path: Path, written: dict[int, list[Face]], with_params: bool = True,
                     with_rois: bool = True) -> None:
    got = load_tracks(path)
    assert sorted(got) == [1, 7]
    for tid, recs in written.items():
        t = got[tid]
        np.testing.assert_array_equal(t["frames"], [r.frame for r in recs])
        np.testing.assert_allclose(t["times"], [r.frame / 25.0 for r in recs], atol=1e-6)
        np.testing.assert_allclose(t["landmarks"], np.stack([r.landmarks for r in recs]), atol=1e-3)
        np.testing.assert_allclose(t["boxes"], np.stack([r.box for r in recs]), atol=1e-3)
        np.testing.assert_allclose(t["pose"], np.stack([r.pose for r in recs]), rtol=1e-6)
        assert t["landmarks"].shape == (len(recs), 68, 3) and t["pose"].shape == (len(recs), 6)
        np.testing.assert_allclose(t["confidence"], [r.confidence for r in recs], atol=1e-4)
        np.testing.assert_allclose(t["blendshapes"], np.stack([r.blendshape_values for r in recs]), atol=1e-4)
        np.testing.assert_allclose(t["ext"], np.stack([r.ext for r in recs]), atol=1e-4)
        if with_params:
            np.testing.assert_allclose(t["params"], np.stack([r.params for r in recs]), rtol=1e-6)
        if with_rois:
            np.testing.assert_allclose(t["rois"], np.stack([r.roi for r in recs]), atol=1e-3)


def test_csv_header_rows_and_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "tracks.csv"
    sink = open_tracks_sink(path)
    assert isinstance(sink, TracksCSVSink)
    written = _feed(sink)
    sink.close()
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    assert header[:13] == ["frame", "time", "track_id", "box_x1", "box_y1", "box_x2", "box_y2",
                           "yaw", "pitch", "roll", "scale", "tx", "ty"]
    assert header[13] == "confidence"
    from model.expression_ext import EXT_NAMES

    e = 14 + len(EXT_NAMES)
    assert header[14:e] == list(EXT_NAMES)
    assert header[e:e + 52] == list(ARKIT_NAMES)  # the 52 ARKit blendshapes, Apple's order
    assert header[e + 52:e + 55] == ["x0", "y0", "z0"] and header[-3:] == ["x67", "y67", "z67"]
    assert len(header) == e + 52 + 204
    assert len(set(header)) == len(header)
    assert len(lines) == 1 + 8  # one row per frame x track; frame 2 had nobody: no row
    assert sorted({int(l.split(",")[0]) for l in lines[1:]}) == [0, 1, 3, 4, 5]
    _check_roundtrip(path, written, with_params=False, with_rois=False)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".npz"])
def test_tracks_of_the_previous_ext_version_read_lips_part_as_zero(tmp_path: Path, suffix: str) -> None:
    """A file written with ext-v1 (no lips_part) reads back in today's layout: its components where they were, the
    missing one 0 (what ext-v1 decoded)."""
    import json

    from model.expression_ext import EXT_NAMES

    path = tmp_path / f"tracks{suffix}"
    with open_tracks_sink(path) as sink:
        _feed(sink)
    new = load_tracks(path)
    k = EXT_NAMES.index("lips_part")
    if suffix == ".csv":
        rows = [line.split(",") for line in path.read_text().splitlines()]
        at = rows[0].index("lips_part")
        path.write_text("\n".join(",".join(r[:at] + r[at + 1:]) for r in rows) + "\n")
    elif suffix == ".jsonl":
        objs = [json.loads(line) for line in path.read_text().splitlines()]
        for o in objs:
            if o["ext"] is not None:
                del o["ext"]["lips_part"]
        path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    else:
        with np.load(path) as z:
            d = {n: z[n] for n in z.files}
        d["ext_names"] = np.array([n for n in EXT_NAMES if n != "lips_part"])
        for n in list(d):
            if n.endswith("_ext"):
                d[n] = np.delete(d[n], k, axis=1)
        np.savez(path, **d)
    old = load_tracks(path)
    assert old.keys() == new.keys()
    for tid in new:
        a, b = new[tid]["ext"], old[tid]["ext"]
        assert b.shape == a.shape
        np.testing.assert_allclose(np.delete(b, k, 1), np.delete(a, k, 1), atol=1e-4)
        assert np.isfinite(a).all() and np.all(b[:, k] == 0) and np.any(a[:, k] != 0)


def test_csv_with_params_and_rois(tmp_path: Path) -> None:
    path = tmp_path / "tracks.csv"
    with TracksCSVSink(path, include_params=True, include_roi=True) as sink:
        written = _feed(sink)
    assert path.read_text().splitlines()[0].split(",") == tracks_csv_header(True, True)
    _check_roundtrip(path, written)


def test_csv_params_option_from_config_flag_to_file(tmp_path: Path) -> None:
    """``tracks_params`` (config key, ``--tracks-params``, batch too) puts the ROI and the 62 parameters in the CSV,
    the same numbers the JSONL always has; off by default, and other formats are unchanged by it."""
    from stream.cli import parse
    from stream.config import load_config
    from stream.outputs import TracksOut

    assert load_config().tracks_params is False
    assert parse(["--tracks-params"])[1].tracks_params is True
    assert parse(["batch", "v.mp4", "--outdir", "o", "--tracks-params", "true"])[1].tracks_params is True
    jobs = []
    rng = np.random.default_rng(3)
    for f in range(3):
        frame = Frame(index=f, time=f / 25, image=np.zeros((2, 2, 3), np.uint8))
        jobs.append(SimpleNamespace(frame=frame, faces=[_record(f, 1, rng)], output=None))
    for name, params in (("plain.csv", False), ("params.csv", True), ("all.jsonl", True), ("all.npz", True)):
        out = TracksOut(str(tmp_path / name), params=params)
        for job in jobs:
            out.write_job(job)
        out.close()
    header = (tmp_path / "params.csv").read_text().splitlines()[0].split(",")
    assert header == tracks_csv_header(include_params=True, include_roi=True)
    assert "p0" not in (tmp_path / "plain.csv").read_text().splitlines()[0].split(",")
    ref = load_tracks(tmp_path / "all.jsonl")[1]
    got = load_tracks(tmp_path / "params.csv")[1]
    np.testing.assert_allclose(got["params"], ref["params"], rtol=1e-6)
    np.testing.assert_allclose(got["rois"], ref["rois"], atol=1e-3)
    assert set(load_tracks(tmp_path / "all.npz")[1]) >= {"params", "rois"}


def test_every_track_column_has_its_unit_documented() -> None:
    """docs/INTERFACES.md, "Track files", names every CSV column (with --tracks-params) with its unit and frame."""
    import re

    doc = (Path(__file__).resolve().parent.parent / "docs" / "INTERFACES.md").read_text()
    table = doc.split("## Track files", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    documented = set()
    for row in rows:
        first = row.split("|")[1]
        for name in re.findall(r"`([^`]+)`", first):
            documented.update(n for n in re.split(r"\s*(?:,|\.{2,3})\s*", name) if n)  # `x0, y0 ... z67`
    ranges = {"x0": r"x\d+", "p0": r"p\d+", "roi_x1": r"roi_\w+", "box_x1": r"box_\w+"}
    for col in tracks_csv_header(include_params=True, include_roi=True):
        if col in ARKIT_NAMES and {"eyeBlinkLeft", "tongueOut"} <= documented:  # `eyeBlinkLeft ... tongueOut`
            continue
        if col in documented or any(start in documented and re.fullmatch(pat, col) for start, pat in ranges.items()) \
                or (re.fullmatch(r"[yz]\d+", col) and "x0" in documented):
            continue
        raise AssertionError(f"track column {col} has no row in docs/INTERFACES.md 'Track files'")
    for unit in ("degrees", "crop pixels per micrometre", "frame pixels", "seconds"):
        assert unit in table, unit


def test_csv_is_flushed_after_each_frame(tmp_path: Path) -> None:
    sink = TracksCSVSink(tmp_path / "live.csv")
    rng = np.random.default_rng(1)
    sink.write(0, 0.0, [_record(0, 1, rng)])
    sink.write(1, 0.04, [_record(1, 1, rng)])
    on_disk = sink._target.tmp.read_text().splitlines()  # what a crash right now would leave
    assert len(on_disk) == 3 and on_disk[-1].startswith("1,0.040000,1,")
    sink.close()
    assert (tmp_path / "live.csv").read_text().splitlines() == on_disk


def test_jsonl_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "tracks.jsonl"
    with open_tracks_sink(path) as sink:
        assert isinstance(sink, TracksJSONLSink)
        written = _feed(sink)
    lines = path.read_text().splitlines()
    assert len(lines) == 8
    first = json.loads(lines[0])
    assert set(first) == {"frame", "time", "track_id", "box", "roi", "pose", "confidence", "ext", "ext_version",
                          "blendshapes", "blendshapes_version", "landmarks", "params"}
    assert list(first["blendshapes"]) == list(ARKIT_NAMES) and first["blendshapes_version"] == BLENDSHAPES_VERSION
    assert set(first["pose"]) == {"yaw", "pitch", "roll", "scale", "tx", "ty"}
    _check_roundtrip(path, written)


def test_npz_arrays_and_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "tracks.npz"
    sink = open_tracks_sink(path)
    assert isinstance(sink, TracksNPZSink)
    written = _feed(sink)
    assert not path.exists()
    sink.close()
    with np.load(path) as z:
        assert z["track_ids"].tolist() == [1, 7]
        assert z["track1_frames"].tolist() == [0, 1, 3, 4, 5] and z["track7_frames"].tolist() == [3, 4, 5]
        assert z["track1_landmarks"].shape == (5, 68, 3) and z["track1_landmarks"].dtype == np.float32
        assert z["track7_params"].shape == (3, 62) and z["track7_pose"].shape == (3, 6)
        assert z["track7_boxes"].shape == (3, 4) and z["track1_times"].dtype == np.float64
        assert z["track7_confidence"].shape == (3,) and z["track7_confidence"].dtype == np.float32
        assert z["track7_blendshapes"].shape == (3, 52) and z["blendshape_names"].tolist() == list(ARKIT_NAMES)
        assert z["blendshape_estimated"].tolist() == ESTIMATED_MASK.tolist()
    _check_roundtrip(path, written)
    assert _leftovers(tmp_path) == []


def test_tracks_write_job_and_unknown_format(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    with open_tracks_sink(tmp_path / "t.csv") as sink:
        frame = Frame(index=4, time=0.16, image=np.zeros((2, 2, 3), np.uint8))
        sink.write_job(SimpleNamespace(frame=frame, faces=[_record(4, 3, rng)], output=None))
    assert load_tracks(tmp_path / "t.csv")[3]["frames"].tolist() == [4]
    with pytest.raises(SinkError, match=r"use a \.csv, \.llf\.csv, \.jsonl or \.npz"):
        open_tracks_sink(tmp_path / "t.xlsx")


# ------------------------------------------------------------------------------------------------ meshes


def test_mesh_sink_npz_and_obj(tmp_path: Path) -> None:
    tri = np.array([[0, 1, 2], [2, 1, 3], [3, 4, 5]], np.int32)
    folder = tmp_path / "meshes"
    sink = MeshSink(folder, tri, per_frame="obj")
    written = _feed(sink, dense=6)
    sink.write(6, 0.24, [_record(6, 1, np.random.default_rng(3))])  # no vertices: skipped
    sink.close()
    assert sink.skipped_records == 1
    with np.load(folder / "track7.npz") as z:
        assert set(z.files) == {"vertices", "frames", "times", "triangles"}
        assert z["vertices"].shape == (3, 6, 3) and z["vertices"].dtype == np.float32
        np.testing.assert_array_equal(z["vertices"], np.stack([r.vertices for r in written[7]]))
        assert z["frames"].tolist() == [3, 4, 5]
        np.testing.assert_allclose(z["times"], [0.12, 0.16, 0.2])
        np.testing.assert_array_equal(z["triangles"], tri)
    with np.load(folder / "track1.npz") as z:
        assert z["vertices"].shape == (5, 6, 3)
    obj = (folder / "track7_frame000004.obj").read_text().splitlines()
    v = np.array([l.split()[1:] for l in obj if l.startswith("v ")], float)
    f = np.array([l.split()[1:] for l in obj if l.startswith("f ")], int)
    np.testing.assert_allclose(v, written[7][1].vertices, atol=1e-3)
    np.testing.assert_array_equal(f, tri + 1)  # OBJ is 1-based
    assert len(list(folder.glob("*.obj"))) == 8
    assert _leftovers(folder) == []


def test_mesh_sink_ply(tmp_path: Path) -> None:
    tri = np.array([[0, 1, 2], [1, 2, 3]], np.int32)
    rng = np.random.default_rng(4)
    rec = _record(0, 2, rng, dense=4)
    with MeshSink(tmp_path, tri, per_frame="ply") as sink:
        sink.write(0, 0.0, [rec])
    data = (tmp_path / "track2_frame000000.ply").read_bytes()
    head, body = data.split(b"end_header\n", 1)
    assert b"binary_little_endian" in head and b"element vertex 4" in head and b"element face 2" in head
    verts = np.frombuffer(body[:4 * 3 * 4], "<f4").reshape(4, 3)
    np.testing.assert_array_equal(verts, rec.vertices)
    faces = np.frombuffer(body[4 * 3 * 4:], dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    assert faces["n"].tolist() == [3, 3] and faces["idx"].tolist() == tri.tolist()


def test_mesh_sink_rejects_bad_format(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match="obj or ply"):
        MeshSink(tmp_path, np.zeros((1, 3), np.int32), per_frame="stl")


# ------------------------------------------------------------------------------------------------ atomic


def test_atomic_path_commit_and_abort(tmp_path: Path) -> None:
    final = tmp_path / "a" / "file.txt"
    target = AtomicPath(final)
    assert target.tmp.parent == final.parent and target.tmp.suffix == ".txt" and target.tmp.name.startswith(".")
    target.tmp.write_text("new")
    assert not final.exists()
    target.commit()
    assert final.read_text() == "new" and not target.tmp.exists()
    other = AtomicPath(final)
    other.tmp.write_text("half")
    other.abort()
    assert final.read_text() == "new" and not other.tmp.exists()
    atomic_write_bytes(final, b"replaced")
    assert final.read_bytes() == b"replaced"
