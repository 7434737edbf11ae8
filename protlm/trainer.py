"""Training: sharded state, a pure train step jitted once, and the loop.

The train step is a pure function ``(state, batch, rng) -> (state, metrics)`` partitioned
with explicit in/out shardings and the state donated (t5x ``train_with_lr``). The loop
(``train``) feeds it global batches built from per-host numpy batches, logs every
``log_every`` steps, evaluates, checkpoints with orbax and resumes exactly (the number of
batches consumed is saved with the state and handed back to the data source).

Data comes from a ``BatchSource``: the seqio pipeline (``SeqioSource``, imported lazily so
this module runs without TensorFlow) or pre-tokenised arrays (``ArraySource``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import time
from typing import Any, Callable, Iterator, Mapping, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from protlm import checkpoints, metrics as metrics_lib, optimizers, partitioning
from protlm.aot import report as aot_report
from protlm.models import get_model, losses

log = logging.getLogger(__name__)
PRNG_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")   # jax.random key implementations for dropout
Batch = Mapping[str, np.ndarray]


class TrainState(flax.struct.PyTreeNode):
    """Everything a checkpoint holds besides the data position."""

    step: jax.Array        # int32 scalar: optimizer steps taken
    params: Any            # unboxed params (fp32 master weights)
    opt_state: Any

    def to_dict(self) -> dict:
        return {"step": self.step, "params": self.params, "opt_state": self.opt_state}

    @classmethod
    def from_dict(cls, d: Mapping) -> "TrainState":
        return cls(step=d["step"], params=d["params"], opt_state=d["opt_state"])


@dataclasses.dataclass(frozen=True)
class PartitionConfig:
    """Mesh sizes (``-1`` = the remaining devices) and the logical-axis rule table name."""

    data: int = -1
    fsdp: int = 1
    model: int = 1
    rules: str = "standard"     # protlm.partitioning.RULE_TABLES: standard | 2d | fsdp
    num_devices: int = 0        # use only the first N devices (0 = all)
    devices: Optional[tuple] = None   # None = jax.devices(); TPU topology devices (--topology)

    def mesh(self):
        devices = list(self.devices) if self.devices is not None else jax.devices()
        if self.num_devices:
            if self.num_devices > len(devices):
                raise ValueError(f"num_devices={self.num_devices} but only {len(devices)} devices")
            devices = devices[:self.num_devices]
        return partitioning.create_mesh(self.data, self.fsdp, self.model, devices=devices)

    def logical_rules(self) -> tuple:
        return partitioning.get_logical_axis_rules(self.rules)


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """orbax checkpointing: every N steps and at the end, keep N, optional warm start."""

    every_steps: int = 1000
    keep: Optional[int] = 3
    async_save: bool = True
    init_from: Optional[str] = None   # a MODEL_DIR to take initial params from (import_hf output)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Periodic evaluation on the validation split (``every_steps <= 0`` disables it)."""

    every_steps: int = 1000
    num_batches: int = 8


# ----------------------------------------------------------------------------- sharding
def batch_sharding(mesh) -> NamedSharding:
    return partitioning.data_sharding(mesh)


def state_shardings(model, tx, batch_shapes: Mapping, mesh, rules) -> tuple[TrainState, TrainState]:
    """Abstract state (ShapeDtypeStructs with shardings) and the matching NamedShardings.

    Params follow the logical-axis names the model gives every parameter; optimizer-state
    leaves follow the param they belong to (``optimizers.state_partition_specs``).
    """
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), batch_shapes)["params"])
    param_sh = partitioning.logical_to_mesh_sharding(boxed, mesh, rules)
    params = nn.meta.unbox(boxed)
    param_specs = jax.tree_util.tree_map(lambda s: s.spec, param_sh)
    opt_state = jax.eval_shape(tx.init, params)
    opt_specs = optimizers.state_partition_specs(opt_state, params, param_specs, mesh)
    opt_sh = jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), opt_specs,
                                    is_leaf=lambda x: isinstance(x, PartitionSpec))
    shardings = TrainState(step=partitioning.replicated(mesh), params=param_sh, opt_state=opt_sh)
    abstract = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params,
                          opt_state=opt_state)
    abstract = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    return abstract, shardings


def init_state(model, tx, batch_shapes, shardings: TrainState, mesh, rules, seed: int,
               params: Any = None) -> TrainState:
    """A fresh state created directly in its shardings (params from ``params`` if given)."""

    def make(rng, given):
        p = nn.meta.unbox(model.init(rng, batch_shapes)["params"]) if given is None else given
        return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p))

    with mesh, nn.logical_axis_rules(rules):
        fn = jax.jit(make, out_shardings=shardings,
                     in_shardings=(None, None if params is None else shardings.params))
        return fn(jax.random.key(seed), params)


# ----------------------------------------------------------------------------- steps
def _split_microbatches(batch: Mapping, num: int, sharding) -> dict:
    """[B, ...] -> [num, B/num, ...], microbatch i = rows i, i+num, ... (spread over devices)."""
    def split(x):
        if x.shape[0] % num:
            raise ValueError(f"batch size {x.shape[0]} is not divisible by accum_steps {num}")
        x = x.reshape((x.shape[0] // num, num) + x.shape[1:]).swapaxes(0, 1)
        spec = PartitionSpec(None, *sharding.spec)
        return jax.lax.with_sharding_constraint(x, NamedSharding(sharding.mesh, spec))
    return {k: split(v) for k, v in batch.items()}


def make_train_step(model, tx: optax.GradientTransformation, schedule: Callable,
                    accum_steps: int = 1, mesh=None) -> Callable:
    """``train_step(state, batch, rng) -> (state, metrics)``; pure, for jax.jit.

    The gradient is that of (summed cross entropy + z-loss) / total loss weight over the
    whole global batch, whether or not it is accumulated over ``accum_steps``
    microbatches. A step whose loss or gradient norm is not finite leaves the state
    unchanged and reports ``finite = 0`` so the loop can stop with a clean checkpoint.
    ``metrics`` holds summed aux (``loss``, ``z_loss``, ``weight_sum``, ``correct``),
    ``grad_norm``, ``learning_rate`` and ``finite``.
    """

    def sums_and_grads(params, batch, rng):
        def objective(p):
            _, aux = model.loss_fn(p, batch, rng)
            return aux["loss"] + aux["z_loss"], aux
        (_, aux), grads = jax.value_and_grad(objective, has_aux=True)(params)
        return grads, aux

    def train_step(state: TrainState, batch, rng):
        rng = jax.random.fold_in(rng, state.step)
        if accum_steps == 1:
            grads, aux = sums_and_grads(state.params, batch, rng)
        else:
            micro = _split_microbatches(batch, accum_steps, partitioning.data_sharding(mesh))
            zero_g = jax.tree_util.tree_map(jnp.zeros_like, state.params)
            _, zero_aux = jax.eval_shape(sums_and_grads, state.params,
                                         {k: v[0] for k, v in micro.items()}, rng)
            zero_aux = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), zero_aux)

            def body(carry, xs):
                g_acc, a_acc = carry
                mb, i = xs
                g, a = sums_and_grads(state.params, mb, jax.random.fold_in(rng, i))
                return (jax.tree_util.tree_map(jnp.add, g_acc, g),
                        jax.tree_util.tree_map(jnp.add, a_acc, a)), None

            (grads, aux), _ = jax.lax.scan(body, (zero_g, zero_aux),
                                           (micro, jnp.arange(accum_steps)))
        denom = jnp.maximum(aux["weight_sum"], 1.0)
        grads = jax.tree_util.tree_map(lambda g: g / denom, grads)
        grad_norm = optax.global_norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(aux["loss"] + aux["z_loss"]) & jnp.isfinite(grad_norm)
        new = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
        new = jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, state)
        out = {k: aux[k] for k in ("loss", "z_loss", "weight_sum", "correct")}
        out.update(grad_norm=grad_norm, learning_rate=jnp.asarray(schedule(state.step), jnp.float32),
                   finite=finite.astype(jnp.float32))
        return new, out

    return train_step


def make_eval_step(model) -> Callable:
    """``eval_step(params, batch) -> sums`` over all loss positions and masked residues."""

    def eval_step(params, batch):
        logits = model.logits(params, batch, None)
        targets = jnp.asarray(batch[model.target_key])
        weights = model._weights(batch)
        all_pos = losses.weighted_sums(logits, targets, weights, 0.0)
        masked = losses.weighted_sums(logits, targets,
                                      model.masked_residue_weights(batch, weights), 0.0)
        return {"loss": all_pos["loss"], "weight_sum": all_pos["weight_sum"],
                "correct": all_pos["correct"], "masked_loss": masked["loss"],
                "masked_weight_sum": masked["weight_sum"], "masked_correct": masked["correct"]}

    return eval_step


def summarize_train(sums: Mapping[str, float], count: int) -> dict[str, float]:
    """Window means from summed train metrics."""
    denom = max(float(sums["weight_sum"]), 1.0)
    return {"loss": float(sums["loss"]) / denom, "z_loss": float(sums["z_loss"]) / denom,
            "accuracy": float(sums["correct"]) / denom,
            "grad_norm": float(sums["grad_norm"]) / count,
            "learning_rate": float(sums["learning_rate"]) / count}


def summarize_eval(sums: Mapping[str, float]) -> dict[str, float]:
    d, dm = max(float(sums["weight_sum"]), 1.0), max(float(sums["masked_weight_sum"]), 1.0)
    loss = float(sums["loss"]) / d
    return {"loss": loss, "perplexity": float(np.exp(min(loss, 50.0))),
            "accuracy": float(sums["correct"]) / d,
            "masked_residue_loss": float(sums["masked_loss"]) / dm,
            "masked_residue_accuracy": float(sums["masked_correct"]) / dm}


# ----------------------------------------------------------------------------- data sources
# A batch source is called as ``source(split, batch_size, start_batch, shard_index,
# num_shards, repeat)`` and returns an iterator of per-host numpy batches (feature-converter
# keys, ``[batch_size, length]`` int32). ``start_batch`` batches are skipped, so a resumed
# run sees exactly the batches an uninterrupted one would.
BatchSource = Callable[..., Iterator[Batch]]
_REGISTERED: dict = {}   # the FASTA patterns the built-in seqio tasks were last registered with


@dataclasses.dataclass(frozen=True)
class SeqioSource:
    """Batches from the seqio pipeline (``protlm.data``); TensorFlow is imported on first use.

    Attributes:
      mixture_or_task_name: a registered seqio task or mixture (see ``tasks/``).
      task_feature_lengths: e.g. ``{"inputs": 512, "targets": 512}``.
      fasta_pattern: FASTA glob of the training data; when set, the default tasks are
        (re-)registered to read it (``protlm.data.tasks.register_tasks``).
      validation_fasta_pattern: optional separate validation FASTA glob.
      pack: pack several short sequences per row.
      seed: shuffling / masking seed.
    """

    mixture_or_task_name: str
    task_feature_lengths: Mapping[str, int]
    fasta_pattern: Optional[str] = None
    validation_fasta_pattern: Optional[str] = None
    pack: bool = True
    seed: int = 0

    def _register(self):
        """(Re-)register the built-in tasks on ``fasta_pattern`` (env/default when None)."""
        from protlm.data import tasks as data_tasks
        key = (self.fasta_pattern, self.validation_fasta_pattern)
        if _REGISTERED.get("key") != key and (
                self.fasta_pattern or self.mixture_or_task_name in data_tasks.TASK_NAMES):
            data_tasks.register_tasks(fasta_pattern=self.fasta_pattern,
                                      validation_fasta_pattern=self.validation_fasta_pattern)
            _REGISTERED["key"] = key

    def __call__(self, split, batch_size, start_batch=0, shard_index=0, num_shards=1,
                 repeat=True) -> Iterator[Batch]:
        self._register()
        from protlm.data import pipeline
        return pipeline.get_batch_iterator(
            self.mixture_or_task_name, dict(self.task_feature_lengths), batch_size=batch_size,
            split=split, seed=self.seed, shard_index=shard_index, num_shards=num_shards,
            pack=self.pack, start_batch=start_batch, repeat=repeat)

    def batch_shapes(self, model_config, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        """Shapes of a batch without reading data (for dry runs)."""
        return feature_shapes(model_config, self.task_feature_lengths, batch_size, self.pack)


def feature_shapes(model_config, task_feature_lengths: Mapping[str, int], batch_size: int,
                   pack: bool) -> dict[str, jax.ShapeDtypeStruct]:
    """Model feature shapes for task feature lengths (seqio feature-converter conventions)."""
    def s(length):
        return jax.ShapeDtypeStruct((batch_size, int(length)), jnp.int32)
    lengths = dict(task_feature_lengths)
    if get_model(model_config).target_key == "decoder_target_tokens":
        enc, dec = lengths["inputs"], lengths.get("targets", lengths["inputs"])
        out = {k: s(enc) for k in ("encoder_input_tokens",)}
        out.update({k: s(dec) for k in ("decoder_input_tokens", "decoder_target_tokens",
                                        "decoder_loss_weights")})
        if pack:
            out.update(encoder_segment_ids=s(enc), encoder_positions=s(enc),
                       decoder_segment_ids=s(dec), decoder_positions=s(dec))
        return out
    length = lengths.get("inputs", lengths.get("targets"))
    out = {k: s(length) for k in ("encoder_input_tokens", "encoder_target_tokens",
                                  "encoder_loss_weights")}
    if pack:
        out.update(encoder_segment_ids=s(length), encoder_positions=s(length))
    return out


@dataclasses.dataclass
class ArraySource:
    """Batches from pre-tokenised arrays (``{key: [num_rows, length]}``, or an .npz path).

    Global batch ``b`` is rows ``b*G .. b*G+G-1`` (mod num_rows, G = global batch); host
    ``h`` takes its contiguous slice, so the global batch does not depend on the number
    of hosts. ``validation`` gives the rows of the validation split (default: train rows).
    """

    train: Any
    validation: Any = None

    @staticmethod
    def _load(arrays) -> dict[str, np.ndarray]:
        if isinstance(arrays, (str, bytes)) or hasattr(arrays, "__fspath__"):
            with np.load(arrays) as f:
                arrays = {k: f[k] for k in f.files}
        arrays = {k: np.asarray(v) for k, v in dict(arrays).items()}
        rows = {v.shape[0] for v in arrays.values()}
        if len(rows) != 1:
            raise ValueError(f"ArraySource: arrays have different row counts: "
                             f"{ {k: v.shape for k, v in arrays.items()} }")
        return arrays

    def __call__(self, split, batch_size, start_batch=0, shard_index=0, num_shards=1,
                 repeat=True) -> Iterator[Batch]:
        arrays = self._load(self.validation if split == "validation" and self.validation
                            is not None else self.train)
        n = next(iter(arrays.values())).shape[0]
        global_batch = batch_size * num_shards
        b = start_batch
        while repeat or (b + 1) * global_batch <= n:
            rows = (b * global_batch + shard_index * batch_size + np.arange(batch_size)) % n
            yield {k: v[rows] for k, v in arrays.items()}
            b += 1


def make_global_batch(local: Batch, sharding: NamedSharding, global_batch: int) -> dict:
    """Per-host numpy batch -> global jax arrays (``jax.make_array_from_process_local_data``)."""
    out = {}
    for k, v in local.items():
        v = np.asarray(v)
        out[k] = jax.make_array_from_process_local_data(sharding, v, (global_batch,) + v.shape[1:])
    return out


# ----------------------------------------------------------------------------- helpers
def _lengths(batch_shapes: Mapping) -> tuple[int, ...]:
    """(enc_len, dec_len) for encoder-decoder batches, (length,) for encoder-only ones."""
    enc = int(batch_shapes["encoder_input_tokens"].shape[1])
    if "decoder_target_tokens" in batch_shapes:
        return enc, int(batch_shapes["decoder_target_tokens"].shape[1])
    return (enc,)


def _bytes_per_device(abstract_tree) -> int:
    total = 0
    for leaf in jax.tree_util.tree_leaves(abstract_tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += int(np.prod(shape, dtype=np.int64)) * jnp.dtype(leaf.dtype).itemsize
    return total


def compile_train_step(model, tx, schedule, shardings: TrainState, mesh, rules,
                       accum_steps: int = 1) -> Callable:
    """The train step jitted once with explicit shardings and the state donated."""
    step = make_train_step(model, tx, schedule, accum_steps, mesh)
    rep = partitioning.replicated(mesh)
    return jax.jit(step, in_shardings=(shardings, batch_sharding(mesh), rep),
                   out_shardings=(shardings, rep), donate_argnums=(0,))


def dry_run(model, tx, schedule, batch_shapes: Mapping, mesh, rules, accum_steps: int = 1,
            prng_impl: str = "threefry2x32") -> dict:
    """Lower and compile the train step for abstract inputs; no weights are allocated.

    Returns:
      A report: parameter count, per-device bytes of params and optimizer state (from
      their shardings) and XLA's per-device memory analysis of the compiled step.
    """
    abstract, shardings = state_shardings(model, tx, batch_shapes, mesh, rules)
    bsh = batch_sharding(mesh)
    abstract_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=bsh)
                      for k, v in batch_shapes.items()}
    key = jax.eval_shape(lambda: jax.random.key(0, impl=prng_impl))
    key = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=partitioning.replicated(mesh))
    fn = compile_train_step(model, tx, schedule, shardings, mesh, rules, accum_steps)
    t0 = time.perf_counter()
    with mesh, nn.logical_axis_rules(rules):
        lowered = fn.lower(abstract, abstract_batch, key)
    t1 = time.perf_counter()
    report = {
        "mesh": dict(mesh.shape), "devices": int(mesh.size),
        "num_params": int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(abstract.params))),
        "params_bytes_per_device": _bytes_per_device(abstract.params),
        "opt_state_bytes_per_device": _bytes_per_device(abstract.opt_state),
        "lower_seconds": t1 - t0, "accum_steps": accum_steps,
        "batch_shapes": {k: list(v.shape) for k, v in batch_shapes.items()},
        "remat_policy": getattr(model.config, "remat_policy", None),
        "scan_layers": getattr(model.config, "scan_layers", None),
    }
    if aot_report.is_tpu_mesh(mesh):   # TPU compiler: HBM verdict and roofline bound
        flops = next(iter(batch_shapes.values())).shape[0] * model.config.flops_per_example(
            *_lengths(batch_shapes))
        return aot_report.tpu_report(lowered, mesh, float(flops), report)
    compiled = lowered.compile()
    report["compile_seconds"] = time.perf_counter() - t1
    mem = compiled.memory_analysis()
    if mem is not None:
        for name in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
                     "alias_size_in_bytes", "generated_code_size_in_bytes"):
            if hasattr(mem, name):
                report["compiled_" + name] = int(getattr(mem, name))
    gib = 2 ** 30
    log.info("dry run on mesh %s: %.3g B params; per device: params %.3f GiB, optimizer state "
             "%.3f GiB, XLA temp %.3f GiB; lower %.1fs, compile %.1fs", report["mesh"],
             report["num_params"] / 1e9, report["params_bytes_per_device"] / gib,
             report["opt_state_bytes_per_device"] / gib,
             report.get("compiled_temp_size_in_bytes", 0) / gib, t1 - t0,
             report["compile_seconds"])
    return report


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


def _restore_or_init(manager, model, tx, batch_shapes, abstract, shardings, mesh, rules, seed,
                     init_from: Optional[str]) -> tuple[TrainState, dict]:
    """Resume from MODEL_DIR's latest checkpoint, else warm-start from ``init_from``, else init."""
    step = manager.latest_step()
    if step is not None:
        if "opt_state" in checkpoints.state_keys(manager, step):
            restored, data_state = checkpoints.restore_state(manager, step, abstract.to_dict())
            log.info("resumed from %s step %d (data position %s)", manager.directory, step,
                     data_state)
            return TrainState.from_dict(restored), data_state
        restored, data_state = checkpoints.restore_state(manager, step, {"params": abstract.params})
        log.info("starting from params-only checkpoint step %d (fresh optimizer state)", step)
        state = init_state(model, tx, batch_shapes, shardings, mesh, rules, seed,
                           params=restored["params"])
        return state.replace(step=jax.device_put(jnp.int32(step), shardings.step)), data_state
    if init_from:
        params, cfg = checkpoints.load_params(init_from)
        if getattr(model.config, "scan_layers", False):
            params = checkpoints.scan_layout(params, scanned=True)
        want = jax.tree_util.tree_map(lambda a: (a.shape, jnp.dtype(a.dtype)), abstract.params)
        got = jax.tree_util.tree_map(lambda a: (a.shape, jnp.dtype(a.dtype)), params)
        if want != got:
            raise ValueError(f"init_from={init_from}: its params ({type(cfg).__name__}) do not match "
                             "the model being trained; use the same model preset/config")
        params = jax.tree_util.tree_map(
            lambda a, s: jax.make_array_from_callback(a.shape, s, lambda idx, a=a: a[idx]),
            params, shardings.params)
        log.info("initial params from %s", init_from)
        return init_state(model, tx, batch_shapes, shardings, mesh, rules, seed, params=params), {}
    return init_state(model, tx, batch_shapes, shardings, mesh, rules, seed), {}


# ----------------------------------------------------------------------------- the loop
def evaluate(eval_step, params, data: BatchSource, per_host: int, global_batch: int,
             num_batches: int, bsh) -> dict[str, float]:
    """Summed eval metrics over ``num_batches`` validation batches (from the split's start)."""
    it = data("validation", per_host, 0, jax.process_index(), jax.process_count(), True)
    sums = None
    try:
        for _ in range(num_batches):
            out = eval_step(params, make_global_batch(next(it), bsh, global_batch))
            sums = out if sums is None else jax.tree_util.tree_map(jnp.add, sums, out)
    finally:
        _close(it)
    return summarize_eval(jax.device_get(sums))


def _close(iterator) -> None:
    """Close a generator now (an open tf.data iterator can hang interpreter exit)."""
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


def train(*, model_dir: str, model_config: Any, data: BatchSource, train_steps: int,
          batch_size: int, learning_rate: Callable = optimizers.constant_schedule(1e-3),
          optimizer: Callable = optimizers.adafactor,
          partition: PartitionConfig = PartitionConfig(),
          checkpoint: CheckpointConfig = CheckpointConfig(),
          evaluation: EvalConfig = EvalConfig(), accum_steps: int = 1, seed: int = 0,
          log_every: int = 100, peak_flops_per_device: Optional[float] = None,
          prng_impl: str = "threefry2x32", dry_run_only: bool = False) -> dict:
    """Train (or resume training) ``model_config`` for ``train_steps`` optimizer steps.

    Args:
      model_dir: run directory: checkpoints/, tensorboard/, metrics/, config.json.
      model_config: a ``T5Config`` / ``BertConfig`` (e.g. ``protlm.models.get_config``).
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

    Returns:
      ``{"status": "done"|"preempted"|"nonfinite"|"dry_run", "step", "train", "eval"}``.
    """
    if prng_impl not in PRNG_IMPLS:
        raise ValueError(f"prng_impl must be one of {PRNG_IMPLS} (gin macro PRNG_IMPL), "
                         f"got {prng_impl!r}")
    nproc = jax.process_count()
    if batch_size % nproc:
        raise ValueError(f"batch_size {batch_size} must be divisible by the {nproc} processes")
    per_host = batch_size // nproc
    mesh, rules = partition.mesh(), partition.logical_rules()
    model, schedule = get_model(model_config), learning_rate
    tx = optimizer(learning_rate=schedule)
    if dry_run_only:
        shapes = data.batch_shapes(model_config, batch_size)
        return {"status": "dry_run", **dry_run(model, tx, schedule, shapes, mesh, rules,
                                               accum_steps, prng_impl)}

    with contextlib.ExitStack() as cleanup:
        manager = checkpoints.make_manager(model_dir, checkpoint.every_steps, checkpoint.keep,
                                           checkpoint.async_save)
        cleanup.callback(manager.close)
        cleanup.callback(manager.wait_until_finished)
        stream = _TrainStream(data, manager, per_host, batch_size)
        cleanup.callback(stream.close)
        missing = {k for k in ("encoder_input_tokens", model.target_key) if k not in stream.first}
        if missing:
            raise ValueError(f"data source yields keys {sorted(stream.first)}; the "
                             f"{type(model).__name__} needs {sorted(missing)} too (wrong task?)")
        shapes = {k: jax.ShapeDtypeStruct((batch_size,) + np.shape(v)[1:], jnp.int32)
                  for k, v in stream.first.items()}
        abstract, shardings = state_shardings(model, tx, shapes, mesh, rules)
        state, _ = _restore_or_init(manager, model, tx, shapes, abstract, shardings, mesh, rules,
                                    seed, checkpoint.init_from)
        checkpoints.save_config(model_dir, model_config)
        writer = metrics_lib.MetricWriter(model_dir, enabled=jax.process_index() == 0)
        cleanup.callback(writer.close)
        preemption = _Preemption()
        cleanup.callback(preemption.restore)
        lengths = _lengths(shapes)
        perf = {"tokens_per_step": batch_size * sum(lengths),
                "flops_per_step": batch_size * float(model_config.flops_per_example(*lengths)),
                "devices": mesh.size,
                "peak": peak_flops_per_device
                or metrics_lib.peak_flops_per_device(jax.devices()[0].device_kind)}
        log.info("training %s (%.4g M params) on mesh %s from step %d to %d; batch %d x %s",
                 type(model_config).__name__, sum(np.prod(p.shape) for p in
                                                  jax.tree_util.tree_leaves(abstract.params)) / 1e6,
                 dict(mesh.shape), int(jax.device_get(state.step)), train_steps, batch_size,
                 lengths)
        step_fn = compile_train_step(model, tx, schedule, shardings, mesh, rules, accum_steps)
        eval_fn = jax.jit(make_eval_step(model), in_shardings=(shardings.params,
                                                               batch_sharding(mesh)))

        def run_eval(params):
            return evaluate(eval_fn, params, data, per_host, batch_size, evaluation.num_batches,
                            batch_sharding(mesh))

        with mesh, nn.logical_axis_rules(rules):
            return _loop(state, step_fn, run_eval, stream, manager, writer, preemption, perf,
                         train_steps=train_steps, batch_size=batch_size, seed=seed,
                         rng=jax.random.key(seed, impl=prng_impl),
                         log_every=log_every, eval_every=evaluation.every_steps,
                         save_every=max(1, checkpoint.every_steps), mesh=mesh)


class _TrainStream:
    """The training batches from the saved data position (or the start when the stream changed)."""

    def __init__(self, data: BatchSource, manager, per_host: int, batch_size: int):
        latest = manager.latest_step()
        saved = checkpoints.restore_data(manager, latest) if latest is not None else {}
        self._open = lambda start: data("train", per_host, start, jax.process_index(),
                                        jax.process_count(), True)
        self.start_batch = int(saved.get("batches_consumed", 0))
        self.it = self._open(self.start_batch)
        self.first = next(self.it)
        self.lengths = [int(np.shape(v)[1]) for _, v in sorted(self.first.items())]
        if self.start_batch and (saved.get("batch_size", batch_size) != batch_size
                                 or saved.get("lengths", self.lengths) != self.lengths):
            log.warning("batch size or feature lengths changed since the checkpoint (%s): the "
                        "data stream starts from its beginning", saved)
            _close(self.it)
            self.start_batch, self.it = 0, self._open(0)
            self.first = next(self.it)
        self._pending_first = True

    def __next__(self) -> Batch:
        if self._pending_first:
            self._pending_first = False
            return self.first
        return next(self.it)

    def close(self):
        _close(self.it)


def _nonfinite(m) -> bool:
    return m is not None and float(jax.device_get(m["finite"])) < 1.0


def _loop(state: TrainState, step_fn, run_eval, stream: _TrainStream, manager, writer,
          preemption: _Preemption, perf: dict, *, train_steps: int, batch_size: int, seed: int,
          rng: jax.Array, log_every: int, eval_every: int, save_every: int, mesh) -> dict:
    """Steps until ``train_steps``, SIGTERM or a non-finite loss; logs, evaluates, saves."""
    step = start_step = int(jax.device_get(state.step))
    timer = metrics_lib.StepTimer(step, train_steps)
    window, window_steps, status = None, 0, "done"
    last_train, last_eval, previous = {}, {}, None

    def data_position(at_step):
        return {"batches_consumed": stream.start_batch + (at_step - start_step),
                "batch_size": batch_size, "lengths": stream.lengths, "seed": seed}

    while step < train_steps:
        batch = make_global_batch(next(stream), partitioning.data_sharding(mesh), batch_size)
        state, m = step_fn(state, batch, rng)
        step += 1
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
            last_train = summarize_train(jax.device_get(window), window_steps)
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
        if eval_every > 0 and (step % eval_every == 0 or step == train_steps):
            last_eval = run_eval(state.params)
            writer.write("eval", step, last_eval)
            timer = metrics_lib.StepTimer(step, train_steps)   # eval time is not step time
        preempted = preemption.check(step)
        if step % save_every == 0 or step == train_steps or preempted:
            if _nonfinite(m):
                status = "nonfinite"
                break
            checkpoints.save_state(manager, step, state.to_dict(), data_position(step), force=True)
        if step == start_step + 1:    # the first step's time is compilation: not timed
            jax.block_until_ready(m)
            timer = metrics_lib.StepTimer(step, train_steps)
        if preempted:
            status = "preempted"
            log.warning("preempted: saved step %d, exiting", step)
            break
    if status == "nonfinite":
        log.error("non-finite loss or gradient near step %d: stopped; the last good checkpoint "
                  "is step %s", step, manager.latest_step())
    return {"status": status, "step": int(jax.device_get(state.step)), "train": last_train,
            "eval": last_eval}
