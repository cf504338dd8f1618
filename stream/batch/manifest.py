"""``DIR/manifest.jsonl``: one JSON line per input of a batch job, and what resuming reads from it.

While the job runs, each finished input's record is appended and flushed (a crash or Ctrl-C keeps every line
written); at the end the file is rewritten atomically with one line per input (the latest record wins, inputs of
earlier runs that this run did not name are kept). A record::

    {"input": "/abs/a/b.mp4", "rel": "a/b.mp4", "size": 123, "mtime": 1.7e9, "config": "3f2a...",
     "status": "done" | "failed" | "skipped", "error": null | "one line", "permanent": true,
     "frames": 250, "faces": 250, "tracks": 1, "fps": 48.1, "seconds": 5.3, "node": "host (10.0.0.2)",
     "worker": 1234, "attempts": 1, "outputs": {"tracks": "a/b.csv"}, "transfer": "shared", "finished": "...Z",
     "warning": null | "no face found in a/b.mp4 (250 frames)"}

A file with no face in any frame is ``done`` (its outputs hold no faces) with that ``warning``, as ``run`` says it.
``skipped`` records keep the figures of the run that produced the outputs, with ``"previous": "done"|"failed"``.
A ``failed`` record is ``permanent`` when the input itself is at fault (corrupt, no video stream): resuming
skips it too, unless ``batch.retry_failed``; a worker that died (killed, out of memory) is not permanent.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable

from stream.atomic import atomic_write_bytes
from stream.batch.inputs import InputFile
from stream.config import RunConfig, flatten

MANIFEST = "manifest.jsonl"
# Keys that do not change what a file's outputs contain (where they go, how the job runs, other commands' keys).
NOT_HASHED = {"source", "out", "tracks", "meshes", "show", "progress", "stats", "stats_every", "queue_size", "threads",
              "assets", "live"}
NOT_HASHED_SECTIONS = {"serve", "webcam", "synthetic"}
HASHED_BATCH = {"batch.tracks", "batch.out", "batch.meshes"}


def config_hash(cfg: RunConfig) -> str:
    """16 hex digits over the keys that shape a file's outputs (model, detection, tracking, mode, formats)."""
    items = {}
    for key, value in flatten(cfg.to_dict()):
        section = key.split(".")[0]
        if key in NOT_HASHED or section in NOT_HASHED_SECTIONS:
            continue
        if section == "batch" and key not in HASHED_BATCH:
            continue
        items[key] = value
    blob = json.dumps(items, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def effective_status(record: dict) -> str:
    """done / failed for a record (a skipped record stands for the run it skipped to)."""
    return record.get("previous", "done") if record.get("status") == "skipped" else record.get("status", "")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Manifest:
    """The manifest of one output folder: ``records`` (input -> latest record), ``append``, ``compact``."""

    def __init__(self, outdir: str | os.PathLike[str]) -> None:
        self.path = Path(outdir) / MANIFEST
        self.records: dict[str, dict] = {}
        self._order: list[str] = []
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a crash: the input is simply redone
                    continue
                if isinstance(rec, dict) and isinstance(rec.get("input"), str):
                    self._remember(rec)
        self._journal = None

    def _remember(self, rec: dict) -> None:
        if rec["input"] not in self.records:
            self._order.append(rec["input"])
        self.records[rec["input"]] = rec

    def finished_before(self, item: InputFile, chash: str, outdir: Path, retry_failed: bool) -> dict | None:
        """The earlier record that lets ``item`` be skipped (same size, mtime and config; its outputs present, or a
        permanent failure when not ``retry_failed``), else None."""
        rec = self.records.get(item.key)
        if rec is None or rec.get("size") != item.size or rec.get("config") != chash:
            return None
        if abs(float(rec.get("mtime", -1)) - item.mtime) > 1e-3:
            return None
        status = effective_status(rec)
        if status == "done":
            outs = (rec.get("outputs") or {}).values()
            return rec if all((outdir / o).exists() for o in outs) else None
        if status == "failed" and rec.get("permanent") and not retry_failed:
            return rec
        return None

    def append(self, rec: dict) -> None:
        """Record ``rec`` now: one line appended, flushed and synced."""
        self._remember(rec)
        if self._journal is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._journal = open(self.path, "a", encoding="utf-8")
        self._journal.write(json.dumps(rec, sort_keys=True) + "\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())

    def compact(self, first: Iterable[str] = ()) -> None:
        """Rewrite the file atomically: one line per input, ``first`` (this run's inputs) in their order, then the
        others in the order they were first recorded."""
        self.close()
        first = [k for k in first if k in self.records]
        rest = [k for k in self._order if k not in set(first)]
        lines = [json.dumps(self.records[k], sort_keys=True) + "\n" for k in first + rest]
        atomic_write_bytes(self.path, "".join(lines).encode())

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None


def base_record(item: InputFile, chash: str) -> dict[str, Any]:
    """The fields of a record that come from the input itself."""
    return {"input": item.key, "rel": item.rel, "size": item.size, "mtime": item.mtime, "config": chash}
