"""README's use commands work as written on a fresh clone (no variable exported, ``python`` = the venv's), and a
misspelt flag is one line naming the closest flag."""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli_helpers import error_lines

REPO = Path(__file__).resolve().parent.parent


def fresh_env(home: Path) -> dict[str, str]:
    """A new user's shell: no DAMDNET_ASSETS, an empty home (no ~/.cache/damdnet), the venv's python first on PATH
    (what ``. .venv/bin/activate`` does)."""
    env = {k: v for k, v in os.environ.items() if k != "DAMDNET_ASSETS"}
    env["HOME"] = str(home)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["DAMDNET_OFFLINE"] = "1"
    return env


def readme_block(title: str) -> list[str]:
    """Command lines (comments stripped) of the first bash block under the README section ``title``."""
    text = (REPO / "README.md").read_text()
    section = text.split(f"## {title}", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()
            and not line.startswith("#")]


def test_misspelt_flag_is_one_line_with_the_closest_flag(tmp_path: Path) -> None:
    cases = [
        ([str(REPO / "run_stream.py"), "--trakcs", "out.csv"], "error: unknown flag --trakcs; did you mean --tracks?"),
        ([str(REPO / "run_stream.py"), "serve", "--serve.prot", "9"],
         "error: unknown flag --serve.prot; did you mean --serve.port?"),
        ([str(REPO / "run_stream.py"), "--kalman.pose-gat=3"],
         "error: unknown flag --kalman.pose-gat; did you mean --kalman.pose-gate?"),
        (["-m", "model.align_images", "x.jpg", "--ot", "o"], "error: unknown flag --ot; did you mean --out?"),
    ]
    for args, want in cases:
        res = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, res.stderr
        assert error_lines(res.stderr) == [want], res.stderr
        assert list(tmp_path.iterdir()) == []


def test_every_readme_use_command_parses() -> None:
    """Each ``python run_stream.py ...`` line of the Use section is accepted by the CLI (flags and values valid);
    each ``python -m MODULE`` names a module that exists."""
    from stream.cli import parse

    lines = [line for line in readme_block("Use") if line.startswith("python ")]
    assert len(lines) >= 8
    for line in lines:
        argv = shlex.split(line)[1:]
        if argv[0] == "run_stream.py":
            if "--help" in argv:
                continue
            parse(argv[1:])  # raises ConfigError or exits 2 on a bad flag
        else:
            assert argv[0] == "-m", line
            assert importlib.util.find_spec(argv[1]) is not None, line


def test_drive_an_avatar_commands_parse() -> None:
    """The "Drive an avatar" section's command lines are accepted by the CLI."""
    from stream.cli import parse

    lines = [line for line in readme_block("Drive an avatar") if line.startswith("python ")]
    assert len(lines) == 3
    for line in lines:
        argv = shlex.split(line)[1:]
        assert argv[0] == "run_stream.py", line
        parse(argv[1:])


@pytest.mark.slow
def test_readme_commands_as_written_on_a_fresh_clone(tmp_path: Path) -> None:
    """The set-up's demo and the Use section's --help and assets list, run by a shell exactly as written, with the
    venv active and no variable exported: the assets beside the checkout are found, also when a failed download
    left empty folders in the user cache."""
    if not (REPO.parent / "shared" / "assets" / "cleardusk").is_dir():
        pytest.skip("no ../shared/assets beside this checkout")
    env = fresh_env(tmp_path / "home")
    # what an offline run of the installed command used to leave in a clean HOME: empty asset folders
    for empty in ("cleardusk/3DDFA_V2/weights", "LeiJiangJNU/DAMDNet/models"):
        (tmp_path / "home" / ".cache" / "damdnet" / empty).mkdir(parents=True)
    use = readme_block("Use")
    for line in [x for x in use if x.endswith("--help") and "run_stream.py" in x] + \
            [x for x in use if x.startswith("python -m model.assets list")]:
        res = subprocess.run(["bash", "-c", line], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, (line, res.stderr)
        if "assets list" in line:
            assert re.search(r"^bfm68-u\s+present", res.stdout, re.M), res.stdout
            assert str(REPO.parent / "shared" / "assets") not in res.stderr
    setup = readme_block("Set up")[0]
    demo = setup.split("&&")[-1].strip()
    assert demo == ".venv/bin/python run_stream.py", setup
    work = tmp_path / "clone"
    work.mkdir()
    res = subprocess.run([sys.executable, str(REPO / "run_stream.py")], cwd=work, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert (work / "out" / "demo.mp4").stat().st_size > 0 and (work / "out" / "demo_tracks.csv").is_file()
