"""The batch worker: a Ray actor that loads the aligner and detector once and runs whole files through ``run``'s
pipeline (``stream.app.open_run_stages`` + ``stream.pipeline.Pipeline``), so a file's outputs are what ``run``
writes for it.

Each file is written into a staging folder (``DIR/.batch-tmp/<id>/`` with a shared filesystem, a local temporary
folder otherwise) by the usual atomic sinks; only a finished file's outputs are moved to their final names
(``os.replace``, one rename per output), so a worker killed mid-file leaves nothing under a final name. In
``object_store`` mode the input arrives as bytes and the outputs go back to the driver as bytes.

The actor is asynchronous: with ``max_concurrency`` K it runs K files at once in one event loop, and their crops
meet in the one ``AlignService`` of the actor, which batches them into one forward pass (the GPU set-up).
"""
from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from stream.batch.inputs import InputFile, output_names
from stream.config import RunConfig

STAGING = ".batch-tmp"


def place_outputs(staging: Path, outdir: Path, names: dict[str, str]) -> None:
    """Move each finished output from ``staging`` to ``outdir`` under the same relative name (an earlier version is
    replaced; a folder output, the meshes, is swapped in with two renames)."""
    for rel in names.values():
        src, dst = staging / rel, outdir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            old = None
            if dst.exists():
                old = staging / f".old-{uuid.uuid4().hex}"
                os.replace(dst, old)
            os.replace(src, dst)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(src, dst)


def read_outputs(staging: Path, names: dict[str, str]) -> dict[str, bytes]:
    """The finished outputs as {relative path: bytes} (a folder output as its files), for the object store."""
    files: dict[str, bytes] = {}
    for rel in names.values():
        src = staging / rel
        if src.is_dir():
            for f in sorted(src.rglob("*")):
                if f.is_file():
                    files[f.relative_to(staging).as_posix()] = f.read_bytes()
        elif src.is_file():
            files[rel] = src.read_bytes()
    return files


def node_name() -> str:
    """``hostname (ip)`` of this machine."""
    try:
        import ray.util

        ip = ray.util.get_node_ip_address()
    except Exception:  # not inside Ray
        ip = "?"
    return f"{socket.gethostname()} ({ip})"


class FileFailed(Exception):
    """A file that cannot be processed for a reason of its own (corrupt, no video stream): one line."""


class BatchWorker:
    """Holds one Engine (aligner + detector + AlignService) and processes files with ``process``.

    ``cfg`` is the validated job configuration, ``outdir`` the absolute output folder, ``transfer`` "shared" or
    "object_store", ``gpu`` whether Ray gave this actor a GPU share.
    """

    def __init__(self, cfg: RunConfig, outdir: str, transfer: str, gpu: bool, cpus: float) -> None:
        from stream.assemble import build_engine, load_swap_texture

        if not gpu and cfg.device == "auto":
            cfg = cfg.replace(device="cpu")  # a CPU actor on a GPU node leaves the GPU to the GPU actors
        if not cfg.threads:
            cfg = cfg.replace(threads=max(1, int(round(cpus))))  # as many torch/ORT threads as Ray reserved cores
        self.cfg = cfg
        self.outdir = Path(outdir)
        self.transfer = transfer
        self.engine = build_engine(cfg)
        self.names_kw = {"tracks": cfg.batch.tracks, "video": cfg.batch.out,
                         "meshes": bool(cfg.batch.meshes)}
        self.texture = None
        if cfg.mode == "swap" and self.names_kw["video"]:
            if not cfg.swap_source:
                from stream.assemble import UserError

                raise UserError("--mode swap needs --swap-source IMAGE")
            self.texture = load_swap_texture(cfg.swap_source, self.engine)
        self.node = node_name()
        self.files_done = 0

    def ready(self) -> dict[str, Any]:
        """What this worker loaded and where it runs."""
        al = self.engine.aligner
        return {"node": self.node, "pid": os.getpid(), "model": al.name, "device": str(al.device),
                "fast_path": al.fast_path, "detector": self.engine.detector.kind}

    def pid(self) -> int:
        return os.getpid()

    async def process(self, item: InputFile, data: bytes | None = None) -> dict[str, Any]:
        """Run one file; returns its manifest fields (status done/failed, figures, outputs) and, in object-store
        mode, ``files`` {relative path: bytes}. Never raises for a bad file: the failure is in the result."""
        import asyncio

        t0 = time.perf_counter()
        names = output_names(item.rel, **self.names_kw)
        if self.transfer == "shared":
            staging = self.outdir / STAGING / uuid.uuid4().hex
            staging.mkdir(parents=True)
        else:
            staging = Path(tempfile.mkdtemp(prefix="damdnet-batch-"))
        counts = {"frames": 0, "faces": 0, "tracks": set()}
        result: dict[str, Any] = {"input": item.key, "node": self.node, "worker": os.getpid(), "outputs": names,
                                  "transfer": self.transfer}
        try:
            import ray

            if ray.is_initialized():  # outside Ray (a worker run in-process) asking would start a local Ray
                result["worker_restarted"] = bool(ray.get_runtime_context().was_current_actor_reconstructed)
        except Exception:
            pass
        src_path = item.path
        try:
            if data is not None:
                src_path = str(staging / f"input{Path(item.rel).suffix}")
                Path(src_path).write_bytes(data)
            try:
                await self._run_file(src_path, staging, names, counts)
            except FileFailed as exc:
                raise FileFailed(str(exc).replace(src_path, item.rel)) from None
            if counts["frames"] == 0:
                raise FileFailed(f"{item.rel}: no frame could be decoded")
            # no face in any frame is not a failure (as in run): the outputs are placed, with a warning
            from model.align_images import no_face_message

            result["warning"] = None if counts["faces"] else no_face_message(item.rel, counts["frames"])
            if self.transfer == "shared":
                place_outputs(staging, self.outdir, names)
            else:
                result["files"] = read_outputs(staging, names)
            result["status"] = "done"
            result["error"] = None
            self.files_done += 1
        except FileFailed as exc:
            result.update(status="failed", error=str(exc).splitlines()[0], permanent=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug, or the disk: keep the traceback in the worker's log
            traceback.print_exc(file=sys.stderr)
            msg = f"{type(exc).__name__}: {exc}".replace(src_path, item.rel).splitlines()[0]
            result.update(status="failed", error=msg, permanent=False)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        seconds = time.perf_counter() - t0
        result.update(frames=counts["frames"], faces=counts["faces"], tracks=len(counts["tracks"]),
                      seconds=round(seconds, 4), fps=round(counts["frames"] / seconds, 2) if seconds > 0 else 0.0)
        return result

    async def _run_file(self, src_path: str, staging: Path, names: dict[str, str], counts: dict) -> None:
        """One file through the pipeline of ``run`` into ``staging``; raises FileFailed for the file's own faults."""
        from stream.assemble import UserError, build_run
        from stream.sources import SourceError, open_source

        cfg = self.cfg.replace(source=src_path, show=False, live=False,
                               tracks=str(staging / names["tracks"]) if "tracks" in names else None,
                               out=str(staging / names["out"]) if "out" in names else None,
                               meshes=str(staging / names["meshes"]) if "meshes" in names else None)
        try:
            source = open_source(src_path, max_frames=cfg.max_frames)
        except SourceError as exc:
            raise FileFailed(str(exc)) from None
        def count(job) -> None:
            counts["frames"] += 1
            counts["faces"] += len(job.faces)
            counts["tracks"].update(f.track_id for f in job.faces)

        try:
            pipeline = build_run(cfg, self.engine, source, live=False, swap_texture=self.texture, observers=[count])
        except UserError as exc:
            raise FileFailed(str(exc)) from None
        try:
            await pipeline.run()
        except SourceError as exc:
            raise FileFailed(str(exc)) from None
