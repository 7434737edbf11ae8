"""Training: the loop around the jitted train step (`protlm.train_step`).

`train()` (the gin entry point of `python -m protlm.train`) builds the mesh and the sharded state
(`protlm.train_state`), feeds the step global batches built from per-host numpy batches of a batch
source (`protlm.data.batch_sources`), logs every `log_every` steps, evaluates, checkpoints with
orbax and resumes exactly (each host's data position, e.g. its tf.data iterator state, is saved
with the state and restored into the source's stream: nothing is re-read). SIGTERM saves and
exits; a non-finite loss stops at the last good checkpoint.
Everything about the model comes from its family (`protlm.models.registry.get_family`).

Reliability: the settings and an evaluation's data are checked before the first step
(`protlm.run_checks`); one process at a time holds MODEL_DIR (`protlm.locks`, MODEL_DIR/protlm.lock,
released by the kernel when its holder dies, so a kill -9 never blocks a resume); a step's
checkpoint is started before its evaluation runs; the first failed save stops the run
(`protlm.checkpoint_saves`); a damaged newest checkpoint is skipped on resume (moved to
MODEL_DIR/unreadable_checkpoints/, `protlm.train_state`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import time
from typing import Any, Callable, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from protlm import checkpoints, dry_run as dry_run_lib, metrics as metrics_lib, optimizers
from protlm import partitioning, run_checks
from protlm.checkpoint_saves import SaveGuard
from protlm.locks import OutputLock
from protlm.data.batch_sources import BatchSource
from protlm.models import registry
from protlm.train_state import TrainState, restore_or_init, state_shardings
from protlm.train_step import (batch_sharding, compile_train_step, make_eval_step,
                               make_global_batch, summarize_train)

log = logging.getLogger(__name__)
LOCK_FILE = "protlm.lock"          # MODEL_DIR/protlm.lock while a run holds the directory
PRNG_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")   # jax.random key implementations for dropout
Batch = Mapping[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Periodic evaluation on the validation split (``every_steps <= 0`` disables it)."""

    every_steps: int = 1000
    num_batches: int = 8


class _Preemption:
    """SIGTERM (TPU preemption, scheduler stop) -> save at the next step, then exit 0."""

    def __init__(self):
        self.requested = False
        self._old = None
        self._multi = jax.process_count() > 1
        if not self._multi:
            try:
                self._old = signal.signal(signal.SIGTERM, self._handle)
            except ValueError:   # not the main thread
                self._old = None

    def _handle(self, signum, frame):
        log.warning("SIGTERM received: saving a checkpoint after this step, then exiting")
        self.requested = True

    def check(self, step: int) -> bool:
        if self._multi:
            from jax.experimental import multihost_utils
            try:
                return bool(multihost_utils.reached_preemption_sync_point(step))
            except Exception:  # preemption service not running
                return False
        return self.requested

    def restore(self):
        if not self._multi and self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def evaluate(model, eval_step, params, data: BatchSource, per_host: int, global_batch: int,
             num_batches: int, bsh, carry=None) -> dict[str, float]:
    """Summed eval metrics over ``num_batches`` validation batches (from the split's start).

    A stateful model starts from ``carry`` (a fresh memory) and carries it from batch to batch,
    so the metrics are those of a long stream read with memory.
    """
    it = data("validation", per_host, jax.process_index(), jax.process_count(), True)
    sums = None
    try:
        for _ in range(num_batches):
            out, carry = eval_step(params, make_global_batch(next(it), bsh, global_batch), carry)
            sums = out if sums is None else jax.tree_util.tree_map(jnp.add, sums, out)
    finally:
        _close(it)
    return model.summarize_eval(jax.device_get(sums))


def _close(iterator) -> None:
    """Close a generator now (an open tf.data iterator can hang interpreter exit)."""
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


def train(*, model_dir: str, model_config: Any, data: BatchSource, train_steps: int,
          batch_size: int, learning_rate: Callable = optimizers.constant_schedule(1e-3),
          optimizer: Callable = optimizers.adafactor,
          partition: partitioning.PartitionConfig = partitioning.PartitionConfig(),
          checkpoint: checkpoints.CheckpointConfig = checkpoints.CheckpointConfig(),
          evaluation: EvalConfig = EvalConfig(), accum_steps: int = 1, seed: int = 0,
          log_every: int = 100, peak_flops_per_device: Optional[float] = None,
          prng_impl: str = "threefry2x32", dry_run_only: bool = False,
          model: Any = None) -> dict:
    """Train (or resume training) ``model_config`` for ``train_steps`` optimizer steps.

    Args:
      model_dir: run directory: checkpoints/, tensorboard/, metrics/, config.json.
      model_config: a model config of any registered family (``protlm.models.get_config``).
      data: a batch source (``SeqioSource`` or ``ArraySource``).
      train_steps: total optimizer steps (a resumed run continues up to this number).
      batch_size: global batch size (sequences per optimizer step, all hosts together).
      learning_rate: schedule ``step -> lr`` (``protlm.optimizers``).
      optimizer: ``learning_rate -> optax.GradientTransformation``.
      partition, checkpoint, evaluation: see the dataclasses above.
      accum_steps: microbatches per step (gradient accumulation).
      seed: parameter init and dropout seed.
      log_every: steps between metric lines / TensorBoard points.
      peak_flops_per_device: override the peak used for MFU (default: table by device kind).
      prng_impl: PRNG of the dropout keys: ``threefry2x32`` (jax's default; masks independent
        of the mesh) or ``rbg`` / ``unsafe_rbg`` (XLA's RngBitGenerator, as MaxText uses:
        cheaper masks; bits may depend on the sharding). Irrelevant without dropout.
      dry_run_only: only lower + compile the train step on abstract inputs and report memory.
      model: the Model to train instead of ``family.model(model_config)``, e.g. a
        ``protlm.finetune.FinetuneModel`` (LoRA, task heads) around it; it gives its own
        ``feature_lengths``, ``tokens_per_example`` and ``flops_per_example`` (throughput) and
        may build its warm start from ``CheckpointConfig.init_from`` (``warm_start``).

    Returns:
      ``{"status": "done"|"preempted"|"nonfinite"|"dry_run", "step", "train", "eval"}``.
    """
    if prng_impl not in PRNG_IMPLS:
        raise ValueError(f"prng_impl must be one of {PRNG_IMPLS} (gin macro PRNG_IMPL), "
                         f"got {prng_impl!r}")
    run_checks.check_train_steps(train_steps)
    nproc = jax.process_count()
    mesh, rules = partition.mesh(), partition.logical_rules()
    run_checks.check_batch_size(batch_size, dict(mesh.shape), accum_steps, nproc)
    per_host = batch_size // nproc
    family = registry.get_family(model_config)
    own_model = model is None      # the family's objective (else a wrapper, protlm.finetune)
    model, schedule = (family.model(model_config) if own_model else model), learning_rate
    tx = optimizer(learning_rate=schedule)
    cost = model_config if own_model else model   # the throughput basis (a wrapper gives its own)

    def feature_lengths(shapes) -> dict[str, int]:
        return (family if own_model else model).feature_lengths(shapes)

    def step_cost(shapes) -> tuple[int, float]:
        """(tokens, model FLOPs) of one step of `batch_size` examples of these batch shapes."""
        lengths = feature_lengths(shapes)
        return (batch_size * cost.tokens_per_example(lengths),
                batch_size * float(cost.flops_per_example(lengths)))

    if dry_run_only:
        shapes = data.batch_shapes(model_config, batch_size)
        return {"status": "dry_run", **dry_run_lib.dry_run(model, tx, schedule, shapes, mesh, rules,
                                                           step_cost(shapes)[1], accum_steps,
                                                           prng_impl)}

    started = time.time()
    with contextlib.ExitStack() as cleanup:
        if jax.process_index() == 0:   # before orbax may clean up "stale" temporary directories
            cleanup.enter_context(OutputLock(f"{model_dir}/{LOCK_FILE}", f"MODEL_DIR {model_dir}"))
        if evaluation.every_steps > 0:
            run_checks.check_validation_split(lambda: data(
                "validation", per_host, jax.process_index(), nproc, True))
        manager = checkpoints.make_manager(model_dir, checkpoint.every_steps, checkpoint.keep,
                                           checkpoint.async_save)
        cleanup.callback(manager.close)
        saver = SaveGuard(manager)
        cleanup.callback(saver.finish)
        stream = _TrainStream(data, manager, per_host, checkpoint.restart_data)
        cleanup.callback(stream.close)
        shapes = {k: jax.ShapeDtypeStruct((batch_size,) + np.shape(v)[1:], jnp.int32)
                  for k, v in stream.first.items()}
        if own_model:
            _check_batch_keys(family, model_config, shapes)
        abstract, shardings = state_shardings(model, tx, shapes, mesh, rules)
        state, _ = restore_or_init(manager, model, tx, shapes, abstract, shardings, mesh,
                                            rules, seed, checkpoint.init_from)
        stream.resume_at(manager.latest_step())   # older than the newest when that was unreadable
        checkpoints.save_config(model_dir, model_config)
        writer = metrics_lib.MetricWriter(model_dir, enabled=jax.process_index() == 0)
        cleanup.callback(writer.close)
        preemption = _Preemption()
        cleanup.callback(preemption.restore)
        tokens_per_step, flops_per_step = step_cost(shapes)
        perf = {"tokens_per_step": tokens_per_step, "flops_per_step": flops_per_step,
                "devices": mesh.size,
                "peak": peak_flops_per_device
                or metrics_lib.peak_flops_per_device(jax.devices()[0].device_kind)}
        log.info("training %s (%.4g M params) on mesh %s from step %d to %d; batch %d x %s",
                 family.name, sum(np.prod(p.shape) for p in
                                                  jax.tree_util.tree_leaves(abstract.params)) / 1e6,
                 dict(mesh.shape), int(jax.device_get(state.step)), train_steps, batch_size,
                 feature_lengths(shapes))
        step_fn = compile_train_step(model, tx, schedule, shardings, mesh, rules, accum_steps)
        eval_fn = jax.jit(make_eval_step(model), in_shardings=(
            shardings.params, batch_sharding(mesh), shardings.carry))
        fresh_carry = jax.jit(lambda: nn.meta.unbox(model.init_carry(shapes)),
                              out_shardings=shardings.carry)

        def run_eval(params):
            return evaluate(model, eval_fn, params, data, per_host, batch_size,
                            evaluation.num_batches, batch_sharding(mesh), fresh_carry())

        with partitioning.activate(mesh, rules):
            result = _loop(model, state, step_fn, run_eval, stream, saver, writer, preemption, perf,
                           train_steps=train_steps, batch_size=batch_size,
                           rng=jax.random.key(seed, impl=prng_impl),
                           log_every=log_every, eval_every=evaluation.every_steps,
                           save_every=max(1, checkpoint.every_steps), mesh=mesh)
        saver.finish()
    log.info("%s", summary_line(result, model_dir, time.time() - started))
    return result


def summary_line(result: dict, model_dir: str, seconds: float) -> str:
    """What a finished (or stopped) run leaves, in one line."""
    ev = result.get("eval") or {}
    loss = f"; validation loss {ev['loss']:.4f}" if "loss" in ev else ""
    return (f"{result['status']} at step {result['step']} after {metrics_lib.format_seconds(seconds)}: "
            f"checkpoints in {checkpoints.checkpoint_dir(model_dir)}{loss}")


class _TrainStream:
    """This host's training batches, resumed at the position saved with a checkpoint.

    Opened at the newest checkpoint's position (its first batch gives the shapes); `resume_at`
    reopens it at the position of the step actually restored when that is another one (the
    newest could not be read: `restore_or_init` decides, and reports, which step is used).
    """

    def __init__(self, data: BatchSource, manager, per_host: int, restart_data: bool):
        self._open = lambda: data("train", per_host, jax.process_index(), jax.process_count(), True)
        self._manager, self._restart = manager, restart_data
        latest = manager.latest_step()
        try:
            self._start(latest)
        except Exception:  # pylint: disable=broad-except
            if latest is None:
                raise
            self._start(None)       # only the shapes; `resume_at` restores (or raises) for real
            self.step = -1

    def _start(self, step: Optional[int]) -> None:
        """Opens the stream at `step`'s data position and reads its first batch; on an error the
        pipeline is closed before the error propagates."""
        self.step, self.stream = step, self._open()
        try:
            if step is not None:
                checkpoints.restore_data_state(
                    self._manager, step, self.stream, restart=self._restart,
                    required="opt_state" in checkpoints.state_keys(self._manager, step))
            self.first = next(self.stream)
        except BaseException:
            _close(self.stream)
            raise
        self._pending_first = True

    def resume_at(self, step: Optional[int]) -> None:
        """Moves to the data position saved with `step` (None: the stream's beginning)."""
        if step != self.step:
            _close(self.stream)
            self._start(step)

    def __next__(self) -> Batch:
        if self._pending_first:
            self._pending_first = False
            return self.first
        return next(self.stream)

    def close(self):
        _close(self.stream)


def _nonfinite(m) -> bool:
    return m is not None and float(jax.device_get(m["finite"])) < 1.0


def _loop(model, state: TrainState, step_fn, run_eval, stream: _TrainStream, saver: SaveGuard, writer,
          preemption: _Preemption, perf: dict, *, train_steps: int, batch_size: int,
          rng: jax.Array, log_every: int, eval_every: int, save_every: int, mesh) -> dict:
    """Steps until ``train_steps``, SIGTERM or a non-finite loss; logs, saves, evaluates."""
    step = start_step = int(jax.device_get(state.step))
    timer = metrics_lib.StepTimer(step, train_steps)
    window, window_steps, status = None, 0, "done"
    last_train, last_eval, previous = {}, {}, None

    while step < train_steps:
        batch = make_global_batch(next(stream), partitioning.data_sharding(mesh), batch_size)
        state, m = step_fn(state, batch, rng)
        step += 1
        saver.check()                 # the first failed background save stops the run
        if _nonfinite(previous):      # checked one step late: keeps the device busy
            status = "nonfinite"
            break
        previous = m
        window = m if window is None else jax.tree_util.tree_map(jnp.add, window, m)
        window_steps += 1
        if step % log_every == 0 or step == train_steps:
            if _nonfinite(m):
                status = "nonfinite"
                break
            last_train = summarize_train(model, jax.device_get(window), window_steps)
            eta = float("nan")
            if step > start_step + 1:
                per_step, eta = timer.lap(step)
                last_train.update(metrics_lib.throughput(
                    perf["tokens_per_step"], perf["flops_per_step"] / perf["tokens_per_step"],
                    per_step, perf["devices"], perf["peak"]), step_seconds=per_step)
            writer.write("train", step, last_train)
            mfu = last_train.get("mfu", float("nan"))  # nan: no peak FLOP/s known (e.g. CPU)
            log.info("step %d/%d  loss %.4f  acc %.3f  %.4g tokens/s  %.3g TFLOP/s/device  MFU %s  ETA %s",
                     step, train_steps, last_train["loss"], last_train["accuracy"],
                     last_train.get("tokens_per_second", float("nan")),
                     last_train.get("tflops_per_device", float("nan")),
                     "n/a" if mfu != mfu else f"{mfu:.1%}", metrics_lib.format_seconds(eta))
            window, window_steps = None, 0
        preempted = preemption.check(step)
        if step % save_every == 0 or step == train_steps or preempted:
            if _nonfinite(m):
                status = "nonfinite"
                break
            # Before the evaluation: an evaluation that fails never costs this step's checkpoint.
            saver.save(step, state.to_dict(), stream.stream)
        if eval_every > 0 and not preempted and (step % eval_every == 0 or step == train_steps):
            last_eval = run_eval(state.params)
            writer.write("eval", step, last_eval)
            log.info("eval at step %d: %s", step, "  ".join(f"{k} {v:.4g}" for k, v in last_eval.items()))
            timer = metrics_lib.StepTimer(step, train_steps)   # eval time is not step time
        if step == start_step + 1:    # the first step's time is compilation: not timed
            jax.block_until_ready(m)
            timer = metrics_lib.StepTimer(step, train_steps)
        if preempted:
            status = "preempted"
            log.warning("preempted: saved step %d, exiting", step)
            break
    if status == "nonfinite":
        log.error("non-finite loss or gradient near step %d: stopped; the last good checkpoint "
                  "is step %s", step, saver.manager.latest_step())
    return {"status": status, "step": int(jax.device_get(state.step)), "train": last_train,
            "eval": last_eval}


def _check_batch_keys(family, model_config, shapes: Mapping) -> None:
    """The data source must yield the keys the family's objective consumes."""
    want = family.batch_shapes(model_config, family.default_lengths(1), 1, pack=False)
    missing = sorted(set(want) - set(shapes))
    if missing:
        raise ValueError(f"data source yields keys {sorted(shapes)}; the {family.name} model needs "
                         f"{missing} too (wrong task? {family.name} trains on {family.tasks})")
