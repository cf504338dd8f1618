"""Live Link Face CSV (``--tracks-format livelinkface`` / ``.llf.csv``): the app's published header, one row per frame
with a monotonic timecode, head rotation in its head columns, read back equal."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from model.blendshapes import ARKIT_NAMES, ESTIMATED_MASK
from stream.frames import Frame
from tracking.face import Face
from stream.sinks import (LiveLinkFaceSink, SinkError, llf_timecode, load_livelinkface, open_tracks_sink,
                          parse_llf_timecode, tracks_format)

# The first line of a take exported by Epic's Live Link Face app (the layout its CSV importers for Unreal, Blender and
# Maya read): 2 + 52 blendshapes in the app's order + 9 rotations; BlendShapeCount = 61.
PUBLISHED_HEADER = (
    "Timecode,BlendShapeCount,EyeBlinkLeft,EyeLookDownLeft,EyeLookInLeft,EyeLookOutLeft,EyeLookUpLeft,EyeSquintLeft,"
    "EyeWideLeft,EyeBlinkRight,EyeLookDownRight,EyeLookInRight,EyeLookOutRight,EyeLookUpRight,EyeSquintRight,"
    "EyeWideRight,JawForward,JawRight,JawLeft,JawOpen,MouthClose,MouthFunnel,MouthPucker,MouthRight,MouthLeft,"
    "MouthSmileLeft,MouthSmileRight,MouthFrownLeft,MouthFrownRight,MouthDimpleLeft,MouthDimpleRight,MouthStretchLeft,"
    "MouthStretchRight,MouthRollLower,MouthRollUpper,MouthShrugLower,MouthShrugUpper,MouthPressLeft,MouthPressRight,"
    "MouthLowerDownLeft,MouthLowerDownRight,MouthUpperUpLeft,MouthUpperUpRight,BrowDownLeft,BrowDownRight,"
    "BrowInnerUp,BrowOuterUpLeft,BrowOuterUpRight,CheekPuff,CheekSquintLeft,CheekSquintRight,NoseSneerLeft,"
    "NoseSneerRight,TongueOut,HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,"
    "RightEyePitch,RightEyeRoll")


def _record(frame: int, track: int, rng: np.random.Generator) -> Face:
    return Face(frame=frame, time=frame / 25.0, track_id=track, box=np.zeros(4, np.float32),
                      roi=np.zeros(4, np.float32),
                      pose=np.array([rng.uniform(-40, 40), rng.uniform(-20, 20), rng.uniform(-10, 10), 6e-4, 60, 60],
                                    np.float32),
                      landmarks=np.zeros((68, 3), np.float32), params=np.zeros(62, np.float32),
                      blendshape_values=(rng.uniform(0, 1, 52) * ESTIMATED_MASK).astype(np.float32))


def test_timecode() -> None:
    assert llf_timecode(0.0, 30) == "00:00:00:00.000"
    assert llf_timecode(1.5, 30) == "00:00:01:15.000"
    assert llf_timecode(3661.02, 25) == "01:01:01:00.500"
    assert llf_timecode(1 / 60, 30) == "00:00:00:00.500"
    assert parse_llf_timecode("01:01:01:00.500", 25) == pytest.approx(3661.02)
    t = np.sort(np.random.default_rng(0).uniform(0, 7200, 2000))
    codes = [llf_timecode(x, 60) for x in t]
    np.testing.assert_allclose([parse_llf_timecode(c, 60) for c in codes], t, atol=1 / 60 / 1000)
    assert codes == sorted(codes)  # fixed width: text order is time order


def test_header_rows_timecode_and_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "take.llf.csv"
    sink = open_tracks_sink(path, fps=25.0)
    assert isinstance(sink, LiveLinkFaceSink)
    rng = np.random.default_rng(1)
    written = []
    for f in range(40):
        recs = [_record(f, 1, rng)]
        if 10 <= f < 15:
            recs.append(_record(f, 2, rng))  # a second face for a few frames: the format holds one
        if f != 20:  # frame 20: nobody
            written.append(recs[0])
            sink.write(f, f / 25.0, recs)
        else:
            sink.write(f, f / 25.0, [])
    sink.close()
    lines = path.read_text().splitlines()
    assert lines[0] == PUBLISHED_HEADER
    assert len(lines) == 1 + len(written)  # one row per frame of the face
    got = load_livelinkface(path, rate=25)
    assert got["header"] == PUBLISHED_HEADER.split(",")
    assert got["count"] == [61] * len(written)
    assert np.all(np.diff(got["seconds"]) > 0) and got["timecode"] == sorted(got["timecode"])
    np.testing.assert_allclose(got["seconds"], [r.time for r in written], atol=1e-6)
    np.testing.assert_allclose(got["blendshapes"], np.stack([r.blendshape_values for r in written]), atol=1e-6)
    np.testing.assert_allclose(got["head"], np.radians(np.stack([r.pose[:3] for r in written])), atol=1e-6)
    assert np.all(got["eyes"] == 0)
    assert sink.track_id == 1
    # the app's names are ARKit's with a capital: every column maps to the same coefficient by name
    for name in ("eyeBlinkLeft", "jawRight", "mouthLeft", "tongueOut"):
        col = PUBLISHED_HEADER.split(",").index(name[0].upper() + name[1:])
        np.testing.assert_allclose([float(l.split(",")[col]) for l in lines[1:]],
                                   [r.blendshape_values[ARKIT_NAMES.index(name)] for r in written], atol=1e-6)


def test_format_chosen_by_name_or_flag(tmp_path: Path) -> None:
    from stream.cli import parse
    from stream.outputs import TracksOut

    assert tracks_format("a.llf.csv") == "livelinkface" and tracks_format("a.csv") == "csv"
    assert tracks_format("a.csv", "livelinkface") == "livelinkface" and tracks_format("a.ndjson") == "jsonl"
    with pytest.raises(SinkError):
        tracks_format("a.txt")
    cfg = parse(["--tracks", "out.csv", "--tracks-format", "livelinkface"])[1]
    assert cfg.tracks_format == "livelinkface"
    out = TracksOut(str(tmp_path / "out.csv"), params=True, fmt=cfg.tracks_format, fps=30)
    rng = np.random.default_rng(2)
    for f in range(3):
        frame = Frame(index=f, time=f / 30, image=np.zeros((2, 2, 3), np.uint8))
        out.write_job(SimpleNamespace(frame=frame, faces=[_record(f, 5, rng)], output=None))
    out.close()
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0] == PUBLISHED_HEADER and len(lines) == 4
    assert lines[2].startswith("00:00:00:01.000,61,")
    from stream.batch.inputs import output_names

    assert output_names("a/b.mp4", "livelinkface", None, False)["tracks"] == "a/b.llf.csv"


def test_no_face_gives_a_header_only_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.llf.csv"
    with open_tracks_sink(path) as sink:
        sink.write(0, 0.0, [])
    assert path.read_text().splitlines() == [PUBLISHED_HEADER]
