"""Output sinks: annotated video, per-face tracks (CSV / JSONL / NPZ) and dense meshes.

All sinks write under a hidden temporary name in the destination folder and rename on ``close()``
(:mod:`stream.atomic`): an interrupted run leaves complete files, never half ones. ``close()`` is idempotent and is
what the pipeline calls on Ctrl-C too, so closing after a partial run gives a valid file of the frames written so
far; ``abort()`` discards instead. Sinks are synchronous and thread-safe (a lock serialises write/close), meant to
be called from an executor thread.

Track sinks write one row per frame x track. A frame without faces (``records == []``) writes no row: a video
where nobody is visible gives a CSV with only the header, and "frames in == frames with rows" holds only for
frames where a face was present.

One module per kind: ``base`` (``SinkError``, close/abort), ``video``, ``tracks`` (CSV/JSONL/NPZ and
``load_tracks``), ``livelinkface``, ``meshes``. ``from stream.sinks import X`` keeps working for all of them.
"""
from stream.sinks.base import SinkError, _RecordSink, _Sink, os_reason, write_error  # noqa: F401
from stream.sinks.livelinkface import (LLF_COUNT, LLF_HEADER, LiveLinkFaceSink, llf_timecode,
                                       load_livelinkface, parse_llf_timecode)
from stream.sinks.meshes import MeshSink
from stream.sinks.tracks import (TRACK_FORMATS, TracksCSVSink, TracksJSONLSink, TracksNPZSink,
                                 TracksSink, load_tracks, open_tracks_sink, tracks_csv_header, tracks_format)
from stream.sinks.video import VideoSink

__all__ = [
    "SinkError", "VideoSink", "TracksCSVSink", "TracksJSONLSink", "TracksNPZSink", "TracksSink", "MeshSink",
    "open_tracks_sink", "load_tracks", "tracks_csv_header", "LiveLinkFaceSink", "load_livelinkface", "LLF_HEADER",
    "llf_timecode", "tracks_format", "TRACK_FORMATS", "LLF_COUNT", "parse_llf_timecode", "os_reason", "write_error",
]
