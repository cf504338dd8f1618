"""argparse with one-line errors for the project's commands (``run_stream.py``, ``python -m model.*``).

A misspelt flag prints ``error: unknown flag --trakcs; did you mean --tracks?`` (the closest flag by ``difflib``) and
exits 2, instead of argparse's usage block; every other argparse error is one ``error: ...`` line too. ``--help``
still prints the full usage.
"""
from __future__ import annotations

import argparse
import difflib
import sys
from typing import NoReturn, Sequence


def closest_flag(flag: str, known: Sequence[str]) -> str | None:
    """The known flag (or config key: ``stream.config`` uses it too) closest to ``flag`` (``difflib`` ratio >= 0.6),
    or None."""
    match = difflib.get_close_matches(flag, list(known), n=1, cutoff=0.6)
    return match[0] if match else None


def _is_flag(arg: str) -> bool:
    """Whether argparse reads ``arg`` as an option (``-3`` and ``-0.5`` are values)."""
    return arg.startswith("-") and len(arg) > 1 and not arg[1:2].isdigit() and arg[1:2] != "."


def unknown_argument_message(extras: Sequence[str], known: Sequence[str]) -> str:
    """One line for arguments argparse did not recognise: the first unknown flag with its closest known flag, or
    the first unexpected positional argument."""
    for arg in extras:
        if _is_flag(arg):
            flag = arg.split("=", 1)[0]
            best = closest_flag(flag, known)
            return f"unknown flag {flag}" + (f"; did you mean {best}?" if best else " (see --help)")
    return f"unexpected argument {extras[0]!r} (see --help)"


class OneLineParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one ``error: ...`` line on stderr (exit 2), with the closest
    flag suggested for a misspelt one. Abbreviated flags are refused (``allow_abbrev=False``): a prefix of a flag
    is a misspelling, not that flag."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def known_flags(self) -> list[str]:
        """Every long and short option string of this parser."""
        return [s for action in self._actions for s in action.option_strings]

    def parse_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None):
        args = list(sys.argv[1:] if args is None else args)
        known = set(self.known_flags())
        for arg in args:  # unknown flags first: before "the following arguments are required"
            if arg == "--":
                break
            if _is_flag(arg) and arg.split("=", 1)[0] not in known:
                self.error(unknown_argument_message([arg], sorted(known)))
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(unknown_argument_message(extras, self.known_flags()))
        return ns

    def error(self, message: str) -> NoReturn:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
