"""Downloads of upstream files for ``model.assets``: short connect timeout, failures remembered, offline switch.

A firewall that drops packets makes a connection hang until its timeout; every run that tries to download (``--weights
auto`` tries the authors' DAMDNet) would stall that long. So connecting (TCP and TLS handshake) has its own short
timeout, ``CONNECT_TIMEOUT_S``, and reads the longer ``READ_TIMEOUT_S``; a failed download is remembered per host in a
small JSON file (``FailureMemory``) and not tried again by later runs for ``RETRY_AFTER_S``.
``$DAMDNET_OFFLINE=1`` (or ``true``, ``yes``) turns downloads off altogether.
"""
from __future__ import annotations

import http.client
import json
import os
import time
import urllib.parse
import urllib.request
from pathlib import Path

ENV_OFFLINE = "DAMDNET_OFFLINE"
CONNECT_TIMEOUT_S = 5.0  # seconds to connect (TCP + TLS handshake); what a dropped-packet firewall costs a run
READ_TIMEOUT_S = 30.0  # seconds one read may wait once connected
RETRY_AFTER_S = 900.0  # seconds a failed download from a host is not tried again (``fetch`` on the CLI always tries)
MEMORY_FILE = ".download-failed.json"  # under the assets root that downloads go to


def offline() -> bool:
    """True when ``$DAMDNET_OFFLINE`` turns downloads off (1, true, yes, on)."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in ("1", "true", "yes", "on")


class _ConnectTimeout:
    """Connection mixin: connect under the opener's (short) timeout, then read under ``READ_TIMEOUT_S``."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]  # TCP (+ proxy tunnel, TLS handshake) under self.timeout
        self.sock.settimeout(READ_TIMEOUT_S)  # type: ignore[attr-defined]


class _HTTPConnection(_ConnectTimeout, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_ConnectTimeout, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPSConnection, req, context=self._context)  # type: ignore[attr-defined]


def download(url: str, dest: Path, label: str) -> None:
    """Download ``url`` to ``dest`` with a progress bar (tqdm); connect within ``CONNECT_TIMEOUT_S`` seconds.
    Raises OSError (``urllib.error.URLError``, ``TimeoutError``) when it cannot."""
    from tqdm import tqdm

    opener = urllib.request.build_opener(_HTTPHandler(), _HTTPSHandler())
    req = urllib.request.Request(url, headers={"User-Agent": "damdnet-assets"})
    with opener.open(req, timeout=CONNECT_TIMEOUT_S) as resp, open(dest, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=label, leave=False, disable=None) as bar:
            for chunk in iter(lambda: resp.read(1 << 16), b""):
                out.write(chunk)
                bar.update(len(chunk))


class FailureMemory:
    """Failed downloads per host, kept in ``folder/MEMORY_FILE`` as ``{host: {"time": epoch s, "error": str}}``."""

    def __init__(self, folder: Path) -> None:
        self.file = Path(folder) / MEMORY_FILE

    @staticmethod
    def host(url: str) -> str:
        return urllib.parse.urlsplit(url).netloc

    def _read(self) -> dict:
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict) -> None:
        try:
            if not data:
                self.file.unlink(missing_ok=True)
                return
            self.file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.file.with_name(f"{self.file.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data), encoding="utf-8")
            os.replace(tmp, self.file)
        except OSError:
            pass  # a read-only root: nothing remembered

    def recent(self, url: str, now: float | None = None) -> tuple[float, str] | None:
        """(seconds ago, error) of a failure from ``url``'s host within ``RETRY_AFTER_S``, else None."""
        entry = self._read().get(self.host(url))
        if not isinstance(entry, dict):
            return None
        try:
            age = (time.time() if now is None else now) - float(entry["time"])
        except (KeyError, TypeError, ValueError):
            return None
        return (age, str(entry.get("error", ""))) if 0 <= age < RETRY_AFTER_S else None

    def remember(self, url: str, error: str) -> None:
        data = self._read()
        data[self.host(url)] = {"time": time.time(), "error": " ".join(error.split())}
        self._write(data)

    def forget(self, url: str) -> None:
        data = self._read()
        if data.pop(self.host(url), None) is not None:
            self._write(data)
