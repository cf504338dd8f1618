"""run_stream.py: --help, and one clear line with exit code 2 for what users get wrong (nothing written)."""
from __future__ import annotations

import dataclasses
import sys
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


# ------------------------------------------------------------------------------------------ help and messages


def test_help_comments_are_whole() -> None:
    """A default.yaml comment carried on to the next line is in --help whole (it stopped at the line's end)."""
    from stream.cli import build_parser

    text = " ".join(build_parser("run").format_help().split())
    assert "glb (an animated glTF per track: Blender, three.js), npz+glb (both) (default: npz)" in text
    assert "other images are stills: detected each on its own, ids per image), true (a video)" in text
    serve = " ".join(build_parser("serve").format_help().split())
    assert "4 peers ~1.4 frames/s at ~2 s (raise it with the cores)" in serve


def test_help_examples_use_real_flags() -> None:
    """Every example command of the preamble parses, and every --flag the preamble names is a flag of run, serve
    or batch (the prose's dotted example too); serve takes its keys without the prefix, as batch does."""
    import re
    import shlex

    from stream.cli import USAGE as doc
    from stream.cli import build_parser, parse

    known = set()
    for command in ("run", "serve", "batch"):
        known.update(build_parser(command).known_flags())
    for flag in re.findall(r"(?<![\w-])--[a-z][\w.-]*[\w]", doc):
        assert flag in known, f"--help names {flag}, which is not a flag"
    examples = [line.split("python run_stream.py", 1)[1] for line in doc.splitlines()
                if "python run_stream.py" in line]
    assert len(examples) >= 7
    for example in examples:
        argv = shlex.split(re.split(r"\s{2,}", example)[0])  # the command, not its description
        parse(argv)  # a bad flag exits 2, a bad value raises ConfigError
    assert parse(["serve", "--port", "8091", "--host", "0.0.0.0", "--token", "t"])[1].serve == \
        dataclasses.replace(parse(["serve"])[1].serve, port=8091, host="0.0.0.0", token="t")


def test_unknown_yaml_key_names_the_closest(tmp_path: Path) -> None:
    """A misspelt YAML key gets a "did you mean" as a misspelt flag does (also inside a misspelt section)."""
    from stream.config import ConfigError, load_config

    for text, want in (("detect_evry: 5\n", "'detect_every'"), ("kalmn:\n  pose_gate: 3\n", "'kalman.pose_gate'"),
                       ("tracker:\n  min_hit: 2\n", "'tracker.min_hits'")):
        (tmp_path / "c.yaml").write_text(text)
        with pytest.raises(ConfigError, match=f"did you mean {want}"):
            load_config(tmp_path / "c.yaml")


def test_missing_extras_name_the_extra(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """batch without Ray names the [batch] extra, serve without aiortc the [webrtc] extra (installed: the package's
    extra, not requirements.txt, which a wheel does not have)."""
    from stream.app import serve
    from stream.batch.driver import batch
    from stream.cli import parse
    from stream.extras import install_hint

    monkeypatch.setitem(sys.modules, "ray", None)
    assert batch(parse(["batch", "v.mp4", "--outdir", "o"])[1]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: batch needs the [batch] extra (ray is not installed)") and "\n" not in line
    monkeypatch.setitem(sys.modules, "aiortc", None)
    assert serve(parse(["serve"])[1]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: serve needs the [webrtc] extra (aiortc is not installed)") and "\n" not in line
    assert install_hint("batch", "damdnet.stream.extras") == "pip install 'damdnet-stream[batch]'"
    assert install_hint("webrtc", "damdnet.stream.extras") == "pip install 'damdnet-stream[webrtc]'"


def test_webcam_without_a_camera_is_one_line(tmp_path: Path) -> None:
    """OpenCV's own warnings while it probes for a camera (13 lines) are not shown: only our error."""
    res = run_cli(["--source", "webcam:9", "--tracks", "o.csv"], tmp_path, timeout=120)
    lines = error_lines(res.stderr)
    if res.returncode == 0:
        pytest.skip("this machine has a camera 9")
    assert res.returncode == 2 and lines == ["error: cannot open webcam 9: no such camera, or it is busy or not "
                                             "permitted"], res.stderr
