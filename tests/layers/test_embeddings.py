"""Tied output logits are computed in float32 (T5X attend_dtype) even in bf16 models."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import protlm.models as M
from protlm.layers import Embed
from protlm.models import losses
from tests.models.conftest import key, t5_batch


def test_attend_is_float32_product_of_bf16_activations():
    mod = Embed(128, 64, dtype=jnp.bfloat16)
    v = mod.init(jax.random.PRNGKey(0), jnp.zeros((1, 3), jnp.int32))
    table = v["params"]["embedding"].value
    q = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 64)).astype(jnp.bfloat16)
    logits = mod.apply(v, q, method=Embed.attend)
    assert logits.dtype == jnp.float32
    exact = np.asarray(q, np.float64) @ np.asarray(table, np.float64).T
    np.testing.assert_allclose(np.asarray(logits), exact, rtol=1e-5, atol=1e-5)
    # The activation-dtype product (what attend did before) is visibly rounded.
    rounded = jnp.einsum("...d,vd->...v", q, table.astype(jnp.bfloat16))
    assert np.max(np.abs(np.asarray(rounded, np.float64) - exact)) > 1e-3


def test_bf16_t5_loss_equals_float32_logits_reference():
    cfg = M.get_config("prot_t5_tiny", dtype="bfloat16")
    model = M.get_model(cfg)
    batch = t5_batch(np.random.default_rng(0), b=4, enc_len=12, dec_len=10, pad=2)
    params = nn.meta.unbox(jax.jit(model.init)(key(0), batch)["params"])
    targets, weights = batch["decoder_target_tokens"], batch["decoder_loss_weights"]

    @jax.jit
    def both(params):
        """The model's loss sums, and the same from float32 logits of its own hidden state."""
        logits, state = model.module.apply(
            {"params": params}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
            capture_intermediates=lambda mdl, _: mdl.name == "decoder_norm")
        hidden = state["intermediates"]["decoder"]["decoder_norm"]["__call__"][0]
        scaled = hidden * cfg.emb_dim ** -0.5                # as the decoder scales it (bf16)
        reference = jnp.asarray(scaled, jnp.float32) @ params["token_embedder"]["embedding"].T
        got = losses.weighted_sums(logits, targets, weights, cfg.z_loss)
        want = losses.weighted_sums(reference, targets, weights, cfg.z_loss)
        rounded = losses.weighted_sums(reference.astype(jnp.bfloat16).astype(jnp.float32),
                                       targets, weights, cfg.z_loss)
        return logits, hidden, got, want, rounded

    _, aux = jax.jit(model.loss_fn)(params, batch)
    logits, hidden, got, want, rounded = both(params)
    assert hidden.dtype == jnp.bfloat16 and logits.dtype == jnp.float32
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-6)
    np.testing.assert_allclose(got["z_loss"], want["z_loss"], rtol=1e-5)
    np.testing.assert_allclose(aux["loss"], got["loss"], rtol=1e-6)
    # bf16-rounded logits would give a different loss: the checks above can fail.
    assert abs(float(rounded["loss"]) - float(want["loss"])) > 1e-5 * abs(float(want["loss"]))
