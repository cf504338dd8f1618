"""The inputs of a batch job: files, folders (recursive), glob patterns and text files of paths -> ``InputFile``s.

Each input gets a relative path (``rel``) that names its outputs under ``--outdir``: for a folder, the path below it;
for a glob, the path below the pattern's fixed leading folders; for plain files (given directly or listed in a text
file), the path below the deepest folder they share. The outputs of ``rel = a/b.mp4`` are ``a/b.<tracks format>``,
``a/b.overlay.<ext>`` and ``a/b.meshes/`` (``output_names``).
"""
from __future__ import annotations

import glob as _glob
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from model.errors import UserError

VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".mts", ".flv", ".wmv",
                    ".3gp", ".ogv"}
LIST_EXTENSIONS = {".txt", ".lst", ".list"}


class InputError(UserError, ValueError):
    """An input the user named cannot be used (one line)."""


@dataclass(frozen=True)
class InputFile:
    """One video of the job: absolute ``path``, ``rel`` (POSIX, names the outputs), ``size`` bytes, ``mtime`` s."""

    path: str
    rel: str
    size: int
    mtime: float

    @property
    def key(self) -> str:
        """What identifies the input in the manifest (its absolute path)."""
        return self.path


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".")


def _under(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def _walk(folder: Path, exclude: Path | None) -> list[Path]:
    """Video files below ``folder`` (recursive, hidden files and folders skipped, ``exclude`` skipped), sorted."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        root_p = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not _under(root_p / d, exclude))
        found += [root_p / f for f in sorted(files) if _is_video(root_p / f)]
    return found


def _glob_root(pattern: str) -> Path:
    """The leading folders of a glob pattern that hold no wildcard."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if _glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _read_list(path: Path) -> list[Path]:
    """Paths listed in a text file, one a line (blank lines and ``#`` comments skipped), relative to its folder."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the list of inputs {path}: {exc}") from None
    out = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            out.append(p if p.is_absolute() else path.parent / p)
    return out


def _relative_group(files: list[Path]) -> list[tuple[Path, str]]:
    """Plain files named one by one: their path below the deepest folder they share."""
    if not files:
        return []
    parents = [str(f.parent) for f in files]
    common = Path(os.path.commonpath(parents)) if len(set(parents)) > 1 else files[0].parent
    return [(f, f.relative_to(common).as_posix()) for f in files]


def resolve_inputs(specs: list[str], exclude: str | os.PathLike[str] | None = None) -> list[InputFile]:
    """All video files named by ``specs`` (files, folders, globs, text files of paths), in the order given, each once.

    ``exclude`` (the output folder) is never searched. Raises InputError (one line) for a name that does not exist,
    a folder or pattern with no video, and two inputs whose outputs would have the same names.
    """
    excl = Path(exclude).resolve() if exclude is not None else None
    pairs: list[tuple[Path, str]] = []
    loose: list[Path] = []
    for spec in specs:
        p = Path(spec).expanduser()
        if p.is_dir():
            folder = p.resolve()
            videos = _walk(folder, excl)
            if not videos:
                raise InputError(f"no video files in folder {spec} (looked for {', '.join(sorted(VIDEO_EXTENSIONS))})")
            pairs += [(v, v.relative_to(folder).as_posix()) for v in videos]
        elif p.is_file() and p.suffix.lower() in LIST_EXTENSIONS:
            listed = _read_list(p)
            missing = [str(x) for x in listed if not x.is_file()]
            if missing:
                raise InputError(f"{spec} lists {len(missing)} missing file(s), e.g. {missing[0]}")
            loose += [x.resolve() for x in listed]
        elif p.is_file():
            loose.append(p.resolve())
        elif _glob.has_magic(spec):
            root = _glob_root(spec).resolve()
            matches = [Path(m).resolve() for m in sorted(_glob.glob(spec, recursive=True))]
            videos = [m for m in matches if m.is_file() and _is_video(m) and not _under(m, excl)]
            if not videos:
                raise InputError(f"no video files match {spec}")
            pairs += [(v, v.relative_to(root).as_posix() if _under(v, root) else v.name) for v in videos]
        else:
            raise InputError(f"no such file or folder: {spec}")
    pairs += _relative_group(loose)
    seen: dict[str, InputFile] = {}
    bases: dict[str, str] = {}
    for path, rel in pairs:
        key = str(path)
        if key in seen:
            continue
        base = output_base(rel)
        if base in bases:
            raise InputError(f"inputs {bases[base]} and {rel} would write the same outputs ({base}.*): rename one or "
                             "run them into separate --outdir folders")
        bases[base] = rel
        st = path.stat()
        seen[key] = InputFile(path=key, rel=rel, size=int(st.st_size), mtime=float(st.st_mtime))
    if not seen:
        raise InputError("no inputs: give video files, folders, glob patterns or a .txt list of paths")
    return list(seen.values())


def output_base(rel: str) -> str:
    """``a/b.mp4`` -> ``a/b``: the stem every output of that input starts with (POSIX, relative)."""
    p = PurePosixPath(rel)
    return str(p.with_suffix("")) if p.suffix else str(p)


def output_names(rel: str, tracks: str, video: str | None, meshes: bool) -> dict[str, str]:
    """The outputs of one input, relative to the output folder: {"tracks": "a/b.csv", "out": "a/b.overlay.mp4",
    "meshes": "a/b.meshes"}; only the kinds asked for (``tracks`` "none" and ``video`` None ask for none)."""
    base = output_base(rel)
    names = {}
    if tracks and tracks != "none":
        names["tracks"] = f"{base}.{'llf.csv' if tracks == 'livelinkface' else tracks}"
    if video:
        names["out"] = f"{base}.overlay.{video}"
    if meshes:
        names["meshes"] = f"{base}.meshes"
    return names
