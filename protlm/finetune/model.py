"""`FinetuneModel`: a family's Model with LoRA and/or a task head, in one of three modes.

Params are `{"backbone": <the family's params>, "lora": <LoRA factors> (mode lora),
"head": <task head> (with a head)}`:

* `lora`   the backbone is frozen; the model runs on `lora.merge(backbone, lora)`;
* `full`   every backbone weight is trained;
* `frozen` the backbone is frozen, only the head trains (the frozen-embedding protocol, end to end).

Frozen parts enter the loss through `jax.lax.stop_gradient` (their gradient is exactly zero and
XLA drops its computation) and get no optimizer state (`trainable_only`: optax `multi_transform`
with `set_to_zero`, i.e. masked updates). Without a head the objective is the family's own
(continued pretraining, "evo-tuning"); with one, the backbone is the family's embedding part
(`HFSpec.embed_part`, e.g. the ProtT5 encoder) and `Model.encode` feeds the head. Nothing here
knows which family it wraps.

Task batches (int32, `[batch, length]` unless noted): `encoder_input_tokens` (the family's
`tokenize`), `residue_mask` (1 on residues, 0 on specials / padding), `labels` and
`label_weights` (per residue `[B, L]`, per protein `[B]`; weight 0 = not scored).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from protlm import checkpoints, optimizers
from protlm.finetune import heads as heads_lib
from protlm.finetune import lora as lora_lib
from protlm.finetune import tasks as tasks_lib
from protlm.models import losses, registry
from protlm.models.model import dropout_rngs

MODES = ("lora", "full", "frozen")
DEFAULT_HEADS = {"residue": "cnn", "protein": "mean"}
TASK_KEYS = ("encoder_input_tokens", "residue_mask", "labels", "label_weights")


class FinetuneModel:
    """The Model protocol the trainer uses (`init`, `loss_fn`, `loss_normalizer`, `eval_sums`,
    `summarize_train/eval`, `init_carry`, `warm_start`) around `family.model(config)`.

    Args:
      model_config: the backbone's config (any registered family).
      mode: "lora", "full" or "frozen".
      lora: rank, alpha and target projections (mode lora only).
      task: a `protlm.finetune.tasks.TASKS` name (its classes and label level), or None to
        continue the family's pretraining objective (evo-tuning).
      head: a `heads.HEADS` name of the task's level; None = `DEFAULT_HEADS[level]`.
      seed: seed of the LoRA / head init when warm-starting from a checkpoint.
    """

    def __init__(self, model_config, mode: str = "lora",
                 lora: lora_lib.LoraConfig = lora_lib.LoraConfig(),
                 task: Optional[str] = None, head: Optional[str] = None, seed: int = 0):
        if mode not in MODES:
            raise ValueError(f"finetune mode must be one of {MODES}, got {mode!r}")
        if task is None and head is not None:
            raise ValueError(f"head {head!r} without a task: set TASK ({sorted(tasks_lib.TASKS)}) "
                             "or HEAD=None to continue pretraining")
        if mode == "frozen" and task is None:
            raise ValueError("mode 'frozen' trains nothing without a task head; set TASK or use "
                             "mode 'lora' / 'full'")
        self.config, self.mode, self.lora, self.seed = model_config, mode, lora, seed
        self.family = registry.get_family(model_config)
        self.base = self.family.model(model_config)
        self.task, self.head, self.level, self.head_name = None, None, None, None
        if task is not None:
            self.task = tasks_lib.get_task(task)
            self.head_name = head or DEFAULT_HEADS[self.task.level]
            self.head, self.level = heads_lib.make_head(self.head_name, self.task.num_classes)
            if self.level != self.task.level:
                raise ValueError(f"head {self.head_name!r} predicts per {self.level}; task "
                                 f"{task!r} has one label per {self.task.level} (heads: "
                                 f"{sorted(k for k, v in heads_lib.HEADS.items() if v[1] == self.task.level)})")

    # ------------------------------------------------------------------ params
    def _base_batch(self, batch) -> dict:
        if self.head is None:
            return batch
        b, length = batch["encoder_input_tokens"].shape
        return self.family.batch_shapes(self.config, self.family.default_lengths(length), b,
                                        pack=False)

    def _backbone(self, boxed: Mapping) -> dict:
        """The part of the family's params the head needs (all of them without a head)."""
        if self.head is None:
            return dict(boxed)
        spec = self.family.hf()
        return dict(spec.select(boxed, spec.embed_part))

    def _extras(self, rng, backbone, batch) -> dict:
        r_lora, r_head = jax.random.split(rng)
        out = {}
        if self.mode == "lora":
            out["lora"] = lora_lib.init_lora(r_lora, backbone, self.lora)
        if self.head is not None:
            b, length = batch["encoder_input_tokens"].shape
            h = jnp.zeros((b, length, self.config.hidden_size), jnp.float32)
            out["head"] = self.head.init({"params": r_head}, h, jnp.ones((b, length), bool))["params"]
        return out

    def init(self, rng: jax.Array, batch) -> dict:
        """Variables `{"params": {"backbone", "lora"?, "head"?}}` (boxed, logical axes)."""
        r_base, r_extra = jax.random.split(rng)
        backbone = self._backbone(self.base.init(r_base, self._base_batch(batch))["params"])
        return {"params": {"backbone": backbone, **self._extras(r_extra, backbone, batch)}}

    def warm_start(self, init_from: str, batch) -> dict:
        """Unscanned host params: the backbone from a protlm model directory or a Hugging Face
        directory (`INIT_CHECKPOINT`), fresh LoRA factors and head (seed `self.seed`)."""
        params, _ = load_backbone(init_from)
        params = self._backbone(params)
        config = self.config          # LoRA factors are made for the unscanned layout
        if getattr(config, "scan_layers", False):
            config = dataclasses.replace(config, scan_layers=False)
        flat = self.family.model(config)
        boxed = self._backbone(jax.eval_shape(
            lambda: flat.init(jax.random.key(0), self._base_batch(batch))["params"]))
        extras = jax.jit(lambda r: nn.meta.unbox(self._extras(r, boxed, batch)))(
            jax.random.key(self.seed))
        return {"backbone": params, **jax.device_get(extras)}

    def effective_params(self, params: Mapping) -> Mapping:
        """The family params the network runs on (frozen parts without gradient, LoRA merged)."""
        backbone = params["backbone"]
        if self.mode != "full":
            backbone = jax.lax.stop_gradient(backbone)
        if self.mode == "lora":
            backbone = lora_lib.merge(backbone, params["lora"], self.lora)
        return backbone

    # ------------------------------------------------------------------ forward / loss
    def logits(self, params, batch, dropout_rng=None) -> jax.Array:
        """Head logits: `[B, L, C]` per residue, `[B, C]` per protein (float32)."""
        h = self.base.encode(self.effective_params(params), batch["encoder_input_tokens"])
        mask = jnp.asarray(batch["residue_mask"]) > 0
        return self.head.apply({"params": params["head"]}, jnp.asarray(h, jnp.float32), mask,
                               deterministic=dropout_rng is None, rngs=dropout_rngs(dropout_rng))

    def init_carry(self, batch_shapes) -> Any:
        return self.base.init_carry(batch_shapes) if self.head is None else None

    def loss_normalizer(self, batch, training: bool = True) -> dict:
        if self.head is None:
            return self.base.loss_normalizer(batch, training)
        w = jnp.asarray(batch["label_weights"], jnp.float32)
        return {"weight_sum": jnp.maximum(jnp.sum(w), 1.0)}

    def loss_fn(self, params, batch, dropout_rng=None, training: bool = True,
                normalizer: Optional[Mapping] = None, carry: Any = None):
        """The family's objective on the effective params (no head), or the head's cross
        entropy over weighted labels / `normalizer["weight_sum"]`."""
        if self.head is None:
            return self.base.loss_fn(self.effective_params(params), batch, dropout_rng,
                                     training=training, normalizer=normalizer, carry=carry)
        aux = losses.weighted_sums(self.logits(params, batch, dropout_rng),
                                   jnp.asarray(batch["labels"]), batch["label_weights"], 0.0)
        if normalizer is None:
            normalizer = self.loss_normalizer(batch, training)
        return aux["loss"] / normalizer["weight_sum"], aux

    def eval_sums(self, params, batch, carry: Any = None) -> dict:
        if self.head is None:
            return self.base.eval_sums(self.effective_params(params), batch, carry=carry)
        _, aux = self.loss_fn(params, batch, None, training=False)
        return {k: aux[k] for k in ("loss", "weight_sum", "correct")}

    def summarize_eval(self, sums: Mapping) -> dict:
        if self.head is None:
            return self.base.summarize_eval(sums)
        d = max(float(sums["weight_sum"]), 1.0)
        return {"loss": float(sums["loss"]) / d, "accuracy": float(sums["correct"]) / d}

    def summarize_train(self, sums: Mapping) -> dict:
        return self.base.summarize_train(sums)

    # ------------------------------------------------------------------ throughput basis
    def feature_lengths(self, batch_shapes: Mapping) -> dict:
        if self.head is None:
            return self.family.feature_lengths(batch_shapes)
        return {"inputs": int(np.shape(batch_shapes["encoder_input_tokens"])[1])}

    def tokens_per_example(self, lengths: Mapping) -> int:
        return self.config.tokens_per_example(lengths) if self.head is None else int(lengths["inputs"])

    def flops_per_example(self, lengths: Mapping) -> float:
        """The family's count without a head; with one, per token 2 N (forward) + 2 N (input
        gradients, unless frozen) + 2 N (weight gradients, full only), N = backbone weights."""
        if self.head is None:
            return float(self.config.flops_per_example(lengths))
        shapes = jax.eval_shape(lambda: self.init(jax.random.key(0), {
            "encoder_input_tokens": jax.ShapeDtypeStruct((1, 8), jnp.int32)})["params"])
        n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(
            nn.meta.unbox(shapes["backbone"])))
        per_token = {"full": 6, "lora": 4, "frozen": 2}[self.mode] * n
        return float(per_token * int(lengths["inputs"]))


def load_backbone(path: str) -> tuple[dict, Any]:
    """Unscanned numpy params and config of a protlm model directory or a Hugging Face one."""
    from protlm import embed  # noqa: PLC0415 (h5py etc. only when warm-starting)

    if embed.model_dir_kind(path) == "protlm":
        return checkpoints.load_params(path)
    from protlm.hf import importer  # noqa: PLC0415

    return importer.params_from_hf(path, progress=False)


def checkpoint_config(init_checkpoint: str, overrides: Optional[Mapping] = None):
    """The model config stored with `init_checkpoint` (protlm or HF directory), with field
    overrides (e.g. `scan_layers`, `dropout_rate`, `remat_policy`) for the fine-tuning run."""
    from protlm import embed  # noqa: PLC0415

    config, _ = embed.read_model_config(init_checkpoint)
    return dataclasses.replace(config, **dict(overrides)) if overrides else config


def param_labels(params: Mapping, mode: str) -> dict:
    """Per leaf: "freeze" for the backbone unless the mode is "full", where it is "backbone";
    "train" for everything else (LoRA factors, head)."""
    backbone = "backbone" if mode == "full" else "freeze"
    return {k: jax.tree_util.tree_map(lambda _, k=k: backbone if k == "backbone" else "train", v)
            for k, v in params.items()}


def trainable_only(learning_rate, optimizer: Callable = optimizers.adamw,
                   mode: str = "lora", backbone_lr_scale: float = 1.0
                   ) -> optax.GradientTransformation:
    """`optimizer(learning_rate)` on the trainable leaves; frozen leaves get zero updates and no
    optimizer state (optax `multi_transform` masks each group).

    In "full" mode the backbone's updates are scaled by `backbone_lr_scale` (its learning rate is
    `scale x learning_rate`, the head's stays: discriminative fine-tuning, ULMFiT's lower rate for
    pretrained layers); its optimizer state is its own (same size as with scale 1).
    """
    if mode not in MODES:
        raise ValueError(f"finetune mode must be one of {MODES}, got {mode!r}")
    if not backbone_lr_scale > 0:
        raise ValueError(f"backbone_lr_scale must be > 0, got {backbone_lr_scale}")
    groups = {"train": optimizer(learning_rate=learning_rate), "freeze": optax.set_to_zero()}
    if mode == "full":
        groups["backbone"] = optax.chain(optimizer(learning_rate=learning_rate),
                                         optax.scale(backbone_lr_scale))
    return optax.multi_transform(groups, lambda params: param_labels(params, mode))
