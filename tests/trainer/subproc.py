"""Running `python -m protlm.*` in subprocesses with a chosen number of CPU devices."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

from tests.conftest import TEST_XLA_FLAGS

REPO = pathlib.Path(__file__).resolve().parents[2]


def env(devices: int = 1, extra: dict | None = None) -> dict:
    """The test environment; ``extra`` entries override it (PYTHONPATH is prepended to, a value
    of None removes the variable)."""
    e = dict(os.environ)
    e.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {TEST_XLA_FLAGS}",
             PYTHONPATH=str(REPO) + os.pathsep + e.get("PYTHONPATH", ""))
    for key, value in (extra or {}).items():
        if value is None:
            e.pop(key, None)
        elif key == "PYTHONPATH":
            e[key] = value + os.pathsep + e[key]
        else:
            e[key] = value
    return e


def popen(args: list[str], devices: int = 1, log_path=None) -> subprocess.Popen:
    out = open(log_path, "w") if log_path else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, env=env(devices),
                            stdout=out, stderr=subprocess.STDOUT)


def run(args: list[str], devices: int = 1, timeout: float = 600,
        extra_env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env(devices, extra_env),
                          capture_output=True, text=True, timeout=timeout)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 600) -> None:
    """Poll `predicate()` until true; fail if `proc` ends first or `timeout` passes."""
    t0 = time.time()
    while not predicate():
        assert proc.poll() is None, f"process ended early with {proc.returncode}"
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.2)
