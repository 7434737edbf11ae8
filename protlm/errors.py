"""The errors a user can fix, and their one-line message wherever a library wrapped them.

Entry points print `prog: error: <message>` for these instead of a traceback (`protlm.cli`):
bad input files (`FastaFormatError`, also when tf.data or Beam re-raised it as their own error
with the traceback in the text; `ExclusionFormatError` of a hits table), a data split without
records (`EmptySplitError`), settings a run cannot use (`ConfigError`), an output another
process holds (`LockedError`), checkpoints that cannot be read or written (`CheckpointError`).
"""
from __future__ import annotations

import re
from typing import Optional

from protlm.data.exclusions import ExclusionFormatError
from protlm.data.fasta import FastaFormatError
from protlm.data.splits import EmptySplitError
from protlm.locks import LockedError


class ConfigError(ValueError):
    """A setting a run cannot use; the message names it (the gin macro) and the fix."""


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read (or, `CheckpointSaveError`, written); the message names it."""


class CheckpointSaveError(CheckpointError):
    """A checkpoint could not be written: the run stops (exit 1), the last complete step is kept."""


# A FastaFormatError raised inside a tf.data py_func (or a Beam worker) reaches the caller as the
# framework's own error; its message holds "FastaFormatError: <our one line>" somewhere.
_WRAPPED_FASTA = re.compile(r"FastaFormatError: (.+?(?:\. Fix: [^\n]*))")
_GIN_SUFFIX = "\n  In call to configurable"
USER_ERRORS = (FastaFormatError, ExclusionFormatError, EmptySplitError, ConfigError, LockedError,
               CheckpointError, FileNotFoundError)


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def user_message(exc: BaseException) -> Optional[str]:
    """The one-line message of a user-fixable error in `exc`'s chain, else None (a bug: traceback)."""
    for e in _chain(exc):
        if isinstance(e, USER_ERRORS):
            text = str(e).split(_GIN_SUFFIX)[0].strip()
            if isinstance(e, FileNotFoundError) and e.filename and not text.startswith(str(e.filename)):
                text = f"{e.filename}: {e.strerror or text}"
            return text
    for e in _chain(exc):
        found = _WRAPPED_FASTA.search(str(e))
        if found:
            return found.group(1).strip()
    return None


def exit_code(exc: BaseException) -> int:
    """1 for a fault of the machine (a failed save), 2 for input or settings to fix."""
    return 1 if any(isinstance(e, CheckpointSaveError) for e in _chain(exc)) else 2
