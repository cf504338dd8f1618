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


def _stop(proc: subprocess.Popen) -> str:
    """Ctrl-C the server (killed after 20 s) -> everything it printed."""
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


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
        out = _stop(proc)
    assert "Traceback" not in out, out


def test_serve_refuses_open_bind_without_token(repo_root):
    r = subprocess.run([sys.executable, "run_stream.py", "serve", "--serve.host", "0.0.0.0"], cwd=repo_root,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--serve.token" in lines[0], r.stderr


def _self_signed(tmp_path):
    """A self-signed certificate for 127.0.0.1 / localhost (cryptography comes with aiortc)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.mark.slow
def test_serve_over_https(repo_root, tmp_path):
    import ssl

    cert, key = _self_signed(tmp_path)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "run_stream.py", "serve", "--serve.port", str(port), "--weights",
                             "3ddfa-v2-mb05", "--serve.cert", str(cert), "--serve.key", str(key)], cwd=repo_root,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ctx = ssl.create_default_context(cafile=str(cert))
    try:
        deadline, page = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                page = urllib.request.urlopen(f"https://127.0.0.1:{port}/", timeout=2, context=ctx).read().decode()  # noqa: S310
                break
            except OSError:
                time.sleep(0.5)
        assert page is not None, "HTTPS server did not come up"
        assert "RTCPeerConnection" in page or "app.js" in page
        with pytest.raises(OSError):  # plain HTTP on the TLS port is refused
            urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2).read()  # noqa: S310
    finally:
        out = _stop(proc)
    assert f"https://127.0.0.1:{port}/" in out and "Traceback" not in out, out


def test_serve_refuses_half_or_bad_tls_config(repo_root, tmp_path):
    cert, _ = _self_signed(tmp_path)
    r = subprocess.run([sys.executable, "run_stream.py", "serve", "--serve.cert", str(cert)], cwd=repo_root,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "private key" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a key")
    r = subprocess.run([sys.executable, "run_stream.py", "serve", "--serve.cert", str(cert), "--serve.key",
                        str(bogus)], cwd=repo_root, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "TLS certificate" in r.stderr and "Traceback" not in r.stderr, r.stderr
