"""The ProtElectra family: ELECTRA's joint objective (`ElectraModel`) and its `Family` entry.

Network and config: `protlm.models.electra`. Hugging Face conversion: `protlm.hf.electra`.
Vocabulary, tokenisation and data are ProtBert's (task `protbert_mlm`: [CLS] residues [SEP],
cropped, packed); of its batch ELECTRA reads the original tokens (`encoder_target_tokens`) and
the packing, and masks in the model, as google-research/electra does (`pretrain_helpers.mask`
inside `run_pretraining.PretrainingModel`), so BERT's 80/10/10 input and its selection are unused:

1. selection: per row, k = max(1, round(mask_prob x non-padding tokens)) positions (ELECTRA's
   count; `mask_prob` 0.15, 0.25 for ELECTRA-Large) drawn uniformly without replacement among the
   residues ([CLS], [SEP], [MASK], [UNK] and padding never; ELECTRA draws with replacement up to a
   static cap, a TF shape constraint, so a few of its draws collide).
2. generator input: each selected position is [MASK] with probability `mask_token_fraction`
   (0.85) and keeps its residue otherwise (ELECTRA has no random-token replacement).
3. the generator (MLM) predicts every selected position: cross entropy / number selected.
4. replacements: one Gumbel-max sample per selected position from the generator's softmax at
   `temperature`, under `stop_gradient` (no gradient through sampling), among the residue ids
   (5..29): the specials are never targets, and a sampled [PAD] would change the attention mask,
   which protlm derives from tokens != 0.
5. the discriminator sees the originals with the selected positions replaced by the samples;
   label = token differs from the original (a sample equal to the original is "original"),
   binary cross entropy over every non-padding token ([CLS]/[SEP] included, ELECTRA's
   `input_mask`) / number of such tokens.
6. objective = generator_weight x MLM + discriminator_weight x RTD (1 and 50).

Randomness: the rng given to `loss_fn` is split into selection, masking, sampling and dropout
keys; each row's selection, masking and sampling keys are those keys folded with a hash of the
row's tokens, so a row draws the same numbers whatever batch, microbatch or device shard it is in.
Without an rng (evaluation: `eval_sums`, `loss_weights`, `score_batch`, `predict_batch`) the key
is `PRNGKey(config.eval_seed)` and dropout is off: evaluation is deterministic and repeatable.
Both normalisers (`loss_normalizer`: the number selected, the number of non-padding tokens)
depend on the tokens only, so gradient accumulation with the global normalisers is exact.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from protlm.data import tokens as tok
from protlm.models import bert_family, electra, losses
from protlm.models.model import Batch, MaskedLMModel, dropout_rngs

# Samples are drawn among the residue ids (everything after [PAD] [UNK] [CLS] [SEP] [MASK]).
FIRST_SAMPLED_ID = tok.PROTBERT_MASK_ID + 1
_HASH_MULTIPLIER = np.uint32(2654435761)   # Knuth's multiplicative hash constant


class Corruption(NamedTuple):
    """The intermediate arrays of one ELECTRA step (`ElectraModel.corrupt`), `[batch, length]`."""

    selected: jax.Array               # bool: the positions the generator predicts
    generator_inputs: jax.Array       # int32: [MASK] at 85 % of the selected positions
    generator_logits: jax.Array       # float32 [batch, length, vocab]
    sampled: jax.Array                # int32: the generator's samples (meaningful where selected)
    discriminator_inputs: jax.Array   # int32: originals, the selected positions replaced
    labels: jax.Array                 # float32: 1 where discriminator_inputs != original
    discriminator_logits: jax.Array   # float32: > 0 = predicted replaced


def row_keys(key: jax.Array, tokens: jax.Array) -> jax.Array:
    """One key per row: `key` folded with a hash of the row's tokens (padding adds nothing), so
    a row draws the same numbers whatever batch, microbatch or shard it is in."""
    weights = (jnp.arange(tokens.shape[1], dtype=jnp.uint32) + 1) * _HASH_MULTIPLIER
    row_hash = jnp.sum(tokens.astype(jnp.uint32) * weights, axis=1, dtype=jnp.uint32)
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, row_hash)


def _row_draws(draw, key: jax.Array, tokens: jax.Array) -> jax.Array:
    """`draw(row_key)` for every row (`row_keys`), stacked: `[batch, ...]`."""
    return jax.vmap(draw)(row_keys(key, tokens))


class ElectraModel(MaskedLMModel):
    """ELECTRA's generator + discriminator objective (see the module docstring).

    `loss_weights` are the positions selected with the evaluation key; `logits` the generator's
    MLM logits on its masked input (`score_batch`, `predict_batch` use both); `encode` runs
    `config.encoder_part`.
    """

    def __init__(self, config: electra.ElectraConfig):
        super().__init__(config, electra.ElectraNetwork(config), tok.PROTBERT_MASK_ID)

    # ---------------------------------------------------------------------- the corruption
    def _keys(self, rng):
        """select, mask, sample, generator dropout, discriminator dropout (None without rng)."""
        keys = list(jax.random.split(jax.random.PRNGKey(self.config.eval_seed) if rng is None
                                     else rng, 5))
        return keys[:3] + ([None, None] if rng is None else keys[3:])

    def apply_network(self, method: str, params, tokens, batch: Batch | None = None,
                      dropout_rng: jax.Array | None = None) -> jax.Array:
        """`ElectraNetwork.<method>` ("generator_logits" `[batch, length, vocab]`,
        "discriminator_logits" `[batch, length]`) on `tokens`, packed as `batch` says (segment
        ids, positions); dropout only with `dropout_rng`."""
        batch = batch or {}
        return self.module.apply(
            {"params": params}, jnp.asarray(tokens), segment_ids=batch.get("encoder_segment_ids"),
            positions=batch.get("encoder_positions"), deterministic=dropout_rng is None,
            rngs=dropout_rngs(dropout_rng), method=method)

    def num_selected(self, batch: Batch) -> jax.Array:
        """Positions selected per row `[batch]`: max(1, round(mask_prob x non-padding tokens)),
        at most the row's residues (0 for an empty row)."""
        originals = jnp.asarray(batch[self.target_key])
        tokens = jnp.sum(originals > 0, axis=1)
        residues = jnp.sum(originals >= FIRST_SAMPLED_ID, axis=1)
        k = jnp.maximum(1, jnp.round(tokens * self.config.mask_prob).astype(jnp.int32))
        return jnp.minimum(k, residues)

    def select(self, batch: Batch, key: jax.Array) -> jax.Array:
        """Bool `[batch, length]`: `num_selected` residues per row, uniformly without replacement."""
        originals = jnp.asarray(batch[self.target_key])
        u = _row_draws(lambda k: jax.random.uniform(k, originals.shape[1:]), key, originals)
        score = jnp.where(originals >= FIRST_SAMPLED_ID, u, 2.0)   # non-candidates rank last
        rank = jnp.argsort(jnp.argsort(score, axis=1), axis=1)
        return rank < self.num_selected(batch)[:, None]

    def loss_weights(self, batch: Batch) -> jax.Array:
        """The positions the evaluation key selects (float32 `[batch, length]`)."""
        return self.select(batch, self._keys(None)[0]).astype(jnp.float32)

    def generator_inputs(self, batch: Batch, selected: jax.Array, key: jax.Array) -> jax.Array:
        """ELECTRA's masking: [MASK] at a selected position with probability
        `mask_token_fraction`, else the original token."""
        originals = jnp.asarray(batch[self.target_key])
        u = _row_draws(lambda k: jax.random.uniform(k, originals.shape[1:]), key, originals)
        to_mask = selected & (u < self.config.mask_token_fraction)
        return jnp.where(to_mask, self.mask_id, originals).astype(originals.dtype)

    def sample(self, logits: jax.Array, originals: jax.Array, key: jax.Array) -> jax.Array:
        """One Gumbel-max sample per position from softmax(logits / temperature) over the
        residue ids, without gradient: int32 `[batch, length]`."""
        logits = jax.lax.stop_gradient(logits) / self.config.temperature
        logits = jnp.where(jnp.arange(logits.shape[-1]) >= FIRST_SAMPLED_ID, logits, -jnp.inf)
        gumbel = _row_draws(lambda k: jax.random.gumbel(k, logits.shape[1:], jnp.float32), key,
                            originals)
        return jnp.argmax(logits + gumbel, axis=-1).astype(originals.dtype)

    def corrupt(self, params, batch: Batch, rng: jax.Array | None = None) -> Corruption:
        """Selection, generator forward, sampling, discriminator forward (dropout with `rng`)."""
        select_key, mask_key, sample_key, gen_drop, disc_drop = self._keys(rng)
        originals = jnp.asarray(batch[self.target_key])
        selected = self.select(batch, select_key)
        gen_inputs = self.generator_inputs(batch, selected, mask_key)
        gen_logits = self.apply_network("generator_logits", params, gen_inputs, batch, gen_drop)
        sampled = self.sample(gen_logits, originals, sample_key)
        disc_inputs = jnp.where(selected, sampled, originals)
        labels = ((disc_inputs != originals) & (originals > 0)).astype(jnp.float32)
        disc_logits = self.apply_network("discriminator_logits", params, disc_inputs, batch,
                                         disc_drop)
        return Corruption(selected, gen_inputs, gen_logits, sampled, disc_inputs, labels,
                          disc_logits)

    # ---------------------------------------------------------------------- sums and loss
    def discriminator_weights(self, batch: Batch) -> jax.Array:
        """Every non-padding token ([CLS]/[SEP] included): ELECTRA's `input_mask`."""
        return (jnp.asarray(batch[self.target_key]) > 0).astype(jnp.float32)

    def _sums(self, c: Corruption, batch: Batch, z_loss: float) -> dict[str, jax.Array]:
        originals = jnp.asarray(batch[self.target_key])
        weights = c.selected.astype(jnp.float32)
        gen = losses.weighted_sums(c.generator_logits, originals, weights, z_loss)
        w = self.discriminator_weights(batch)
        bce = jnp.logaddexp(0.0, c.discriminator_logits) - c.labels * c.discriminator_logits
        predicted = (c.discriminator_logits > 0).astype(jnp.float32)
        return {**gen,
                "sampled_correct": jnp.sum(weights * (c.sampled == originals)),
                "discriminator_loss": jnp.sum(w * bce),
                "discriminator_weight_sum": jnp.sum(w),
                "discriminator_correct": jnp.sum(w * (predicted == c.labels)),
                "replaced": jnp.sum(w * c.labels),
                "predicted_replaced": jnp.sum(w * predicted),
                "true_replaced": jnp.sum(w * predicted * c.labels)}

    def loss_normalizer(self, batch: Batch, training: bool = True) -> dict[str, jax.Array]:
        """Data-only denominators: the selected positions (MLM) and the non-padding tokens (RTD)."""
        return {"weight_sum": jnp.maximum(jnp.sum(self.num_selected(batch)).astype(jnp.float32),
                                          1.0),
                "discriminator_weight_sum": jnp.maximum(
                    jnp.sum(self.discriminator_weights(batch)), 1.0)}

    def loss_fn(self, params, batch: Batch, dropout_rng: jax.Array | None = None,
                training: bool = True, normalizer: Mapping[str, jax.Array] | None = None,
                carry=None):
        """generator_weight x (MLM + z-loss) / selected + discriminator_weight x BCE / tokens.

        Returns the objective and the summed aux: the generator's `loss`, `z_loss`, `weight_sum`,
        `correct` and the discriminator's sums (`discriminator_loss`, `..._weight_sum`,
        `..._correct`, `replaced`, `predicted_replaced`, `true_replaced`, `sampled_correct`).
        """
        del training, carry   # every selected position weighs 1; ELECTRA is stateless
        aux = self._sums(self.corrupt(params, batch, dropout_rng), batch, self.config.z_loss)
        if normalizer is None:
            normalizer = self.loss_normalizer(batch)
        gen = (aux["loss"] + aux["z_loss"]) / normalizer["weight_sum"]
        disc = aux["discriminator_loss"] / normalizer["discriminator_weight_sum"]
        return self.config.generator_weight * gen + self.config.discriminator_weight * disc, aux

    def logits(self, params, batch: Batch, dropout_rng=None) -> jax.Array:
        """The generator's MLM logits on its masked input `[batch, length, vocab]`."""
        select_key, mask_key, _, gen_drop, _ = self._keys(dropout_rng)
        gen_inputs = self.generator_inputs(batch, self.select(batch, select_key), mask_key)
        return self.apply_network("generator_logits", params, gen_inputs, batch, gen_drop)

    def eval_sums(self, params, batch: Batch, carry=None) -> dict[str, jax.Array]:
        """Summed statistics (deterministic): the generator's on every selected position (ELECTRA's
        masked_lm_loss: `loss`, `correct`) and on the residues it saw as [MASK] alone (`masked_*`:
        the 15 % left unchanged can be copied), and the discriminator's. (Stateless: no carry.)"""
        del carry
        c = self.corrupt(params, batch, None)
        sums = self._sums(c, batch, 0.0)
        sums.pop("z_loss")
        hidden = (c.selected & (c.generator_inputs == self.mask_id)).astype(jnp.float32)
        masked = losses.weighted_sums(c.generator_logits, jnp.asarray(batch[self.target_key]),
                                      hidden, 0.0)
        sums.update(masked_loss=masked["loss"], masked_weight_sum=masked["weight_sum"],
                    masked_correct=masked["correct"])
        return sums

    def _discriminator_metrics(self, sums: Mapping[str, float]) -> dict[str, float]:
        n = max(float(sums["discriminator_weight_sum"]), 1.0)
        mlm = float(sums["loss"]) / max(float(sums["weight_sum"]), 1.0)
        disc = float(sums["discriminator_loss"]) / n
        return {"discriminator_loss": disc,
                "discriminator_accuracy": float(sums["discriminator_correct"]) / n,
                # the accuracy of always answering "original": what the discriminator must beat
                "unreplaced_share": 1.0 - float(sums["replaced"]) / n,
                "discriminator_precision": float(sums["true_replaced"])
                / max(float(sums["predicted_replaced"]), 1.0),
                "discriminator_recall": float(sums["true_replaced"])
                / max(float(sums["replaced"]), 1.0),
                "sampled_accuracy": float(sums["sampled_correct"])
                / max(float(sums["weight_sum"]), 1.0),
                "objective": self.config.generator_weight * mlm
                + self.config.discriminator_weight * disc}

    def summarize_eval(self, sums: Mapping[str, float]) -> dict[str, float]:
        """The generator's metrics (`loss` = MLM cross entropy, ...) and the discriminator's."""
        return {**super().summarize_eval(sums), **self._discriminator_metrics(sums)}

    def summarize_train(self, sums: Mapping[str, float]) -> dict[str, float]:
        return {**super().summarize_train(sums), **self._discriminator_metrics(sums)}

    def predict_batch(self, params, batch: Batch) -> jax.Array:
        """The original tokens with the positions the evaluation key selects filled by the
        generator's argmax on its masked input."""
        select_key, mask_key, *_ = self._keys(None)
        selected = self.select(batch, select_key)
        logits = self.apply_network("generator_logits", params,
                                    self.generator_inputs(batch, selected, mask_key), batch)
        originals = jnp.asarray(batch[self.target_key])
        return jnp.where(selected, jnp.argmax(logits, -1).astype(originals.dtype), originals)

    def encode(self, params, tokens, segment_ids=None, positions=None,
               output_hidden_states: bool = False):
        """`config.encoder_part`'s last layer `[batch, length, hidden]` (params of that part
        alone, as an imported HF directory holds, suffice)."""
        part = self.config.encoder_part
        if f"{part}_encoder" not in params:
            raise ValueError(f"these ELECTRA params hold no {part} (they have {sorted(params)}); "
                             "set encoder_part to the network they hold")
        return super().encode(params, tokens, segment_ids, positions, output_hidden_states)


class ElectraFamily(bert_family.BertFamily):
    """ProtElectra: ProtBert's vocabulary, tokenisation ([CLS] seq [SEP]), data and task
    (`protbert_mlm`, inherited with the batch shapes and the numpy twin)."""

    name = "electra"
    config_cls = electra.ElectraConfig
    presets = electra.PRESETS
    hf_module = "protlm.hf.electra"

    def model(self, config):
        return ElectraModel(config)


FAMILY = ElectraFamily()
