"""Build of the installable package; the metadata (name, dependencies, extras, console commands) is in pyproject.toml.

Why this file: the repository keeps ``model/``, ``stream/`` and ``tracking/`` at its root (``python run_stream.py``,
``python -m model.train`` and the tests import them by those names), but installed under those generic names they
would collide with other distributions' top-level ``model``/``stream``/``tracking`` packages. So the wheel holds one
top-level package, ``damdnet``, with the three inside it (``damdnet.model``, ``damdnet.stream``,
``damdnet.tracking``), plus ``damdnet/configs`` and ``damdnet/run_stream.py``; while the wheel is built, the absolute
imports between them (``from model.x import y``), the module names held in strings (``"stream.synthetic"``) and the
``python -m model.x`` hints in messages are rewritten to the ``damdnet.`` names (``rewrite_source``). The build
fails if any import or module-name string of the three is left over (``check_rewritten``), so nothing resolves
to another distribution's ``model``.

``pip install -e .`` (editable) is the development layout instead: this checkout on the path, the three packages
under their repository names, as when running from the repository (see README, "Install as a package").
"""
from __future__ import annotations

import ast
import re
import shutil
import sys
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
TOP = "damdnet"
INTERNAL = ("model", "stream", "tracking")
MODULES = ("run_stream",)  # top-level modules of the repository that the packages import
EDITABLE = any(arg.startswith("editable") for arg in sys.argv)

_IMPORT = re.compile(r"^(\s*)(from|import)(\s+)(" + "|".join(INTERNAL + MODULES) + r")\b", re.M)
_DASH_M = re.compile(r"python -m (" + "|".join(INTERNAL) + r")\.")
_STRING = re.compile(r"""(["'])((?:""" + "|".join(INTERNAL) + r""")(?:\.\w+)+)(:\w+)?\1""")


def _is_our_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def rewrite_source(text: str) -> str:
    """Source of a module of the repository -> the same module under ``damdnet.`` (see the module docstring)."""
    def imp(m: re.Match) -> str:
        if m.group(2) == "import":  # `import model.x` binds the name `model`: not rewritable to damdnet.model.x
            raise ValueError(f"unsupported import form {m.group(0).strip()!r}: use `from {m.group(4)}... import ...`")
        return f"{m.group(1)}{m.group(2)}{m.group(3)}{TOP}.{m.group(4)}"

    def string(m: re.Match) -> str:
        if not _is_our_module(m.group(2)):
            return m.group(0)  # e.g. "model.pth": not a module name
        return f"{m.group(1)}{TOP}.{m.group(2)}{m.group(3) or ''}{m.group(1)}"

    text = _IMPORT.sub(imp, text)
    text = _DASH_M.sub(rf"python -m {TOP}.\1.", text)
    return _STRING.sub(string, text)


def check_rewritten(path: Path, text: str) -> None:
    """Raise if ``text`` still imports, or names in a string, a top-level model/stream/tracking/run_stream."""
    roots = set(INTERNAL + MODULES)
    for node in ast.walk(ast.parse(text, str(path))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _STRING.fullmatch(
                repr(node.value)) and _is_our_module(node.value.split(":")[0]):
            names = [node.value]
        for name in names:
            if name.split(".")[0] in roots:
                raise ValueError(f"{path}:{node.lineno}: {name!r} left unrewritten in the wheel")


class BuildPy(build_py):
    """build_py that lays the wheel out under ``damdnet/`` and rewrites the imports (see the module docstring)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        lib = Path(self.build_lib) / TOP
        (lib / "configs").mkdir(parents=True, exist_ok=True)
        for f in (ROOT / "configs").glob("*.yaml"):
            shutil.copyfile(f, lib / "configs" / f.name)
        for name in MODULES:
            shutil.copyfile(ROOT / f"{name}.py", lib / f"{name}.py")
        for f in lib.rglob("*.py"):
            text = rewrite_source(f.read_text(encoding="utf-8"))
            check_rewritten(f, text)
            f.write_text(text, encoding="utf-8")


def _internal() -> list[str]:
    return find_packages(where=str(ROOT), include=[f"{n}" for n in INTERNAL] + [f"{n}.*" for n in INTERNAL])


if EDITABLE:  # the checkout itself on the path (development)
    options = dict(packages=[TOP, *_internal()], py_modules=list(MODULES))
else:
    packages = [TOP, *(f"{TOP}.{p}" for p in _internal())]
    options = dict(
        packages=packages,
        package_dir={TOP: TOP, **{f"{TOP}.{p}": p.replace(".", "/") for p in _internal()}},
        package_data={f"{TOP}.model": ["weights/*.pth", "weights/*.md"],
                      f"{TOP}.stream.webrtc": ["static/*", "static/**/*"]},
        cmdclass={"build_py": BuildPy},
    )

if __name__ == "__main__":  # setuptools runs this file as __main__; tests import rewrite_source from it
    setup(**options)
