"""run_stream.py end to end on real and synthetic videos (subprocess): tracks, video, meshes, modes, the demo."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stream.sinks import load_tracks
from tests.test_cli_helpers import D0, PEER, count_video_frames, read_csv_rows, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def d0(assets_dir: Path) -> Path:
    path = assets_dir / D0
    if not path.is_file():
        pytest.skip("d0.mp4 not in the assets")
    return path


def test_d0_every_frame_one_track_and_a_video(tmp_path: Path, d0: Path) -> None:
    n_in = count_video_frames(d0)
    res = run_cli(["--source", str(d0), "--out", "out/d0.mp4", "--tracks", "out/d0.csv", "--stats", *PEER], tmp_path)
    assert res.returncode == 0, res.stderr
    header, rows = read_csv_rows(tmp_path / "out" / "d0.csv")
    assert len(rows) == n_in  # frame count in = rows out (one face)
    col = {name: i for i, name in enumerate(header)}
    assert [int(r[col["frame"]]) for r in rows] == list(range(n_in))
    assert {r[col["track_id"]] for r in rows} == {"1"}  # one id across the clip
    times = np.array([float(r[col["time"]]) for r in rows])
    assert times[0] == 0.0 and np.all(np.diff(times) > 0)
    assert np.allclose(np.diff(times), 1 / 25, atol=1e-3)
    assert all(len(r) == len(header) for r in rows)
    assert count_video_frames(tmp_path / "out" / "d0.mp4") == n_in
    assert "done: %d frames" % n_in in res.stderr and "0 dropped" in res.stderr
    assert "stats:" in res.stderr and "align" in res.stderr and "e2e" in res.stderr
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary files left


def test_demo_without_arguments(tmp_path: Path) -> None:
    res = run_cli([], tmp_path)  # weights "auto": offline it falls back to the peer
    assert res.returncode == 0, res.stderr
    video, tracks = tmp_path / "out" / "demo.mp4", tmp_path / "out" / "demo_tracks.csv"
    assert video.is_file() and tracks.is_file()
    n = count_video_frames(video)
    assert n == 240  # 8 s at 30 fps (configs/default.yaml synthetic:)
    header, rows = read_csv_rows(tracks)
    frames = {int(r[0]) for r in rows}
    assert len(frames) >= 0.95 * n  # the face is found on (nearly) every frame, the cut included
    assert "demo" in res.stderr


def test_smooth_none_and_kalman_both_run(tmp_path: Path, d0: Path) -> None:
    out = {}
    for smooth in ("none", "kalman"):
        res = run_cli(["--source", str(d0), "--max-frames", "30", "--tracks", f"{smooth}.npz", "--smooth", smooth,
                       *PEER], tmp_path)
        assert res.returncode == 0, res.stderr
        tracks = load_tracks(tmp_path / f"{smooth}.npz")
        assert list(tracks) == [1]
        out[smooth] = tracks[1]
    raw, kal = out["none"]["landmarks"], out["kalman"]["landmarks"]
    assert raw.shape == kal.shape == (30, 68, 3)
    assert not np.allclose(raw, kal)  # the filter does something...
    face = np.ptp(raw[0, :, 0])
    assert np.abs(raw - kal)[..., :2].mean() < 0.05 * face  # ...without moving the face away
    accel = [np.abs(np.diff(x[..., :2], n=2, axis=0)).mean() for x in (raw, kal)]
    assert accel[1] < accel[0]  # smoother


def test_mesh_and_depth_modes_and_meshes_folder(tmp_path: Path, d0: Path) -> None:
    res = run_cli(["--source", str(d0), "--max-frames", "12", "--mode", "mesh", "--out", "mesh.mp4",
                   "--meshes", "meshes", "--tracks", "t.jsonl", *PEER], tmp_path)
    assert res.returncode == 0, res.stderr
    assert count_video_frames(tmp_path / "mesh.mp4") == 12
    files = sorted(p.name for p in (tmp_path / "meshes").iterdir())
    assert files == ["track1.npz"]
    with np.load(tmp_path / "meshes" / "track1.npz") as z:
        v, tri, frames = z["vertices"], z["triangles"], z["frames"]
    assert v.ndim == 3 and v.shape[0] == 12 and v.shape[2] == 3 and v.dtype == np.float32
    assert tri.ndim == 2 and tri.shape[1] == 3 and tri.max() < v.shape[1]
    assert frames.tolist() == list(range(12))
    # the mesh is on the face the tracks found
    lm = load_tracks(tmp_path / "t.jsonl")[1]["landmarks"]
    assert np.all(np.abs(v[:, :, :2].mean(1) - lm[:, :, :2].mean(1)) < 0.25 * np.ptp(lm[0, :, 0]))

    res = run_cli(["--source", str(d0), "--max-frames", "8", "--mode", "depth", "--out", "depth.mp4", *PEER],
                  tmp_path)
    assert res.returncode == 0, res.stderr
    assert count_video_frames(tmp_path / "depth.mp4") == 8

    res = run_cli(["--source", str(d0), "--max-frames", "5", "--meshes", "m2", "--mesh-format", "npz+obj", *PEER],
                  tmp_path)
    assert res.returncode == 0, res.stderr
    names = sorted(p.name for p in (tmp_path / "m2").iterdir())
    assert "track1.npz" in names and len([n for n in names if n.endswith(".obj")]) == 5


def test_synthetic_source_through_the_cli(tmp_path: Path) -> None:
    res = run_cli(["--source", "synthetic:2", "--tracks", "s.csv", "--out", "s.mp4", *PEER], tmp_path)
    assert res.returncode == 0, res.stderr
    assert count_video_frames(tmp_path / "s.mp4") == 60
    _, rows = read_csv_rows(tmp_path / "s.csv")
    assert len(rows) == 60


def test_fast_paths_give_the_same_tracks(tmp_path: Path, d0: Path) -> None:
    """ONNX Runtime (the CPU default), TorchScript and eager: the same DAMDNet tracks through the whole CLI."""
    tracks = {}
    for kind in ("onnxruntime", "torchscript", "none"):
        res = run_cli(["--source", str(d0), "--max-frames", "20", "--weights", "damdnet", "--fast-path", kind,
                       "--tracks", f"{kind}.npz"], tmp_path)
        assert res.returncode == 0, res.stderr
        assert f"via {'eager' if kind == 'none' else kind}" in res.stderr
        tracks[kind] = load_tracks(tmp_path / f"{kind}.npz")[1]["landmarks"]
    assert tracks["onnxruntime"].shape == (20, 68, 3)
    for kind in ("torchscript", "none"):
        # pixels; the expression stage's patches follow the network's landmarks, so its 1e-4 differences reach the
        # lids and lips a little amplified (0.0104 px at most on d0; 0.032 px since the mouth's second patch follows
        # the first's corners and the inner lips have their own unknown; 0.057 px since their gaps are spread 1.3x,
        # ``expression_stage.spread_lips``). A fast path that diverges moves points by pixels.
        assert np.abs(tracks["onnxruntime"] - tracks[kind]).max() < 0.1
