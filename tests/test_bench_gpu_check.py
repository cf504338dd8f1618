"""bench/gpu_check.py is what a lent GPU session runs in its few minutes: its CPU dry run must stay green here."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.test_cli_helpers import cli_env

REPO = Path(__file__).resolve().parent.parent


def test_gpu_check_dry_run_agrees_and_measures(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--dry-run", "--seconds", "0.05",
                          "--batches", "1", "2"], cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert "agreement OK" in out and "| no |" not in out
    assert "### Faces/s" in out and "| DAMDNet (ours) | fast path fp32 |" in out
