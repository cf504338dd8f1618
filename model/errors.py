"""The one base of the errors a user can fix: ``UserError``.

Every user-facing error class of the project subclasses it (``AssetError``, ``CheckpointError``, ``ImageError``,
``FastPathError``, ``ExportError`` here in ``model``; ``ConfigError``, ``SourceError``, ``SinkError``,
``AudioError``, ``VMCError``, ``InputError``, ``BatchError``, ``UploadError`` in ``stream``) and is raised where the
cause is known, with the one line that says what is wrong and what to do (DESIGN.md section 7). It travels as it
is: nothing wraps it into another error. The command lines catch ``UserError`` alone and print ``error: LINE``
(exit status 2); anything else is a bug or an internal failure and keeps its traceback. The Python API's
``damdnet.DamdnetError`` is this class.

Classes that were ``ValueError`` or ``RuntimeError`` before this base existed keep that base too, so code that
catches those still catches them.
"""
from __future__ import annotations


class UserError(Exception):
    """Something the user can fix (a missing file, a bad option, no model, a full disk); ``str()`` is one line, the
    message the command lines print after ``error: ``."""
