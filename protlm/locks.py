"""One writer at a time for an output (an embedding h5, a MODEL_DIR).

`OutputLock` takes an OS lock (`fcntl.flock`) on a lock file beside the output. The kernel drops
the lock when its holder exits in any way (kill -9 and crashes included), so a stale lock file never
blocks a resume; no liveness guess is needed. The file records the holder's pid, host and start
time for the message the next process prints, and is removed on a clean release.

    with OutputLock(out.with_name(out.name + ".lock"), str(out)):
        ...   # write out

Remote paths (gs://, s3://) have no OS locks: there the lock is skipped (with a log line).
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import pathlib
import socket
import time

log = logging.getLogger(__name__)


class LockedError(RuntimeError):
    """Another live process holds the output; the message names it and the way out."""


def _holder(fd: int) -> str:
    """'pid 123 on host h, since 10:04:05' from an open lock file (what is known of it)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode("utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "pid unknown: it is starting"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
    return f"pid {info.get('pid')} on {info.get('host')}, since {since}"


class OutputLock:
    """An exclusive, non-blocking lock on ``path`` guarding the output described by ``what``.

    Args:
      path: the lock file (created; its directory too).
      what: the output as the user knows it, for the error message.

    Raises (on ``acquire`` / ``with``):
      LockedError: another process holds it.
    """

    def __init__(self, path: str | os.PathLike, what: str):
        self.path = pathlib.Path(path)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> "OutputLock":
        if "://" in str(self.path):
            log.info("%s: no OS lock on a remote path; make sure no other run writes it", self.what)
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)   # a file system without locks: say so and go on unguarded
                    log.warning("%s: cannot lock %s (%s); concurrent runs will not be detected",
                                self.what, self.path, e.strerror)
                    return self
                holder = _holder(fd)
                os.close(fd)
                raise LockedError(
                    f"another process ({holder}) is writing {self.what}; wait for it to finish or stop "
                    f"it (its lock {self.path} goes away when it exits), or choose another output") from None
            try:   # the previous holder may have removed the file between our open and flock
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.time()}).encode("utf-8"))
        self._fd = fd
        return self

    def release(self) -> None:
        """Removes the lock file (still holding the lock, so no one takes a stale inode), unlocks."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)     # closing the last descriptor drops the flock
        self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
