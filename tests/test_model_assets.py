"""model.assets: mirror copy with checksum and atomic install, offline errors, git blob ids, root resolution, CLI."""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest

from model import assets as A
from model.assets import ASSETS, AssetError, AssetStore, file_git_blob, file_sha256, resolve_root

SMALL = "whitening-v1-mean"  # a small registered asset with a sha256 and an upstream URL


@pytest.fixture
def clean_env(monkeypatch):
    """No mirror or offline switch leaking in from the environment."""
    monkeypatch.delenv(A.ENV_MIRROR, raising=False)
    monkeypatch.delenv("DAMDNET_OFFLINE", raising=False)
    return monkeypatch


def _parts(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".part")]


def _one_line_names(msg: str, name: str) -> None:
    assert "\n" not in msg, msg
    assert f"'{name}'" in msg, msg
    assert f"python -m model.assets fetch {name}" in msg, msg


def test_mirror_copy_checks_sha256_and_installs_atomically(tmp_path, assets_dir, clean_env):
    store = AssetStore(root=tmp_path / "root", mirror=assets_dir)
    dest = store.local_path(SMALL)
    assert not dest.exists()
    got = store.path(SMALL)
    assert got == dest == tmp_path / "root" / ASSETS[SMALL].local
    assert file_sha256(got) == ASSETS[SMALL].sha256
    assert got.read_bytes() == (assets_dir / ASSETS[SMALL].local).read_bytes()
    assert _parts(tmp_path) == []
    # second call: no copy again (mirror may vanish)
    store2 = AssetStore(root=tmp_path / "root", mirror=tmp_path / "nowhere", allow_download=False)
    assert store2.path(SMALL) == dest


def test_mirror_with_wrong_bytes_is_refused_and_nothing_installed(tmp_path, clean_env):
    mirror = tmp_path / "mirror"
    bad = mirror / ASSETS[SMALL].local
    bad.parent.mkdir(parents=True)
    bad.write_text("0.0\n" * 62)
    store = AssetStore(root=tmp_path / "root", mirror=mirror, allow_download=False)
    with pytest.raises(AssetError) as ei:
        store.path(SMALL)
    msg = str(ei.value)
    _one_line_names(msg, SMALL)
    assert "checksum" in msg
    assert not store.local_path(SMALL).exists()
    assert _parts(tmp_path / "root") == []


def test_corrupted_local_file_is_reported(tmp_path, assets_dir, clean_env):
    store = AssetStore(root=tmp_path, mirror=assets_dir)
    dest = store.path(SMALL)
    dest.write_text("tampered")
    fresh = AssetStore(root=tmp_path, allow_download=False)
    with pytest.raises(AssetError) as ei:
        fresh.path(SMALL)
    _one_line_names(str(ei.value), SMALL)
    assert str(dest) in str(ei.value)


@pytest.mark.parametrize("name", [SMALL, "compat-checkpoint"])
def test_offline_miss_without_mirror_is_one_clear_line(tmp_path, clean_env, name):
    store = AssetStore(root=tmp_path, allow_download=False)
    with pytest.raises(AssetError) as ei:
        store.path(name)
    msg = str(ei.value)
    _one_line_names(msg, name)
    assert str(store.local_path(name)) in msg  # where to put it
    if ASSETS[name].url:
        assert ASSETS[name].url in msg  # where it comes from
    assert not store.local_path(name).exists()


def test_offline_env_switch_disables_download(tmp_path, clean_env):
    clean_env.setenv("DAMDNET_OFFLINE", "1")
    calls = []
    store = AssetStore(root=tmp_path, downloader=lambda url, dest, label: calls.append(url))
    with pytest.raises(AssetError):
        store.path(SMALL)
    assert calls == []


def test_download_failure_is_one_clear_line(tmp_path, clean_env):
    def offline(url, dest, label):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    store = AssetStore(root=tmp_path, downloader=offline)
    with pytest.raises(AssetError) as ei:
        store.path(SMALL)
    msg = str(ei.value)
    _one_line_names(msg, SMALL)
    assert str(store.local_path(SMALL)) in msg and "download failed" in msg
    assert not store.local_path(SMALL).exists()
    assert _parts(tmp_path) == []


def test_fake_downloader_installs_verified_bytes(tmp_path, assets_dir, clean_env):
    payload = (assets_dir / ASSETS[SMALL].local).read_bytes()
    seen = []

    def fake(url, dest, label):
        seen.append((url, label))
        final = tmp_path / ASSETS[SMALL].local
        assert not final.exists(), "written to the final path before the checksum"
        assert dest.parent == final.parent and dest.name.endswith(".part")
        dest.write_bytes(payload)

    store = AssetStore(root=tmp_path, downloader=fake)
    got = store.path(SMALL)
    assert seen == [(ASSETS[SMALL].url, SMALL)]
    assert "raw.githubusercontent.com/cleardusk/3DDFA/3545f355bfc71e5748fa915b13932958363135d7/" in seen[0][0]
    assert got.read_bytes() == payload
    assert _parts(tmp_path) == []


def test_fake_downloader_with_wrong_bytes_installs_nothing(tmp_path, clean_env):
    store = AssetStore(root=tmp_path, downloader=lambda url, dest, label: dest.write_bytes(b"<html>404</html>"))
    with pytest.raises(AssetError) as ei:
        store.path(SMALL)
    _one_line_names(str(ei.value), SMALL)
    assert not store.local_path(SMALL).exists()
    assert _parts(tmp_path) == []


def test_git_blob_id_matches_git_hash_object(tmp_path):
    f = tmp_path / "blob.bin"
    f.write_bytes(b"hello\x00world\n" * 1000)
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    want = subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True, check=True).stdout.strip()
    assert file_git_blob(f) == want
    # the well-known id of the empty blob
    e = tmp_path / "empty"
    e.write_bytes(b"")
    assert file_git_blob(e) == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert file_sha256(e) == hashlib.sha256(b"").hexdigest()


def test_git_blob_asset_check(tmp_path):
    f = tmp_path / "x"
    f.write_bytes(b"abc")
    a = A.Asset("t", "t/x", git_blob=file_git_blob(f))
    assert a.check(f)
    f.write_bytes(b"abd")
    assert not a.check(f)


def test_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv(A.ENV_ROOT, str(tmp_path / "env"))
    assert resolve_root(tmp_path / "flag") == tmp_path / "flag"  # --assets wins
    assert resolve_root() == tmp_path / "env"  # then $DAMDNET_ASSETS
    assert AssetStore().root == tmp_path / "env"
    monkeypatch.delenv(A.ENV_ROOT)
    monkeypatch.setattr(A, "CHECKOUT", tmp_path / "not-a-checkout")  # no ../shared/assets fallback here
    assert resolve_root() == Path(os.path.expanduser("~")) / ".cache" / "damdnet"  # then the user cache
    assert resolve_root("~/x") == Path.home() / "x"


def _clone_beside_shared(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """A checkout ``repo`` with ``shared/assets`` beside it and an empty home cache; returns (shared, cache)."""
    monkeypatch.delenv(A.ENV_ROOT, raising=False)
    repo, cache, shared = tmp_path / "repo", tmp_path / "home" / ".cache" / "damdnet", tmp_path / "shared" / "assets"
    (repo / ".git").mkdir(parents=True)
    shared.mkdir(parents=True)
    cache.mkdir(parents=True)
    monkeypatch.setattr(A, "CHECKOUT", repo)
    monkeypatch.setattr(A, "DEFAULT_ROOT", cache)
    return shared, cache


def _put(root: Path, name: str, assets_dir: Path) -> Path:
    dest = root / ASSETS[name].local
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(assets_dir / ASSETS[name].local, dest)
    return dest


def test_checkout_fallback_beside_a_clone(tmp_path, monkeypatch, assets_dir):
    """A fresh clone next to shared/assets finds them with no variable set; the user cache wins once it has
    assets; an installed package (no .git, no pyproject.toml beside it) never looks beside itself."""
    shared, cache = _clone_beside_shared(tmp_path, monkeypatch)
    _put(shared, A.PROBE, assets_dir)
    assert resolve_root() == shared
    assert AssetStore().root == shared
    assert A.search_roots() == [cache, shared]
    assert resolve_root(tmp_path / "flag") == tmp_path / "flag"
    _put(cache, A.PROBE, assets_dir)  # the user fetched the assets: their cache is the default again
    assert resolve_root() == cache
    (repo := tmp_path / "repo" / ".git").rmdir()  # not a checkout (an installed package)
    assert A.search_roots() == [cache] and resolve_root() == cache and not repo.exists()


def test_empty_folders_of_a_failed_download_do_not_hide_the_checkout_assets(tmp_path, monkeypatch, assets_dir,
                                                                           clean_env):
    """The state an offline `damdnet-stream` run used to leave in a clean HOME: empty asset folders in the user
    cache. Files resolve one by one: each comes from the first root that has it."""
    shared, cache = _clone_beside_shared(tmp_path, monkeypatch)
    for name in (A.PROBE, SMALL, "paf-grid"):
        _put(shared, name, assets_dir)
    (cache / "cleardusk" / "3DDFA_V2" / "weights").mkdir(parents=True)
    (cache / "LeiJiangJNU" / "DAMDNet" / "models").mkdir(parents=True)
    assert resolve_root() == shared
    store = AssetStore(allow_download=False)
    assert store.path(A.PROBE) == shared / ASSETS[A.PROBE].local
    mine = _put(cache, SMALL, assets_dir)  # one file in the cache: that one comes from there, the rest from shared
    store = AssetStore(allow_download=False)
    assert store.path(SMALL) == mine and store.path("paf-grid") == shared / ASSETS["paf-grid"].local
    assert store.has("paf-grid") and not store.has("yunet")
    with pytest.raises(AssetError) as ei:  # in neither: the error names both places it looked
        store.path("yunet")
    msg = str(ei.value)
    _one_line_names(msg, "yunet")
    assert str(cache / ASSETS["yunet"].local) in msg and str(shared / ASSETS["yunet"].local) in msg


def test_failed_download_leaves_no_folder_behind(tmp_path, clean_env):
    def offline(url, dest, label):
        raise urllib.error.URLError("[Errno 101] Network is unreachable")

    root = tmp_path / "cache"
    root.mkdir()
    (root / "cleardusk").mkdir()  # a folder that was there before stays
    with pytest.raises(AssetError, match="download failed"):
        AssetStore(root=root, downloader=offline).path("3ddfa-v2-mb05")
    with pytest.raises(AssetError, match="download failed"):
        AssetStore(root=root, downloader=offline).path("damdnet-authors", retry=True)
    from model.download import MEMORY_FILE  # the failure is remembered (see below); no asset folder is left

    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == [MEMORY_FILE, "cleardusk"]


def test_unknown_asset_name(tmp_path):
    with pytest.raises(AssetError, match="unknown asset 'nope'"):
        AssetStore(root=tmp_path).path("nope")


def _cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, DAMDNET_OFFLINE="1")
    env.pop(A.ENV_MIRROR, None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "model.assets", *args], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parent.parent, timeout=120)


def test_cli_list_and_verify_against_shared_assets(assets_dir):
    r = _cli("list", "--assets", str(assets_dir))
    assert r.returncode == 0, r.stderr
    lines = {l.split()[0]: l for l in r.stdout.splitlines() if l.strip()}
    assert set(lines) == set(ASSETS)
    store = AssetStore(root=assets_dir)
    present = [n for n in ASSETS if store.has(n)]
    assert "compat-checkpoint" in present and "yunet" in present
    for n in ASSETS:
        assert lines[n].split()[1] == ("present" if n in present else "missing"), lines[n]
    r = _cli("verify", *present, "--assets", str(assets_dir))
    assert r.returncode == 0, r.stdout + r.stderr
    status = {l.split()[0]: l.split()[1] for l in r.stdout.splitlines() if l.strip()}
    assert status == {n: "ok" for n in present}


def test_cli_verify_flags_missing_and_unknown(tmp_path):
    r = _cli("verify", SMALL, "--assets", str(tmp_path))
    assert r.returncode == 1 and "missing" in r.stdout
    r = _cli("verify", "no-such-asset", "--assets", str(tmp_path))
    assert r.returncode == 2 and "unknown asset" in r.stderr


def test_cli_fetch_from_mirror(tmp_path, assets_dir):
    r = _cli("fetch", SMALL, "--assets", str(tmp_path), "--mirror", str(assets_dir))
    assert r.returncode == 0, r.stderr
    assert file_sha256(tmp_path / ASSETS[SMALL].local) == ASSETS[SMALL].sha256


def test_a_failed_download_is_remembered_so_later_tries_do_not_wait(tmp_path, clean_env, assets_dir, monkeypatch):
    from model import download as D

    calls = []

    def stalls(url, dest, label):  # what a firewall that drops packets costs: the connect timeout
        calls.append(url)
        time.sleep(0.3)
        raise TimeoutError("timed out")

    with pytest.raises(AssetError, match="download failed: timed out"):
        AssetStore(root=tmp_path, downloader=stalls).path(SMALL)
    assert len(calls) == 1
    t0 = time.perf_counter()
    with pytest.raises(AssetError) as ei:  # a later run: no second try, no wait
        AssetStore(root=tmp_path, downloader=stalls).path("whitening-v1-std")
    assert time.perf_counter() - t0 < 0.2 and len(calls) == 1
    msg = str(ei.value)
    _one_line_names(msg, "whitening-v1-std")
    assert "raw.githubusercontent.com failed 0 s ago: timed out" in msg
    assert "a download from raw.githubusercontent.com failed" in ei.value.reason
    assert [p.name for p in tmp_path.iterdir()] == [D.MEMORY_FILE]  # the memory, no asset folder
    with pytest.raises(AssetError):  # the fetch command always tries
        AssetStore(root=tmp_path, downloader=stalls).path(SMALL, retry=True)
    assert len(calls) == 2
    monkeypatch.setattr(D, "RETRY_AFTER_S", 0.0)  # the memory expired: tried again, and a success clears it
    payload = (assets_dir / ASSETS[SMALL].local).read_bytes()
    AssetStore(root=tmp_path, downloader=lambda url, dest, label: dest.write_bytes(payload)).path(SMALL)
    assert not (tmp_path / D.MEMORY_FILE).exists()


def test_offline_switch_values_and_reason(tmp_path, clean_env):
    from model import download as D

    for value, off in (("1", True), ("yes", True), ("TRUE", True), ("0", False), ("", False)):
        clean_env.setenv("DAMDNET_OFFLINE", value)
        assert D.offline() is off, value
    clean_env.setenv("DAMDNET_OFFLINE", "1")
    with pytest.raises(AssetError) as ei:
        AssetStore(root=tmp_path).path(SMALL)
    assert ei.value.reason == "not in the assets, and downloads are off ($DAMDNET_OFFLINE)"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(20)
def test_download_gives_up_connecting_after_the_short_connect_timeout(tmp_path, monkeypatch):
    """A server whose accept queue is full drops the SYN, as a firewall that drops packets does: connecting hangs.
    The download gives up after CONNECT_TIMEOUT_S, not after a 30 s read timeout."""
    from model import download as D

    monkeypatch.setattr(D, "CONNECT_TIMEOUT_S", 0.5)
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        port = srv.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=2):  # fills the queue
            t0 = time.perf_counter()
            with pytest.raises(OSError, match="timed out"):
                D.download(f"http://127.0.0.1:{port}/x.bin", tmp_path / "x.bin", "x")
            assert time.perf_counter() - t0 < 3


def test_download_reads_under_the_longer_read_timeout(tmp_path, monkeypatch):
    """Once connected, a server slower than the connect timeout is waited for (READ_TIMEOUT_S)."""
    import http.server
    import threading

    from model import download as D

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            time.sleep(0.6)
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *args):
            pass

    monkeypatch.setattr(D, "CONNECT_TIMEOUT_S", 0.2)
    monkeypatch.setattr(D, "READ_TIMEOUT_S", 5.0)
    srv = http.server.HTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        D.download(f"http://127.0.0.1:{srv.server_address[1]}/x", tmp_path / "x", "x")
    finally:
        srv.shutdown()
        srv.server_close()
    assert (tmp_path / "x").read_bytes() == b"hello"
