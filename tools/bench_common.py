"""Shared helpers of tools/bench_train.py and tools/bench_embed.py.

Timing (interleaved medians), peak memory (process RSS, `torch.cuda.max_memory_allocated`, jax
`memory_stats()`), library versions, device names, model resolution (preset / protlm directory /
Hugging Face directory), the matching transformers config, real protein batches built with
protlm's pure-Python token tables, and one-JSON-object-per-line output.

Nothing here imports TensorFlow or seqio (the GPU machine has neither). Call `setup_env()` before
jax or torch are imported.
"""
from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import statistics
import sys
import time
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
PRETRAINING_GLOB = "pretraining/combined_dedup/*.fasta.gz"
DEEPLOC_TEST = "deeploc/light_attention/deeploc_test_set.fasta"


def setup_env() -> None:
    """Process settings for fair side-by-side runs; call before importing jax / torch.

    jax must not grab 75 % of the GPU up front (torch shares the device in the same process), and
    TensorFlow-style logging stays quiet.
    """
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def data_root(arg: str | None = None) -> pathlib.Path:
    """`--data_root`, else `$PROTLM_DATA_ROOT`, else `../shared/data` beside the checkout."""
    root = pathlib.Path(arg or os.environ.get("PROTLM_DATA_ROOT") or REPO.parent / "shared" / "data")
    if not root.is_dir():
        raise SystemExit(f"data root {root} not found; pass --data_root or set PROTLM_DATA_ROOT")
    return root


def enable_compilation_cache(path: str | os.PathLike) -> None:
    """jax's persistent compilation cache in `path`, for every compilation (AOT compile caching).

    A second process (or a second `jax.jit` of the same function, e.g. a new `make_forward`
    closure) then loads the executable instead of compiling it again.
    """
    import jax  # pylint: disable=import-outside-toplevel

    jax.config.update("jax_compilation_cache_dir", os.fspath(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# ------------------------------------------------------------------------------------ output
def emit(record: Mapping) -> None:
    """Prints one JSON object on one line (NaN -> null) and flushes."""
    def clean(v):
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, (np.floating, np.integer)):
            return clean(v.item())
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    print(json.dumps(clean(dict(record)), sort_keys=True), flush=True)


def versions() -> dict[str, str]:
    """Versions of the libraries that decide the numbers."""
    out = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "flax", "optax", "torch", "transformers", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_name() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info() -> dict:
    """jax device kind and count, torch device, CPU model and thread counts."""
    import jax  # pylint: disable=import-outside-toplevel

    info = {"jax_device": jax.devices()[0].device_kind, "jax_platform": jax.default_backend(),
            "jax_device_count": jax.device_count(), "cpu": cpu_name(), "cpu_count": os.cpu_count()}
    try:
        import torch  # pylint: disable=import-outside-toplevel
        info["torch_device"] = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                                else "cpu")
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch_device"] = None
    return info


def run_header() -> dict:
    """Fields every measurement carries: date, versions, devices."""
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "versions": versions(), "device": device_info(), "argv": sys.argv[1:]}


# ------------------------------------------------------------------------------------ timing
def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def interleaved(fns: Mapping[str, Callable[[], None]], repeats: int,
                between: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Wall seconds of each `fn()` (which must block until its work is done), round-robin.

    Each round runs every function once, in alternating order (A B, B A, ...), so background load
    drifts hit all sides alike.

    Args:
      fns: name -> zero-argument callable.
      repeats: rounds.
      between: called with the name before each call (memory-peak resets).
    """
    names = list(fns)
    times = {n: [] for n in names}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            if between is not None:
                between(n)
            t0 = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t0)
    return times


# ------------------------------------------------------------------------------------ memory
_STATUS = pathlib.Path("/proc/self/status")
_CLEAR_REFS = pathlib.Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int | None:
    kb = _status_kb("VmRSS")
    return None if kb is None else kb * 1024


def reset_peak_rss() -> bool:
    """Resets the kernel's peak-RSS counter (VmHWM) of this process; False where unsupported."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int | None:
    """Peak resident memory of this process since start or the last `reset_peak_rss`."""
    kb = _status_kb("VmHWM")
    if kb is None:
        import resource  # pylint: disable=import-outside-toplevel
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return kb * 1024


def jax_peak_bytes() -> int | None:
    """`peak_bytes_in_use` of jax device 0 (GPU/TPU); None on CPU."""
    import jax  # pylint: disable=import-outside-toplevel
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def torch_peak_bytes(reset: bool = False) -> int | None:
    """`torch.cuda.max_memory_allocated()` (None without CUDA); `reset` restarts the peak."""
    import torch  # pylint: disable=import-outside-toplevel
    if not torch.cuda.is_available():
        return None
    if reset:
        torch.cuda.reset_peak_memory_stats()
        return None
    return int(torch.cuda.max_memory_allocated())


class RssPeaks:
    """Peak RSS per side while it runs (reset before each call), for `interleaved(between=...)`."""

    def __init__(self):
        self.supported = reset_peak_rss()
        self.peaks: dict[str, int] = {}
        self._current: str | None = None

    def __call__(self, name: str) -> None:
        self._collect()
        if self.supported:
            reset_peak_rss()
        self._current = name

    def _collect(self) -> None:
        if self._current is not None:
            peak = peak_rss_bytes() or 0
            self.peaks[self._current] = max(self.peaks.get(self._current, 0), peak)

    def finish(self) -> dict[str, int]:
        self._collect()
        self._current = None
        return dict(self.peaks)


# ------------------------------------------------------------------------------------ models
def resolve_model(spec: str, **overrides):
    """(config, source) for a preset name, a protlm model directory or a Hugging Face directory.

    Args:
      spec: e.g. "prot_t5_small", or a directory with `config.json`.
      **overrides: config fields to set (dtype, dropout_rate, scan_layers, ...); names the
        config does not have are ignored (callers check features they need).

    Returns:
      (config dataclass, "preset" | "protlm" | "huggingface").
    """
    from protlm import models  # pylint: disable=import-outside-toplevel

    path = pathlib.Path(spec)
    if spec in models.PRESETS:
        config, source = models.get_config(spec), "preset"
    else:
        config, source = _config_from_dir(path, spec)
    names = {f.name for f in dataclasses.fields(config)}
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if k in names}), source


def _config_from_dir(path: pathlib.Path, spec: str):
    from protlm import embed, models  # pylint: disable=import-outside-toplevel

    try:
        return embed.read_model_config(path)
    except FileNotFoundError:
        raise SystemExit(f"--model {spec!r}: neither a preset ({', '.join(sorted(models.PRESETS))}) "
                         "nor a directory with config.json") from None


def family(config):
    """The config's model family (`protlm.models.registry`)."""
    from protlm.models import registry  # pylint: disable=import-outside-toplevel
    return registry.get_family(config)


def hf_config(config, part: str | None = None):
    """The transformers config object of one part of a protlm config (`protlm.hf.spec`)."""
    from protlm.hf import spec  # pylint: disable=import-outside-toplevel

    return spec.transformers_config(config, part)


# ------------------------------------------------------------------------------------ data
def read_proteins(pattern: str | Iterable[str], num: int, min_length: int = 1,
                  skip: int = 0) -> list[tuple[str, str]]:
    """The first `num` (id, sequence) records of at least `min_length` residues (deterministic)."""
    from protlm.data.fasta import read_fasta  # pylint: disable=import-outside-toplevel

    out = []
    for i, rec in enumerate(read_fasta(pattern)):
        if i < skip or len(rec.sequence) < min_length:
            continue
        out.append((rec.id, rec.sequence))
        if len(out) == num:
            break
    if len(out) < num:
        raise SystemExit(f"{pattern}: only {len(out)} records with >= {min_length} residues")
    return out


def pretraining_proteins(root: pathlib.Path, num: int, min_length: int) -> list[str]:
    """`num` real proteins of the shared pre-training corpus (sorted files, file order)."""
    files = sorted(str(p) for p in root.glob(PRETRAINING_GLOB))
    if not files:
        raise SystemExit(f"no pre-training FASTA under {root / PRETRAINING_GLOB}")
    return [s for _, s in read_proteins(files, num, min_length)]


def objective_batch(config, seqs: Sequence[str], length: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The family's pretraining objective on `seqs` as numpy (`Family.array_batch`), identical for
    protlm and transformers."""
    fam = family(config)
    return fam.array_batch(seqs, fam.default_lengths(length), seed)


def residues_in(config, batch: Mapping[str, np.ndarray]) -> int:
    """Non-padding target tokens of a batch (the real work, as opposed to padded tokens)."""
    key = family(config).model(config).target_key
    return int((batch[key] > 0).sum())
