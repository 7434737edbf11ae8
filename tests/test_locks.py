"""`protlm.locks.OutputLock` between two real processes; a killed holder does not block the next."""
import os
import signal
import subprocess
import sys

import pytest

from protlm.locks import LockedError, OutputLock

HOLD = ("import sys, time; from protlm.locks import OutputLock; "
        "OutputLock(sys.argv[1], 'out.h5').acquire(); print('locked', flush=True); time.sleep(600)")


def test_second_holder_is_refused_naming_the_first_then_a_kill_frees_it(tmp_path):
    path = tmp_path / "out.h5.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError) as err:
            OutputLock(path, "out.h5").acquire()
        assert f"another process (pid {holder.pid} on {os.uname().nodename}, since " in str(err.value)
        assert "is writing out.h5" in str(err.value)
        holder.send_signal(signal.SIGKILL)        # the lock file stays behind, the lock does not
        holder.wait()
        assert path.exists()
        with OutputLock(path, "out.h5"):
            assert path.exists()
        assert not path.exists()                  # a clean release removes it
    finally:
        if holder.poll() is None:
            holder.kill()


def test_remote_paths_are_not_locked(tmp_path):
    lock = OutputLock("gs://bucket/run/protlm.lock", "MODEL_DIR gs://bucket/run").acquire()
    lock.release()
    assert not list(tmp_path.iterdir())
