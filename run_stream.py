#!/usr/bin/env python3
"""Real-time 3D face alignment (DAMDNet): the command line. ``python run_stream.py --help`` lists its uses and flags
(the text is ``stream.cli.USAGE``).
"""
from __future__ import annotations

import signal
import sys


class Interrupted(KeyboardInterrupt):
    """A signal (SIGINT, SIGTERM, SIGHUP) before the run installs its own handlers: ends start-up with one line."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


def main(argv: list[str] | None = None) -> int:
    """The CLI; a signal during start-up (the imports take seconds) exits 128 + signal with one line."""
    handlers = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            handlers[sig] = signal.signal(sig, _raise_interrupted)
        except (ValueError, OSError):  # not the main thread
            pass
    try:
        from stream.cli import main as cli_main

        if signal.SIGINT in handlers:  # Python's own again: asyncio turns it into a clean stop of the run
            signal.signal(signal.SIGINT, signal.default_int_handler)
        return cli_main(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"interrupted ({signal.Signals(signum).name}) during start-up; nothing was written", file=sys.stderr)
        return 128 + int(signum)


if __name__ == "__main__":
    sys.exit(main())
