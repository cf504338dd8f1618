"""Shared fixtures: the assets directory (DAMDNET_ASSETS, defaulting to ../shared/assets beside the repo)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ASSETS = REPO.parent / "shared" / "assets"
os.environ.setdefault("DAMDNET_ASSETS", str(DEFAULT_ASSETS))
# absolute, so subprocesses started in other folders (the CLI tests) find the same assets
os.environ["DAMDNET_ASSETS"] = str(Path(os.environ["DAMDNET_ASSETS"]).resolve())
# No network in tests: upstream-only assets (e.g. the authors' weights) fail at once instead of trying to download.
# Tests of the download path inject their own downloader and clear this variable.
os.environ.setdefault("DAMDNET_OFFLINE", "1")
# ONNX exports of the fast path are cached per weights; the tests (and the CLIs they start) keep theirs apart from
# the user's cache, in one folder per test run.
if "DAMDNET_ONNX_CACHE" not in os.environ:
    os.environ["DAMDNET_ONNX_CACHE"] = tempfile.mkdtemp(prefix="damdnet-onnx-")


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    """Root of the local asset mirror (OWNER/REPO/PATH layout)."""
    path = Path(os.environ["DAMDNET_ASSETS"])
    if not path.is_dir():
        pytest.skip(f"assets directory {path} not found (set DAMDNET_ASSETS)")
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
