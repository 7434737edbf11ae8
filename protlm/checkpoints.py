"""Checkpoints: a thin layer over orbax ``CheckpointManager``.

Layout (docs/ARCHITECTURE.md)::

    MODEL_DIR/config.json                   {"family": "t5"|"bert", "config": {...}}
    MODEL_DIR/checkpoints/<step>/state      params, opt_state (absent for save_params), step
    MODEL_DIR/checkpoints/<step>/data/process_<i>-of-<n>/
                                            each host's input position: data_state.json
                                            (batches consumed, what the stream is) and the
                                            stream's own files (the tf.data iterator checkpoint)

orbax writes each step into a temporary directory and renames it when complete, so a
half-written checkpoint (crash, kill -9) is never listed by ``all_steps`` and never loaded.
A committed step whose files were damaged later (a copy cut short, a truncated data file) is
skipped when read without naming a step: ``restore_newest`` warns and uses the previous step
(``load_params``, resuming training), while an explicit ``step`` is a ``CheckpointError``.
Arrays are stored with their global shape, so a checkpoint written on one mesh restores
onto any other mesh (the restore target carries the new shardings). The data position is per
host (T5X saves its tf.data iterators the same way): it restores onto the same number of hosts
reading the same stream, and anything else is an error (``DataStateError``) unless the data is
restarted on purpose (``CheckpointConfig.restart_data``, gin ``RESTART_DATA``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import re
import sys
from typing import Any, Callable, Optional, Protocol

import jax
import numpy as np
import orbax.checkpoint as ocp

from protlm.errors import CheckpointError

log = logging.getLogger(__name__)

CHECKPOINT_SUBDIR = "checkpoints"
CONFIG_FILE = "config.json"
DATA_ITEM = "data"
DATA_STATE_FILE = "data_state.json"
RESTART_DATA_HINT = ("to start the data stream from its beginning on purpose, rerun with "
                     "--gin.RESTART_DATA=True")


# ----------------------------------------------------------------------------- manager
@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """orbax checkpointing: every N steps and at the end, keep N, optional warm start."""

    every_steps: int = 1000
    keep: Optional[int] = 3
    async_save: bool = True
    init_from: Optional[str] = None   # a MODEL_DIR to take initial params from (import_hf output)
    # Resume the model but start the input stream from its beginning (a saved data position
    # that cannot be used is otherwise an error, never a silent restart).
    restart_data: bool = False


# ----------------------------------------------------------------------------- data state
class DataStream(Protocol):
    """What a batch stream offers the checkpoint (``protlm.data.batch_sources``)."""

    description: dict          # what the stream is; a saved position fits only the same stream
    batches_consumed: int      # batches yielded so far

    def save(self, directory: str) -> None: ...

    def restore(self, directory: str, batches_consumed: int) -> None: ...


class DataStateError(CheckpointError):
    """A saved data position exists but cannot be restored into this run's stream."""


def _process_dir(directory: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(directory) / f"process_{jax.process_index():05d}-of-{jax.process_count():05d}"


class DataStateHandler(ocp.CheckpointHandler):
    """orbax handler of the ``data`` item: each process saves and restores its own stream."""

    def save(self, directory, args: "DataStateSave"):
        sub = _process_dir(directory)
        sub.mkdir(parents=True, exist_ok=True)
        args.stream.save(str(sub))
        info = {"batches_consumed": int(args.stream.batches_consumed),
                "description": args.stream.description}
        (sub / DATA_STATE_FILE).write_text(json.dumps(info, sort_keys=True), encoding="utf-8")

    def restore(self, directory, args: "DataStateRestore") -> dict:
        sub = _process_dir(directory)
        path = sub / DATA_STATE_FILE
        if not path.is_file():
            found = sorted(p.name for p in pathlib.Path(directory).glob("process_*")) or ["none"]
            raise DataStateError(f"no data state for this process ({sub.name}); saved: {', '.join(found)} "
                                 "(a different number of hosts, or a checkpoint of an older protlm)")
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            consumed, description = int(info["batches_consumed"]), dict(info["description"])
        except (ValueError, KeyError, TypeError) as e:
            raise DataStateError(f"{path} is unreadable ({e})") from None
        if args.stream is not None:
            now = json.loads(json.dumps(args.stream.description))   # compared as saved
            changed = sorted(k for k in set(description) | set(now) if description.get(k) != now.get(k))
            if changed:
                raise DataStateError("the input stream changed since this checkpoint: " + "; ".join(
                    f"{k} was {description.get(k)!r}, now {now.get(k)!r}" for k in changed))
            try:
                args.stream.restore(str(sub), consumed)
            except (ValueError, OSError) as e:
                raise DataStateError(str(e)) from None
        return info


@ocp.args.register_with_handler(DataStateHandler, for_save=True)
@dataclasses.dataclass
class DataStateSave(ocp.args.CheckpointArgs):
    stream: DataStream


@ocp.args.register_with_handler(DataStateHandler, for_restore=True)
@dataclasses.dataclass
class DataStateRestore(ocp.args.CheckpointArgs):
    stream: Optional[DataStream] = None   # None: read the info only


def checkpoint_dir(model_dir: str | os.PathLike) -> pathlib.Path:
    """``MODEL_DIR/checkpoints`` as an absolute path (orbax requires absolute paths)."""
    return pathlib.Path(model_dir).expanduser().absolute() / CHECKPOINT_SUBDIR


def make_manager(model_dir: str | os.PathLike, save_interval_steps: int = 1000,
                 max_to_keep: Optional[int] = 3, async_save: bool = True,
                 read_only: bool = False) -> ocp.CheckpointManager:
    """An orbax CheckpointManager for ``MODEL_DIR/checkpoints`` with items state + data.

    Args:
      model_dir: the run directory.
      save_interval_steps: ``save`` without ``force`` only writes on multiples of this.
      max_to_keep: newest checkpoints kept (None keeps all).
      async_save: write in a background thread while training continues.
      read_only: open an existing directory without creating or deleting anything.
    """
    # Read-only: the options orbax would otherwise reset (with a warning on every read).
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=0 if read_only else max(1, int(save_interval_steps)),
        max_to_keep=None if read_only else max_to_keep,
        enable_async_checkpointing=async_save, create=not read_only, read_only=read_only,
        cleanup_tmp_directories=not read_only)
    handlers = {"state": ocp.PyTreeCheckpointHandler(), DATA_ITEM: DataStateHandler()}
    return ocp.CheckpointManager(checkpoint_dir(model_dir), options=options,
                                 item_handlers=handlers)


class _ReadOnlyNotice(logging.Filter):
    """Drops orbax's "Given directory is read only" warning: every read opens a read-only manager."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Given directory is read only")


logging.getLogger("absl").addFilter(_ReadOnlyNotice())


def _quiet_closed_loop(previous):
    """An unraisable hook without the "Event loop is closed" tracebacks of a failed orbax read or
    write: tensorstore completes the remaining I/O of an aborted operation after orbax closed its
    event loop (one traceback per pending array). The failure itself is raised to the caller."""

    def hook(unraisable):
        value = unraisable.exc_value
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
            return
        previous(unraisable)

    return hook


sys.unraisablehook = _quiet_closed_loop(sys.unraisablehook)


# ----------------------------------------------------------------------------- damaged steps
_TENSORSTORE_SPEC = re.compile(r"\s*\[tensorstore_spec=.*", re.S)


def short_reason(exc: BaseException) -> str:
    """A short, one-line reason from an orbax / tensorstore restore error (no spec dumps)."""
    text = _TENSORSTORE_SPEC.sub("", str(exc)).strip().splitlines()
    reason = text[0] if text else type(exc).__name__
    return reason if len(reason) <= 300 else reason[:297] + "..."


def restore_newest(manager: ocp.CheckpointManager, restore: Callable[[int], Any],
                   step: Optional[int] = None,
                   on_unreadable: Optional[Callable[[int], None]] = None) -> tuple[int, Any]:
    """``restore(step)`` of the newest readable checkpoint (or of ``step`` exactly).

    Args:
      manager: from ``make_manager``.
      restore: reads one step; raises when its files are damaged.
      step: a step to read; no fall back (an unreadable one is a ``CheckpointError``).
      on_unreadable: called with each step that could not be read before an older one could
        (the trainer moves it out of the way).

    Returns:
      (step read, what ``restore`` returned).

    Raises:
      FileNotFoundError: no checkpoint (or not ``step``).
      CheckpointError: ``step`` is unreadable, or every step is.
    """
    root = pathlib.Path(manager.directory)
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        raise FileNotFoundError(f"{root}: no complete checkpoint")
    if step is not None:
        if step not in steps:
            raise FileNotFoundError(f"{root}: no checkpoint at step {step}; available: {sorted(steps)}")
        try:
            return step, restore(step)
        except Exception as e:  # orbax / tensorstore errors of damaged files
            others = [s for s in steps if s != step]
            hint = f"; choose another with --step {others[0]}" if others else ""
            raise CheckpointError(f"{root / str(step)} is unreadable ({short_reason(e)}){hint}") from None
    failed: list[tuple[int, str]] = []
    for s in steps:
        try:
            result = restore(s)
        except Exception as e:  # orbax / tensorstore errors of damaged files
            failed.append((s, short_reason(e)))
            continue
        for bad, reason in failed:
            log.warning("checkpoint step %d in %s is unreadable (%s); using step %d instead", bad, root,
                        reason, s)
            if on_unreadable is not None:
                on_unreadable(bad)
        return s, result
    raise CheckpointError(f"{root}: no checkpoint can be read; step {failed[0][0]}: {failed[0][1]}"
                          + (f" (and {len(failed) - 1} older steps)" if len(failed) > 1 else ""))


def latest_step(model_dir: str | os.PathLike) -> Optional[int]:
    """Newest complete checkpoint step under ``MODEL_DIR/checkpoints`` or None."""
    if not checkpoint_dir(model_dir).is_dir():
        return None
    with make_manager(model_dir, read_only=True) as manager:
        return manager.latest_step()


def save_state(manager: ocp.CheckpointManager, step: int, state: dict,
               data_stream: Optional[DataStream] = None, force: bool = False) -> bool:
    """Save ``state`` ({"params", "opt_state", "step"}) and this host's data position.

    Returns whether a save was started (orbax skips steps off ``save_interval_steps``
    unless ``force``). The data position is written before this returns (the stream moves on
    right after); the arrays are written asynchronously when the manager is: call
    ``manager.wait_until_finished()`` before exiting.
    """
    items = {"state": ocp.args.PyTreeSave(state)}
    if data_stream is not None:
        items[DATA_ITEM] = DataStateSave(data_stream)
    return manager.save(int(step), force=force, args=ocp.args.Composite(**items))


def state_keys(manager: ocp.CheckpointManager, step: int) -> set[str]:
    """Top-level keys of the saved ``state`` item (``opt_state`` is absent after save_params)."""
    meta = manager.item_metadata(step)["state"]
    tree = getattr(meta, "tree", meta)
    return set(tree.keys())


def restore_state(manager: ocp.CheckpointManager, step: int,
                  abstract_state: dict) -> tuple[dict, dict]:
    """Restore a (possibly partial) state onto the shardings of ``abstract_state``.

    Args:
      manager: from ``make_manager``.
      step: an entry of ``manager.all_steps()``.
      abstract_state: a pytree of ``jax.ShapeDtypeStruct`` with ``sharding`` set, e.g.
        ``{"params": ..., "opt_state": ..., "step": ...}`` or just ``{"params": ...}``;
        keys missing from it are not read.

    Returns:
      (state, data_info): ``data_info`` is this host's saved ``{"batches_consumed",
      "description"}`` (``{}`` when the checkpoint has no data position); the stream itself is
      restored by ``restore_data_state``.
    """
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_state)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(item=abstract_state, restore_args=restore_args,
                                     partial_restore=True)))
    try:
        info = _restore_data(manager, step, None) or {}
    except DataStateError:
        info = {}
    return restored["state"], info


def _restore_data(manager: ocp.CheckpointManager, step: int, stream) -> Optional[dict]:
    """The data item of ``step`` restored into ``stream`` (None when the checkpoint has none)."""
    if not (pathlib.Path(manager.directory) / str(step) / DATA_ITEM).exists():
        return None
    try:
        return manager.restore(step, args=ocp.args.Composite(**{DATA_ITEM: DataStateRestore(stream)}))[DATA_ITEM]
    except DataStateError:
        raise
    except Exception as e:  # orbax/tensorstore errors of a damaged item
        raise DataStateError(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None


def restore_data_state(manager: ocp.CheckpointManager, step: int, stream: DataStream,
                       required: bool, restart: bool = False) -> bool:
    """Move ``stream`` to the position this host saved with ``step``.

    Args:
      manager, step: the checkpoint.
      stream: this host's freshly opened training stream.
      required: whether the checkpoint must have a data position (a training checkpoint; the
        params-only checkpoints of ``save_params`` / import_hf have none).
      restart: start from the stream's beginning on purpose instead (``RESTART_DATA``).

    Returns:
      True when the stream was moved to the saved position.

    Raises:
      DataStateError: a data position is required or exists but cannot be used; the message
        names the checkpoint and the way out.
    """
    where = pathlib.Path(manager.directory) / str(step) / DATA_ITEM
    if restart:
        log.warning("RESTART_DATA: the input stream starts from its beginning; the data position "
                    "saved in %s is not used", where)
        return False
    try:
        info = _restore_data(manager, step, stream)
        if info is None and required:
            raise DataStateError("the checkpoint has no data position")
    except DataStateError as e:
        raise DataStateError(f"{where}: the saved data position cannot be restored: {e}. The model "
                             f"state of step {step} is intact; {RESTART_DATA_HINT}") from None
    if info is not None:
        log.info("data stream resumed at batch %d from %s", info["batches_consumed"], where)
    return info is not None


# ----------------------------------------------------------------------------- config.json
def _write_atomic(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_config(model_dir: str | os.PathLike, config: Any) -> pathlib.Path:
    """Write ``MODEL_DIR/config.json`` (``protlm.models.config_to_dict``) atomically."""
    from protlm import models
    path = pathlib.Path(model_dir) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        _write_atomic(path, json.dumps(models.config_to_dict(config), indent=2, sort_keys=True) + "\n")
    return path


def load_config(model_dir: str | os.PathLike) -> Any:
    """Read ``MODEL_DIR/config.json`` back into a model config dataclass."""
    from protlm import models
    path = pathlib.Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no model config; is {model_dir} a protlm model "
                                "directory (written by protlm.train, import_hf or save_params)?")
    try:
        return models.config_from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a valid protlm config.json ({e}); rewrite it with "
                         "protlm.checkpoints.save_config") from e


# ----------------------------------------------------------------------------- params only
def scan_layout(params: dict, scanned: bool) -> dict:
    """Convert between scanned (one ``layers`` subtree) and unscanned (``layers_{i}``) trees."""
    from protlm.models import scan_utils
    return scan_utils.stack_layers(params) if scanned else scan_utils.unstack_layers(params)


def _is_scanned(params: dict) -> bool:
    return any(isinstance(v, dict) and "layers" in v for v in params.values())


def save_params(model_dir: str | os.PathLike, params: Any, config: Any, step: int = 0) -> pathlib.Path:
    """Write a params-only orbax checkpoint plus ``config.json``, atomically.

    The tree is stored in the layout the config trains with (stacked when
    ``config.scan_layers``), so ``--gin.INIT_CHECKPOINT`` and resuming read it directly.

    Args:
      model_dir: run directory (created).
      params: params tree, boxed (``nn.LogicallyPartitioned``) or not, scanned or not.
      config: the model config dataclass.
      step: checkpoint step number.

    Returns:
      The checkpoint directory ``MODEL_DIR/checkpoints/<step>``.
    """
    import flax.linen as nn
    params = nn.unbox(params)
    want_scanned = bool(getattr(config, "scan_layers", False))
    if _is_scanned(params) != want_scanned:
        params = scan_layout(params, want_scanned)
    save_config(model_dir, config)
    with make_manager(model_dir, save_interval_steps=1, max_to_keep=None, async_save=False) as mngr:
        if step in mngr.all_steps():
            raise FileExistsError(f"{checkpoint_dir(model_dir) / str(step)} exists; choose another "
                                  "step or model_dir")
        save_state(mngr, step, {"params": params, "step": np.int32(step)}, force=True)
        mngr.wait_until_finished()
    return checkpoint_dir(model_dir) / str(step)


def load_params(model_dir: str | os.PathLike, step: Optional[int] = None) -> tuple[dict, Any]:
    """Load unboxed, unscanned params (host numpy arrays) and the model config.

    Args:
      model_dir: a directory written by ``protlm.train`` or ``save_params``.
      step: checkpoint step; when None the latest readable one (a damaged newer step is skipped
        with a warning naming it).

    Returns:
      (params, config).

    Raises:
      FileNotFoundError: no checkpoint, or none at ``step``.
      CheckpointError: ``step`` (or every step) is unreadable.
    """
    params, config, _ = read_params(model_dir, step)
    return params, config


def read_params(model_dir: str | os.PathLike, step: Optional[int] = None) -> tuple[dict, Any, int]:
    """``load_params`` plus the step that was read: (params, config, step)."""
    config = load_config(model_dir)
    with make_manager(model_dir, read_only=True) as mngr:

        def read(at: int):
            meta = mngr.item_metadata(at)["state"]
            tree = getattr(meta, "tree", meta)["params"]
            item = jax.tree_util.tree_map(lambda m: np.zeros((), m.dtype), tree)
            restore_args = jax.tree_util.tree_map(
                lambda m: ocp.RestoreArgs(restore_type=np.ndarray, dtype=m.dtype), tree)
            return mngr.restore(at, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
                item={"params": item}, restore_args={"params": restore_args}, partial_restore=True)))

        step, restored = restore_newest(mngr, read, step)
    params = restored["state"]["params"]
    if _is_scanned(params):
        params = scan_layout(params, scanned=False)
    return params, config, step
