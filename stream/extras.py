"""How to install an optional part of the package (pyproject.toml's ``[project.optional-dependencies]``), for the
one-line errors of commands that need it (``serve``: webrtc, ``batch``: batch)."""
from __future__ import annotations


def install_hint(extra: str, module: str = __name__) -> str:
    """The command that installs ``extra``: the package's extra when it runs installed (the wheel's modules are
    ``damdnet.*``, ``module`` is this module's name), else this checkout's pinned set."""
    if module.startswith("damdnet."):
        return f"pip install 'damdnet-stream[{extra}]'"
    return f"pip install -r requirements.txt (or pip install -e '.[{extra}]')"


def missing_extra(what: str, extra: str, exc: ImportError, module: str = __name__) -> str:
    """One line for ``what`` (a command) that cannot import a package of ``extra``: names the package and the fix."""
    name = getattr(exc, "name", None) or str(exc)
    return f"{what} needs the [{extra}] extra ({name} is not installed): {install_hint(extra, module)}"
