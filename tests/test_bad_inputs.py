"""Our own bad-input corpus (issue 15): every input is generated here (no committed media); one test per class,
each asserting the exact outcome: one line ``error: ...`` (or ``interrupted ...``) with a non-zero exit and nothing
lost, or a correct result checked for its content.

Classes: an output that is the input (same path, symlink, hard link); a read-only output folder (run and
model.align_images); a full disk under the CLI (video, JSONL tracks, meshes); a binary --config; a config number that is
not one; serve on a port in use; signals during start-up; image folders (stills vs numbered frames). The sinks at
every fill level and errno are in tests/test_sink_faults.py, WebRTC recordings after an abrupt leave in
tests/test_webrtc_load.py.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests import faults
from tests.test_cli_helpers import PEER, REPO, RUN_STREAM, TEST1, cli_env, error_lines, read_csv_rows, run_cli


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    """The run failed with exactly one line starting with ``error:`` that holds every needle."""
    lines = [ln for ln in error_lines(res.stderr) if not ln.startswith("model: ")]  # what was loaded, not an error
    assert res.returncode != 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _small_video(path: Path, frames: int = 6) -> Path:
    from stream.sinks import VideoSink

    sink = VideoSink(path, fps=25)
    for i in range(frames):
        img = np.full((64, 96, 3), 40 + 20 * i, np.uint8)
        sink.write(i, i / 25, img)
    sink.close()
    return path


# ------------------------------------------------------------------------------------------ output == input


def _alias(tmp_path: Path, src: Path, alias: str) -> str:
    if alias == "same":
        return src.name
    if alias == "dot-path":
        (tmp_path / "sub").mkdir()
        return f"sub/../{src.name}"
    if alias == "symlink":
        os.symlink(src, tmp_path / "link.mp4")
        return "link.mp4"
    os.link(src, tmp_path / "hard.mp4")
    return "hard.mp4"


@pytest.mark.parametrize("alias", ["same", "dot-path", "symlink", "hardlink"])
def test_outputs_resolving_to_an_input_are_found(tmp_path: Path, alias: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from stream.outputs import check_not_inputs
    from stream.sinks import SinkError

    src = _small_video(tmp_path / "in.mp4")
    monkeypatch.chdir(tmp_path)
    out = _alias(tmp_path, src, alias)
    with pytest.raises(SinkError, match="it is the input"):
        check_not_inputs({"--out": out}, [str(src)])
    check_not_inputs({"--out": "other.mp4", "--tracks": "t.csv"}, [str(src)])  # others pass


@pytest.mark.parametrize("alias", ["same", "hardlink"])
def test_out_that_is_the_source_is_refused(tmp_path: Path, alias: str) -> None:
    src = _small_video(tmp_path / "in.mp4")
    before = _digest(src)
    out = _alias(tmp_path, src, alias)
    names = sorted(p.name for p in tmp_path.iterdir())
    res = run_cli(["--source", "in.mp4", "--out", out, *PEER], tmp_path)
    assert res.returncode == 2
    _one_error(res, "refusing to write --out", "it is the input")
    assert _digest(src) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # nothing written, nothing removed


def test_image_folder_output_onto_one_of_its_images_is_refused(tmp_path: Path) -> None:
    """--swap-source is an input too: an --out onto it is refused before anything is read."""
    src = _small_video(tmp_path / "in.mp4")
    swap = _small_video(tmp_path / "face.mp4")
    before = _digest(swap)
    res = run_cli(["--source", str(src), "--out", "face.mp4", "--mode", "swap", "--swap-source", "face.mp4", *PEER],
                  tmp_path)
    _one_error(res, "it is the input")
    assert _digest(swap) == before


def test_missing_swap_source_is_reported_even_when_nothing_is_drawn(tmp_path: Path) -> None:
    """--mode swap with a --swap-source that does not exist: one line naming it, before the model loads, even on a
    run that only writes tracks (a typo is reported, not silently ignored), and no output file is left."""
    src = _small_video(tmp_path / "in.mp4")
    res = run_cli(["--source", str(src), "--tracks", "t.csv", "--mode", "swap", "--swap-source", "fcae.jpg", *PEER],
                  tmp_path)
    _one_error(res, "no such file", "fcae.jpg")
    assert "model: " not in res.stderr  # refused before the model loaded
    assert not (tmp_path / "t.csv").exists()


# ------------------------------------------------------------------------------------------ read-only folders


@pytest.fixture
def readonly_dir(tmp_path: Path):
    """A folder files cannot be created in: a read-only tmpfs as root (root ignores chmod), chmod 555 otherwise."""
    if os.geteuid() == 0:
        with faults.tmpfs(tmp_path / "ro", 256) as mnt:
            faults.remount_readonly(mnt)
            yield mnt
    else:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o555)
        try:
            yield d
        finally:
            d.chmod(0o755)


def _readonly_reason() -> str:
    return "Read-only file system" if os.geteuid() == 0 else "Permission denied"


def test_output_into_a_readonly_folder(tmp_path: Path, readonly_dir: Path) -> None:
    src = _small_video(tmp_path / "in.mp4")
    res = run_cli(["--source", str(src), "--out", str(readonly_dir / "o.mp4"), *PEER], tmp_path)
    _one_error(res, "cannot write", str(readonly_dir / "o.mp4"), _readonly_reason())
    assert list(readonly_dir.iterdir()) == []


@pytest.mark.parametrize("kind", ["video", "csv", "jsonl", "npz", "meshes"])
def test_every_sink_refuses_a_readonly_folder_in_one_line(readonly_dir: Path, kind: str) -> None:
    """Opening each sink there (what the run does after the model loaded) raises one SinkError, leaves nothing."""
    from types import SimpleNamespace

    from stream.frames import Frame, VideoInfo
    from stream.outputs import check_writable, open_outputs
    from stream.sinks import SinkError

    path = readonly_dir / {"video": "o.mp4", "csv": "t.csv", "jsonl": "t.jsonl", "npz": "t.npz", "meshes": "m"}[kind]
    out, tracks, meshes = (str(path) if kind == k else None for k in ("video", "tracks", "meshes"))
    if kind in ("csv", "jsonl", "npz"):
        tracks = str(path)
    flag = {"video": "--out", "meshes": "--meshes"}.get(kind, "--tracks")
    with pytest.raises(SinkError) as early:
        check_writable({flag: str(path)})
    with pytest.raises(SinkError) as late:  # at open, or at the first frame (PyAV opens the file then)
        sinks = open_outputs(out, tracks, meshes, VideoInfo(64, 48, 25.0), np.zeros((1, 3), np.int32), "npz")
        job = SimpleNamespace(frame=Frame(0, 0.0, np.zeros((48, 64, 3), np.uint8)), faces=[], output=None)
        for sink in sinks:
            sink.write_job(job)
            sink.close()
    for exc in (early.value, late.value):
        assert "\n" not in str(exc) and str(path) in str(exc) and _readonly_reason() in str(exc), str(exc)
    assert list(readonly_dir.iterdir()) == []


def test_model_align_out_into_a_readonly_folder(readonly_dir: Path, assets_dir: Path) -> None:
    img = assets_dir / TEST1
    res = subprocess.run([sys.executable, "-m", "model.align_images", str(img), "--out", str(readonly_dir / "al"),
                          "--weights", "3ddfa-v2-mb05"], capture_output=True, text=True, cwd=REPO, env=cli_env(),
                         timeout=300)
    _one_error(res, "--out", str(readonly_dir / "al"))
    assert res.returncode == 2 and list(readonly_dir.iterdir()) == []


# ------------------------------------------------------------------------------------------ configs


def test_binary_config_file(tmp_path: Path) -> None:
    (tmp_path / "weights.yaml").write_bytes(bytes(range(256)) * 4)  # not UTF-8
    res = run_cli(["--config", "weights.yaml", "--tracks", "t.csv"], tmp_path)
    assert res.returncode == 2
    _one_error(res, "weights.yaml", "not a text file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.yaml"]


def test_config_number_that_is_not_one_quotes_it(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("detect_every: ten\n")
    res = run_cli(["--config", "c.yaml"], tmp_path)
    assert res.returncode == 2
    line = _one_error(res, "detect_every", "'ten'")
    assert "None" not in line


@pytest.mark.parametrize("text, needle", [("detect_every: 2.5\n", "expected an integer, got 2.5"),
                                          ("detect_score: .nan\n", "got nan"), ("queue_size: [1, 2]\n", "[1, 2]"),
                                          ("detect_score: '0.5x'\n", "'0.5x'")])
def test_config_numbers_in_process(tmp_path: Path, text: str, needle: str) -> None:
    from stream.config import ConfigError, load_config

    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "c.yaml")
    assert needle in str(err.value) and "None" not in str(err.value), str(err.value)


# ------------------------------------------------------------------------------------------ serve


def test_serve_on_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        res = run_cli(["serve", "--serve.port", str(port), *PEER], tmp_path, timeout=120)
    assert res.returncode == 2
    _one_error(res, f"127.0.0.1:{port}", "Address already in use")


# ------------------------------------------------------------------------------------------ signals


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_during_startup_is_one_line(tmp_path: Path, sig: signal.Signals) -> None:
    """The signal lands while the CLI imports its modules: seen through ``-X importtime`` (each import is reported
    as it finishes), so the test waits on an event, not a time."""
    proc = subprocess.Popen([sys.executable, "-X", "importtime", str(RUN_STREAM), "--source", "synthetic:2",
                             "--tracks", "t.csv", *PEER], cwd=tmp_path, env=cli_env(), stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in proc.stderr:  # run_stream's handlers are installed before it imports stream.cli
            lines.append(line)
            if "stream.config" in line:
                break
        proc.send_signal(sig)
        _, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = "".join(lines) + rest
    own = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("import time:")]
    assert proc.returncode == 128 + sig, err[-2000:]
    assert "Traceback" not in err
    assert len(own) == 1 and own[0].startswith("interrupted") and sig.name in own[0], own
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ image folders


def _write(path: Path, img: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), img)
    return path


def test_which_image_folders_are_videos(tmp_path: Path) -> None:
    from stream.sources import is_frame_sequence, open_source

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(1, 6):
        _write(frames / f"frame_{i:04d}.png", np.full((48, 64, 3), i * 30, np.uint8))
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, size in (("beach.jpg", (64, 48)), ("IMG_2.png", (80, 60)), ("zz.png", (64, 48))):
        _write(photos / name, np.zeros((size[1], size[0], 3), np.uint8))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i, size in enumerate(((64, 48), (80, 60), (64, 48)), start=1):
        _write(mixed / f"img{i}.png", np.zeros((size[1], size[0], 3), np.uint8))
    gap = tmp_path / "gap"
    gap.mkdir()
    for i in (1, 2, 5):
        _write(gap / f"f{i}.png", np.zeros((48, 64, 3), np.uint8))
    assert is_frame_sequence(sorted(frames.iterdir()))
    assert not is_frame_sequence(sorted(photos.iterdir()))
    assert not is_frame_sequence(sorted(mixed.iterdir()))  # numbered, but of different sizes: photos
    assert not is_frame_sequence(sorted(gap.iterdir()))
    with open_source(str(frames)) as s:
        assert s.info.stills is False
    with open_source(str(frames), sequence=False) as s:
        assert s.info.stills is True
    with open_source(str(photos)) as s:
        assert s.info.stills is True and s.info.frame_count == 3
    with open_source(str(photos), sequence=True) as s:
        assert s.info.stills is False
    with open_source(str(photos / "*.png")) as s:  # a glob is a list of images too
        assert s.info.stills is True
    with open_source(str(_small_video(tmp_path / "v.mp4"))) as s:
        assert s.info.stills is False


@pytest.mark.slow
def test_a_folder_of_unrelated_photos_is_analysed_photo_by_photo(tmp_path: Path, assets_dir: Path) -> None:
    """Photos of different sizes with 2, 1 and 2 faces: each gets the detector's faces (boxes on them), ids
    start at 1 in every photo, nothing is carried from the previous photo."""
    from model.assets import AssetStore
    from model.detect import FaceDetector

    test1 = cv2.imread(str(assets_dir / TEST1))
    obama = cv2.imread(str(assets_dir / "LeiJiangJNU/DAMDNet/imgs/obama.jpg"))
    assert test1 is not None and obama is not None
    photos = tmp_path / "photos"
    photos.mkdir()
    images = [_write(photos / "a_debate.jpg", test1),
              _write(photos / "b_portrait.png", cv2.resize(obama, (470, 640))),
              _write(photos / "c_debate_small.jpg", cv2.resize(cv2.flip(test1, 1), None, fx=0.6, fy=0.6))]
    res = run_cli(["--source", str(photos), "--tracks", "t.csv", "--progress", "false", *PEER], tmp_path)
    assert res.returncode == 0, res.stderr
    header, rows = read_csv_rows(tmp_path / "t.csv")
    col = {c: i for i, c in enumerate(header)}
    detector = FaceDetector.create("auto", AssetStore(None), score_threshold=0.6, max_side=640)
    for index, path in enumerate(images):
        boxes, _ = detector(cv2.imread(str(path)))
        mine = [r for r in rows if int(r[col["frame"]]) == index]
        assert len(mine) == len(boxes) >= 1, (path.name, len(mine), len(boxes))
        assert sorted(int(r[col["track_id"]]) for r in mine) == list(range(1, len(boxes) + 1))
        for r in mine:
            box = np.array([float(r[col[f"box_{k}"]]) for k in ("x1", "y1", "x2", "y2")])
            iou = max(_iou(box, b) for b in boxes)
            assert iou > 0.5, (path.name, box, boxes)


# ------------------------------------------------------------------------------------------ no face


def test_no_face_is_one_warning_and_exit_0_in_run_align_and_api(tmp_path: Path) -> None:
    """The rule (docs/INTERFACES.md): an input with no face anywhere is not an error. ``run`` on a video and on a
    photo, ``model.align_images`` on the photo and the API on both: outputs written without faces, exit 0, and the same
    line ``warning: no face found in INPUT (N frames|1 image)`` (batch: tests/test_batch.py)."""
    import warnings

    import damdnet
    from model.align_images import NoFaceWarning, no_face_message

    _small_video(tmp_path / "nobody.mp4", frames=6)
    _write(tmp_path / "blank.png", np.full((240, 320, 3), 90, np.uint8))
    for source, tracks, count, unit in (("nobody.mp4", "v.csv", 6, "frame"), ("blank.png", "p.csv", 1, "image")):
        res = run_cli(["--source", source, "--tracks", tracks, "--progress", "false", *PEER], tmp_path)
        want = f"warning: {no_face_message(source, count, unit)}"
        assert res.returncode == 0 and want in error_lines(res.stderr), res.stderr
        assert not any(ln.startswith("error") for ln in error_lines(res.stderr)), res.stderr
        header, rows = read_csv_rows(tmp_path / tracks)
        assert header[0] == "frame" and rows == []
    res = subprocess.run([sys.executable, "-m", "model.align_images", "blank.png", "--out", "al", *PEER], cwd=tmp_path,
                         env={**cli_env(), "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"warning: {no_face_message('blank.png', 1, 'image')}" in error_lines(res.stderr), res.stderr
    assert not (tmp_path / "al" / "blank_aligned.jpg").exists()  # nothing to annotate: results.json lists no image
    assert json.loads((tmp_path / "al" / "results.json").read_text())["results"] == {"blank.png": []}
    # the API: empty results, no error, a NoFaceWarning with the same line
    options = {"weights": PEER[1], "progress": False}
    video, photo = str(tmp_path / "nobody.mp4"), str(tmp_path / "blank.png")
    with pytest.warns(NoFaceWarning) as caught:
        assert damdnet.align_image(photo, weights=PEER[1]) == []
    assert [str(w.message) for w in caught] == [no_face_message(photo, 1, "image")]
    with pytest.warns(NoFaceWarning) as caught:
        frames = list(damdnet.track_video(video, **options))
    assert len(frames) == 6 and all(f.faces == [] for f in frames)
    assert [str(w.message) for w in caught] == [no_face_message(video, 6)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoFaceWarning)
        with damdnet.track_video(video, **options) as it:  # left early: no verdict about the whole input
            next(it)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# ------------------------------------------------------------------------------------------ full disk, CLI


@pytest.mark.slow
@pytest.mark.parametrize("outputs", [("--out", "o.mp4"), ("--tracks", "t.jsonl", "--meshes", "m")])
def test_full_disk_under_the_cli_is_one_line(tmp_path: Path, outputs: tuple[str, ...]) -> None:
    """A 192 KiB tmpfs (root): the run ends with one line naming the file and the cause, exit 2, and leaves no
    file, partial or committed, on the full disk."""
    with faults.tmpfs(tmp_path / "small", 192) as mnt:
        args = [a if a.startswith("--") else str(mnt / a) for a in outputs]
        res = run_cli(["--source", "synthetic:4", *args, "--progress", "false", *PEER], tmp_path)
        _one_error(res, "No space left on device", str(mnt))
        assert res.returncode == 2
        left = [str(p.relative_to(mnt)) for p in mnt.rglob("*") if p.is_file()]
        assert left == [], left


# ------------------------------------------------------------------------------------------ odd images


def test_odd_pixel_formats_and_a_huge_image_come_out_as_bgr(tmp_path: Path) -> None:
    """Gray, 16-bit, RGBA and paletted PNGs and a 6000x4000 JPEG: every frame is (H, W, 3) uint8 BGR with the
    colours of the file (16-bit scaled to 8), in natural order; each is a still (different sizes and names)."""
    from PIL import Image

    from stream.sources import open_source

    d = tmp_path / "odd"
    d.mkdir()
    _write(d / "a_gray.png", np.full((30, 40), 100, np.uint8))
    _write(d / "b_16bit.png", np.full((30, 41, 3), 200 * 257, np.uint16))
    rgba = np.zeros((31, 40, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)  # BGR as OpenCV writes it
    rgba[..., 3] = 0  # fully transparent: the colour is still the pixel's
    _write(d / "c_rgba.png", rgba)
    pal = Image.new("P", (40, 32))
    pal.putpalette([255, 0, 0] * 256)  # every index is red
    pal.save(d / "d_palette.png")
    _write(d / "e_huge.jpg", np.full((4000, 6000, 3), (0, 128, 255), np.uint8))
    with open_source(str(d)) as src:
        assert src.info.stills
        frames = list(src)
    assert [f.image.shape for f in frames] == [(30, 40, 3), (30, 41, 3), (31, 40, 3), (32, 40, 3), (4000, 6000, 3)]
    assert all(f.image.dtype == np.uint8 for f in frames)
    np.testing.assert_array_equal(frames[0].image[0, 0], [100, 100, 100])
    np.testing.assert_array_equal(frames[1].image[0, 0], [200, 200, 200])
    np.testing.assert_array_equal(frames[2].image[0, 0], [10, 20, 30])
    np.testing.assert_array_equal(frames[3].image[0, 0], [0, 0, 255])  # red in BGR
    assert np.abs(frames[4].image[2000, 3000].astype(int) - [0, 128, 255]).max() <= 3  # JPEG
