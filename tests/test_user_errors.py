"""One base for user errors (``model.errors.UserError``): a user error comes out as one line (CLI: ``error: ...``,
exit 2; API: ``damdnet.DamdnetError`` with that line), an internal error (a bug) keeps its traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli_helpers import REPO, cli_env, error_lines

# run_stream.py with the model loading inside build_engine replaced: a bug (RuntimeError) or a user error
_DRIVER = """
import sys
sys.path.insert(0, {repo!r})
import stream.assemble
from model.assets import AssetError

class Broken:
    @classmethod
    def from_checkpoint(cls, *args, **kwargs):
        if sys.argv[1] == "bug":
            raise RuntimeError("an index went out of range in the model loader")
        raise AssetError("the weights are missing: put them in ASSETS (python -m model.assets fetch)")

stream.assemble.Aligner = Broken
import run_stream
sys.exit(run_stream.main(sys.argv[2:]))
"""


def _run(kind: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _DRIVER.format(repo=str(REPO)), kind, "--source", "synthetic:1",
                           "--tracks", str(tmp_path / "t.csv")], cwd=tmp_path, env=cli_env(), capture_output=True,
                          text=True, timeout=300)


def test_cli_bug_keeps_its_traceback(tmp_path: Path) -> None:
    res = _run("bug", tmp_path)
    assert res.returncode == 1, res.stderr
    assert "Traceback (most recent call last)" in res.stderr
    assert "RuntimeError: an index went out of range in the model loader" in res.stderr
    assert not any(line.startswith("error:") for line in res.stderr.splitlines()), res.stderr


def test_cli_user_error_is_one_line(tmp_path: Path) -> None:
    res = _run("user", tmp_path)
    assert res.returncode == 2, res.stderr
    assert error_lines(res.stderr) == ["error: the weights are missing: put them in ASSETS "
                                       "(python -m model.assets fetch)"], res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "t.csv").exists()


def test_api_bug_is_not_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import damdnet
    import stream.assemble
    from model.assets import AssetError

    class Broken:
        @classmethod
        def from_checkpoint(cls, *args, **kwargs):
            raise RuntimeError("an index went out of range in the model loader")

    monkeypatch.setattr(stream.assemble, "Aligner", Broken)
    with pytest.raises(RuntimeError, match="out of range") as exc:
        damdnet.Session(weights="damdnet")
    assert not isinstance(exc.value, damdnet.DamdnetError)

    def missing(cls, *args, **kwargs):
        raise AssetError("the weights are missing")

    monkeypatch.setattr(Broken, "from_checkpoint", classmethod(missing))
    with pytest.raises(damdnet.DamdnetError, match="^the weights are missing$") as exc:
        damdnet.Session(weights="damdnet")
    assert type(exc.value) is AssetError  # as raised where the cause is known: not wrapped


def test_user_error_classes_share_the_base() -> None:
    import damdnet
    from model.align_images import ImageError
    from model.aligner import DeviceError
    from model.assets import AssetError
    from model.checkpoint import CheckpointError
    from model.errors import UserError
    from model.export import ExportError
    from model.fastpath import FastPathError
    from stream.audio import AudioError
    from stream.batch.driver import BatchError
    from stream.batch.inputs import InputError
    from stream.config import ConfigError
    from stream.sinks import SinkError
    from stream.sources import SourceError
    from stream.vmc import VMCError

    classes = [ImageError, DeviceError, AssetError, CheckpointError, ExportError, FastPathError, AudioError,
               BatchError, InputError, ConfigError, SinkError, SourceError, VMCError]
    assert all(issubclass(c, UserError) for c in classes)
    assert damdnet.DamdnetError is UserError
    # the builtin bases they had before the common base stay, for code that catches those
    assert issubclass(ConfigError, ValueError) and issubclass(AssetError, RuntimeError)
    assert not issubclass(UserError, RuntimeError)  # a RuntimeError is a bug, not a user error


# run_stream.py with the expression stage's weights file pointed elsewhere (a broken install)
_BROKEN_INSTALL = """
import sys
sys.path.insert(0, {repo!r})
import model.expression_net
model.expression_net.WEIGHTS = __import__("pathlib").Path(sys.argv[1])
import run_stream
sys.exit(run_stream.main(sys.argv[2:]))
"""


@pytest.mark.parametrize("content", [None, b"not a checkpoint"])
def test_cli_broken_expression_weights_is_one_line(tmp_path: Path, content: bytes | None) -> None:
    weights = tmp_path / "expression.pth"
    if content is not None:
        weights.write_bytes(content)
    res = subprocess.run([sys.executable, "-c", _BROKEN_INSTALL.format(repo=str(REPO)), str(weights), "--source",
                          "synthetic:1", "--tracks", str(tmp_path / "t.csv")], cwd=tmp_path, env=cli_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    (line,) = error_lines(res.stderr)
    assert "expression stage's weights" in line and str(weights) in line and "--expression false" in line, line
    assert "Traceback" not in res.stderr and not (tmp_path / "t.csv").exists()


def test_corrupt_yunet_file_is_an_asset_error(tmp_path: Path) -> None:
    from model.assets import AssetError
    from model.detect import YuNetDetector

    bad = tmp_path / "face_detection_yunet_2023mar.onnx"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(AssetError, match="cannot load the YuNet face detector from .*--detector haar"):
        YuNetDetector(str(bad))
