"""Refactors keep outputs byte for byte: tracks (CSV, JSONL, NPZ), meshes and overlay videos of two shared clips and the
synthetic demo hash as recorded in tests/fixtures/output_hashes.json (``bench/output_hashes.py --write``), per kind
of CPU."""
from __future__ import annotations

import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import output_hashes  # noqa: E402

pytestmark = pytest.mark.slow


def test_outputs_match_recorded_hashes(assets_dir):
    """The hashes recorded on this kind of CPU (the bytes of float outputs depend on the vector kernels it runs)."""
    expected = output_hashes.recorded()
    if expected is None:
        pytest.skip(f"no output hashes recorded for this CPU ({output_hashes.machine_key()}): "
                    "bench/output_hashes.py --write on the code before a change")
    got = output_hashes.collect(cwd=REPO)
    assert output_hashes.compare(expected, got) == []
