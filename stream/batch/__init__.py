"""Batch jobs over many video files on Ray (``run_stream.py batch``): ``inputs`` (what to run), ``manifest`` (what
was done), ``actor`` (a worker holding a loaded model), ``driver`` (the job). See docs/SCALING.md."""
