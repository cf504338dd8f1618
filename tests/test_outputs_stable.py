"""Refactors keep outputs byte for byte: tracks (CSV, JSONL, NPZ), meshes and overlay videos of two shared clips and the
synthetic demo hash as recorded in tests/fixtures/output_hashes.json (``bench/output_hashes.py --write``)."""
from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import output_hashes  # noqa: E402

pytestmark = pytest.mark.slow


def test_outputs_match_recorded_hashes(assets_dir):
    expected = json.loads(output_hashes.FIXTURE.read_text())
    got = output_hashes.collect(cwd=REPO)
    assert output_hashes.compare(expected, got) == []
