"""ProtBert network behaviour: names, padding, packing, scan, MLM prediction."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import protlm.models as M
from protlm.models.scan_utils import stack_layers
from tests.models.conftest import bert_batch


@pytest.fixture
def tiny(bert_tiny):
    return bert_tiny


def test_param_tree_names(tiny):
    _, _, p = tiny
    assert set(p) == {"embeddings", "encoder", "mlm_head"}
    assert set(p["embeddings"]) == {"word_embeddings", "position_embeddings",
                                    "token_type_embeddings", "layer_norm"}
    assert set(p["encoder"]["layers_0"]) == {"attention", "attention_layer_norm", "mlp",
                                             "mlp_layer_norm"}
    assert set(p["mlm_head"]) == {"transform", "layer_norm", "bias"}
    assert p["encoder"]["layers_0"]["attention"]["query"]["bias"].shape == (4, 8)
    np.testing.assert_array_equal(p["embeddings"]["word_embeddings"]["embedding"][0], 0)


def test_padding_and_packing(tiny, np_rng):
    _, model, p = tiny
    logits_fn = jax.jit(model.logits)
    a, b = bert_batch(np_rng, b=1, length=6), bert_batch(np_rng, b=1, length=5)
    padded = {k: np.pad(v, ((0, 0), (0, 4))) for k, v in a.items()}
    np.testing.assert_allclose(logits_fn(p, padded)[:, :6], logits_fn(p, a), atol=1e-5)
    packed = {k: np.concatenate([a[k], b[k], np.zeros((1, 1), a[k].dtype)], 1) for k in a}
    packed["encoder_segment_ids"] = np.array([[1] * 6 + [2] * 5 + [0]], np.int32)
    packed["encoder_positions"] = np.array([list(range(6)) + list(range(5)) + [0]], np.int32)
    out = logits_fn(p, packed)
    np.testing.assert_allclose(out[:, :6], logits_fn(p, a), atol=1e-5)
    np.testing.assert_allclose(out[:, 6:11], logits_fn(p, b), atol=1e-5)


def test_scan_matches_unrolled(tiny, np_rng):
    cfg, model, p = tiny
    scanned = M.get_model(dataclasses.replace(cfg, scan_layers=True, remat_policy="minimal"))
    batch = bert_batch(np_rng, pad=2)
    np.testing.assert_allclose(jax.jit(scanned.logits)(stack_layers(p), batch),
                               jax.jit(model.logits)(p, batch), atol=1e-5)


def test_loss_only_on_selected_positions(tiny, np_rng):
    _, model, p = tiny
    batch = bert_batch(np_rng, length=12)
    loss_fn = jax.jit(model.loss_fn)
    loss, aux = loss_fn(p, batch)
    # Changing targets where the weight is 0 leaves the loss unchanged.
    other = dict(batch)
    other["encoder_target_tokens"] = np.where(batch["encoder_loss_weights"] > 0,
                                              batch["encoder_target_tokens"], 7).astype(np.int32)
    np.testing.assert_allclose(loss_fn(p, other)[0], loss, rtol=1e-6)
    assert float(aux["weight_sum"]) == batch["encoder_loss_weights"].sum()
    with pytest.raises(KeyError, match="encoder_loss_weights"):
        model.loss_fn(p, {k: v for k, v in batch.items() if k != "encoder_loss_weights"})


def test_predict_fills_only_selected(tiny, np_rng):
    _, model, p = tiny
    batch = bert_batch(np_rng)
    pred = np.asarray(jax.jit(model.predict_batch)(p, batch))
    keep = batch["encoder_loss_weights"] == 0
    np.testing.assert_array_equal(pred[keep], batch["encoder_input_tokens"][keep])
    argmax = np.asarray(jax.jit(model.logits)(p, batch)).argmax(-1)
    np.testing.assert_array_equal(pred[~keep], argmax[~keep])


def test_encode_and_flops(tiny, np_rng):
    cfg, model, p = tiny
    out = jax.jit(model.encode)(p, bert_batch(np_rng)["encoder_input_tokens"])
    assert out.shape == (2, 10, cfg.hidden_size) and out.dtype == jnp.float32
    big = M.get_config("prot_bert")
    lengths = {"inputs": 512}
    assert big.flops_per_token(lengths) > 6 * (big.num_params() - 40000 * 1024)
    assert big.flops_per_example(lengths) == big.flops_per_token(lengths) * 512
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model.logits(p, bert_batch(np_rng, length=600))


def test_blocked_attention_matches_dense(tiny, np_rng):
    cfg, model, p = tiny
    blocked = M.get_model(dataclasses.replace(cfg, attention_block_size=4))
    batch = bert_batch(np_rng, length=10, pad=3)
    batch["encoder_segment_ids"] = np.array([[1] * 5 + [2] * 2 + [0] * 3] * 2, np.int32)
    batch["encoder_positions"] = np.array([list(range(5)) + [0, 1] + [0] * 3] * 2, np.int32)
    np.testing.assert_allclose(jax.jit(blocked.logits)(p, batch), jax.jit(model.logits)(p, batch),
                               atol=1e-5)
