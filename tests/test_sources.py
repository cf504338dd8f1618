"""Frame sources: real videos, rotation metadata, image folders, the registry, and one-line errors."""
from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from stream import sources
from stream.frames import Frame
from stream.sources import (
    SourceError,
    VideoFileSource,
    apply_orientation,
    open_source,
    orientation_from_matrix,
    orientation_from_rotation,
    register_source,
)

D0 = "KwaiVGI/LivePortrait/assets/examples/driving/d0.mp4"
OBAMA = "cleardusk/3DDFA/demo@obama/obama.mp4"


def _asset(assets_dir: Path, rel: str) -> Path:
    path = assets_dir / rel
    if not path.is_file():
        pytest.skip(f"asset {rel} not found")
    return path


def _container_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return int(c.streams.video[0].frames)


def _write_video(path: Path, frames: list[np.ndarray], fps: int = 25, rotation: int | None = None) -> None:
    """Small H.264 mp4 with PyAV directly (optionally with a display-matrix rotation, degrees CCW)."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "18"}
        if rotation is not None:
            s.set_display_rotation(rotation)
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="bgr24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


# ------------------------------------------------------------------------------------------------ real videos


def test_real_mp4_frames_times_and_info(assets_dir: Path) -> None:
    path = _asset(assets_dir, D0)
    expected = _container_frames(path)
    with open_source(str(path)) as src:
        info = src.info
        assert (info.width, info.height) == (512, 512)
        assert info.fps == pytest.approx(25.0)
        assert info.frame_count == expected
        assert not info.is_live and info.rotation == 0 and info.name == "d0.mp4"
        frames = list(src)
    assert abs(len(frames) - expected) <= 1
    assert [f.index for f in frames] == list(range(len(frames)))
    times = np.array([f.time for f in frames])
    assert times[0] == 0.0 and np.all(np.diff(times) > 0)
    assert times[-1] == pytest.approx((len(frames) - 1) / 25.0, abs=1e-3)
    f0 = frames[0]
    assert isinstance(f0, Frame) and f0.image.shape == (512, 512, 3) and f0.image.dtype == np.uint8
    assert f0.image.flags.c_contiguous and f0.image.std() > 10  # a real picture, not a blank
    ns = [f.capture_ns for f in frames]
    assert ns == sorted(ns)
    assert src.warnings == 0


def test_real_video_with_edit_list(assets_dir: Path) -> None:
    """obama.mp4 holds 158 samples but an edit list presents only the last ~2.19 s (55 frames)."""
    path = _asset(assets_dir, OBAMA)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        presented = float(s.duration * s.time_base * s.average_rate)  # what ffprobe's duration says
    with open_source(path) as src:
        assert (src.info.width, src.info.height) == (1280, 720)
        assert abs(src.info.frame_count - presented) <= 1
        frames = list(src)
    assert abs(len(frames) - presented) <= 1 and abs(len(frames) - src.info.frame_count) <= 1
    assert frames[0].time == 0.0 and np.all(np.diff([f.time for f in frames]) > 0)
    assert frames[-1].image.shape == (720, 1280, 3) and src.warnings == 0


def test_max_frames(assets_dir: Path) -> None:
    with open_source(_asset(assets_dir, D0), max_frames=5) as src:
        frames = list(src)
    assert len(frames) == 5
    assert src.read() is None  # closed


def test_read_after_close_and_reuse(assets_dir: Path) -> None:
    src = open_source(_asset(assets_dir, D0))
    first = src.read()
    assert first is not None and first.index == 0
    src.close()
    src.close()  # idempotent
    assert src.read() is None and src.closed


# ------------------------------------------------------------------------------------------------ rotation


def _marked_frames(n: int = 3, h: int = 32, w: int = 64) -> list[np.ndarray]:
    out = []
    for _ in range(n):
        img = np.full((h, w, 3), 40, np.uint8)
        img[:8, :16] = 255  # white block in the top-left corner of the coded picture
        out.append(img)
    return out


@pytest.mark.parametrize(
    "rotation, corner",
    [(90, "bottom-left"), (-90, "top-right"), (180, "bottom-right"), (0, "top-left")],
)
def test_rotation_metadata_is_applied(tmp_path: Path, rotation: int, corner: str) -> None:
    path = tmp_path / f"rot{rotation}.mp4"
    _write_video(path, _marked_frames(), rotation=rotation)
    with open_source(path) as src:
        frames = list(src)
        info = src.info
    assert info.rotation == rotation
    h, w = frames[0].image.shape[:2]
    assert (h, w) == ((32, 64) if rotation in (0, 180) else (64, 32))
    assert (info.width, info.height) == (w, h)
    img = frames[0].image.mean(axis=2)
    corners = {
        "top-left": img[:4, :4], "top-right": img[:4, -4:], "bottom-left": img[-4:, :4], "bottom-right": img[-4:, -4:],
    }
    bright = max(corners, key=lambda k: corners[k].mean())
    assert bright == corner, (rotation, {k: float(v.mean()) for k, v in corners.items()})


def _reference_display(image: np.ndarray, m: list[int]) -> np.ndarray:
    """Display picture by mapping every coded pixel (x, y) -> (a x + c y, b x + d y), shifted to start at 0."""
    a, b, c, d = np.sign([m[0], m[1], m[3], m[4]])
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    xd, yd = a * xs + c * ys, b * xs + d * ys
    xd, yd = xd - xd.min(), yd - yd.min()
    out = np.zeros((yd.max() + 1, xd.max() + 1) + image.shape[2:], image.dtype)
    out[yd, xd] = image[ys, xs]
    return out


@pytest.mark.parametrize(
    "m2",
    [(1, 0, 0, 1), (0, -1, 1, 0), (-1, 0, 0, -1), (0, 1, -1, 0),  # rotations 0, 90, 180, 270 CCW
     (-1, 0, 0, 1), (1, 0, 0, -1), (0, 1, 1, 0), (0, -1, -1, 0)],  # mirrored variants
)
def test_orientation_from_matrix_matches_geometry(m2: tuple[int, int, int, int]) -> None:
    a, b, c, d = (v * 65536 for v in m2)
    matrix = [a, b, 0, c, d, 0, 0, 0, 1 << 30]
    image = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    got = apply_orientation(image, orientation_from_matrix(matrix))
    np.testing.assert_array_equal(got, _reference_display(image, matrix))


def test_orientation_from_rotation_is_ccw() -> None:
    image = np.zeros((2, 3, 3), np.uint8)
    image[0, 2] = 255  # top-right
    rot = apply_orientation(image, orientation_from_rotation(90))  # CCW: top-right -> top-left
    assert rot.shape == (3, 2, 3) and rot[0, 0, 0] == 255
    assert orientation_from_rotation(-90) == orientation_from_rotation(270)


# ------------------------------------------------------------------------------------------------ images


def _write_images(folder: Path, names: list[str]) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i, name in enumerate(names):
        img = np.full((24, 32, 3), (i * 20) % 256, np.uint8)
        img[0, 0] = (i, 2 * i, 3 * i)
        assert cv2.imwrite(str(folder / name), img)
        images.append(img)
    return images


def test_image_folder_natural_order_and_times(tmp_path: Path) -> None:
    names = [f"frame{i}.png" for i in (1, 2, 10, 3)]
    _write_images(tmp_path / "imgs", names)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    with open_source(tmp_path / "imgs", fps=10) as src:
        assert src.info.frame_count == 4 and (src.info.width, src.info.height) == (32, 24)
        assert src.info.fps == 10.0 and src.info.time_base == Fraction(1, 10)
        frames = list(src)
    order = [int(f.image[0, 0, 0]) for f in frames]  # i written into the pixel
    assert order == [0, 1, 3, 2]  # frame1, frame2, frame3, frame10
    assert [f.time for f in frames] == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_image_glob_and_single_image(tmp_path: Path) -> None:
    _write_images(tmp_path, ["a_001.jpg", "a_002.jpg", "b_001.png"])
    with open_source(str(tmp_path / "a_*.jpg")) as src:
        assert len(list(src)) == 2 and src.info.fps == 25.0
    with open_source(tmp_path / "b_001.png") as src:
        assert len(list(src)) == 1


def test_unreadable_image_is_skipped(tmp_path: Path) -> None:
    _write_images(tmp_path, ["f1.png", "f3.png"])
    (tmp_path / "f2.png").write_bytes(b"not a png")
    with open_source(tmp_path) as src:
        frames = list(src)
    assert len(frames) == 2 and [f.index for f in frames] == [0, 1] and src.warnings == 1


# ------------------------------------------------------------------------------------------------ errors


def _message(spec: object, **options: object) -> str:
    with pytest.raises(SourceError) as exc:
        open_source(spec, **options)  # type: ignore[arg-type]
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_error_missing_file(tmp_path: Path) -> None:
    assert _message(tmp_path / "nope.mp4") == f"no such file: {tmp_path / 'nope.mp4'}"


def test_error_not_a_video(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    assert _message(bad).startswith(f"cannot decode {bad}: ")


def test_error_no_video_stream(tmp_path: Path) -> None:
    wav = tmp_path / "sound.wav"
    with av.open(str(wav), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        s.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    assert _message(wav) == f"no video stream in {wav}"


def test_error_webcam_cannot_open() -> None:
    assert _message("webcam:97").startswith("cannot open webcam 97")


def test_error_empty_glob_and_folder(tmp_path: Path) -> None:
    assert _message(str(tmp_path / "*.png")) == f"no images match {tmp_path / '*.png'}"
    assert _message(tmp_path) == f"no images in folder {tmp_path}"


def test_error_unknown_option(tmp_path: Path, assets_dir: Path) -> None:
    assert "unknown option(s)" in _message(_asset(assets_dir, D0), width=3)


def test_synthetic_missing_gives_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sources._PLUGIN_MODULES, "synthetic", "stream._no_such_synthetic_module")
    monkeypatch.delitem(sources._REGISTRY, "synthetic", raising=False)
    assert "synthetic source is not available" in _message("synthetic:3")


def test_registry_factory_gets_argument_and_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = []
    _write_images(tmp_path, ["x1.png"])

    def factory(arg: str | None, **options: object) -> sources.Source:
        calls.append((arg, options))
        return sources.ImageSource(sources.list_images(str(tmp_path)), name="fake", fps=5)

    monkeypatch.setattr(sources, "_REGISTRY", dict(sources._REGISTRY))
    register_source("synthetic", factory)
    with open_source("synthetic:2.5", seed=1, fps=None) as src:
        assert src.info.name == "fake"
    with open_source("synthetic"):
        pass
    assert calls == [("2.5", {"seed": 1}), (None, {})]


# ------------------------------------------------------------------------------------------------ damaged files


def _packets(path: Path) -> list[tuple[int, int]]:
    with av.open(str(path)) as c:
        return [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]


def test_corrupt_packet_in_the_middle_is_skipped(tmp_path: Path, assets_dir: Path) -> None:
    src_path = _asset(assets_dir, D0)
    data = bytearray(src_path.read_bytes())
    pos, size = _packets(src_path)[30]  # a P-frame in the middle (d0 has one keyframe, at 0)
    data[pos:pos + size] = np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8).tobytes()
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(bytes(data))
    with open_source(bad) as src:
        frames = list(src)
    total = _container_frames(src_path)
    assert total - 3 <= len(frames) < total + 1
    assert src.warnings >= 1
    assert np.all(np.diff([f.time for f in frames]) > 0)


def test_truncated_file(tmp_path: Path, assets_dir: Path) -> None:
    src_path = _asset(assets_dir, D0)
    # d0.mp4 keeps its index (moov) at the end: a truncated copy cannot be opened at all
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(src_path.read_bytes()[: src_path.stat().st_size // 2])
    assert _message(cut).startswith(f"cannot decode {cut}: ")
    # with the index first (faststart remux), the frames before the cut decode and the loss is counted
    fast = tmp_path / "fast.mp4"
    with av.open(str(src_path)) as ic, av.open(str(fast), "w", options={"movflags": "+faststart"}) as oc:
        ost = oc.add_stream_from_template(ic.streams.video[0])
        for p in ic.demux(ic.streams.video[0]):
            if p.dts is not None:
                p.stream = ost
                oc.mux(p)
    trunc = tmp_path / "trunc.mp4"
    trunc.write_bytes(fast.read_bytes()[: fast.stat().st_size * 6 // 10])
    with open_source(trunc) as src:
        frames = list(src)
    assert 10 < len(frames) < src.info.frame_count - 1
    assert src.warnings >= 1


def test_video_file_source_class_direct(assets_dir: Path) -> None:
    with VideoFileSource(_asset(assets_dir, D0), max_frames=2, thread_type="SLICE") as src:
        assert [f.index for f in src] == [0, 1]


def test_file_named_like_a_source_kind(tmp_path: Path, assets_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bare name that looks like a registered kind is a file when such a file exists."""
    shutil.copy(_asset(assets_dir, D0), tmp_path / "webcam")
    monkeypatch.chdir(tmp_path)
    with open_source("webcam", max_frames=1) as src:
        assert src.info.name == "webcam"


# ------------------------------------------------------------------------------------------------ webcam (faked)


class _FakeCapture:
    """Stands in for cv2.VideoCapture: 4 frames, then a hiccup, then 2 more, then the camera is gone."""

    def __init__(self, device: object, *args: object) -> None:
        self.device = device
        self.props: dict[int, float] = {}
        self.script = [True] * 4 + [False] + [True] * 2
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.device == 3

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        return True

    def get(self, prop: int) -> float:
        return 0.0

    def read(self) -> tuple[bool, np.ndarray | None]:
        ok = self.script.pop(0) if self.script else False
        w, h = int(self.props.get(cv2.CAP_PROP_FRAME_WIDTH, 64)), int(self.props.get(cv2.CAP_PROP_FRAME_HEIGHT, 48))
        return (True, np.zeros((h, w, 3), np.uint8)) if ok else (False, None)

    def release(self) -> None:
        self.released = True


def test_webcam_source_with_fake_camera(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cv2, "VideoCapture", _FakeCapture)
    src = open_source("webcam:3", width=80, height=60, fps=15, max_failures=3)
    assert src.info.is_live and src.info.frame_count is None and src.info.name == "webcam:3"
    assert (src.info.width, src.info.height, src.info.fps) == (80, 60, 15.0)
    frames = list(src)
    assert [f.index for f in frames] == list(range(6))  # the hiccup is skipped, not an end
    assert frames[0].time == 0.0 and np.all(np.diff([f.time for f in frames]) >= 0)
    assert src.warnings >= 1
    src.close()
    assert src._cap.released
    with pytest.raises(SourceError, match="cannot open webcam 5"):
        open_source("webcam:5")
    with pytest.raises(SourceError, match="unknown option"):
        open_source("webcam:3", rotate=90)


def test_close_while_another_thread_reads(assets_dir: Path) -> None:
    import threading
    import time

    src = open_source(_asset(assets_dir, D0))
    got: list[int] = []

    def reader() -> None:
        while (frame := src.read()) is not None:
            got.append(frame.index)

    thread = threading.Thread(target=reader)
    thread.start()
    while not got:
        time.sleep(0.001)
    src.close()
    thread.join(timeout=10)
    assert not thread.is_alive() and got == list(range(len(got)))
