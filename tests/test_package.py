"""The installable package: `pip install .` into a fresh venv, then the console command and the README's Python
examples from another folder. The dependencies come from this venv (a .pth file), so torch is not installed again;
the package itself is built and installed from a copy of the checkout's files, as a fresh clone has them."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from setup import rewrite_source
from tests.test_readme_use import readme_block

REPO = Path(__file__).resolve().parent.parent
D0 = "KwaiVGI/LivePortrait/assets/examples/driving/d0.mp4"


def readme_python_blocks() -> list[str]:
    """The ```python blocks of the README's "Python API" section."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def _run(cmd: list[str], cwd: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{cmd}\n{res.stdout}\n{res.stderr}"
    return res


def test_rewrite_maps_our_names_only() -> None:
    src = ('from model.aligner import Aligner\n    from stream.cli import main\nfrom modelx import y\n'
           'MODS = {"synthetic": "stream.synthetic"}\nw = "model.pth"\nmsg = "run `python -m model.assets fetch`"\n'
           'from run_stream import __doc__ as doc\n"""\nfrom tracking.kalman import ParamKalman\n"""\n')
    out = rewrite_source(src)
    assert "from damdnet.model.aligner import Aligner" in out and "    from damdnet.stream.cli import main" in out
    assert "from modelx import y" in out and '"model.pth"' in out  # not ours: unchanged
    assert '"damdnet.stream.synthetic"' in out and "python -m damdnet.model.assets fetch" in out
    assert "from damdnet.run_stream import __doc__" in out
    with pytest.raises(ValueError, match="unsupported import form"):
        rewrite_source("import model.aligner\n")


def _clone_and_venv(tmp_path: Path) -> tuple[Path, Path, Path, dict]:
    """A copy of the checkout's files as a fresh clone has them (``tmp_path/clone``) and a fresh venv whose
    dependencies come from this venv (a .pth file): (clone, venv python, venv site-packages, environment)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to list the files a clone has")
    import setuptools

    if tuple(int(x) for x in setuptools.__version__.split(".")[:2]) < (70, 1):
        pytest.skip(f"building without isolation needs setuptools >= 70.1 here (found {setuptools.__version__})")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    src = tmp_path / "clone"
    for name in filter(None, files):
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch & co. from this venv, after
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return src, py, site, env


@pytest.mark.slow
def test_pip_install_into_a_fresh_venv_then_command_and_examples(tmp_path: Path, assets_dir: Path) -> None:
    src, py, site, env = _clone_and_venv(tmp_path)
    venv = py.parent.parent
    _run([str(py), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "."], src, env)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # one top-level package of ours, and nothing of the repository's generic names
    probe = _run([str(py), "-c", "import importlib.util as u, damdnet; print(damdnet.__file__); "
                  "print([n for n in ('model', 'stream', 'tracking', 'run_stream') if u.find_spec(n)])"],
                 elsewhere, env).stdout.splitlines()
    assert probe[0].startswith(str(site)) and probe[1] == "[]"
    record = next(site.glob("damdnet_stream-*.dist-info")) / "RECORD"
    tops = {line.split("/")[0].split(",")[0] for line in record.read_text().splitlines()}
    assert {t for t in tops if not t.startswith("damdnet_stream-") and t != ".."} == {"damdnet"}, tops
    assert (site / "damdnet" / "model" / "weights" / "damdnet.pth").stat().st_size > 5e6
    assert (site / "damdnet" / "configs" / "default.yaml").is_file()
    static = [p.relative_to(src / "stream") for p in (src / "stream" / "webrtc" / "static").rglob("*") if p.is_file()]
    assert static and all((site / "damdnet" / "stream" / rel).is_file() for rel in static)  # the page, vendored js

    cmd = venv / "bin" / "damdnet-stream"
    res = _run([str(cmd), "--help"], elsewhere, env)
    assert res.stdout.startswith("usage: damdnet-stream") and "damdnet-stream --source webcam:0 --show" in res.stdout
    res = subprocess.run([str(cmd), "--trakcs", "t.csv"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.strip() == "error: unknown flag --trakcs; did you mean --tracks?"
    _run([str(cmd), "--source", "synthetic:1", "--weights", "damdnet", "--tracks", "t.csv", "--out", "o.mp4"],
         elsewhere, env)
    rows = (elsewhere / "t.csv").read_text().splitlines()
    assert rows[0].startswith("frame,time,track_id") and len(rows) > 25

    # the README's Python examples, as written, with their files in this folder
    shutil.copyfile(assets_dir / "cleardusk/3DDFA/samples/test1.jpg", elsewhere / "photo.jpg")
    _run([str(py), "-c", "import sys, av; i = av.open(sys.argv[1]); o = av.open('talk.mp4', 'w');"
          "s = o.add_stream('h264', rate=25); s.width, s.height, s.pix_fmt = 512, 512, 'yuv420p'\n"
          "for n, f in enumerate(i.decode(video=0)):\n"
          "    if n == 40: break\n"
          "    for p in s.encode(f.reformat(512, 512, 'yuv420p')): o.mux(p)\n"
          "for p in s.encode(): o.mux(p)\no.close()", str(assets_dir / D0)], elsewhere, env)
    blocks = readme_python_blocks()
    assert len(blocks) == 3 and all(len(b.strip().splitlines()) <= 5 for b in blocks)
    for block in blocks:
        code = block.replace('"webcam:0"', '"synthetic:1"')  # no camera here: the built-in synthetic face
        res = _run([str(py), "-c", code], elsewhere, env)
        assert res.stdout.strip(), (block, res.stderr)
    assert (elsewhere / "talk.csv").read_text().count("\n") > 30  # the track_video example wrote its tracks


@pytest.mark.slow
def test_readme_set_up_installs_the_checkout_so_a_script_elsewhere_uses_the_api(tmp_path: Path,
                                                                                 assets_dir: Path) -> None:
    """The README's set-up line installs this checkout into the venv (editable): a script in the user's own folder,
    run with the venv's python, imports damdnet (no "No module named 'damdnet'") and runs the README's first example;
    the repository names (model, stream, tracking) are the clone's. A model.py beside the script is named in one
    line instead of a confusing import error."""
    setup = readme_block("Set up")[0]
    editable = [part.strip() for part in setup.split("&&") if " install " in part and " -e " in f"{part} "]
    assert editable == [".venv/bin/pip install --no-deps -e ."], setup
    src, py, site, env = _clone_and_venv(tmp_path)
    _run([str(py), "-m", "pip", "install", "--no-deps", "-e", ".", "--no-build-isolation", "--no-index"], src, env)
    assert not (site / "damdnet").exists()  # editable: the clone itself, not a copy

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copyfile(assets_dir / "cleardusk/3DDFA/samples/test1.jpg", elsewhere / "photo.jpg")
    script = elsewhere / "my_script.py"
    script.write_text("import damdnet, model, stream, tracking\n"
                      "print(damdnet.__file__, model.__file__, stream.__file__, tracking.__file__)\n"
                      + readme_python_blocks()[0])
    res = _run([str(py), str(script)], elsewhere, env)
    files = res.stdout.splitlines()[0].split()
    assert [Path(f).resolve().parent.parent for f in files] == [src.resolve()] * 4, files
    assert len(res.stdout.splitlines()) == 3  # the two faces of test1.jpg
    assert (py.parent / "damdnet-stream").is_file()

    (elsewhere / "model.py").write_text("x = 1\n")
    res = subprocess.run([str(py), str(script)], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: damdnet needs this checkout's 'model' package") and "model.py" in last, last
