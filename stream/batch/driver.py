"""The driver of ``run_stream.py batch``: inputs -> skip what is done -> Ray actors (``ray.util.ActorPool``) -> the
manifest, one progress bar and a summary.

Ray is the engine: it places the actors (``num_cpus`` / ``num_gpus``), restarts a dead one (``max_restarts``) and
runs its file again (``max_task_retries``), and moves bytes through its object store when the nodes share no
filesystem. The driver only hands the next file to a free actor and records what comes back.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from model.errors import UserError
from stream.batch.actor import STAGING, BatchWorker, place_outputs
from stream.batch.inputs import InputFile, resolve_inputs
from stream.config import RunConfig
from stream.batch.manifest import Manifest, base_record, config_hash, effective_status, now_iso

GPU_FILES_PER_WORKER = 4  # files a GPU actor runs at once when batch.files_per_worker is 0


class BatchError(UserError, RuntimeError):
    """Something the user can fix before or while starting the job (one line)."""


@dataclass
class Report:
    """What a batch job did: counts, the records of this run, timings (seconds)."""

    inputs: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    skipped_failed: int = 0  # skipped because they failed before on their content
    frames: int = 0
    seconds: float = 0.0  # from the first file handed out to the last result
    ray_start_s: float = 0.0  # ray.init (0 when Ray was already up)
    workers_ready_s: float = 0.0  # actors created and their models loaded
    workers: int = 0
    files_per_worker: int = 1
    transfer: str = ""
    interrupted: bool = False
    records: list[dict] = field(default_factory=list)  # this run's done/failed records, in finishing order
    unfinished: list[str] = field(default_factory=list)  # inputs not done when the job stopped (Ctrl-C)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def exit_code(self) -> int:
        """0 all done, 1 any input failed (now or before), 130 interrupted."""
        if self.interrupted:
            return 130
        return 1 if self.failed or self.skipped_failed else 0


@dataclass
class Controls:
    """Set from outside (signal handlers, tests): ``stop`` hands out no more files and waits for the ones in flight;
    ``abort`` also gives up the files in flight (their workers are killed, nothing of them is kept)."""

    stop: threading.Event = field(default_factory=threading.Event)
    abort: threading.Event = field(default_factory=threading.Event)
    after_ray_start: Callable[[], None] | None = None  # the CLI puts its SIGTERM handler back over Ray's


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Ray


# Ray 2.60 turns token authentication on for a new local cluster and logs a warning saying so on every start, unless
# RAY_AUTH_MODE is set (which must happen before `import ray`: its config is read then). The default is what we want.
_RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


@contextlib.contextmanager
def _quiet_auth_default() -> Iterator[None]:
    """Ray's "Token authentication is enabled for this Ray cluster" warning silenced while a local Ray starts (a
    user who set RAY_AUTH_MODE gets no warning from Ray either)."""
    logger = logging.getLogger(_RAY_AUTH_LOGGER)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def start_ray(cfg: RunConfig, log: Callable[[str], None] = _log) -> float:
    """``ray.init``: join ``batch.ray_address`` (or $RAY_ADDRESS), else start a local Ray with the cores of this
    machine (at least what ``batch.workers`` x ``batch.cpus_per_worker`` asks). Returns the seconds it took (0 when
    Ray was already initialised in this process)."""
    import ray

    if ray.is_initialized():
        return 0.0
    b = cfg.batch
    address = b.ray_address or os.environ.get("RAY_ADDRESS") or None
    t0 = time.perf_counter()
    try:
        if address:
            ray.init(address=str(address), log_to_driver=bool(b.worker_logs), logging_level=logging.WARNING)
        else:
            cores = os.cpu_count() or 1
            need = math.ceil(b.workers * b.cpus_per_worker) if b.workers else 0
            with _quiet_auth_default():
                ray.init(num_cpus=max(cores, need), include_dashboard=bool(b.dashboard),
                         log_to_driver=bool(b.worker_logs), logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise BatchError(f"cannot start {where}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") \
            from None
    seconds = time.perf_counter() - t0
    res = ray.cluster_resources()
    log(f"ray: {'joined ' + str(address) if address else 'local Ray started'} in {seconds:.1f} s "
        f"({res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs, {len([n for n in ray.nodes() if n['Alive']])} "
        "node(s))")
    return seconds


def choose_transfer(setting: str) -> str:
    """``shared`` or ``object_store``: ``auto`` is shared when every node of the cluster is this machine."""
    if setting != "auto":
        return setting
    import ray
    import ray.util

    ips = {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
    return "shared" if ips <= {ray.util.get_node_ip_address()} else "object_store"


def worker_plan(cfg: RunConfig, todo: int) -> dict[str, Any]:
    """Actor count and resources: GPU actors (one per GPU by default, several files each; ``--workers`` above the
    GPU count gives each a fraction of one) where the cluster has GPUs, else CPU actors (one per
    ``cpus_per_worker`` cores, one file each). Never more actors than files need."""
    import ray

    b = cfg.batch
    res = ray.cluster_resources()
    gpus = b.gpus_per_worker
    if gpus is None:  # auto: a GPU each, or a share of one when more workers than GPUs are asked for
        have = res.get("GPU", 0)
        gpus = 0.0 if have < 1 else min(1.0, have / b.workers) if b.workers else 1.0
    k = b.files_per_worker or (GPU_FILES_PER_WORKER if gpus > 0 else 1)
    cpus = float(b.cpus_per_worker) * (k if gpus > 0 else 1)  # a core per file in flight decodes and renders
    if b.workers:
        n = int(b.workers)
    elif gpus > 0:
        n = max(1, int(res.get("GPU", 0) / gpus))
    else:
        n = max(1, int(res.get("CPU", 1) / cpus))
    n = max(1, min(n, math.ceil(todo / k)))
    return {"workers": n, "files_per_worker": k, "num_cpus": cpus, "num_gpus": float(gpus)}


# user errors an actor's start can raise (model loading), by the name Ray's error text gives them
_ACTOR_USER_ERRORS = ("UserError", "BatchError", "AssetError", "CheckpointError", "DeviceError", "FastPathError",
                      "SourceError", "ConfigError", "VMCError")


def _user_error_names() -> set[str]:
    """Class names of ``model.errors.UserError`` and of its subclasses (those imported here and the known ones)."""
    names, todo = set(_ACTOR_USER_ERRORS), [UserError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


def _actor_error(exc: BaseException) -> str:
    """One line for an actor that could not start (the user error of its model loading, when that was it)."""
    text = str(exc)
    markers = [f"{name}: " for name in sorted(_user_error_names())]
    for line in reversed(text.splitlines()):
        line = line.strip()
        for marker in markers:
            if marker in line:
                return line.split(marker, 1)[1]
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return lines[-1] if lines else type(exc).__name__


# ---------------------------------------------------------------------------------------------------------------
# The job


class _Lock:
    """An exclusive lock on ``DIR/.batch.lock`` for the length of a job (two jobs must not share an outdir); the
    file is removed when the job ends."""

    def __init__(self, outdir: Path) -> None:
        self.path = outdir / ".batch.lock"
        while True:
            self.f = open(self.path, "a")
            try:
                fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self.f.close()
                raise BatchError(f"another batch job is writing into {outdir}") from None
            try:
                same = os.path.samestat(os.fstat(self.f.fileno()), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                return
            self.f.close()  # a job that ended removed the file we locked: lock the one there now

    def release(self) -> None:
        """Remove the file while it is locked, then unlock (a job waiting on the old file then locks a new one)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        self.f.close()


def _progress(cfg: RunConfig, total: int, initial: int):
    if not cfg.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="file", desc="batch", disable=None, dynamic_ncols=True,
                file=sys.stderr)


def _stats_line(rec: dict) -> str:
    return (f"file {rec['rel']}: {rec['frames']} frames, {rec['faces']} faces, {rec['tracks']} track(s), "
            f"{rec['fps']:.1f} fps, {rec['seconds']:.2f} s (round trip {rec['wall']:.2f} s) on {rec['node']}")


def run_batch(cfg: RunConfig, controls: Controls | None = None, log: Callable[[str], None] = _log,
              on_result: Callable[[dict, list], None] | None = None) -> Report:
    """Run the batch job of ``cfg`` (``batch.*`` keys) on the Ray this process is connected to, or on one started
    with ``start_ray`` when there is a file to run (``report.ray_start_s``; the caller shuts it down).
    ``on_result(record, actors)`` is called after each file (tests use it to kill an actor). Raises BatchError /
    InputError (one line) before any file starts; files that fail are in the report."""
    import ray
    from ray.util import ActorPool

    controls = controls or Controls()
    b = cfg.batch
    if not b.outdir:
        raise BatchError("batch needs --outdir DIR (where the per-file outputs and manifest.jsonl go)")
    if not b.inputs:
        raise BatchError("batch needs inputs: video files, folders, glob patterns or a .txt list of paths")
    if b.tracks == "none" and not b.out and not b.meshes:
        raise BatchError("nothing to write: give --tracks csv|jsonl|npz, --out mp4 or --meshes")
    outdir = Path(str(b.outdir)).expanduser().resolve()
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BatchError(f"cannot create --outdir {outdir}: {exc.strerror or exc}") from None
    inputs = resolve_inputs(b.inputs, exclude=outdir)
    lock = _Lock(outdir)
    shutil.rmtree(outdir / STAGING, ignore_errors=True)  # what a killed job left (never under a final name)
    manifest = Manifest(outdir)
    chash = config_hash(cfg)
    report = Report(inputs=len(inputs))
    todo: deque[InputFile] = deque()
    for item in inputs:
        prev = manifest.finished_before(item, chash, outdir, bool(b.retry_failed)) if b.resume else None
        if prev is None:
            todo.append(item)
            continue
        was = effective_status(prev)
        manifest.append({**prev, "status": "skipped", "previous": was, "skipped_at": now_iso()})
        report.skipped += 1
        report.skipped_failed += was == "failed"
    if report.skipped:
        log(f"resume: {report.skipped} of {len(inputs)} input(s) already finished with this config "
            f"({report.skipped_failed} of them failed on their content; --retry-failed runs those again)")
    bar = None
    actors: list = []
    try:
        if not todo:
            return report
        if not ray.is_initialized():
            report.ray_start_s = start_ray(cfg, log)
            if controls.after_ray_start is not None:
                controls.after_ray_start()
        transfer = choose_transfer(b.transfer)
        report.transfer = transfer
        plan = worker_plan(cfg, len(todo))
        report.workers, report.files_per_worker = plan["workers"], plan["files_per_worker"]
        kind = f"{plan['num_gpus']:g} GPU + {plan['num_cpus']:g} CPU" if plan["num_gpus"] else \
            f"{plan['num_cpus']:g} CPU"
        log(f"batch: {len(todo)} file(s) to run on {plan['workers']} worker(s) ({kind} each, "
            f"{plan['files_per_worker']} file(s) at a time); transfer: " +
            (f"shared filesystem (workers write into {outdir})" if transfer == "shared" else
             "object store (inputs go to the workers and outputs come back to the driver through Ray)"))
        Worker = ray.remote(BatchWorker).options(
            num_cpus=plan["num_cpus"], num_gpus=plan["num_gpus"], max_concurrency=plan["files_per_worker"],
            max_restarts=-1, max_task_retries=int(b.retries))
        t0 = time.perf_counter()
        actors = [Worker.remote(cfg, str(outdir), transfer, plan["num_gpus"] > 0, plan["num_cpus"])
                  for _ in range(plan["workers"])]
        ready_refs = [a.ready.remote() for a in actors]
        waited = 0.0
        while True:
            done, _ = ray.wait(ready_refs, num_returns=len(ready_refs), timeout=1.0)
            if len(done) == len(ready_refs):
                break
            if controls.stop.is_set() or controls.abort.is_set():
                report.interrupted = True
                report.unfinished = [i.rel for i in todo]
                return report
            waited += 1.0
            if waited % 60 == 0:
                log(f"batch: waiting for workers ({len(done)} of {len(ready_refs)} ready; does the cluster have "
                    f"{kind} free per worker?)")
        try:
            info = ray.get(ready_refs)
        except ray.exceptions.RayError as exc:
            raise BatchError(f"a worker could not start: {_actor_error(exc)}") from None
        report.workers_ready_s = time.perf_counter() - t0
        log(f"batch: {len(actors)} worker(s) ready in {report.workers_ready_s:.1f} s: {info[0]['model']} on "
            f"{info[0]['device']} via {info[0]['fast_path']}, detector {info[0]['detector']}")
        slots = [a for a in actors for _ in range(plan["files_per_worker"])]
        pool = ActorPool(slots)
        inflight: dict[Any, tuple[InputFile, Any, float]] = {}  # ref -> (input, actor, handed out at)
        by_key: dict[str, Any] = {}

        def hand_out(actor, item: InputFile):
            data = ray.put(Path(item.path).read_bytes()) if transfer == "object_store" else None
            ref = actor.process.remote(item, data)
            inflight[ref] = (item, actor, time.perf_counter())
            by_key[item.key] = ref
            return ref

        bar = _progress(cfg, len(inputs), report.skipped)
        started = time.perf_counter()
        frames = 0
        while todo or pool.has_next():
            if controls.abort.is_set():
                break
            while todo and pool.has_free() and not controls.stop.is_set():
                pool.submit(hand_out, todo.popleft())
            if not pool.has_next():
                break
            try:
                res = pool.get_next_unordered(timeout=0.5)
            except TimeoutError:
                continue
            except ray.exceptions.RayError as exc:  # its worker died more often than batch.retries allows
                res = _attribute_failure(inflight, exc, pool)
                if res is None:
                    continue
            ref = by_key.pop(res["input"])
            item, actor, handed = inflight.pop(ref)
            files = res.pop("files", None)
            if files is not None and res["status"] == "done":
                _write_returned(outdir, files, res["outputs"])
            rec = {**base_record(item, chash), **res, "wall": round(time.perf_counter() - handed, 4),
                   "finished": now_iso()}
            manifest.append(rec)
            report.records.append(rec)
            if rec["status"] == "done":
                report.done += 1
                frames += rec["frames"]
            else:
                report.failed += 1
                msg = f"failed: {rec['rel']}: {rec['error']}"
                if bar is not None:
                    bar.write(msg, file=sys.stderr)
                else:
                    log(msg)
            lines = [f"warning: {rec['warning']}"] if rec.get("warning") else []  # no face: done, with a warning
            if cfg.stats and rec["status"] == "done":
                lines.append(_stats_line(rec))
            for line in lines:
                if bar is not None:
                    bar.write(line, file=sys.stderr)
                else:
                    log(line)
            report.seconds = time.perf_counter() - started
            report.frames = frames
            if bar is not None:
                bar.set_postfix_str(f"{report.fps:.1f} frames/s, {report.failed} failed", refresh=False)
                bar.update(1)
            if on_result is not None:
                on_result(rec, actors)
        if controls.stop.is_set() or controls.abort.is_set():
            report.interrupted = True
            report.unfinished = [i.rel for i, _, _ in inflight.values()] + [i.rel for i in todo]
        else:  # every worker of the pool is gone (each died past its retries): say so for what is left
            for item in [i for i, _, _ in inflight.values()] + list(todo):
                rec = {**base_record(item, chash), "status": "failed", "permanent": False, "outputs": {},
                       "error": "not run: no worker left (each died more often than batch.retries allows)",
                       "frames": 0, "faces": 0, "tracks": 0, "fps": 0.0, "seconds": 0.0, "node": None,
                       "worker": None, "finished": now_iso()}
                manifest.append(rec)
                report.records.append(rec)
                report.failed += 1
        return report
    finally:
        if bar is not None:
            bar.close()
        for a in actors:  # their files are finished or given up; free the cores for whatever runs next
            try:
                ray.kill(a, no_restart=True)
            except Exception:
                pass
        shutil.rmtree(outdir / STAGING, ignore_errors=True)
        manifest.compact(first=[i.key for i in inputs])
        lock.release()


def _attribute_failure(inflight: dict, exc: BaseException, pool) -> dict | None:
    """The failed record of the file whose task raised ``exc`` (its worker died on it more than batch.retries
    times); the restarted actor goes back into the pool."""
    import ray

    ready, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=0)
    for ref in ready:
        try:
            ray.get(ref, timeout=0)
        except ray.exceptions.RayError:
            item, actor, _ = inflight[ref]
            try:
                pool.push(actor)  # Ray restarts it (max_restarts=-1)
            except ValueError:  # another of its slots is still in the pool
                pass
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return {"input": item.key, "status": "failed", "permanent": False, "outputs": {},
                    "error": f"its worker died while running it (killed or out of memory?): {reason}"[:300],
                    "frames": 0, "faces": 0, "tracks": 0, "fps": 0.0, "seconds": 0.0, "node": None, "worker": None}
    return None


def _write_returned(outdir: Path, files: dict[str, bytes], names: dict[str, str]) -> None:
    """Object-store mode: the bytes a worker sent back, staged in DIR and then renamed into place."""
    import uuid

    staging = outdir / STAGING / uuid.uuid4().hex
    try:
        for rel, data in files.items():
            p = staging / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            from stream.atomic import fsync_path

            fsync_path(p)
        place_outputs(staging, outdir, names)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def summary_lines(report: Report, outdir: str) -> list[str]:
    """The end-of-job summary: counts, throughput, the failures (one line each), where the manifest is."""
    lines = [f"batch: {report.inputs} input(s): {report.done} done, {report.failed} failed, {report.skipped} skipped"
             + (f" ({report.skipped_failed} of them failed before)" if report.skipped_failed else "")
             + (f"; {report.frames} frames in {report.seconds:.1f} s ({report.fps:.1f} frames/s over "
                f"{report.workers} worker(s))" if report.done else "")
             + f"; manifest: {Path(outdir) / 'manifest.jsonl'}"]
    for rec in report.records:
        if rec["status"] == "failed":
            lines.append(f"  failed: {rec['rel']}: {rec['error']}")
        elif rec.get("warning"):
            lines.append(f"  warning: {rec['warning']}")
    if report.interrupted:
        lines.append(f"batch: stopped; {len(report.unfinished)} input(s) not finished (run the same command again "
                     "to go on)")
    return lines


def batch(cfg: RunConfig) -> int:
    """``run_stream.py batch``: start or join Ray, run the job, print the summary. Exit 0 (all done), 1 (any input
    failed), 2 (a user error), 130 (Ctrl-C)."""
    controls = Controls()
    interrupts = 0

    def on_signal(signum, frame) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            _log("stopping: no new files; finishing the files in flight (Ctrl-C again to give them up)")
            controls.stop.set()
        else:
            _log("aborting: the files in flight are given up (they are redone by the next run)")
            controls.abort.set()

    previous = signal.getsignal(signal.SIGINT)
    try:
        import ray
    except ImportError as exc:
        from stream.extras import missing_extra

        print(f"error: {missing_extra('batch', 'batch', exc)}", file=sys.stderr)
        return 2

    started_ray = not ray.is_initialized()
    signal.signal(signal.SIGINT, on_signal)
    controls.after_ray_start = lambda: signal.signal(signal.SIGTERM, on_signal)  # ray.init sets one of its own
    try:
        report = run_batch(cfg, controls)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the job started (while Ray was starting)
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
        if started_ray and ray.is_initialized():
            ray.shutdown()
    for line in summary_lines(report, str(Path(str(cfg.batch.outdir)).expanduser().resolve())):
        _log(line)
    return report.exit_code()
