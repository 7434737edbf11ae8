"""ProtT5 network behaviour: padding, causality, packing, scan, encoder-only, decoding."""
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import protlm.models as M
from protlm.models import t5
from protlm.models.scan_utils import stack_layers, unstack_layers
from tests.models.conftest import key, t5_batch

KEY = key(0)


@pytest.fixture
def tiny(t5_tiny):
    return t5_tiny


def test_param_tree_names(tiny):
    _, _, p = tiny
    assert set(p) == {"token_embedder", "encoder", "decoder"}
    assert set(p["encoder"]) == {"relpos_bias", "layers_0", "layers_1", "encoder_norm"}
    assert set(p["encoder"]["layers_0"]) == {"pre_attention_layer_norm", "attention",
                                             "pre_mlp_layer_norm", "mlp"}
    assert set(p["decoder"]["layers_1"]) == {
        "pre_self_attention_layer_norm", "self_attention", "pre_cross_attention_layer_norm",
        "encoder_decoder_attention", "pre_mlp_layer_norm", "mlp"}
    assert p["encoder"]["layers_0"]["attention"]["query"]["kernel"].shape == (32, 4, 8)
    assert p["encoder"]["layers_0"]["attention"]["out"]["kernel"].shape == (4, 8, 32)
    assert p["encoder"]["relpos_bias"]["rel_embedding"].shape == (4, 32)
    assert set(p["decoder"]["layers_0"]["mlp"]) == {"wi", "wo"}


def test_padding_does_not_change_real_positions(tiny, np_rng):
    _, model, p = tiny
    batch = t5_batch(np_rng, enc_len=8, dec_len=6)
    padded = {k: np.pad(v, ((0, 0), (0, 5))) for k, v in batch.items()}
    logits = jax.jit(model.logits)(p, batch)
    logits_pad = jax.jit(model.logits)(p, padded)
    np.testing.assert_allclose(logits_pad[:, :6], logits, atol=1e-5)
    enc = model.encode(p, batch["encoder_input_tokens"])
    np.testing.assert_allclose(model.encode(p, padded["encoder_input_tokens"])[:, :8], enc,
                               atol=1e-5)
    loss, aux = jax.jit(model.loss_fn)(p, batch)
    loss_pad, aux_pad = jax.jit(model.loss_fn)(p, padded)
    np.testing.assert_allclose(loss_pad, loss, rtol=1e-5)
    assert float(aux_pad["weight_sum"]) == float(aux["weight_sum"])


def test_decoder_is_causal(tiny, np_rng):
    _, model, p = tiny
    batch = t5_batch(np_rng, dec_len=8)
    logits = jax.jit(model.logits)(p, batch)
    changed = dict(batch)
    dec = batch["decoder_input_tokens"].copy()
    dec[:, 5:] = 7
    changed["decoder_input_tokens"] = dec
    logits2 = jax.jit(model.logits)(p, changed)
    np.testing.assert_allclose(logits2[:, :5], logits[:, :5], atol=1e-6)
    assert not np.allclose(logits2[:, 5:], logits[:, 5:])


def test_packing_equals_separate_examples(tiny, np_rng):
    _, model, p = tiny
    a, b = t5_batch(np_rng, b=1, enc_len=5, dec_len=4), t5_batch(np_rng, b=1, enc_len=6, dec_len=5)
    packed = {k: np.concatenate([a[k], b[k], np.zeros((1, 2), a[k].dtype)], 1) for k in a}
    packed["encoder_segment_ids"] = np.array([[1] * 5 + [2] * 6 + [0, 0]], np.int32)
    packed["encoder_positions"] = np.array([list(range(5)) + list(range(6)) + [0, 0]], np.int32)
    for k in list(packed):
        if k.startswith("decoder"):
            packed[k] = packed[k][:, :11]
    packed["decoder_segment_ids"] = np.array([[1] * 4 + [2] * 5 + [0, 0]], np.int32)
    packed["decoder_positions"] = np.array([list(range(4)) + list(range(5)) + [0, 0]], np.int32)
    logits = jax.jit(model.logits)(p, packed)
    np.testing.assert_allclose(logits[:, :4], jax.jit(model.logits)(p, a), atol=1e-5)
    np.testing.assert_allclose(logits[:, 4:9], jax.jit(model.logits)(p, b), atol=1e-5)
    # The loss of the packed row aggregates both examples' sums.
    _, aux = jax.jit(model.loss_fn)(p, packed)
    _, aux_a = jax.jit(model.loss_fn)(p, a)
    _, aux_b = jax.jit(model.loss_fn)(p, b)
    np.testing.assert_allclose(aux["loss"], aux_a["loss"] + aux_b["loss"], rtol=1e-5)
    np.testing.assert_allclose(aux["weight_sum"], aux_a["weight_sum"] + aux_b["weight_sum"])


@pytest.mark.parametrize("remat", ["none", "full"])  # "minimal": test_bert
def test_scan_matches_unrolled(tiny, np_rng, remat):
    cfg, model, p = tiny
    scanned = M.get_model(dataclasses.replace(cfg, scan_layers=True, remat_policy=remat))
    ps = stack_layers(p)
    assert ps["encoder"]["layers"]["mlp"]["wi"]["kernel"].shape == (2, 32, 64)
    batch = t5_batch(np_rng, pad=2)
    def grad(q, m):
        return jax.jit(jax.grad(lambda q: m.loss_fn(q, batch)[0]))(q)
    np.testing.assert_allclose(jax.jit(scanned.logits)(ps, batch),
                               jax.jit(model.logits)(p, batch), atol=1e-5)
    g, gs = grad(p, model), grad(ps, scanned)
    diffs = jax.tree_util.tree_map(lambda x, y: float(jnp.max(jnp.abs(x - y))), stack_layers(g), gs)
    assert max(jax.tree_util.tree_leaves(diffs)) < 1e-5
    restored = unstack_layers(ps)
    jax.tree_util.tree_map(np.testing.assert_array_equal, restored, p)


def test_encoder_only_subset_and_hidden_states(tiny, np_rng):
    cfg, model, p = tiny
    tokens = t5_batch(np_rng, pad=3)["encoder_input_tokens"]
    enc_params = {k: p[k] for k in ("token_embedder", "encoder")}
    out = model.encode(enc_params, tokens)
    assert out.shape == (2, 10, cfg.emb_dim)
    full = model.module.apply({"params": p}, tokens, method=t5.Transformer.encode)
    np.testing.assert_allclose(out, full, atol=1e-6)
    last, hidden = model.encode(p, tokens, output_hidden_states=True)
    assert len(hidden) == cfg.num_encoder_layers + 1
    np.testing.assert_allclose(hidden[-1], last, atol=0)
    np.testing.assert_allclose(last, out, atol=1e-6)
    # The encoder-only module alone initialises exactly the subset's tree.
    own = jax.eval_shape(t5.T5EncoderOnly(cfg).init, KEY, tokens)["params"]
    assert jax.tree_util.tree_structure(nn.meta.unbox(own)) == \
        jax.tree_util.tree_structure(enc_params)


def test_greedy_predict_is_self_consistent(tiny, np_rng):
    _, model, p = tiny
    batch = t5_batch(np_rng, dec_len=6)
    pred = np.asarray(jax.jit(model.predict_batch)(p, batch))
    assert pred.shape == (2, 6)
    # Teacher-forcing the prediction reproduces it at every step before the first EOS.
    dec = np.concatenate([np.zeros((2, 1), np.int32), pred[:, :-1]], 1)
    forced = np.asarray(jax.jit(model.logits)(p, {**batch, "decoder_input_tokens": dec}))
    forced = forced.argmax(-1)
    for row in range(2):
        eos = np.where(pred[row] == 1)[0]
        stop = eos[0] + 1 if len(eos) else 6
        np.testing.assert_array_equal(pred[row, :stop], forced[row, :stop])
        assert (pred[row, stop:] == 0).all()


def test_bfloat16_activations_fp32_params(tiny, np_rng):
    cfg, _, params = tiny
    model = M.get_model(dataclasses.replace(cfg, dtype="bfloat16"))
    batch = t5_batch(np_rng)
    abstract = jax.eval_shape(model.init, KEY, batch)["params"]
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(nn.meta.unbox(abstract)))
    loss, aux = jax.jit(model.loss_fn)(params, batch)
    assert np.isfinite(float(loss))
    assert jax.eval_shape(model.logits, params, batch).dtype == jnp.float32
    encoded = jax.eval_shape(model.encode, params, batch["encoder_input_tokens"])
    assert encoded.dtype == jnp.bfloat16


def test_dropout_is_used_when_rng_given(tiny, np_rng):
    cfg, _, params = tiny
    model = M.get_model(dataclasses.replace(cfg, dropout_rate=0.3))
    batch = t5_batch(np_rng)
    loss = jax.jit(lambda p, b, r: model.loss_fn(p, b, r)[0])
    det = jax.jit(lambda p, b: model.loss_fn(p, b)[0])(params, batch)
    d1, d2 = loss(params, batch, key(1)), loss(params, batch, key(2))
    assert float(d1) != float(det) and float(d1) != float(d2)


def test_flops_per_token_formula():
    cfg = M.get_config("prot_t5_xl")
    s = t = 512
    fl = cfg.flops_per_example({"inputs": s, "targets": t})
    # At least 6 x (all params except the embedding table) per token on each side.
    assert fl > 6 * (cfg.num_params() - cfg.vocab_size * cfg.emb_dim) * s
    assert cfg.flops_per_token({"inputs": s, "targets": t}) == pytest.approx(fl / (s + t))
    # Attention terms grow quadratically with length.
    assert cfg.flops_per_example({"inputs": 2 * s, "targets": 2 * t}) > 2 * fl


@pytest.mark.parametrize("scan", [False, True])
def test_cached_decoding_matches_full_decoder(tiny, np_rng, scan):
    cfg, _, p = tiny
    model = M.get_model(dataclasses.replace(cfg, scan_layers=scan))
    params = stack_layers(p) if scan else p
    batch = t5_batch(np_rng, dec_len=5, pad=2)
    enc, dec = batch["encoder_input_tokens"], batch["decoder_input_tokens"]

    @jax.jit
    def run(params):
        apply = functools.partial(model.module.apply, method=t5.Transformer.decode,
                                  mutable=["cache"])
        encoded = model.module.apply({"params": params}, enc, method=t5.Transformer.encode)
        _, cache = apply({"params": params}, encoded, enc, jnp.zeros_like(dec), decode=True)
        steps = []
        for i in range(dec.shape[1]):
            logits, cache = apply({"params": params, **cache}, encoded, enc, dec[:, i:i + 1],
                                  decode=True, decode_index=i, max_decode_length=dec.shape[1])
            steps.append(logits[:, 0])
        return jnp.stack(steps, 1)

    np.testing.assert_allclose(run(params), jax.jit(model.logits)(params, batch), atol=1e-5)


def test_blocked_attention_matches_dense(tiny, np_rng):
    cfg, model, p = tiny
    blocked = M.get_model(dataclasses.replace(cfg, attention_block_size=4,
                                              attention_key_block_size=4))
    batch = t5_batch(np_rng, enc_len=10, dec_len=7, pad=3)
    batch["encoder_segment_ids"] = np.array([[1] * 4 + [2] * 3 + [0] * 3] * 2, np.int32)
    batch["encoder_positions"] = np.array([list(range(4)) + list(range(3)) + [0] * 3] * 2,
                                          np.int32)
    batch["decoder_segment_ids"] = np.array([[1] * 2 + [2] * 2 + [0] * 3] * 2, np.int32)
    batch["decoder_positions"] = np.array([[0, 1, 0, 1, 0, 0, 0]] * 2, np.int32)

    def loss_and_grad(m):
        return jax.jit(jax.value_and_grad(lambda q: m.loss_fn(q, batch)[0]))(p)

    (loss, grads), (bloss, bgrads) = loss_and_grad(model), loss_and_grad(blocked)
    np.testing.assert_allclose(bloss, loss, rtol=1e-5)
    diffs = jax.tree_util.tree_map(lambda x, y: float(jnp.max(jnp.abs(x - y))), grads, bgrads)
    assert max(jax.tree_util.tree_leaves(diffs)) < 1e-5
