"""The Model class both recurrent families share: loss, eval and encode with the carried memory.

A step reads one segment per batch row; row `i` continues row `i` of the previous step
(`protlm.data.streams`), so the memory of the last `mem_len` layer inputs is carried in the train
state (`init_carry`, `loss_fn(carry=)` -> `aux["carry"]`, `eval_sums(carry=)` -> `sums["carry"]`;
see `protlm.models.model.BaseModel.init_carry`). Without a carry (`carry=None`: HF parity tests,
scoring, embedding) a segment is read without memory.

The families differ only in how a batch becomes the network's inputs (`network_inputs`: the
causal mask of ProtTXL, the permutation masks and query stream of ProtXLNet) and in which
positions carry a loss.
"""
from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from protlm.layers import memory as memory_lib
from protlm.models import losses
from protlm.models.model import Batch, BaseModel, dropout_rngs
from protlm.models.xl_stack import XLConfig, XLTransformer


class XLModel(BaseModel):
    """Shared by ProtTXL (`protlm.models.txl_family`) and ProtXLNet (`protlm.models.xlnet_family`).

    Subclasses set `input_key`, `target_key`, `weights_key`, `pad_id` and `network_inputs`.
    """

    input_key: str
    pad_id: int

    def __init__(self, config: XLConfig):
        self.config = config
        self.module = XLTransformer(config)

    @abc.abstractmethod
    def network_inputs(self, batch: Batch, mem_valid: jax.Array | None) -> dict:
        """Keyword arguments of `XLTransformer.__call__` besides memory (tokens, masks, ...)."""

    # ---- memory ----
    def init_carry(self, batch_shapes: Batch) -> Any:
        cfg = self.config
        if cfg.mem_len <= 0:
            return None
        rows = batch_shapes[self.input_key].shape[0]
        return memory_lib.init_memory(rows, cfg.num_layers, cfg.mem_len, cfg.hidden_size,
                                      cfg.activation_dtype)

    def forward(self, params, batch: Batch, carry=None, dropout_rng=None):
        """`(logits [b, positions, vocab] float32, next carry or None)`."""
        carry = None if carry is None else nn.meta.unbox(carry)
        mems = None if carry is None else carry["mems"]
        valid = None if carry is None else carry["valid"]
        out = self.module.apply({"params": params}, mems=mems, mem_valid=valid,
                                deterministic=dropout_rng is None, rngs=dropout_rngs(dropout_rng),
                                **self.network_inputs(batch, valid))
        nxt = None if carry is None else {"mems": out["mems"], "valid": out["mem_valid"]}
        return out["logits"], nxt

    # ---- BaseModel ----
    def init(self, rng, batch):
        zeros = {k: jnp.zeros(v.shape, jnp.int32) for k, v in batch.items()}
        return self.module.init({"params": rng}, deterministic=True,
                                **self.network_inputs(zeros, None))

    def logits(self, params, batch, dropout_rng=None):
        return self.forward(params, batch, None, dropout_rng)[0]

    def loss_fn(self, params, batch, dropout_rng=None, training=True, normalizer=None,
                carry=None):
        logits, nxt = self.forward(params, batch, carry, dropout_rng)
        weights = self.loss_weights(batch)
        aux = losses.weighted_sums(logits, jnp.asarray(batch[self.target_key]), weights,
                                   self.config.z_loss)
        if normalizer is None:
            normalizer = self.loss_normalizer(batch, training)
        if nxt is not None:
            aux["carry"] = nxt
        return (aux["loss"] + aux["z_loss"]) / normalizer["weight_sum"], aux

    def eval_sums(self, params, batch, carry=None):
        logits, nxt = self.forward(params, batch, carry, None)
        stats = losses.weighted_sums(logits, jnp.asarray(batch[self.target_key]),
                                     self.loss_weights(batch), 0.0)
        sums = {"loss": stats["loss"], "weight_sum": stats["weight_sum"],
                "correct": stats["correct"], "masked_loss": stats["loss"],
                "masked_weight_sum": stats["weight_sum"], "masked_correct": stats["correct"]}
        if nxt is not None:
            sums["carry"] = nxt
        return sums

    def encode(self, params, tokens, segment_ids=None, positions=None,
               output_hidden_states: bool = False):
        """Last layer `[batch, length, embed]` of the content stream, no memory (padding =
        `pad_id`); with `output_hidden_states`, `(last, hidden_states)` (layers + 1, HF layout)."""
        del positions
        batch = {self.input_key: jnp.asarray(tokens)}
        if segment_ids is not None:
            batch["seg_ids"] = segment_ids
        out = self.module.apply({"params": params}, deterministic=True,
                                output_hidden_states=output_hidden_states, logits=False,
                                **self.network_inputs(batch, None))
        if output_hidden_states:
            return out["hidden"], out["hidden_states"]
        return out["hidden"]

    def score_batch(self, params, batch: Mapping) -> jax.Array:
        logits = self.logits(params, batch, None)
        ce, _ = losses.cross_entropy_with_z_loss(logits, jnp.asarray(batch[self.target_key]))
        return -jnp.sum(ce * self.loss_weights(batch), axis=-1)
