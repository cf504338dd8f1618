"""run_stream.py: --help, and one clear line with exit code 2 for what users get wrong (nothing written)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli_helpers import D0, PEER, error_lines, run_cli


def test_help_mentions_every_use(tmp_path: Path) -> None:
    res = run_cli(["--help"], tmp_path)
    assert res.returncode == 0
    text = res.stdout
    for use in ("built-in demo", "webcam:0", "--show", "--tracks", "--out", "--meshes", "--mode swap",
                "--swap-source", "serve", "--config", "--smooth", "--detect-every", "--stats", "--device",
                "--weights", "--backbone", "--source"):
        assert use in text, f"--help does not mention {use}"
    # every use comes with an example command line
    assert text.count("python run_stream.py") >= 5
    serve = run_cli(["serve", "--help"], tmp_path)
    assert serve.returncode == 0 and "--serve.port" in serve.stdout


@pytest.mark.parametrize("args, needle", [
    (["--detect-every", "-3"], "detect_every"),
    (["--mode", "nope"], "mode"),
    (["--smooth", "sometimes"], "smooth"),
    (["--queue-size", "lots"], "queue_size"),
    (["--fast-path", "tensorrt"], "fast_path"),
])
def test_bad_values_one_line_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    res = run_cli([*args, "--out", "o.mp4", "--tracks", "o.csv"], tmp_path)
    assert res.returncode == 2
    lines = error_lines(res.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_unknown_config_key_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("detect_every: 5\nbogus_key: 3\n")
    res = run_cli(["--config", "bad.yaml", "--tracks", "o.csv"], tmp_path)
    assert res.returncode == 2
    lines = error_lines(res.stderr)
    assert len(lines) == 1 and "bogus_key" in lines[0] and "bad.yaml" in lines[0], res.stderr
    (tmp_path / "nested.yaml").write_text("kalman:\n  pose_nois: 0.1\n")
    res = run_cli(["--config", "nested.yaml"], tmp_path)
    assert res.returncode == 2 and "kalman.pose_nois" in res.stderr and len(error_lines(res.stderr)) == 1
    res = run_cli(["--config", "missing.yaml"], tmp_path)
    assert res.returncode == 2 and len(error_lines(res.stderr)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "nested.yaml"]


def test_unknown_flag_exits_2(tmp_path: Path) -> None:
    res = run_cli(["--no-such-flag"], tmp_path)
    assert res.returncode == 2 and "--no-such-flag" in res.stderr


def test_flags_are_whole_config_keys_not_prefixes(tmp_path: Path) -> None:
    """A misspelt key that is a prefix of a real one (--kalman.pose-gat) is refused, not taken as that key."""
    res = run_cli(["--kalman.pose-gat", "3", "--source", "synthetic:1"], tmp_path)
    assert res.returncode == 2 and "--kalman.pose-gat" in res.stderr


def test_missing_source_one_line_exit_2(tmp_path: Path) -> None:
    res = run_cli(["--source", "nofile.mp4", "--out", "out/o.mp4", "--tracks", "out/o.csv", *PEER], tmp_path)
    assert res.returncode == 2
    lines = error_lines(res.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:") and "nofile.mp4" in lines[0], res.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty"])
def test_corrupt_video_one_line_exit_2(tmp_path: Path, assets_dir: Path, kind: str) -> None:
    bad = tmp_path / "in" / "bad.mp4"
    bad.parent.mkdir()
    if kind == "garbage":
        bad.write_bytes(bytes(range(256)) * 200)
    elif kind == "truncated":
        d0 = assets_dir / D0
        if not d0.is_file():
            pytest.skip("d0.mp4 not in the assets")
        bad.write_bytes(d0.read_bytes()[:5000])
    else:
        bad.write_bytes(b"")
    out = tmp_path / "out"
    res = run_cli(["--source", str(bad), "--out", str(out / "o.mp4"), "--tracks", str(out / "o.csv"),
                   "--meshes", str(out / "meshes"), *PEER], tmp_path)
    assert res.returncode == 2
    lines = error_lines(res.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:") and "bad.mp4" in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists()
    assert [p.name for p in bad.parent.iterdir()] == ["bad.mp4"]
