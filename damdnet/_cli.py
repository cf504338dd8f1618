"""Console commands of the installed package (``[project.scripts]`` in pyproject.toml)."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """``damdnet-stream``: the CLI of ``run_stream.py`` (run, serve), under the command's name."""
    from stream.cli import main as cli_main

    return cli_main(sys.argv[1:] if argv is None else argv, prog="damdnet-stream")


def export_main(argv: list[str] | None = None) -> int:
    """``damdnet-export``: ``python -m model.export``."""
    from model.export import main as export

    return export(sys.argv[1:] if argv is None else argv)


def align_main(argv: list[str] | None = None) -> int:
    """``damdnet-align``: ``python -m model.align_images`` (still images -> annotated copies + results.json)."""
    from model.align_images import main as align

    return align(sys.argv[1:] if argv is None else argv)
