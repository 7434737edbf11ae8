"""The ProtT5 family: T5 v1.0 span denoising (`EncoderDecoderModel`) and its `Family` entry.

Network and config: `protlm.models.t5`. Hugging Face conversion: `protlm.hf.t5`.
Objectives: `prott5_span_denoising` (the paper's: 15 % single residues each replaced by its own
sentinel, target = the whole sequence) and `prott5_span_corruption` (C4-style sentinel targets).
Embedding: residues + `</s>`; the `</s>` position is dropped.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from protlm.data import tokens as tok
from protlm.models import t5
from protlm.models.family import Family, int_shapes
from protlm.models.model import Batch, BaseModel, dropout_rngs, int_zeros

ENCODER_KEYS = ("encoder_input_tokens",)
DECODER_KEYS = ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights")


class EncoderDecoderModel(BaseModel):
    """ProtT5 span denoising: cross entropy over decoder targets with z-loss."""

    target_key = "decoder_target_tokens"
    weights_key = "decoder_loss_weights"

    def __init__(self, config: t5.T5Config):
        self.config = config
        self.module = t5.Transformer(config)
        self.encoder_module = t5.T5EncoderOnly(config)

    def masked_residue_weights(self, batch, weights):
        """Span length 1: every masked residue is one sentinel in the encoder input at the same
        position as its decoder target, so the masked targets are where
        `encoder_input_tokens` holds a sentinel (only when both lengths are equal; otherwise,
        e.g. for C4-style span corruption whose targets are all masked, `weights`)."""
        enc = jnp.asarray(batch["encoder_input_tokens"])
        if enc.shape != weights.shape:
            return weights
        return weights * (enc >= tok.PROTT5_LAST_SENTINEL_ID).astype(weights.dtype)

    def train_loss_weights(self, batch):
        weights = self.loss_weights(batch)
        w = self.config.unmasked_loss_weight
        if w == 1.0:
            return weights
        masked = self.masked_residue_weights(batch, weights)
        return masked + w * (weights - masked)

    def init(self, rng, batch):
        enc, dec = int_zeros(batch, "encoder_input_tokens"), int_zeros(batch, "decoder_input_tokens")
        return self.module.init({"params": rng}, enc, dec, deterministic=True)

    def logits(self, params, batch, dropout_rng=None):
        return self.module.apply(
            {"params": params}, jnp.asarray(batch["encoder_input_tokens"]),
            jnp.asarray(batch["decoder_input_tokens"]),
            encoder_segment_ids=batch.get("encoder_segment_ids"),
            decoder_segment_ids=batch.get("decoder_segment_ids"),
            encoder_positions=batch.get("encoder_positions"),
            decoder_positions=batch.get("decoder_positions"),
            deterministic=dropout_rng is None, rngs=dropout_rngs(dropout_rng))

    def encode(self, params, tokens, segment_ids=None, positions=None,
               output_hidden_states: bool = False):
        """Last encoder layer `[batch, length, embed]` (after the final norm, as HF).

        Works with encoder-decoder params or the encoder-only subset. With
        `output_hidden_states`, returns `(last, hidden_states)` (layers + 1 arrays, as HF).
        """
        sub = {k: params[k] for k in ("token_embedder", "encoder")}
        return self.encoder_module.apply({"params": sub}, jnp.asarray(tokens), segment_ids,
                                         positions, deterministic=True,
                                         output_hidden_states=output_hidden_states)

    def predict_batch(self, params, batch: Batch, max_decode_length: int | None = None,
                      eos_id: int = 1) -> jax.Array:
        """Greedy decoding `[batch, max_decode_length]` int32 (pad 0 after `eos_id`).

        The length defaults to `decoder_target_tokens`' length, else the encoder length.
        Decoding is incremental: one position per step with a self-attention key/value cache.
        """
        enc_tokens = jnp.asarray(batch["encoder_input_tokens"])
        if max_decode_length is None:
            ref = batch.get("decoder_target_tokens", enc_tokens)
            max_decode_length = int(ref.shape[-1])
        if batch.get("encoder_segment_ids") is not None:
            raise ValueError("predict_batch expects unpacked batches (no encoder_segment_ids)")
        bsz, length = enc_tokens.shape[0], max_decode_length
        decode = functools.partial(self.module.apply, method=t5.Transformer.decode,
                                   mutable=["cache"])
        encoded = self.module.apply({"params": params}, enc_tokens, method=t5.Transformer.encode)
        _, cache = decode({"params": params}, encoded, enc_tokens,
                          jnp.zeros((bsz, length), jnp.int32), decode=True)

        def step(i, state):
            cache, token, out, done = state
            logits, cache = decode({"params": params, **cache}, encoded, enc_tokens,
                                   token[:, None], decode=True, decode_index=i,
                                   max_decode_length=length)
            token = jnp.argmax(logits[:, 0], axis=-1).astype(jnp.int32)
            token = jnp.where(done, 0, token)
            return cache, token, out.at[:, i].set(token), done | (token == eos_id)

        init = (cache, jnp.zeros((bsz,), jnp.int32),  # decoder start token = 0 (pad), as T5
                jnp.zeros((bsz, length), jnp.int32), jnp.zeros((bsz,), bool))
        return jax.lax.fori_loop(0, length, step, init)[2]


class T5Family(Family):
    """ProtT5 (T5 v1.0 encoder-decoder)."""

    name = "t5"
    config_cls = t5.T5Config
    presets = t5.PRESETS
    tasks = ("prott5_span_denoising", "prott5_span_corruption")
    hf_module = "protlm.hf.t5"

    def model(self, config):
        return EncoderDecoderModel(config)

    def batch_shapes(self, config, lengths, batch_size, pack):
        enc = int(lengths["inputs"])
        dec = int(lengths.get("targets", enc))
        out = {**int_shapes(ENCODER_KEYS, batch_size, enc),
               **int_shapes(DECODER_KEYS, batch_size, dec)}
        if pack:
            out.update(int_shapes(("encoder_segment_ids", "encoder_positions"), batch_size, enc))
            out.update(int_shapes(("decoder_segment_ids", "decoder_positions"), batch_size, dec))
        return out

    def feature_lengths(self, batch_shapes: Mapping) -> dict[str, int]:
        return {"inputs": int(np.shape(batch_shapes["encoder_input_tokens"])[1]),
                "targets": int(np.shape(batch_shapes["decoder_target_tokens"])[1])}

    def default_lengths(self, length: int) -> dict[str, int]:
        return {"inputs": int(length), "targets": int(length)}

    def array_batch(self, sequences: Sequence[str], lengths, seed: int = 0):
        from protlm.data import arrays  # noqa: PLC0415

        return arrays.t5_batch(sequences, int(lengths["inputs"]), seed)

    def tokenize(self, sequence: str) -> tuple[np.ndarray, int]:
        ids = np.concatenate([tok.encode_prott5(sequence), [tok.PROTT5_EOS_ID]])
        return ids.astype(np.int32), 0


FAMILY = T5Family()
