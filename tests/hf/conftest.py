"""Shared pieces of the Hugging Face tests: real proteins, batches, briefly trained models."""
from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from protlm import models
from protlm.data.fasta import read_fasta

NUM_PROTEINS = 16
TRAIN_STEPS = 20
TRAIN_CROP = 32  # residues per training example (keeps 20 CPU steps of the small models short)
TRAIN_BATCH = 4


def pick_proteins(fasta_paths: list[str], num: int = NUM_PROTEINS, max_len: int = 200,
                  scan: int = 3000) -> list[str]:
    """`num` real proteins with lengths spread over [10, max_len], at least one with a rare
    residue (X/U/Z/O/B) when the first `scan` records have one; deterministic."""
    seqs = []
    for i, rec in enumerate(read_fasta(fasta_paths[0])):
        if i >= scan:
            break
        if 10 <= len(rec.sequence) <= max_len:
            seqs.append(rec.sequence)
    seqs.sort(key=len)
    rare = [s for s in seqs if set(s) & set("XUZOB")]
    picks = [seqs[round(k * (len(seqs) - 1) / (num - 1))] for k in range(num)]
    if rare and not any(set(s) & set("XUZOB") for s in picks):
        picks[num // 2] = rare[0]
    return picks


@pytest.fixture(scope="session")
def proteins(pretraining_fasta) -> list[str]:
    return pick_proteins(pretraining_fasta)


def token_rows(config, seqs: list[str]) -> list[list[int]]:
    """protlm's ids as the HF tokenizers produce them (`Family.tokenize`: T5 `seq </s>`, BERT
    `[CLS] seq [SEP]`)."""
    family = models.get_family(config)
    return [list(family.tokenize(s)[0]) for s in seqs]


def pad(rows: list[list[int]], length: int | None = None) -> np.ndarray:
    """Right-padded int32 `[batch, length]`."""
    length = length or max(map(len, rows))
    out = np.zeros((len(rows), length), np.int32)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r[:length]
    return out


def eval_batch(config, seqs: list[str]) -> dict[str, np.ndarray]:
    """Padded batch of whole proteins; T5 decodes its own input (shifted right)."""
    enc = pad(token_rows(config, seqs))
    dec = np.zeros_like(enc)
    dec[:, 1:] = enc[:, :-1]
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec,
            "decoder_target_tokens": enc, "decoder_loss_weights": (enc > 0).astype(np.int32),
            "encoder_target_tokens": enc, "encoder_loss_weights": (enc > 0).astype(np.int32)}


def train_batch(config, seqs: list[str], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The family's pretraining objective (the library's `Family.array_batch`: ProtT5 span
    denoising, ProtBert MLM) on `TRAIN_CROP`-residue crops."""
    family = models.get_family(config)
    crops = [s[:TRAIN_CROP] for s in seqs[:TRAIN_BATCH]]
    lengths = family.default_lengths(TRAIN_CROP + family.num_special_tokens())  # one shape
    return family.array_batch(crops, lengths, seed=int(rng.integers(2**31)))


def init_params(config, seed: int = 0) -> dict:
    """Unboxed random params of `config`."""
    family = models.get_family(config)
    shapes = family.batch_shapes(config, family.default_lengths(8), 2, pack=False)
    return nn.unbox(family.model(config).init(jax.random.PRNGKey(seed), shapes)["params"])


def train(config, params: dict, seqs: list[str], steps: int = TRAIN_STEPS) -> dict:
    """`steps` Adam steps of the Model's loss_fn (dropout on): weights move off their init."""
    model = models.get_model(config)
    tx = optax.adam(3e-3)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, batch, rng):
        grads = jax.grad(lambda p: model.loss_fn(p, batch, rng)[0])(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    np_rng = np.random.default_rng(0)
    for i in range(steps):  # a different protein subset and masking every step
        chosen = [seqs[j] for j in np_rng.permutation(len(seqs))[:TRAIN_BATCH]]
        batch = train_batch(config, chosen, np_rng)
        params, opt_state = step(params, opt_state, batch, jax.random.PRNGKey(i))
    return jax.tree_util.tree_map(np.asarray, params)
