"""Track sinks (CSV, JSONL, NPZ; columns: docs/INTERFACES.md "Track files"), the format by name, and the reader
``load_tracks``."""
from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from model.blendshapes import ARKIT_NAMES, BLENDSHAPES_VERSION, ESTIMATED_MASK, N_BLEND
from model.expression_ext import EXT_NAMES, EXT_VERSION, N_EXT
from stream.atomic import AtomicPath
from stream.frames import POSE_NAMES
from tracking.face import Face


log = logging.getLogger("stream.sinks")  # one logger for every sink, as before the split

from stream.sinks.base import SinkError, _RecordSink, _blend, _confidence, _ext, _f, write_error
from stream.sinks.livelinkface import LiveLinkFaceSink

# --------------------------------------------------------------------------------------------------------------
# Tracks



def tracks_csv_header(include_params: bool = False, include_roi: bool = False) -> list[str]:
    """Column names: frame, time, track_id, box_x1..box_y2, pose (6), confidence, the extended expression
    (``EXT_NAMES``: eye_close_r, eye_close_l, mouth_corner_up_r, ..., jaw_open), the 52 ARKit blendshapes
    (``ARKIT_NAMES``: eyeBlinkLeft ... tongueOut), x0,y0,z0..x67,y67,z67 [, roi] [, p0..p61]. ``confidence``: the
    face confidence in [0, 1] (``Face.confidence``; nan when unknown); the extension's values are nan when the
    run had no expression stage; the blendshapes are nan when not computed (names not estimated are 0).

    The box columns carry a ``box_`` prefix: plain x1, y1, x2, y2 would collide with landmark 1 and 2 columns.
    """
    cols = ["frame", "time", "track_id", "box_x1", "box_y1", "box_x2", "box_y2", *POSE_NAMES, "confidence",
            *EXT_NAMES, *ARKIT_NAMES]
    cols += [f"{a}{i}" for i in range(68) for a in "xyz"]
    if include_roi:
        cols += ["roi_x1", "roi_y1", "roi_x2", "roi_y2"]
    if include_params:
        cols += [f"p{i}" for i in range(62)]
    return cols


class _TextTracksSink(_RecordSink):
    """Line-oriented track file, flushed after every frame so it is complete up to the last frame written."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        try:
            self._target = AtomicPath(self.path)
            self._file = open(self._target.tmp, "w", encoding="utf-8", newline="")
        except OSError as e:
            raise write_error(self.path, e) from e
        self.rows_written = 0
        self.frames_written = 0

    def _put(self, text: str) -> None:
        """Write and flush ``text``; a failure discards the file and raises SinkError (see ``_failed``)."""
        try:
            self._file.write(text)
            self._file.flush()
        except OSError as exc:
            raise self._failed(exc) from exc

    def write(self, frame_index: int, time: float, records: list[Face]) -> None:
        """Write the faces of one frame (an empty list writes nothing) and flush."""
        with self._lock:
            self._check_open()
            if records:
                self._put("".join(self._row(frame_index, time, r) for r in records))
                self.rows_written += len(records)
            self.frames_written += 1

    def _row(self, frame_index: int, time: float, record: Face) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _finish(self) -> Path | None:
        self._file.close()
        return self._target.commit()

    def _discard(self) -> None:
        try:
            self._file.close()
        except Exception:
            pass
        self._target.abort()


class TracksCSVSink(_TextTracksSink):
    """CSV, one row per frame x track; columns :func:`tracks_csv_header`.

    Params are not in the CSV by default (62 opaque numbers; the NPZ and JSONL have them): pass
    ``include_params=True`` to append ``p0..p61`` (and ``include_roi=True`` for the crop ROI).
    Pixels with 3 decimals, time with 6, pose and params with 7 significant digits.
    """

    def __init__(self, path: str | os.PathLike[str], *, include_params: bool = False, include_roi: bool = False):
        super().__init__(path)
        self.include_params = include_params
        self.include_roi = include_roi
        self.columns = tracks_csv_header(include_params, include_roi)
        self._put(",".join(self.columns) + "\n")

    def _row(self, frame_index: int, time: float, r: Face) -> str:
        parts = [str(int(frame_index)), format(float(time), ".6f"), str(int(r.track_id))]
        parts += _f(np.ravel(r.box)[:4], ".3f")
        parts += _f(np.ravel(r.pose)[:6], ".7g")
        parts.append(format(_confidence(r), ".4f"))
        parts += _f(_ext(r), ".4f")
        parts += _f(_blend(r), ".4f")
        parts += _f(np.ravel(np.asarray(r.landmarks)[:68, :3]), ".3f")
        if self.include_roi:
            parts += _f(np.ravel(r.roi)[:4], ".3f")
        if self.include_params:
            parts += _f(np.ravel(r.params)[:62], ".7g")
        return ",".join(parts) + "\n"


class TracksJSONLSink(_TextTracksSink):
    """JSON Lines, one object per frame x track::

        {"frame": 0, "time": 0.0, "track_id": 1, "box": [4], "roi": [4],
         "pose": {"yaw": .., "pitch": .., "roll": .., "scale": .., "tx": .., "ty": ..}, "confidence": 0.97,
         "ext": {"eye_close_r": .., ..., "lips_part": ..}, "ext_version": "ext-v2",
         "blendshapes": {"eyeBlinkLeft": .., ..., "tongueOut": 0.0}, "blendshapes_version": "arkit-v6",
         "landmarks": [[x, y, z] x 68], "params": [62]}

    ``confidence`` is null when unknown; ``ext`` (the extended expression, ``model.expression_ext``) is null when
    the run had no expression stage; ``blendshapes`` (the 52 ARKit coefficients, ``model.blendshapes``) null when
    not computed.
    """

    def _row(self, frame_index: int, time: float, r: Face) -> str:
        def px(a: Any) -> list[float]:
            return [round(float(v), 3) for v in np.ravel(a)]

        def sig(a: Any) -> list[float]:
            return [float(format(float(v), ".7g")) for v in np.ravel(a)]

        obj = {
            "frame": int(frame_index),
            "time": round(float(time), 6),
            "track_id": int(r.track_id),
            "box": px(r.box),
            "roi": px(r.roi),
            "pose": dict(zip(POSE_NAMES, sig(r.pose))),
            "confidence": None if r.confidence is None else round(float(r.confidence), 4),
            "ext": None if r.ext is None else {k: round(float(v), 4) for k, v in zip(EXT_NAMES, np.ravel(r.ext))},
            "ext_version": EXT_VERSION,
            "blendshapes": None if r.blendshape_values is None else
            {k: round(float(v), 4) for k, v in zip(ARKIT_NAMES, np.ravel(r.blendshape_values))},
            "blendshapes_version": BLENDSHAPES_VERSION,
            "landmarks": [px(p) for p in np.asarray(r.landmarks)[:, :3]],
            "params": sig(r.params),
        }
        return json.dumps(obj, separators=(",", ":"), allow_nan=True) + "\n"


_NPZ_KEYS = ("frames", "times", "landmarks", "params", "pose", "boxes", "rois", "confidence", "ext", "blendshapes")





class TracksNPZSink(_RecordSink):
    """NPZ with arrays per track, written at close (temp + rename)::

        track_ids (K,) int64
        track{ID}_frames (T,) int64, _times (T,) float64, _landmarks (T,68,3) float32, _params (T,62) float32,
        _pose (T,6) float32, _boxes (T,4) float32, _rois (T,4) float32, _confidence (T,) float32 (nan: unknown),
        _ext (T,N_EXT) float32 (the extended expression; nan: no expression stage),
        _blendshapes (T,52) float32 (the ARKit coefficients; nan: not computed)
        ext_names (N_EXT,) str, ext_version () str, blendshape_names (52,) str, blendshape_estimated (52,) bool,
        blendshapes_version () str
    """

    def __init__(self, path: str | os.PathLike[str], *, compress: bool = False) -> None:
        super().__init__(path)
        self.compress = compress
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_error(self.path, e) from e
        self._tracks: dict[int, dict[str, list[Any]]] = {}
        self.rows_written = 0
        self.frames_written = 0

    def write(self, frame_index: int, time: float, records: list[Face]) -> None:
        """Buffer the faces of one frame (an empty list adds nothing)."""
        with self._lock:
            self._check_open()
            for r in records:
                t = self._tracks.setdefault(int(r.track_id), {k: [] for k in _NPZ_KEYS})
                t["frames"].append(int(frame_index))
                t["times"].append(float(time))
                t["landmarks"].append(np.asarray(r.landmarks, np.float32)[:, :3])
                t["params"].append(np.asarray(r.params, np.float32).reshape(-1))
                t["pose"].append(np.asarray(r.pose, np.float32).reshape(-1))
                t["boxes"].append(np.asarray(r.box, np.float32).reshape(-1))
                t["rois"].append(np.asarray(r.roi, np.float32).reshape(-1))
                t["confidence"].append(_confidence(r))
                t["ext"].append(_ext(r))
                t["blendshapes"].append(_blend(r))
            self.rows_written += len(records)
            self.frames_written += 1

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays the NPZ will hold (see class docstring)."""
        out: dict[str, np.ndarray] = {"track_ids": np.array(sorted(self._tracks), dtype=np.int64),
                                      "ext_names": np.array(EXT_NAMES), "ext_version": np.array(EXT_VERSION),
                                      "blendshape_names": np.array(ARKIT_NAMES),
                                      "blendshape_estimated": ESTIMATED_MASK.copy(),
                                      "blendshapes_version": np.array(BLENDSHAPES_VERSION)}
        shapes = {"landmarks": (68, 3), "params": (62,), "pose": (6,), "boxes": (4,), "rois": (4,), "confidence": (),
                  "ext": (N_EXT,), "blendshapes": (N_BLEND,)}
        for tid in sorted(self._tracks):
            t = self._tracks[tid]
            out[f"track{tid}_frames"] = np.asarray(t["frames"], np.int64)
            out[f"track{tid}_times"] = np.asarray(t["times"], np.float64)
            for key, shape in shapes.items():
                stacked = np.stack(t[key]).astype(np.float32) if t[key] else np.zeros((0, *shape), np.float32)
                out[f"track{tid}_{key}"] = stacked
        return out

    def _finish(self) -> Path | None:
        target = AtomicPath(self.path)
        try:
            with open(target.tmp, "wb") as f:
                (np.savez_compressed if self.compress else np.savez)(f, **self.arrays())
            result = target.commit()
        except BaseException:
            target.abort()
            raise
        self._tracks.clear()
        return result

    def _discard(self) -> None:
        self._tracks.clear()



TracksSink = TracksCSVSink | TracksJSONLSink | TracksNPZSink | LiveLinkFaceSink

_TRACK_FORMATS = {".csv": TracksCSVSink, ".jsonl": TracksJSONLSink, ".ndjson": TracksJSONLSink, ".npz": TracksNPZSink}
TRACK_FORMATS = ("auto", "csv", "jsonl", "npz", "livelinkface")


def tracks_format(path: str | os.PathLike[str], fmt: str = "auto") -> str:
    """The format a tracks path is written in: ``fmt`` unless "auto", then by name (``.llf.csv``: livelinkface,
    ``.csv``, ``.jsonl``/``.ndjson``, ``.npz``). SinkError for a name no format takes."""
    if fmt != "auto":
        if fmt not in TRACK_FORMATS:
            raise SinkError(f"unknown tracks format {fmt!r}: use one of {', '.join(TRACK_FORMATS)}")
        return fmt
    name = Path(path).name.lower()
    if name.endswith(".llf.csv"):
        return "livelinkface"
    suffix = Path(path).suffix.lower()
    if suffix not in _TRACK_FORMATS:
        raise SinkError(f"cannot write tracks to {path}: use a .csv, .llf.csv, .jsonl or .npz file name "
                        "(or --tracks-format)")
    return {".ndjson": "jsonl"}.get(suffix, suffix[1:])


def open_tracks_sink(path: str | os.PathLike[str], fmt: str = "auto", fps: float | None = None,
                     **options: Any) -> TracksSink:
    """Track sink of ``fmt`` (``tracks_format``: by extension when "auto"); ``fps`` (the source's rate) sets the
    Live Link Face timecode; other options go to the sink's constructor."""
    kind = tracks_format(path, fmt)
    if kind == "livelinkface":
        return LiveLinkFaceSink(path, fps=fps)
    cls = {"csv": TracksCSVSink, "jsonl": TracksJSONLSink, "npz": TracksNPZSink}[kind]
    return cls(path, **options)


def _current_ext(ext: np.ndarray, names: list[str]) -> np.ndarray:
    """(T, len(names)) ext columns named ``names`` (a file's version) -> (T, N_EXT) in ``EXT_NAMES`` order, the
    components the file lacks 0 (nan on nan rows: no expression stage)."""
    if names == list(EXT_NAMES):
        return ext
    out = np.zeros((len(ext), N_EXT), ext.dtype)
    out[~np.isfinite(ext[:, 0])] = np.nan
    for j, k in enumerate(EXT_NAMES):
        if k in names:
            out[:, j] = ext[:, names.index(k)]
    return out


def load_tracks(path: str | os.PathLike[str]) -> dict[int, dict[str, np.ndarray]]:
    """Read a tracks file written by any track sink: ``{track_id: {"frames", "times", "boxes", "pose",
    "landmarks", ["params"], ["rois"], ["confidence"], ["ext"], ["blendshapes"]}}`` with the NPZ shapes. CSV has
    params/rois only when written with them; files written before the confidence column have no ``confidence``,
    before the extended expression no ``ext``, before the ARKit blendshapes no ``blendshapes``. ``ext`` always has
    today's ``EXT_NAMES`` columns: an older version's file (``ext-v1``: no ``lips_part``) reads its missing components
    as 0, what that version decoded. A Live Link Face CSV (``.llf.csv``, :func:`load_livelinkface`) has its own
    reader."""
    path = Path(path)
    suffix = path.suffix.lower()
    out: dict[int, dict[str, np.ndarray]] = {}
    if suffix == ".npz":
        with np.load(path) as z:
            names = [str(n) for n in z["ext_names"]] if "ext_names" in z else list(EXT_NAMES)
            for tid in z["track_ids"].tolist():
                out[int(tid)] = {k: z[f"track{tid}_{k}"] for k in _NPZ_KEYS if f"track{tid}_{k}" in z}
                if "ext" in out[int(tid)]:
                    out[int(tid)]["ext"] = _current_ext(out[int(tid)]["ext"], names)
        return out
    rows: dict[int, dict[str, list[Any]]] = {}
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader)
            col = {name: i for i, name in enumerate(header)}
            lm_idx = [col[f"{a}{i}"] for i in range(68) for a in "xyz"]
            ext_names = [k for k in EXT_NAMES if k in col]  # the file's version's components (_current_ext fills in)
            ext_idx = [col[k] for k in ext_names]
            for row in reader:
                vals = np.array(row, dtype=np.float64)
                t = rows.setdefault(int(vals[col["track_id"]]), {})
                t.setdefault("frames", []).append(int(vals[col["frame"]]))
                t.setdefault("times", []).append(vals[col["time"]])
                t.setdefault("boxes", []).append(vals[[col[f"box_{c}"] for c in ("x1", "y1", "x2", "y2")]])
                t.setdefault("pose", []).append(vals[[col[c] for c in POSE_NAMES]])
                t.setdefault("landmarks", []).append(vals[lm_idx].reshape(68, 3))
                if "confidence" in col:
                    t.setdefault("confidence", []).append(vals[col["confidence"]])
                if EXT_NAMES[0] in col:
                    t.setdefault("ext", []).append(vals[ext_idx])
                if ARKIT_NAMES[0] in col:
                    t.setdefault("blendshapes", []).append(vals[[col[k] for k in ARKIT_NAMES]])
                if "roi_x1" in col:
                    t.setdefault("rois", []).append(vals[[col[f"roi_{c}"] for c in ("x1", "y1", "x2", "y2")]])
                if "p0" in col:
                    t.setdefault("params", []).append(vals[[col[f"p{i}"] for i in range(62)]])
    elif suffix in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                o = json.loads(line)
                t = rows.setdefault(int(o["track_id"]), {})
                t.setdefault("frames", []).append(int(o["frame"]))
                t.setdefault("times", []).append(o["time"])
                t.setdefault("boxes", []).append(o["box"])
                t.setdefault("rois", []).append(o["roi"])
                t.setdefault("pose", []).append([o["pose"][k] for k in POSE_NAMES])
                t.setdefault("landmarks", []).append(o["landmarks"])
                t.setdefault("params", []).append(o["params"])
                if "confidence" in o:
                    t.setdefault("confidence", []).append(np.nan if o["confidence"] is None else o["confidence"])
                if "ext" in o:
                    t.setdefault("ext", []).append([np.nan] * N_EXT if o["ext"] is None else
                                                   [o["ext"].get(k, 0.0) for k in EXT_NAMES])
                if "blendshapes" in o:
                    t.setdefault("blendshapes", []).append([np.nan] * N_BLEND if o["blendshapes"] is None else
                                                           [o["blendshapes"][k] for k in ARKIT_NAMES])
    else:
        raise SinkError(f"cannot read tracks from {path}: use a .csv, .jsonl or .npz file")
    for tid, t in rows.items():
        out[tid] = {k: np.asarray(v, np.int64 if k == "frames" else np.float64 if k == "times" else np.float32)
                    for k, v in t.items()}
        if suffix == ".csv" and "ext" in out[tid]:
            out[tid]["ext"] = _current_ext(out[tid]["ext"], ext_names)
    return out


