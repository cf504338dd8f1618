"""run_stream.py batch: inputs, manifest and config (no Ray), then whole jobs on one local Ray (num_cpus=2) shared by
the module: 6 short clips with one corrupt, tracks equal to ``run``'s, resume, an actor killed mid-job (object-store
mode, two files per actor), Ctrl-C of the CLI."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stream.batch.inputs import InputError, output_names, resolve_inputs
from stream.batch.manifest import Manifest, base_record, config_hash
from stream.config import ConfigError, load_config
from tests.batch_clips import corrupt_clip, cut_clip, shared_videos, synthetic_clip
from tests.test_cli_helpers import REPO, cli_env

WEIGHTS = "3ddfa-v2-mb05"  # the model the other end-to-end tests run (fast on 2 cores)


def _cfg(**batch) -> dict:
    overrides = {f"batch.{k}": v for k, v in batch.items()}
    return load_config(None, {"weights": WEIGHTS, "progress": False, **overrides})


# ------------------------------------------------------------------------------------------ no Ray


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_inputs_folders_globs_lists_and_names(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    for rel in ("a.mp4", "sub/b.mkv", "sub/deep/c.MOV", "sub/.hidden.mp4", ".cache/d.mp4", "notes.txt"):
        _touch(root / rel)
    out = root / "out"
    _touch(out / "e.overlay.mp4")  # outputs inside an input folder are never inputs
    items = resolve_inputs([str(root)], exclude=out)
    assert [i.rel for i in items] == ["a.mp4", "sub/b.mkv", "sub/deep/c.MOV"]
    assert all(Path(i.path).is_absolute() and i.size == 1 for i in items)
    globbed = resolve_inputs([str(root / "sub" / "**" / "*.*")])
    assert [i.rel for i in globbed] == ["b.mkv", "deep/c.MOV"]  # below the pattern's fixed folders
    listing = _touch(tmp_path / "list.txt", b"# my files\nvideos/a.mp4\n\n%s\n" % str(root / "sub/b.mkv").encode())
    listed = resolve_inputs([str(listing), str(root / "a.mp4")])  # a.mp4 twice: once
    assert [i.rel for i in listed] == ["a.mp4", "sub/b.mkv"]  # below the folder they share
    assert output_names("sub/b.mkv", "csv", "mp4", True) == {"tracks": "sub/b.csv", "out": "sub/b.overlay.mp4",
                                                             "meshes": "sub/b.meshes"}
    assert output_names("a.mp4", "none", None, False) == {}


def test_inputs_errors_are_one_line(tmp_path: Path) -> None:
    _touch(tmp_path / "x.mp4")
    _touch(tmp_path / "x.avi")
    (tmp_path / "empty").mkdir()
    cases = {str(tmp_path / "missing.mp4"): "no such file", str(tmp_path / "empty"): "no video files in folder",
             str(tmp_path / "*.webm"): "no video files match"}
    for spec, words in cases.items():
        with pytest.raises(InputError, match=words):
            resolve_inputs([spec])
    with pytest.raises(InputError, match="same outputs"):
        resolve_inputs([str(tmp_path)])
    _touch(tmp_path / "l.txt", b"nothere.mp4\n")
    with pytest.raises(InputError, match="missing file"):
        resolve_inputs([str(tmp_path / "l.txt")])


def test_config_keys_and_cli_flags() -> None:
    from stream.cli import parse

    command, cfg = parse(["batch", "a.mp4", "folder", "--outdir", "o", "--workers", "3", "--tracks", "npz",
                          "--out", "mp4", "--meshes", "--ray-address", "10.0.0.1:6379", "--batch.retries", "2"])
    b = cfg.batch
    assert command == "batch" and b.inputs == ["a.mp4", "folder"] and b.outdir == "o"
    assert (b.workers, b.tracks, b.out, b.meshes, b.ray_address, b.retries) == \
        (3, "npz", "mp4", True, "10.0.0.1:6379", 2)
    with pytest.raises(ConfigError, match="batch.tracks"):
        load_config(None, {"batch.tracks": "xml"})
    with pytest.raises(ConfigError, match="batch.cpus_per_worker"):
        load_config(None, {"batch.cpus_per_worker": 0})
    with pytest.raises(SystemExit):  # run's own I/O flags are not batch flags (batch names its outputs itself)
        parse(["batch", "a.mp4", "--outdir", "o", "--source", "b.mp4"])
    _, run_cfg = parse(["--source", "x.mp4"])
    assert run_cfg.batch.inputs == []


def test_config_hash_follows_what_shapes_the_outputs() -> None:
    base = config_hash(_cfg(outdir="a"))
    assert config_hash(_cfg(outdir="b", workers=7, transfer="object_store")) == base  # where and how it runs
    assert config_hash(load_config(None, {"weights": WEIGHTS, "progress": True, "stats": True})) == base
    assert config_hash(_cfg(tracks="jsonl")) != base
    assert config_hash(load_config(None, {"weights": "damdnet", "progress": False})) != base
    assert config_hash(load_config(None, {"weights": WEIGHTS, "progress": False, "detect_every": 5})) != base


def test_manifest_resume_rules(tmp_path: Path) -> None:
    video = _touch(tmp_path / "v" / "a.mp4", b"12345")
    item = resolve_inputs([str(video)])[0]
    out = tmp_path / "out"
    m = Manifest(out)
    assert m.finished_before(item, "h", out, False) is None
    m.append({**base_record(item, "h"), "status": "done", "outputs": {"tracks": "a.csv"}})
    assert m.finished_before(item, "h", out, False) is None  # its output is missing
    _touch(out / "a.csv")
    assert m.finished_before(item, "h", out, False)["status"] == "done"
    assert m.finished_before(item, "other", out, False) is None  # another config
    m.append({**base_record(item, "h"), "status": "failed", "permanent": False, "error": "worker died"})
    assert m.finished_before(item, "h", out, False) is None  # a dead worker is not the file's fault
    m.append({**base_record(item, "h"), "status": "failed", "permanent": True, "error": "corrupt"})
    assert m.finished_before(item, "h", out, False)["error"] == "corrupt"
    assert m.finished_before(item, "h", out, True) is None  # --retry-failed
    m.compact([item.key])
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["error"] == "corrupt"  # one line per input, the latest
    with open(out / "manifest.jsonl", "a") as f:
        f.write('{"input": "/x", "status": "do')  # a line cut by a crash is ignored
    assert list(Manifest(out).records) == [item.key]
    os.utime(video, (1, 1))
    assert Manifest(out).finished_before(resolve_inputs([str(video)])[0], "h", out, False) is None  # new mtime


def test_batch_user_errors_without_ray(tmp_path: Path) -> None:
    from stream.batch.driver import BatchError, run_batch

    with pytest.raises(BatchError, match="--outdir"):
        run_batch(_cfg(inputs=[str(tmp_path)]))
    with pytest.raises(BatchError, match="nothing to write"):
        run_batch(_cfg(inputs=[str(tmp_path)], outdir=str(tmp_path / "o"), tracks="none"))
    res = subprocess.run([sys.executable, str(REPO / "run_stream.py"), "batch", str(tmp_path / "nope.mp4"),
                          "--outdir", str(tmp_path / "o")], cwd=tmp_path, env=cli_env(), capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1].startswith("error: no such file")


def test_batch_lock_is_exclusive_and_removed(tmp_path: Path) -> None:
    """Two jobs never share an outdir, and a finished job leaves no empty ``.batch.lock`` behind."""
    from stream.batch.driver import BatchError, _Lock

    lock = _Lock(tmp_path)
    with pytest.raises(BatchError, match="another batch job is writing into"):
        _Lock(tmp_path)
    lock.release()
    assert list(tmp_path.iterdir()) == []
    _Lock(tmp_path).release()  # the next job locks a new file (a whole job: test_batch_no_face_is_done_...)
    assert list(tmp_path.iterdir()) == []


def test_worker_plan_cpu_and_gpu_clusters(monkeypatch) -> None:
    """Actor resources from the cluster's (faked) resources: the GPU path is planned even where no GPU is."""
    ray = pytest.importorskip("ray")
    from stream.batch.driver import worker_plan

    def plan(res: dict, todo: int = 100, **batch) -> tuple:
        monkeypatch.setattr(ray, "cluster_resources", lambda: res)
        p = worker_plan(_cfg(**batch), todo)
        return p["workers"], p["files_per_worker"], p["num_cpus"], p["num_gpus"]

    assert plan({"CPU": 16}) == (16, 1, 1.0, 0.0)  # one CPU actor per core
    assert plan({"CPU": 16}, todo=3) == (3, 1, 1.0, 0.0)  # never more actors than files
    assert plan({"CPU": 16, "GPU": 2}) == (2, 4, 4.0, 1.0)  # one per GPU, 4 files each, a core per file
    assert plan({"CPU": 16, "GPU": 2}, todo=5) == (2, 4, 4.0, 1.0)
    assert plan({"CPU": 16, "GPU": 2}, todo=3) == (1, 4, 4.0, 1.0)
    assert plan({"CPU": 16, "GPU": 1}, workers=2) == (2, 4, 4.0, 0.5)  # two actors share the GPU
    assert plan({"CPU": 16, "GPU": 2}, gpus_per_worker=0, cpus_per_worker=2) == (8, 1, 2.0, 0.0)  # CPU only
    assert plan({"CPU": 8, "GPU": 1}, files_per_worker=2, cpus_per_worker=1.5) == (1, 2, 3.0, 1.0)


# ------------------------------------------------------------------------------------------ on Ray


@pytest.fixture(scope="module")
def clips(tmp_path_factory, assets_dir: Path) -> Path:
    """6 short clips: 2 synthetic, 3 cut from the shared videos, 1 corrupt (sub/bad.mp4)."""
    shared = shared_videos(assets_dir)
    if len(shared) < 3:
        pytest.skip("the shared videos are not in the assets")
    d = tmp_path_factory.mktemp("clips")
    (d / "sub").mkdir()
    synthetic_clip(d / "syn0.mp4", seconds=1.5, seed=0)
    synthetic_clip(d / "sub" / "syn1.mp4", seconds=1.5, seed=1)
    for src, dst in zip(shared[:3], ("d0.mp4", "sub/d10.mp4", "d18.mp4")):
        cut_clip(src, d / dst, frames=30)
    corrupt_clip(d / "sub" / "bad.mp4")
    return d


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the module (start-up takes seconds on 2 busy cores)."""
    ray = pytest.importorskip("ray")
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def first_job(ray_session, clips: Path, tmp_path_factory):
    from stream.batch.driver import run_batch

    out = tmp_path_factory.mktemp("batch") / "out"
    report = run_batch(_cfg(inputs=[str(clips)], outdir=str(out), workers=2))
    return out, report


def _manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def _no_leftovers(out: Path) -> None:
    hidden = sorted(p.relative_to(out).as_posix() for p in out.rglob(".*"))
    assert hidden == [], hidden  # no staging folder, no temporary files of the sinks, no lock file


@pytest.mark.slow
def test_batch_five_done_one_failed_tracks_equal_run(first_job, clips: Path, tmp_path: Path) -> None:
    from stream.cli import main as cli_main
    from stream.sinks import load_tracks

    out, report = first_job
    assert (report.done, report.failed, report.skipped, report.exit_code()) == (5, 1, 0, 1)
    recs = {r["rel"]: r for r in _manifest(out)}
    assert sorted(recs) == ["d0.mp4", "d18.mp4", "sub/bad.mp4", "sub/d10.mp4", "sub/syn1.mp4", "syn0.mp4"]
    bad = recs.pop("sub/bad.mp4")
    assert bad["status"] == "failed" and bad["permanent"] and "cannot decode sub/bad.mp4" in bad["error"]
    assert "\n" not in bad["error"] and not (out / "sub" / "bad.csv").exists()
    for rel, r in recs.items():
        assert r["status"] == "done" and r["frames"] == 30 and r["faces"] >= 25 and r["tracks"] >= 1, r
        assert r["size"] == (clips / rel).stat().st_size and r["config"] == config_hash(_cfg())
        assert r["transfer"] == "shared" and r["node"] and r["seconds"] > 0 and r["fps"] > 0
        assert (out / r["outputs"]["tracks"]).is_file()
    _no_leftovers(out)
    # the same file through `run` (the CLI's code, in this process): the same tracks
    for rel in ("d0.mp4", "syn0.mp4"):
        mine = tmp_path / (Path(rel).stem + ".csv")
        assert cli_main(["--source", str(clips / rel), "--tracks", str(mine), "--weights", WEIGHTS,
                         "--progress", "false"]) == 0
        ref, got = load_tracks(mine), load_tracks(out / recs[rel]["outputs"]["tracks"])
        assert sorted(ref) == sorted(got)
        for tid in ref:
            assert set(ref[tid]) == set(got[tid])
            for name in ref[tid]:
                np.testing.assert_allclose(got[tid][name], ref[tid][name], atol=1e-4, err_msg=f"{rel} {name}")


@pytest.mark.slow
def test_second_run_skips_all_six(first_job, clips: Path) -> None:
    from stream.batch.driver import run_batch, summary_lines

    out, _ = first_job
    before = {r["input"]: r for r in _manifest(out)}
    report = run_batch(_cfg(inputs=[str(clips)], outdir=str(out), workers=2))
    assert (report.done, report.failed, report.skipped, report.skipped_failed) == (0, 0, 6, 1)
    assert report.exit_code() == 1  # the corrupt file is still not done
    after = _manifest(out)
    assert len(after) == 6 and {r["status"] for r in after} == {"skipped"}
    for r in after:
        assert r["previous"] == before[r["input"]]["status"] and r["frames"] == before[r["input"]]["frames"]
    assert "6 skipped (1 of them failed before)" in summary_lines(report, str(out))[0]


@pytest.mark.slow
def test_killed_actor_file_redone_object_store(first_job, ray_session, clips: Path, tmp_path: Path) -> None:
    """Object-store mode, 2 files at a time per actor (the GPU set-up, on CPU): kill the actors after the first
    result; Ray restarts them and redoes their files; the outputs are byte-identical to the first job's."""
    from stream.batch.driver import run_batch

    ray = ray_session
    first_out, _ = first_job
    good = tmp_path / "good"
    shutil.copytree(clips, good, ignore=shutil.ignore_patterns("bad.mp4"))
    killed = []

    def kill_once(rec, actors) -> None:
        if not killed:
            pids = [ray.get(a.pid.remote()) for a in actors]
            for a in actors:
                ray.kill(a, no_restart=False)
            killed.extend(pids)

    out = tmp_path / "out"
    report = run_batch(_cfg(inputs=[str(good)], outdir=str(out), workers=1, files_per_worker=2,
                            transfer="object_store"), on_result=kill_once)
    assert killed and (report.done, report.failed) == (5, 0), [r.get("error") for r in report.records]
    recs = _manifest(out)
    assert {r["status"] for r in recs} == {"done"} and {r["transfer"] for r in recs} == {"object_store"}
    assert any(r["worker_restarted"] and r["worker"] not in killed for r in recs)  # done by the restarted actor
    _no_leftovers(out)
    for r in recs:
        a, b = out / r["outputs"]["tracks"], first_out / r["outputs"]["tracks"]
        assert a.read_bytes() == b.read_bytes(), r["rel"]


@pytest.mark.slow
def test_sigint_keeps_finished_files(ray_session, clips: Path, tmp_path: Path) -> None:
    """Ctrl-C of the CLI (joined to this module's Ray): exit 130, every file in the manifest is complete and
    readable, nothing half-written anywhere."""
    from stream.sinks import load_tracks

    ray = ray_session
    many = tmp_path / "many"
    many.mkdir()
    for i in range(12):
        shutil.copy(clips / "syn0.mp4", many / f"c{i:02d}.mp4")
    out = tmp_path / "out"
    address = ray.get_runtime_context().gcs_address
    proc = subprocess.Popen([sys.executable, str(REPO / "run_stream.py"), "batch", str(many), "--outdir", str(out),
                             "--ray-address", address, "--weights", WEIGHTS, "--workers", "2"], cwd=tmp_path,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        manifest = out / "manifest.jsonl"
        while not (manifest.is_file() and manifest.read_text().count("\n") >= 1):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no file finished in time"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "stopping" in err and "Traceback" not in err and "not finished" in err
    recs = _manifest(out)
    assert 1 <= len(recs) < 12 and {r["status"] for r in recs} == {"done"}
    for r in recs:
        tracks = load_tracks(out / r["outputs"]["tracks"])
        assert sum(len(t["frames"]) for t in tracks.values()) == r["faces"]
    assert len(list(out.glob("*.csv"))) == len(recs)  # no output without its manifest line
    _no_leftovers(out)


@pytest.mark.slow
def test_batch_no_face_is_done_with_the_warning_of_run(tmp_path: Path) -> None:
    """A valid video with nobody in it: ``batch`` marks it done (exit 0) with the line ``run`` prints for it, writes
    its header-only tracks, shows no Ray token-authentication warning and leaves no ``.batch.lock``."""
    from model.align_images import no_face_message
    from stream.sinks import VideoSink

    sink = VideoSink(tmp_path / "nobody.mp4", fps=25)
    for i in range(8):
        sink.write(i, i / 25, np.full((96, 128, 3), 40 + 20 * i, np.uint8))
    sink.close()
    env = {k: v for k, v in cli_env().items() if k != "RAY_ADDRESS"}
    common = ["--weights", WEIGHTS, "--progress", "false"]
    run = subprocess.run([sys.executable, str(REPO / "run_stream.py"), "--source", "nobody.mp4", "--tracks",
                          "run.csv", *common], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    want = f"warning: {no_face_message('nobody.mp4', 8)}"
    assert run.returncode == 0 and want in run.stderr.splitlines(), run.stderr
    res = subprocess.run([sys.executable, str(REPO / "run_stream.py"), "batch", "nobody.mp4", "--outdir", "out",
                          "--workers", "1", *common], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    assert want in lines and f"  {want}" in lines, res.stderr  # as the file finishes, and in the summary
    assert "Token authentication" not in res.stderr and "WARNING" not in res.stderr, res.stderr
    (rec,) = _manifest(tmp_path / "out")
    assert rec["status"] == "done" and rec["faces"] == 0 and rec["frames"] == 8 and rec["error"] is None
    assert f"warning: {rec['warning']}" == want
    assert (tmp_path / "out" / "nobody.csv").read_text() == (tmp_path / "run.csv").read_text()  # the header only
    _no_leftovers(tmp_path / "out")
