"""What every `python -m protlm.<entry>` shares: one-line errors and an exit nothing can hang.

    if __name__ == "__main__":
        cli.run(main, "train")

`run` calls `main()`; a user-fixable error (`protlm.errors.user_message`) becomes
`prog: error: <one line>` on stderr and exit code 2 (1 for a failed checkpoint save), anything else
prints its traceback and exits 1. After a failure the process ends with `os._exit`, once output is
flushed: an open tf.data iterator whose Python generator died can deadlock the interpreter's final
garbage collection (seen in about half the runs after a FASTA error), and a failed run has already
closed what it owns (checkpoints, writers, locks) on the way out.
"""
from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Callable, NoReturn, Optional

from protlm import errors

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: int = logging.INFO) -> None:
    """`level` lines on stderr with time, level and logger; absl (orbax) and jax from WARNING only.

    Importing orbax logs through absl, which installs Python's default WARNING handler when the
    root logger has none: a later `logging.basicConfig(level=INFO)` is then a no-op and a command
    line shows only its progress bar. This sets the level and format on that handler too.
    """
    import absl.logging  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    # (first: the "absl" logger must be absl's own, which names the real caller of each record)
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format=LOG_FORMAT)
    for handler in root.handlers:
        if type(handler) is logging.StreamHandler:  # pylint: disable=unidiomatic-typecheck
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.setLevel(level)
    for chatty in ("absl", "jax"):   # orbax through absl; jax's backend probing ("no libtpu.so")
        logging.getLogger(chatty).setLevel(logging.WARNING)


def report(exc: BaseException, prog: str) -> Optional[int]:
    """Prints `prog: error: ...` for a user-fixable `exc` and returns its exit code, else None."""
    message = errors.user_message(exc)
    if message is None:
        return None
    print(f"{prog}: error: {message}", file=sys.stderr)
    return errors.exit_code(exc)


def run(main: Callable[[], int], prog: str) -> NoReturn:
    """Runs an entry point's `main()` and ends the process with its exit code."""
    try:
        code = int(main() or 0)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        if e.code not in (None, 0) and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        code = 130
    except BaseException as e:  # pylint: disable=broad-except
        code = report(e, prog)
        if code is None:
            traceback.print_exc()
            code = 1
    if code == 0:
        sys.exit(0)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # pylint: disable=protected-access
