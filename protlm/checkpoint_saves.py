"""Training checkpoints whose first failed save stops the run, with one message.

orbax writes a step in background threads. A write that fails (disk full, quota, a file size limit)
is logged there many times over (each array, each commit thread, each pending tensorstore
callback) while training goes on. `SaveGuard` instead

* checks before each save that the disk has room for the state (its bytes + 10 %) and stops before
  writing anything when it has not;
* checks the background save after every step and when the run ends: the first failure raises
  `CheckpointSaveError` naming the step, the directory, the free space and the cause. orbax's
  own error records of that failure are held back and dropped (they say the same, with tracebacks,
  and its writer threads go on logging it for a while); records of saves that did not fail are
  let through.

A failed step stays an orbax temporary directory: never listed as a checkpoint, removed when the
run resumes (``cleanup_tmp_directories``), so nothing half-written is taken for a checkpoint.
"""
from __future__ import annotations

import logging
import os
import pathlib
import re
import shutil
from typing import Optional

import jax

from protlm import checkpoints
from protlm.errors import CheckpointSaveError

log = logging.getLogger(__name__)
HEADROOM = 1.10   # free space wanted per save, relative to the state's bytes


def free_bytes(path: str | os.PathLike) -> Optional[int]:
    """Free bytes on the disk holding `path` (its nearest existing parent); None when remote."""
    if "://" in str(path):
        return None
    p = pathlib.Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# tensorstore: ... Failed writing: "<file>": ... <strerror> [os_error_code='28']
_OS_WRITE_ERROR = re.compile(r'Failed writing: "([^"]+)".*?\[os_error_code=\'(\d+)\'\]', re.S)


def write_reason(exc: BaseException) -> str:
    """The cause of a failed write in a few words: the file and the OS error when known."""
    found = _OS_WRITE_ERROR.search(str(exc))
    if found:
        return f"writing {found.group(1)} failed: {os.strerror(int(found.group(2)))}"
    return checkpoints.short_reason(exc)


# Where orbax's records come from: orbax itself, or absl's logging module when the "absl" logger was
# created before absl (then a plain Logger, which names absl's `log` as the caller).
_ORBAX_CALLERS = (f"{os.sep}orbax{os.sep}", f"{os.sep}absl{os.sep}logging{os.sep}")


class _HeldOrbaxErrors(logging.Filter):
    """Holds orbax's ERROR records until it is known whether a save failed; after a failure, drops
    them (orbax's remaining writer threads of that save keep logging it after it was reported)."""

    def __init__(self):
        super().__init__()
        self.held: list[logging.LogRecord] = []
        self.dropping = False

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "protlm_released", False):
            return True
        if record.levelno >= logging.ERROR and any(part in record.pathname for part in _ORBAX_CALLERS):
            if not self.dropping:
                self.held.append(record)
            return False
        return True

    def release(self, logger: logging.Logger) -> None:
        held, self.held = self.held, []
        for record in held:
            record.protlm_released = True
            logger.handle(record)


class SaveGuard:
    """Saves through `manager` and turns the first failed save into one `CheckpointSaveError`.

    Args:
      manager: the run's orbax CheckpointManager (``checkpoints.make_manager``).
    """

    def __init__(self, manager):
        self.manager = manager
        self.directory = pathlib.Path(str(manager.directory))
        self.pending: Optional[int] = None
        self.failed = False
        self._finished = False
        self._logger = logging.getLogger("absl")
        self._filter = _HeldOrbaxErrors()
        self._logger.addFilter(self._filter)

    def save(self, step: int, state: dict, data_stream: Optional[checkpoints.DataStream]) -> None:
        """Starts saving `step` and this host's data position (``checkpoints.save_state``) after
        checking the free space."""
        self.check()
        if self.pending is not None:   # orbax would wait for it too; its failure is its own
            try:
                self.manager.wait_until_finished()
            except Exception as e:  # pylint: disable=broad-except
                self._fail(self.pending, write_reason(e))
            self.check()
        needed = HEADROOM * sum(x.nbytes for x in jax.tree_util.tree_leaves(state) if hasattr(x, "nbytes"))
        free = free_bytes(self.directory)
        if free is not None and free < needed:
            self._fail(step, f"it needs about {format_bytes(needed)}", free)
        try:
            checkpoints.save_state(self.manager, step, state, data_stream, force=True)
        except Exception as e:  # pylint: disable=broad-except
            self._fail(step, write_reason(e))
        self.pending = step

    def check(self) -> None:
        """Raises `CheckpointSaveError` when the save in progress has failed (call every step)."""
        try:
            self.manager.check_for_errors()
        except Exception as e:  # pylint: disable=broad-except
            self._fail(self.pending, write_reason(e))
        if self.manager.is_saving_in_progress():
            return
        if self.pending is not None:
            step, self.pending = self.pending, None
            if not (self.manager.directory / str(step)).exists():   # orbax renames it on commit
                try:
                    self.manager.wait_until_finished()   # re-raises the background failure
                    reason = "the save ended without committing the step"
                except Exception as e:  # pylint: disable=broad-except
                    reason = write_reason(e)
                self._fail(step, reason)
        self._filter.release(self._logger)

    def finish(self) -> None:
        """Waits for the last save (at the end of the run, also after an error); once."""
        if self._finished:
            return
        self._finished = True
        try:
            if not self.failed:
                try:
                    self.manager.wait_until_finished()
                except Exception as e:  # pylint: disable=broad-except
                    self._fail(self.pending, write_reason(e))
                self.check()
            else:
                try:
                    self.manager.wait_until_finished()
                except Exception:  # pylint: disable=broad-except
                    pass           # the failure is already reported
        finally:
            if not self.failed:    # after a failure the filter stays: late records of that save
                self._logger.removeFilter(self._filter)
                self._filter.release(self._logger)

    def _fail(self, step: Optional[int], reason: str, free: Optional[int] = None) -> None:
        self.failed = True
        self._filter.dropping = True
        self._filter.held.clear()
        free = free_bytes(self.directory) if free is None else free
        where = "" if free is None else f"; {format_bytes(free)} free on that disk"
        latest = self.manager.latest_step()
        resume = f"step {latest}" if latest is not None else "the start"
        raise CheckpointSaveError(
            f"cannot write checkpoint step {step} to {self.directory}: {reason}{where}. Free space (or "
            f"set MODEL_DIR elsewhere) and rerun: training resumes from {resume}")
