"""Output videos keep the source's sound (issue 24): copied where the container takes the codec, else re-encoded, in
sync with the pictures (a tone that starts at 0.5 s starts there in the output), cut where the video ends; dropped
with ``--no-audio``; a source without sound gives a video without. Through ``VideoSink``, the ``run`` command and a
batch worker."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from stream.frames import AudioTrack
from stream.sinks import VideoSink
from stream.sources import open_source
from tests.audio_clips import make_clip, sound_of

WEIGHTS = ["--weights", "3ddfa-v2-mb05", "--progress", "false"]


def _copy(src_path: Path, out: Path, max_frames: int | None = None, audio: bool = True) -> VideoSink:
    """The source's frames (all, or the first ``max_frames``) into ``out`` through VideoSink."""
    with open_source(str(src_path), max_frames=max_frames) as src:
        sink = VideoSink(out, src.info, audio=src.info.audio if audio else None)
        for f in src:
            sink.write(f.index, f.time, f.image)
        sink.close()
    return sink


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("audio") / "talk.mp4")


def _in_sync(facts: dict, onset: float = 0.5) -> None:
    assert abs(facts["seconds"] - facts["video_seconds"]) < 0.1, facts  # the sound lasts as long as the video
    assert facts["onset"] is not None and abs(facts["onset"] - onset) < 0.03, facts  # and is where it was


def test_source_reports_its_audio(clip: Path, tmp_path: Path) -> None:
    with open_source(str(clip)) as src:
        assert src.info.audio == AudioTrack(path=str(clip), index=0, start=0.0, codec="aac")
    with open_source(str(make_clip(tmp_path / "mute.mp4", audio=None))) as src:
        assert src.info.audio is None


def test_mp4_copies_the_sound_in_sync(clip: Path, tmp_path: Path) -> None:
    sink = _copy(clip, tmp_path / "o.mp4")
    assert (sink.audio_codec, sink.audio_copied) == ("aac", True)
    facts = sound_of(tmp_path / "o.mp4")
    assert facts["codec"] == "aac"
    _in_sync(facts)


def test_webm_reencodes_the_sound_it_cannot_copy(clip: Path, tmp_path: Path) -> None:
    sink = _copy(clip, tmp_path / "o.webm")  # WebM takes Opus or Vorbis, not AAC
    assert sink.audio_copied is False and "opus" in sink.audio_codec
    facts = sound_of(tmp_path / "o.webm")
    assert facts["codec"] == "opus"
    _in_sync(facts)


def test_sound_follows_a_video_that_starts_late(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "late.mp4", video_start=0.4)  # sound from 0, pictures from 0.4 s: the tone at 0.1 s
    _copy(src, tmp_path / "o.mp4")
    _in_sync(sound_of(tmp_path / "o.mp4"), onset=0.1)


def test_a_run_stopped_early_keeps_the_sound_of_its_frames(clip: Path, tmp_path: Path) -> None:
    _copy(clip, tmp_path / "o.mp4", max_frames=25)  # 1 s of 2
    facts = sound_of(tmp_path / "o.mp4")
    assert abs(facts["video_seconds"] - 1.0) < 0.05
    _in_sync(facts)


def test_unreadable_sound_gives_a_silent_video_and_a_warning(clip: Path, tmp_path: Path, caplog) -> None:
    with open_source(str(clip)) as src, caplog.at_level(logging.WARNING):
        sink = VideoSink(tmp_path / "o.mp4", src.info, audio=AudioTrack(str(tmp_path / "gone.mp4")))
        for f in src:
            sink.write(f.index, f.time, f.image)
        sink.close()
    assert sink.audio_codec is None and sound_of(tmp_path / "o.mp4")["codec"] is None
    assert "without sound" in caplog.text


def test_run_out_keeps_the_sound_and_no_audio_drops_it(clip: Path, tmp_path: Path) -> None:
    from stream.cli import main

    mute = make_clip(tmp_path / "mute.mp4", audio=None)
    assert main(["--source", str(clip), "--out", str(tmp_path / "overlay.mp4"), *WEIGHTS]) == 0
    _in_sync(sound_of(tmp_path / "overlay.mp4"))
    assert main(["--source", str(clip), "--out", str(tmp_path / "silent.mp4"), "--no-audio", *WEIGHTS]) == 0
    assert main(["--source", str(mute), "--out", str(tmp_path / "mute_out.mp4"), *WEIGHTS]) == 0
    for name in ("silent.mp4", "mute_out.mp4"):
        facts = sound_of(tmp_path / name)
        assert facts["codec"] is None and abs(facts["video_seconds"] - 2.0) < 0.05, (name, facts)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mute.mp4", "mute_out.mp4", "overlay.mp4", "silent.mp4"]


def test_batch_worker_keeps_the_sound(clip: Path, tmp_path: Path) -> None:
    from stream.batch.actor import BatchWorker
    from stream.batch.inputs import resolve_inputs
    from stream.config import load_config

    cfg = load_config(None, {"weights": "3ddfa-v2-mb05", "progress": False, "batch.out": "mp4",
                             "batch.tracks": "none", "batch.outdir": str(tmp_path / "out")})
    worker = BatchWorker(cfg, str(tmp_path / "out"), "shared", gpu=False, cpus=1)
    face_clip = tmp_path / "face.mp4"  # a file without a face fails in batch: give it one
    _with_face(clip, face_clip)
    (item,) = resolve_inputs([str(face_clip)])
    record = asyncio.run(worker.process(item))
    assert record["status"] == "done", record
    _in_sync(sound_of(tmp_path / "out" / record["outputs"]["out"]))


def _with_face(clip: Path, out: Path) -> None:
    """``clip``'s sound under the synthetic face's pictures (same length and rate)."""
    with open_source("synthetic", seconds=2.0, fps=25, width=320, height=240) as faces, \
            open_source(str(clip)) as src:
        sink = VideoSink(out, src.info, audio=src.info.audio)
        for f in faces:
            sink.write(f.index, f.time, f.image)
        sink.close()
