"""The Python API (damdnet): typed results from the product's own pipeline, errors with the CLI's messages."""
from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import damdnet
from damdnet import DamdnetError, Face, FrameResult
from tests.test_cli_helpers import TEST1, error_lines, run_cli

REPO = Path(__file__).resolve().parent.parent
WEIGHTS = {"weights": "damdnet"}  # our committed weights: offline, the same in every run


@pytest.fixture(scope="module")
def session() -> damdnet.Session:
    return damdnet.session(**WEIGHTS)  # the module-level functions below share this one


def test_version_and_lazy_import() -> None:
    res = subprocess.run([sys.executable, "-c", "import sys, damdnet; print(damdnet.__version__, 'torch' in "
                          "sys.modules)"], cwd=REPO, capture_output=True, text=True, timeout=120)
    version, torch_loaded = res.stdout.split()
    assert res.returncode == 0 and version == damdnet.__version__ and version.count(".") == 2
    assert torch_loaded == "False"  # `import damdnet` alone stays light


def test_align_image_faces(session: damdnet.Session, assets_dir: Path) -> None:
    import cv2

    from model.align_images import detect_and_align

    path = assets_dir / TEST1
    faces = damdnet.align_image(path, **WEIGHTS)
    assert len(faces) >= 2 and all(isinstance(f, Face) for f in faces)
    f = faces[0]
    assert f.landmarks.shape == (68, 3) and f.landmarks.dtype == np.float32
    assert f.params.shape == (62,) and f.pose.shape == (6,) and f.box.shape == (4,) and f.roi.shape == (4,)
    assert f.camera.shape == (3, 4) and f.shape.shape == (40,) and f.expression.shape == (10,)
    assert f.vertices is None and f.track_id is None and 0 < f.score <= 1
    assert -90 <= f.yaw <= 90 and isinstance(f.pitch, float) and isinstance(f.roll, float)
    # inside the detector box, and exactly what `python -m model.align_images` computes
    x1, y1, x2, y2 = f.box
    inside = ((f.landmarks[:, 0] > x1 - 0.2 * (x2 - x1)) & (f.landmarks[:, 0] < x2 + 0.2 * (x2 - x1))).mean()
    assert inside > 0.9
    img = cv2.imread(str(path))
    _, _, ref = detect_and_align(img, session._engine.aligner, session._engine.detector, dense=False)
    np.testing.assert_array_equal(np.stack([g.landmarks for g in faces]), ref.landmarks)
    # arrays work too; dense vertices on request, with the session's triangles
    dense = session.align_image(img, dense=True)
    np.testing.assert_allclose(dense[0].landmarks, f.landmarks, atol=1e-4)
    v = dense[0].vertices
    assert v.ndim == 2 and v.shape[1] == 3 and session.triangles.max() < v.shape[0]
    # the ARKit blendshapes of a photo: against the face's own identity with its expression at 0
    assert all(g.blendshapes is not None and len(g.blendshapes) == 52 for g in faces)
    assert all(0 <= v <= 1 for g in faces for v in g.blendshapes.values())
    # the extended expression: on every face, and in the landmarks and vertices (decoded with it)
    from model.expression_ext import EXT_NAMES, N_EXT

    assert f.ext.shape == (N_EXT,) and f.ext.dtype == np.float32
    np.testing.assert_array_equal(np.stack([g.ext for g in faces]), ref.ext)
    assert list(f.expression_ext) == list(EXT_NAMES) and f.eye_closure == (float(f.ext[0]), float(f.ext[1]))
    morph = session._engine.aligner.morph
    conv = session._engine.aligner.convention
    d = dense[0]
    np.testing.assert_allclose(morph.dense(d.params[None], d.roi[None], conv, d.ext[None])[0], v, atol=1e-3)
    np.testing.assert_allclose(morph.landmarks(d.params[None], d.roi[None], conv, d.ext[None])[0], d.landmarks,
                               atol=1e-3)
    with pytest.warns(damdnet.NoFaceWarning, match=r"^no face found in the image \(1 image\)$"):
        assert session.align_image(np.zeros((240, 320, 3), np.uint8)) == []  # no face: no result, no error


def test_face_ext_properties() -> None:
    """Face.ext's conveniences, and None without the expression stage."""
    from model.expression_ext import EXT_NAMES

    z = np.zeros(4, np.float32)
    ext = np.array([1.0, 0.25, 0.5, 0, 0, -0.5, 0.3], np.float32)
    f = Face(box=z, landmarks=np.zeros((68, 3), np.float32), pose=np.zeros(6, np.float32),
             params=np.zeros(62, np.float32), roi=z, ext=ext)
    assert f.eye_closure == (1.0, 0.25)  # (right, left): the subject's right eye is shut
    assert f.expression_ext == dict(zip(EXT_NAMES, ext.tolist())) and abs(f.expression_ext["jaw_open"] - 0.3) < 1e-6
    bare = Face(box=z, landmarks=np.zeros((68, 3), np.float32), pose=np.zeros(6, np.float32),
                params=np.zeros(62, np.float32), roi=z)
    assert bare.ext is None and bare.eye_closure is None and bare.expression_ext is None
    assert bare.blendshapes is None
    from model.blendshapes import ARKIT_NAMES

    values = np.zeros(52, np.float32)
    values[ARKIT_NAMES.index("jawOpen")] = 0.75
    f.blendshape_values = values
    assert list(f.blendshapes) == list(ARKIT_NAMES) and f.blendshapes["jawOpen"] == 0.75


def test_align_image_errors_carry_the_cli_message(session: damdnet.Session, tmp_path: Path) -> None:
    missing = tmp_path / "missing.jpg"
    with pytest.raises(DamdnetError) as exc:
        damdnet.align_image(missing, **WEIGHTS)
    res = subprocess.run([sys.executable, "-m", "model.align_images", str(missing), "--out", str(tmp_path / "o"),
                          "--weights", "damdnet"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert f"{exc.value}; skipped" in error_lines(res.stderr)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(DamdnetError, match="bad.jpg: not a readable image"):
        session.align_image(tmp_path / "bad.jpg")
    with pytest.raises(DamdnetError, match="expected an"):
        session.align_image(np.zeros((4, 4), np.float32))
    with pytest.raises(DamdnetError, match="not a model option: tracks"):
        damdnet.align_image(missing, tracks="x.csv")


class Collect:
    """A user sink: write(FrameResult) per frame, close() once."""

    def __init__(self) -> None:
        self.results: list[FrameResult] = []
        self.closed = 0

    def write(self, result: FrameResult) -> None:
        self.results.append(result)

    def close(self) -> None:
        self.closed += 1


def test_track_video_frames_tracks_and_sinks(session: damdnet.Session, tmp_path: Path) -> None:
    from stream.sinks import load_tracks

    sink = Collect()
    frames = list(damdnet.track_video("synthetic:1", tracks=str(tmp_path / "t.csv"), sinks=[sink], **WEIGHTS))
    assert [fr.index for fr in frames] == list(range(30))  # every frame, in order
    assert all(isinstance(fr, FrameResult) and fr.image.shape == (480, 640, 3) for fr in frames)
    assert np.all(np.diff([fr.time for fr in frames]) > 0)
    assert sink.closed == 1 and [r.index for r in sink.results] == list(range(30))
    faces = [(fr.index, f) for fr in frames for f in fr.faces]
    assert len(faces) >= 25 and all(f.track_id is not None and f.landmarks.shape == (68, 3) for _, f in faces)
    from tracking.face import Face as Record  # one face record: the tracker's, completed by the analyzer, not a copy

    assert Face is Record and all(type(f) is Record and f.frame == i for i, f in faces)
    tracks = load_tracks(tmp_path / "t.csv")  # the tracks file holds exactly the faces the iterator gave
    assert sum(len(t["frames"]) for t in tracks.values()) == len(faces)
    for index, f in faces:
        t = tracks[f.track_id]
        row = int(np.flatnonzero(t["frames"] == index)[0])
        np.testing.assert_allclose(t["landmarks"][row], f.landmarks, atol=2e-3)
    assert {f.track_id for _, f in faces} == set(tracks)
    ext = np.stack([f.ext for _, f in faces])  # the smoothed extended expression, as the tracks file has it
    np.testing.assert_allclose(np.concatenate([tracks[f.track_id]["ext"][tracks[f.track_id]["frames"] == i]
                                               for i, f in faces]), ext, atol=2e-4)
    from model.blendshapes import ARKIT_NAMES

    blend = np.stack([[f.blendshapes[k] for k in ARKIT_NAMES] for _, f in faces])  # by name, as the file has them
    assert all(list(f.blendshapes) == list(ARKIT_NAMES) for _, f in faces) and 0 <= blend.min() <= blend.max() <= 1
    np.testing.assert_allclose(np.concatenate([tracks[f.track_id]["blendshapes"][tracks[f.track_id]["frames"] == i]
                                               for i, f in faces]), blend, atol=6e-5)


def test_track_video_left_early_closes_outputs(session: damdnet.Session, tmp_path: Path) -> None:
    from stream.sinks import load_tracks

    out = tmp_path / "t.csv"
    with session.track_video("synthetic:3", tracks=str(out), dense=True) as frames:
        for fr in frames:
            if fr.index == 4:
                break
    assert fr.faces and fr.faces[0].vertices.shape[1] == 3  # dense=True
    f = fr.faces[0]  # the vertices of a tracked face are decoded with its (smoothed) ext
    aligner = session._engine.aligner
    np.testing.assert_allclose(aligner.morph.dense(f.params[None], f.roi[None], aligner.convention, f.ext[None])[0],
                               f.vertices, atol=1e-3)
    written = sorted({int(i) for t in load_tracks(out).values() for i in t["frames"]})
    assert written[:5] == [0, 1, 2, 3, 4] and len(written) < 90  # the frames so far, not the whole source
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]  # finalised, no temporary file left


def test_track_video_errors_carry_the_cli_message(session: damdnet.Session, tmp_path: Path) -> None:
    with pytest.raises(DamdnetError) as exc:
        next(iter(session.track_video(str(tmp_path / "nofile.mp4"))))
    res = run_cli(["--source", str(tmp_path / "nofile.mp4"), "--weights", "damdnet"], tmp_path)
    assert error_lines(res.stderr) == [f"error: {exc.value}"]
    with pytest.raises(DamdnetError) as exc:  # option errors come at the call, as the CLI's config errors
        damdnet.track_video("synthetic:1", detect_every=-3, **WEIGHTS)
    res = run_cli(["--detect-every", "-3"], tmp_path)
    assert error_lines(res.stderr) == [f"error: {exc.value}"]
    with pytest.raises(DamdnetError, match="unknown config key 'kalman.pose_gat'"):
        session.track_video("synthetic:1", kalman={"pose_gat": 3.0})
    with pytest.raises(DamdnetError, match="weights is a model option"):
        session.track_video("synthetic:1", weights="3ddfa-v2-mb05")

    class Broken(Collect):
        def write(self, result: FrameResult) -> None:
            raise OSError("disk full")

    broken = Broken()
    with pytest.raises(OSError, match="disk full"):
        list(session.track_video("synthetic:1", sinks=[broken]))
    assert broken.closed == 1


async def test_stream_async_and_live_policy(session: damdnet.Session) -> None:
    got = [fr async for fr in session.stream("synthetic:1", detect_every=5)]
    assert [fr.index for fr in got] == list(range(30)) and sum(len(fr.faces) for fr in got) >= 25
    # live: a slow consumer gets the newest frames (the pipeline drops the stale ones), never a growing delay
    seen = []
    async with contextlib.aclosing(session.stream("synthetic:4", live=True)) as frames:
        async for fr in frames:
            seen.append(fr.index)
            await asyncio.sleep(0.5)
            if len(seen) == 6:
                break
    assert seen == sorted(set(seen)) and seen[-1] > 5  # frames were skipped while the consumer slept
    with pytest.raises(DamdnetError, match="no such file"):
        async for _ in damdnet.stream("nofile.mp4", **WEIGHTS):
            pass


async def test_stream_sends_vmc(session: damdnet.Session) -> None:
    """``stream(..., vmc="HOST:PORT")``: the API's live runs drive an avatar app too (the VMC protocol)."""
    pytest.importorskip("pythonosc")
    from tests.test_vmc import Receiver

    rx = Receiver()
    try:
        got = [fr async for fr in session.stream("synthetic:1", vmc=f"127.0.0.1:{rx.port}")]
        await asyncio.sleep(0.2)
    finally:
        rx.stop()
    with_face = [m for m in rx.frames() if any(a == "/VMC/Ext/Blend/Apply" for a, _ in m)]
    assert len(got) == 30 and len(with_face) >= 10
