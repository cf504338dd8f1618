"""`run_stream.py serve`: the product's WebRTC server starts with the pipeline, serves the page, and refuses a
non-loopback bind without a token."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_serve_starts_and_serves_the_page(repo_root):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "run_stream.py", "serve", "--serve.port", str(port), "--weights",
                             "3ddfa-v2-mb05"], cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline, page = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read().decode()  # noqa: S310
                break
            except OSError:
                time.sleep(0.5)
        assert page is not None, "server did not come up"
        assert "RTCPeerConnection" in page or "app.js" in page
        status = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2).read())  # noqa: S310
        assert status["peers"] == 0
        bad = urllib.request.Request(f"http://127.0.0.1:{port}/offer", data=b"{not json",
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(bad, timeout=5)  # noqa: S310
        assert err.value.code == 400
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert "Traceback" not in out, out


def test_serve_refuses_open_bind_without_token(repo_root):
    r = subprocess.run([sys.executable, "run_stream.py", "serve", "--serve.host", "0.0.0.0"], cwd=repo_root,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--serve.token" in lines[0], r.stderr
