"""LoRA as a parameter transform: exact parameter counts, the low-rank algebra, merge."""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from protlm import models
from protlm.finetune import FinetuneModel, LoraConfig, lora, num_lora_params
from protlm.models import scan_utils

from .conftest import init_params


def _boxed(config):
    family = models.get_family(config)
    shapes = family.batch_shapes(config, family.default_lengths(8), 2, pack=False)
    return jax.eval_shape(lambda: family.model(config).init(jax.random.key(0), shapes)["params"])


def _expected(config, rank: int, targets) -> int:
    """rank * (fan_in + fan_out) per target projection per attention block, from the sizes.

    ProtT5: encoder self-attention, decoder self- and cross-attention (q/k/v/o all [embed] <->
    [heads * head_dim]); ProtBert: one self-attention per layer."""
    if config.family_name == "t5":
        width, inner = config.emb_dim, config.num_heads * config.head_dim
        blocks = config.num_encoder_layers + 2 * config.num_decoder_layers
    else:
        width, inner = config.hidden_size, config.hidden_size
        blocks = config.num_layers
    return blocks * len(targets) * rank * (width + inner)


@pytest.mark.parametrize("preset", ["prot_t5_tiny", "prot_bert_tiny"])
@pytest.mark.parametrize("rank", [1, 4])
@pytest.mark.parametrize("scan", [False, True])
def test_rank_r_adds_exactly_the_expected_parameters(preset, rank, scan):
    config = models.get_config(preset, scan_layers=scan)
    for targets in (lora.DEFAULT_TARGETS, ("query", "value")):
        cfg = LoraConfig(rank=rank, targets=targets)
        assert num_lora_params(_boxed(config), cfg) == _expected(config, rank, targets)


def test_task_model_adds_lora_on_the_encoder_only():
    config = models.get_config("prot_t5_tiny")
    model = FinetuneModel(config, "lora", LoraConfig(rank=4), "secondary_structure", "linear")
    shapes = jax.eval_shape(lambda: model.init(
        jax.random.key(0), {"encoder_input_tokens": jax.ShapeDtypeStruct((2, 8), jnp.int32)}))
    params = nn.meta.unbox(shapes["params"])
    n_lora = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params["lora"]))
    assert n_lora == config.num_encoder_layers * 4 * 4 * (config.emb_dim
                                                          + config.num_heads * config.head_dim)
    assert set(params["backbone"]) == {"token_embedder", "encoder"}     # no decoder
    # the linear head: [embed, classes] + [classes]
    assert sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params["head"])) == \
        config.emb_dim * 3 + 3


def test_lora_factors_carry_the_kernels_logical_axes():
    boxed = lora.lora_shapes(_boxed(models.get_config("prot_t5_tiny", scan_layers=True)),
                             LoraConfig(rank=2))
    q = boxed["encoder"]["layers"]["attention"]["query"]
    o = boxed["encoder"]["layers"]["attention"]["out"]
    assert q["a"].names == ("layers", "embed", None) and q["b"].names == ("layers", None, "heads", "kv")
    assert o["a"].names == ("layers", "heads", "kv", None) and o["b"].names == ("layers", None, "embed")


def test_merged_kernel_is_the_low_rank_update_of_the_activations():
    """x @ (W + s A B) == x @ W + s (x @ A) @ B for a q kernel [E, H, K] and an out kernel
    [H, K, E], unscanned and stacked [layers, ...]."""
    rng = np.random.default_rng(0)
    s = 0.5
    for lead in ((), (3,)):
        w = rng.normal(size=lead + (6, 2, 4)).astype(np.float32)        # [*L, E, H, K]
        a = rng.normal(size=lead + (6, 3)).astype(np.float32)           # [*L, E, r]
        b = rng.normal(size=lead + (3, 2, 4)).astype(np.float32)        # [*L, r, H, K]
        x = rng.normal(size=lead + (5, 6)).astype(np.float32)           # [*L, T, E]
        merged = w + lora.delta(jnp.asarray(a), jnp.asarray(b), s, w.ndim)
        got = np.einsum("...te,...ehk->...thk", x, merged)
        want = np.einsum("...te,...ehk->...thk", x, w) + s * np.einsum(
            "...tr,...rhk->...thk", np.einsum("...te,...er->...tr", x, a), b)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        wo = rng.normal(size=lead + (2, 4, 6)).astype(np.float32)       # [*L, H, K, E]
        ao = rng.normal(size=lead + (2, 4, 3)).astype(np.float32)       # [*L, H, K, r]
        bo = rng.normal(size=lead + (3, 6)).astype(np.float32)          # [*L, r, E]
        xo = rng.normal(size=lead + (5, 2, 4)).astype(np.float32)       # [*L, T, H, K]
        merged = wo + lora.delta(jnp.asarray(ao), jnp.asarray(bo), s, wo.ndim)
        got = np.einsum("...thk,...hke->...te", xo, merged)
        want = np.einsum("...thk,...hke->...te", xo, wo) + s * np.einsum(
            "...tr,...re->...te", np.einsum("...thk,...hkr->...tr", xo, ao), bo)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("preset", ["prot_t5_tiny", "prot_bert_tiny"])
def test_fresh_lora_model_equals_its_base_and_a_trained_one_does_not(preset):
    config = models.get_config(preset)
    family = models.get_family(config)
    params = init_params(config)
    cfg = LoraConfig(rank=2)
    factors = nn.meta.unbox(lora.init_lora(jax.random.key(1), _boxed(config), cfg))
    tokens = jnp.asarray(family.tokenize("MKTAYIAKQRQISFVKSHFSRQ")[0][None])
    model = family.model(config)
    base = model.encode(params, tokens)
    np.testing.assert_array_equal(model.encode(lora.merge(params, factors, cfg), tokens), base)
    moved = jax.tree_util.tree_map(lambda x: x + 0.1, factors)
    assert float(jnp.max(jnp.abs(model.encode(lora.merge(params, moved, cfg), tokens) - base))) > 1e-3


def test_merge_works_on_scanned_and_unscanned_layouts_alike():
    config = models.get_config("prot_t5_tiny")
    params = init_params(config)
    cfg = LoraConfig(rank=2)
    factors = jax.tree_util.tree_map(
        lambda x: x + 0.01, nn.meta.unbox(lora.init_lora(jax.random.key(1), _boxed(config), cfg)))
    flat = lora.merge(params, factors, cfg)
    stacked = lora.merge(scan_utils.stack_layers(params), scan_utils.stack_layers(factors), cfg)
    a, b = jax.tree_util.tree_leaves(flat), jax.tree_util.tree_leaves(scan_utils.unstack_layers(stacked))
    assert max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b)) < 1e-6


def test_bad_targets_and_modes_are_clear_errors():
    config = models.get_config("prot_t5_tiny")
    with pytest.raises(ValueError, match="match no kernel"):
        lora.lora_shapes(_boxed(config), LoraConfig(targets=("qkv",)))
    with pytest.raises(ValueError, match="rank"):
        LoraConfig(rank=0)
    with pytest.raises(ValueError, match="mode"):
        FinetuneModel(config, "adapter")
    with pytest.raises(ValueError, match="per residue"):
        FinetuneModel(config, "lora", task="localization", head="cnn")
    with pytest.raises(ValueError, match="without a task"):
        FinetuneModel(config, "frozen")
    assert dataclasses.replace(LoraConfig(), rank=8).scale == 0.5
