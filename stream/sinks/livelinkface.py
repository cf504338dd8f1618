"""Apple's Live Link Face CSV (``.llf.csv``): ``LiveLinkFaceSink`` and its reader ``load_livelinkface``."""
from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from model.blendshapes import ARKIT_NAMES, N_BLEND
from stream.atomic import AtomicPath
from tracking.face import Face


log = logging.getLogger("stream.sinks")  # one logger for every sink, as before the split

from stream.sinks.base import _RecordSink, _blend, _f


# Apple's Live Link Face app (Epic Games): the CSV of a recorded take, which Unreal's, Blender's and Maya's importers
# read. Its blendshape columns are ARKit's in the app's order (JawRight before JawLeft, MouthRight before MouthLeft),
# PascalCase, then the head and eye rotations; BlendShapeCount is 61 (52 + 9).
LLF_HEADER: tuple[str, ...] = (
    "Timecode", "BlendShapeCount", "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft",
    "EyeLookUpLeft", "EyeSquintLeft", "EyeWideLeft", "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight",
    "EyeLookOutRight", "EyeLookUpRight", "EyeSquintRight", "EyeWideRight", "JawForward", "JawRight", "JawLeft",
    "JawOpen", "MouthClose", "MouthFunnel", "MouthPucker", "MouthRight", "MouthLeft", "MouthSmileLeft",
    "MouthSmileRight", "MouthFrownLeft", "MouthFrownRight", "MouthDimpleLeft", "MouthDimpleRight",
    "MouthStretchLeft", "MouthStretchRight", "MouthRollLower", "MouthRollUpper", "MouthShrugLower",
    "MouthShrugUpper", "MouthPressLeft", "MouthPressRight", "MouthLowerDownLeft", "MouthLowerDownRight",
    "MouthUpperUpLeft", "MouthUpperUpRight", "BrowDownLeft", "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft",
    "BrowOuterUpRight", "CheekPuff", "CheekSquintLeft", "CheekSquintRight", "NoseSneerLeft", "NoseSneerRight",
    "TongueOut", "HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll", "RightEyeYaw",
    "RightEyePitch", "RightEyeRoll")
LLF_COUNT = 61
_LLF_BLEND = [ARKIT_NAMES.index(n[0].lower() + n[1:]) for n in LLF_HEADER[2:54]]  # LLF column -> ARKit index


def llf_timecode(t: float, rate: int) -> str:
    """Seconds -> the app's timecode ``HH:MM:SS:FF.mmm`` at ``rate`` frames per second (``FF`` the frame within the
    second, ``.mmm`` thousandths of a frame)."""
    sub = max(0, int(round(float(t) * rate * 1000)))
    frames, milli = divmod(sub, 1000)
    secs, ff = divmod(frames, rate)
    hh, rest = divmod(secs, 3600)
    mm, ss = divmod(rest, 60)
    return f"{hh:02d}:{mm:02d}:{ss:02d}:{ff:02d}.{milli:03d}"


def parse_llf_timecode(text: str, rate: int) -> float:
    """Inverse of :func:`llf_timecode`: ``HH:MM:SS:FF[.fff]`` -> seconds."""
    hh, mm, ss, ff = text.split(":")
    return int(hh) * 3600 + int(mm) * 60 + int(ss) + float(ff) / rate


class LiveLinkFaceSink(_RecordSink):
    """Live Link Face CSV (``--tracks-format livelinkface`` or a ``.llf.csv`` name): one row per frame of one face,
    the app's header (``LLF_HEADER``) and timecode (``llf_timecode`` of the frame's source time at ``rate`` =
    the source's frame rate, rounded), the 52 ARKit blendshapes in the app's column order, ``HeadYaw``,
    ``HeadPitch``, ``HeadRoll`` in radians (our yaw, pitch, roll: > 0 the subject turns to their right, looks down,
    tilts to their right) and the 6 eye rotations 0 (gaze is not estimated).

    The format holds one face: the file gets the track with the most frames (ties: the lowest id); the others are
    named in a warning. Rows are kept in memory (a few hundred bytes per frame) and written at close (temp +
    rename).
    """

    def __init__(self, path: str | os.PathLike[str], *, fps: float | None = None) -> None:
        super().__init__(path)
        self.rate = max(1, int(round(fps or 30.0)))
        self._tracks: dict[int, list[tuple[float, np.ndarray, np.ndarray]]] = {}
        self.rows_written = 0
        self.frames_written = 0
        self.track_id: int | None = None

    def write(self, frame_index: int, time: float, records: list[Face]) -> None:
        with self._lock:
            self._check_open()
            for r in records:
                b = _blend(r)
                pose = np.radians(np.asarray(r.pose, np.float64).reshape(-1)[:3])
                self._tracks.setdefault(int(r.track_id), []).append((float(time), np.nan_to_num(b), pose))
            self.frames_written += 1

    def _finish(self) -> Path | None:
        target = AtomicPath(self.path)
        rows = []
        if self._tracks:
            self.track_id = max(sorted(self._tracks), key=lambda k: len(self._tracks[k]))
            rows = self._tracks[self.track_id]
            others = sorted(set(self._tracks) - {self.track_id})
            if others:
                log.warning("%s: Live Link Face holds one face: wrote track %d, not track(s) %s", self.path.name,
                            self.track_id, ", ".join(map(str, others)))
        try:
            with open(target.tmp, "w", encoding="utf-8", newline="") as f:
                f.write(",".join(LLF_HEADER) + "\n")
                for t, b, pose in rows:
                    vals = _f(b[_LLF_BLEND], ".6f") + _f(pose, ".6f") + ["0"] * 6
                    f.write(f"{llf_timecode(t, self.rate)},{LLF_COUNT}," + ",".join(vals) + "\n")
            result = target.commit()
        except BaseException:
            target.abort()
            raise
        self.rows_written = len(rows)
        self._tracks.clear()
        return result

    def _discard(self) -> None:
        self._tracks.clear()


def load_livelinkface(path: str | os.PathLike[str], rate: int = 30) -> dict[str, Any]:
    """Read a Live Link Face CSV: ``{"header": [...], "timecode": [str], "seconds" (T,), "blendshapes" (T, 52) in
    ``ARKIT_NAMES`` order, "head" (T, 3) yaw, pitch, roll as written, "eyes" (T, 6)}`` (``rate``: the timecode's
    frames per second)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [r for r in reader if r]
    col = {n: i for i, n in enumerate(header)}
    vals = np.array([[float(r[col[n]]) for n in LLF_HEADER[2:]] for r in rows], np.float64).reshape(-1, 61)
    blend = np.zeros((len(rows), N_BLEND))
    blend[:, _LLF_BLEND] = vals[:, :52]
    return {"header": header, "timecode": [r[0] for r in rows],
            "seconds": np.array([parse_llf_timecode(r[0], rate) for r in rows]),
            "count": [int(r[1]) for r in rows], "blendshapes": blend, "head": vals[:, 52:55], "eyes": vals[:, 55:]}

