"""Third-party files the project loads at run time: where they come from, where they live, and how to get them.

Every file is known by name (see ``ASSETS``) with its upstream repository, pinned commit, path and checksum. A local copy
lives at ``ROOT/OWNER/REPO/PATH``. The roots searched, per file (``search_roots``): ``--assets DIR``, else
``$DAMDNET_ASSETS``, else ``~/.cache/damdnet`` and then ``../shared/assets`` beside a source checkout when present.
A file missing from all of them is copied from a local mirror laid out the same way (``$DAMDNET_MIRROR``) or
downloaded once from upstream into the first root (progress bar, checksum, atomic rename; a failed download leaves
no file and no folder behind). Downloads connect within a few seconds, a failed one is remembered for a while
and ``$DAMDNET_OFFLINE=1`` turns them off (``model.download``). Offline with no mirror: one clear error naming the
file, every place looked at, where to put it and the command that fetches it.

CLI: ``python -m model.assets list|fetch|verify [NAME...] [--assets DIR] [--mirror DIR]``.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from model.cliparse import OneLineParser
from model.download import RETRY_AFTER_S, FailureMemory, download, offline
from model.errors import UserError

ENV_ROOT = "DAMDNET_ASSETS"
ENV_MIRROR = "DAMDNET_MIRROR"
DEFAULT_ROOT = Path("~/.cache/damdnet").expanduser()
RAW_URL = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"

C3DDFA = ("cleardusk/3DDFA", "3545f355bfc71e5748fa915b13932958363135d7")
C3DDFA_V2 = ("cleardusk/3DDFA_V2", "1b6c67601abffc1e9f248b291708aef0e43b55ae")
DAMDNET_UP = ("LeiJiangJNU/DAMDNet", "5d022faf827718d76b3a9ccf620d0a343443b994")
YUNET_ALT = ("ShiqiYu/libfacedetection.train", "0047ac24afb1a50a0c6105001c89d1b5b805dbf1")


class AssetError(UserError, RuntimeError):
    """A user-facing asset problem; ``str()`` is one line saying what is wrong and what to do; ``reason`` the short
    cause (for a log line, e.g. why ``--weights auto`` passed a model over)."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


@dataclass(frozen=True)
class Asset:
    """One third-party file.

    ``local`` is the path under the assets root (``OWNER/REPO/PATH``). ``sha256`` or ``git_blob`` (SHA-1 of
    ``"blob <size>\\0" + content``) identifies its bytes. ``url`` is None for files that exist only in a local mirror.
    """

    name: str
    local: str
    sha256: str | None = None
    git_blob: str | None = None
    url: str | None = None
    size: int | None = None
    what: str = ""

    def check(self, path: Path) -> bool:
        """True when the file at ``path`` has the expected checksum."""
        if self.sha256:
            return file_sha256(path) == self.sha256
        if self.git_blob:
            return file_git_blob(path) == self.git_blob
        return True


def _up(repo_commit: tuple[str, str], path: str, name: str, sha256: str | None = None, git_blob: str | None = None,
        size: int | None = None, what: str = "", url_from: tuple[str, str, str] | None = None) -> Asset:
    repo, commit = repo_commit
    if url_from is not None:
        url = RAW_URL.format(repo=url_from[0], commit=url_from[1], path=url_from[2])
    else:
        url = RAW_URL.format(repo=repo, commit=commit, path=path)
    return Asset(name=name, local=f"{repo}/{path}", sha256=sha256, git_blob=git_blob, url=url, size=size, what=what)


_W = "c++/weights/"
ASSETS: dict[str, Asset] = {a.name: a for a in [
    _up(C3DDFA, _W + "u_base.txt", "bfm68-u", "1ea7c3116070aeee720605a4a44ca9db582ac550095c321c3cf65ec925fe43cf",
        what="68-landmark BFM mean (204)"),
    _up(C3DDFA, _W + "w_shp_base.txt", "bfm68-w-shp",
        "bec9a2189eb77c61ff940c801dcd9e5cd7f1973b6d91949494d9cd7ac121b7f6", what="68-landmark shape basis (204x40)"),
    _up(C3DDFA, _W + "w_exp_base.txt", "bfm68-w-exp",
        "4dc637c92c34bfd69faab74cafce23913f2b6181ff00c57a7ab69c1204d20b18", what="68-landmark expression basis (204x10)"),
    _up(C3DDFA, _W + "param_mean.txt", "whitening-v1-mean",
        "a95a9179426c8f6ae6164427cfc1a5166d6a75fa6bab13be6c1e7cdce0ee4fbc", what="v1 (DAMDNet) parameter mean"),
    _up(C3DDFA, _W + "param_std.txt", "whitening-v1-std",
        "d85c14a6beda51665e9508e05d9528f8347e5afb347a972cd7adf1bffcd57143", what="v1 (DAMDNet) parameter std"),
    _up(C3DDFA, _W + "param_mean_v2.txt", "whitening-v2-mean",
        "aea8b3e0a3784a8b122919a21f554b88b24904bcc915e4b9d7d1034267e8944d", what="v2 (3DDFA_V2) parameter mean"),
    _up(C3DDFA, _W + "param_std_v2.txt", "whitening-v2-std",
        "8982896dec0c32838cecf3e021dfd08bdd6a0733e7029d0fb9a31061c6c08662", what="v2 (3DDFA_V2) parameter std"),
    _up(C3DDFA, "train.configs/Model_PAF.pkl", "paf-grid",
        "418713edd25e6c5938cb49e989ff8461d59a6c8bbe5aba3a643e9e77f9bc5e4d", what="dense 64x64 grid face surface"),
    _up(C3DDFA, "train.configs/keypoints_sim.npy", "keypoints",
        "065053f041b03ed32e36641d26fcd9aefef36f6c518899091cdc6038a6246c13", what="68 landmark indices (204)"),
    _up(C3DDFA, "train.configs/u_shp.npy", "bfm-u-shp",
        "8a3b8b5ba3b0526ce3ddd3e287b26e0192c150e477767f374a6e333a365ff7dd", what="dense BFM mean shape"),
    _up(C3DDFA, "train.configs/u_exp.npy", "bfm-u-exp",
        "69049fb360bfff61090f7705ba510ed9bd817da871edbaa69e2fed7df624cf19", what="dense BFM mean expression"),
    _up(C3DDFA, "visualize/tri.mat", "bfm-tri",
        "ff6c8371e65313ec248667d9d7bd69729d5cd126a0aa9f4cb74365a7d5715d71", what="dense BFM triangles (1-based)"),
    _up(C3DDFA, "train.configs/w_shp_sim.npy", "bfm-w-shp", git_blob="3edb87c006dc9b0788b66bfea2b174d1564d0ab9",
        what="dense BFM shape basis (159645x40), upstream only"),
    _up(C3DDFA, "train.configs/w_exp_sim.npy", "bfm-w-exp", git_blob="3aa7bd56ba1deb0218116875ece641366b57934a",
        what="dense BFM expression basis (159645x10), upstream only"),
    _up(C3DDFA, "models/phase1_wpdc_vdc.pth.tar", "3ddfa-v1", git_blob="411f37c2c6f91f8f8c0e4a3402be8b46da70a1e5",
        what="3DDFA v1 MobileNet weights, upstream only"),
    _up(C3DDFA_V2, "weights/mb05_120x120.pth", "3ddfa-v2-mb05",
        "f93ed7f1c4c0382b16d7c18480a5f67473c1917a47475a9823924f38aeb27280", what="3DDFA_V2 MobileNetV1 x0.5 weights"),
    _up(C3DDFA_V2, "weights/mb1_120x120.pth", "3ddfa-v2-mb1", git_blob="bb78e0cd616fa578febb725b4be3a3ddd546f6b4",
        what="3DDFA_V2 MobileNetV1 x1 weights, upstream only"),
    _up(C3DDFA_V2, "configs/param_mean_std_62d_120x120.pkl", "whitening-v2-pkl",
        "090d7150f77cb66c29ddae21e4508fbde59123dcd1dea7facc24a7ed06d1c795", what="3DDFA_V2 whitening"),
    _up(DAMDNET_UP, "models/DAMDNet.pth.tar", "damdnet-authors", git_blob="82923521eeda0d9e3e2a0a757a1f48a1d88d25ca",
        what="the authors' trained DAMDNet, upstream only"),
    _up(DAMDNET_UP, "models/MobDenseNet.pth.tar", "mobdensenet-authors",
        git_blob="dd7d547390f6da1be0d9725f925353b3cf6b461d", what="the authors' MobDenseNet (ablation)"),
    _up(("opencv/opencv_zoo", "lfs"), "models/face_detection_yunet/face_detection_yunet_2023mar.onnx", "yunet",
        "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4", what="YuNet face detector (ONNX)",
        url_from=(YUNET_ALT[0], YUNET_ALT[1], "onnx/yunet_s_640_640.onnx")),
    Asset("compat-checkpoint", "compat/damdnet_v1_random_init.pth.tar",
          "f07d32d3ff8ffead0a49d48f781888bc9cc6d51c4306a84a446c845c6e754f29",
          what="authors'-format DAMDNet checkpoint with random weights (mirror only)"),
    Asset("compat-io", "compat/damdnet_v1_random_init_io.npz",
          "335bdaed8a5f8ae26b117538c509bb4e6ce24ab0a51e9a164f3e15196f7fc004",
          what="input batch and the original network's output for compat-checkpoint (mirror only)"),
]}


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_git_blob(path: Path) -> str:
    """Git blob id of a file (what ``git hash-object FILE`` prints)."""
    h = hashlib.sha1()
    h.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


CHECKOUT = Path(__file__).resolve().parent.parent  # the repository root when running from a source checkout
PROBE = "bfm68-u"  # the file every command loads first (the 3DMM mean): which root ``resolve_root`` picks by default


def checkout_assets(checkout: Path | None = None) -> Path | None:
    """``../shared/assets`` beside a source checkout (a git clone or worktree: the layout of this repository's CI)
    when that folder exists, else None (always None for an installed package)."""
    checkout = checkout or CHECKOUT
    if not ((checkout / ".git").exists() or (checkout / "pyproject.toml").is_file()):
        return None
    sibling = checkout.parent / "shared" / "assets"
    return sibling if sibling.is_dir() else None


def search_roots(flag: str | os.PathLike | None = None) -> list[Path]:
    """The assets roots searched for each file, in order: ``[--assets]`` when given, else ``[$DAMDNET_ASSETS]``, else
    the user cache ``~/.cache/damdnet`` (where downloads go) followed by ``checkout_assets()`` when there is one."""
    if flag:
        return [Path(flag).expanduser()]
    env = os.environ.get(ENV_ROOT)
    if env:
        return [Path(env).expanduser()]
    sibling = checkout_assets()
    return [DEFAULT_ROOT] + ([sibling] if sibling is not None and sibling != DEFAULT_ROOT else [])


def _holds(root: Path, rel: str) -> bool:
    """True when ``root/rel`` is a file, or a folder with something in it (an empty folder holds nothing)."""
    path = root / rel
    if path.is_file():
        return True
    try:
        return path.is_dir() and any(path.iterdir())
    except OSError:
        return False


def resolve_root(flag: str | os.PathLike | None = None, rel: str | None = None) -> Path:
    """The root of ``search_roots(flag)`` that holds ``rel`` (a path under a root, e.g. a data folder; default: the
    3DMM mean every command loads), else the first root. So a fresh clone beside ``../shared/assets`` finds them with
    no variable set, and folders that a failed download left in the user cache do not hide them."""
    roots = search_roots(flag)
    rel = rel or ASSETS[PROBE].local
    return next((r for r in roots if _holds(r, rel)), roots[0])


Downloader = Callable[[str, Path, str], None]


class AssetStore:
    """Local asset folders with on-demand fetching, resolved per file.

    ``root``: the one folder to use (``--assets``); default ``search_roots()``: ``$DAMDNET_ASSETS``, else the user
    cache then ``../shared/assets`` beside a checkout. A file is taken from the first of ``roots`` that has it; a
    missing one is fetched into ``home`` (the first root). ``mirror``: a local folder laid out ``OWNER/REPO/PATH`` to
    copy from (default ``$DAMDNET_MIRROR``). ``allow_download``: may fetch from upstream over the network.
    ``root`` (the attribute): the root holding the 3DMM mean (``resolve_root``), for data found by folder.
    """

    def __init__(self, root: str | os.PathLike | None = None, mirror: str | os.PathLike | None = None,
                 allow_download: bool = True, downloader: Downloader | None = None) -> None:
        self.roots = search_roots(root)
        self.home = self.roots[0]
        self.root = resolve_root(root)
        m = mirror if mirror is not None else os.environ.get(ENV_MIRROR)
        self.mirror = Path(m).expanduser() if m else None
        self.allow_download = allow_download and not offline()
        self._download = downloader or download
        self._verified: set[str] = set()

    def __repr__(self) -> str:
        return (f"AssetStore(roots={[str(r) for r in self.roots]!r}, "
                f"mirror={str(self.mirror) if self.mirror else None!r})")

    def candidates(self, name: str) -> list[Path]:
        """Every place asset ``name`` is looked for, in order."""
        return [r / _asset(name).local for r in self.roots]

    def local_path(self, name: str) -> Path:
        """Where asset ``name`` lives: the first root that has the file, else where a fetch puts it (``home``)."""
        return next((p for p in self.candidates(name) if p.is_file()), self.home / _asset(name).local)

    def has(self, name: str) -> bool:
        """True when the file is present locally in one of the roots (not verified)."""
        return any(p.is_file() for p in self.candidates(name))

    def path(self, name: str, verify: bool = True, retry: bool = False) -> Path:
        """Local path of asset ``name``, fetching it once when missing (``retry``: even when a download from its
        host failed within ``RETRY_AFTER_S``). Raises AssetError with a one-line message."""
        asset = _asset(name)
        dest = self.local_path(name)
        if dest.is_file():
            if verify and name not in self._verified:
                if not asset.check(dest):
                    raise AssetError(f"checksum mismatch for asset '{name}' at {dest}: delete it and run "
                                     f"`python -m model.assets fetch {name}`")
                self._verified.add(name)
            return dest
        return self.fetch(name, retry=retry)

    def fetch(self, name: str, retry: bool = False) -> Path:
        """Copy (from the mirror) or download (from upstream) asset ``name`` into ``home``; checksum, atomic rename.
        A download is not tried when one from the same host failed within ``RETRY_AFTER_S``, unless ``retry``."""
        asset = _asset(name)
        dest = self.home / asset.local
        src_mirror = self.mirror / asset.local if self.mirror else None
        if src_mirror is not None and src_mirror.resolve() == dest.resolve():
            src_mirror = None
        if src_mirror is not None and src_mirror.is_file():
            self._install(asset, dest, lambda tmp: shutil.copyfile(src_mirror, tmp))
            return dest
        missing = self._missing_message(asset, dest)
        if asset.url is None:
            raise AssetError(missing, reason="not in the assets (only the project's asset mirror has it)")
        if not self.allow_download:
            raise AssetError(missing, reason="not in the assets, and downloads are off"
                             + (" ($DAMDNET_OFFLINE)" if offline() else ""))
        memory = FailureMemory(self.home)
        last = None if retry else memory.recent(asset.url)
        if last is not None:
            host, ago = memory.host(asset.url), _minutes(last[0])
            raise AssetError(f"{missing} (not downloaded: a download from {host} failed {ago} ago: {last[1]}; tried "
                             f"again {_minutes(RETRY_AFTER_S)} after that, or now by the fetch command)",
                             reason=f"not in the assets, and a download from {host} failed {ago} ago")
        try:
            self._install(asset, dest, lambda tmp: self._download(asset.url, tmp, name))
        except AssetError:
            raise
        except OSError as exc:  # URLError and timeouts are OSErrors
            memory.remember(asset.url, str(exc))
            raise AssetError(f"{missing} (download failed: {exc})",
                             reason=f"not in the assets, and the download failed ({exc})") from None
        memory.forget(asset.url)
        return dest

    def _install(self, asset: Asset, dest: Path, produce: Callable[[Path], None]) -> None:
        made = _missing_parents(dest.parent)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = None
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
            os.close(fd)
            tmp = Path(tmp_name)
            produce(tmp)
            if not asset.check(tmp):
                raise AssetError(f"checksum mismatch for asset '{asset.name}' fetched from "
                                 f"{asset.url or self.mirror}: the file was not installed; retry "
                                 f"`python -m model.assets fetch {asset.name}` or place a verified copy at {dest}")
            os.replace(tmp, dest)
            self._verified.add(asset.name)
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            if not dest.is_file():
                _remove_empty(made)  # a failed fetch leaves no file and no folder behind

    def _missing_message(self, asset: Asset, dest: Path) -> str:
        where = f"download it from {asset.url}" if asset.url else "it exists only in the project's asset mirror"
        looked = [str(p) for p in self.candidates(asset.name)]
        if self.mirror is not None:
            looked.append(f"{self.mirror / asset.local} (mirror)")
        return (f"missing asset '{asset.name}' ({asset.what}): not at {', '.join(looked)}; put it at {dest} ({where}), "
                f"or run `python -m model.assets fetch {asset.name}` online, "
                f"or point --assets / ${ENV_ROOT} at a folder that has it")


def _minutes(seconds: float) -> str:
    return f"{max(seconds, 0) / 60:.0f} min" if seconds >= 60 else f"{max(seconds, 0):.0f} s"


def _missing_parents(folder: Path) -> list[Path]:
    """The folders that ``folder.mkdir(parents=True)`` would create, deepest first."""
    made = []
    while not folder.exists() and folder.parent != folder:
        made.append(folder)
        folder = folder.parent
    return made


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty; stops at the first one that is not."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _asset(name: str) -> Asset:
    try:
        return ASSETS[name]
    except KeyError:
        raise AssetError(f"unknown asset '{name}'; known: {', '.join(sorted(ASSETS))}") from None


def _names(args: Iterable[str]) -> list[str]:
    names = list(args) or sorted(ASSETS)
    for n in names:
        _asset(n)
    return names


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m model.assets", description=(
        "List, fetch and verify the third-party files (3DMM bases, weights, detector) the project loads. "
        "Example: python -m model.assets fetch yunet --assets ~/.cache/damdnet"))
    p.add_argument("command", choices=["list", "fetch", "verify"])
    p.add_argument("names", nargs="*", help="asset names (default: all)")
    p.add_argument("--assets", help=f"assets root (default ${ENV_ROOT} or {DEFAULT_ROOT})")
    p.add_argument("--mirror", help=f"local mirror laid out OWNER/REPO/PATH to copy from (default ${ENV_MIRROR})")
    a = p.parse_args(argv)
    store = AssetStore(a.assets, a.mirror)
    try:
        names = _names(a.names)
    except AssetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bad = 0
    for n in names:
        asset = ASSETS[n]
        present = store.has(n)
        if a.command == "list":
            print(f"{n:22s} {'present' if present else 'missing':8s} {asset.local}  ({asset.what})")
        elif a.command == "fetch":
            try:
                print(f"{n:22s} ok  {store.path(n, retry=True)}")
            except AssetError as exc:
                bad += 1
                print(f"{n:22s} FAILED  {exc}", file=sys.stderr)
        else:
            if not present:
                print(f"{n:22s} missing")
                bad += 1
            elif asset.check(store.local_path(n)):
                print(f"{n:22s} ok")
            else:
                print(f"{n:22s} CHECKSUM MISMATCH {store.local_path(n)}")
                bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
