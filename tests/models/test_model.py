"""Loss normalisation, z-loss, metrics and config (de)serialisation."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import protlm.models as M
from protlm.models import losses


def test_cross_entropy_and_z_loss_values():
    logits = jnp.asarray([[[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]]])
    targets = jnp.asarray([[0, 2]])
    ce, z = losses.cross_entropy_with_z_loss(logits, targets, z_loss=1e-4)
    log_z = np.log(np.exp([2.0, 0.0, -1.0]).sum()), np.log(3.0)
    np.testing.assert_allclose(ce, [[log_z[0] - 2.0, log_z[1]]], rtol=1e-6)
    np.testing.assert_allclose(z, [[1e-4 * log_z[0] ** 2, 1e-4 * log_z[1] ** 2]], rtol=1e-5)
    aux = losses.weighted_sums(logits, targets, jnp.asarray([[1.0, 0.0]]), 1e-4)
    assert float(aux["weight_sum"]) == 1.0 and float(aux["correct"]) == 1.0
    np.testing.assert_allclose(losses.objective(aux), ce[0, 0] + z[0, 0], rtol=1e-6)
    m = losses.metrics_from_aux(aux)
    np.testing.assert_allclose(m["perplexity"], np.exp(ce[0, 0]), rtol=1e-6)


def test_aux_sums_are_additive_over_microbatches(np_rng, t5_tiny):
    from tests.models.conftest import t5_batch
    _, model, params = t5_tiny
    batch = t5_batch(np_rng, b=4, pad=2)
    batch["decoder_loss_weights"][0] = 0  # an all-padding example must not bias the mean
    loss_fn = jax.jit(model.loss_fn)
    loss, aux = loss_fn(params, batch)
    halves = [loss_fn(params, {k: v[s] for k, v in batch.items()})[1]
              for s in (slice(0, 2), slice(2, 4))]
    summed = {k: halves[0][k] + halves[1][k] for k in aux}
    for k in aux:
        np.testing.assert_allclose(summed[k], aux[k], rtol=1e-5)
    np.testing.assert_allclose(losses.objective(summed), loss, rtol=1e-5)
    metrics = jax.jit(model.eval_fn)(params, batch)
    np.testing.assert_allclose(metrics["perplexity"], np.exp(metrics["loss"]), rtol=1e-5)
    assert 0.0 <= float(metrics["accuracy"]) <= 1.0
    scores = jax.jit(model.score_batch)(params, batch)
    assert scores.shape == (4,) and float(scores[0]) == 0.0
    np.testing.assert_allclose(-scores.sum(), aux["loss"], rtol=1e-5)


def test_unmasked_loss_weight_reweights_training_not_evaluation(np_rng, t5_tiny):
    """Span denoising: masked residues = sentinel inputs at the target's position."""
    import dataclasses
    from tests.models.conftest import t5_batch
    cfg, _, params = t5_tiny
    batch = t5_batch(np_rng, b=3, enc_len=8, dec_len=8, pad=1)
    batch["encoder_input_tokens"] = np.where(np_rng.random((3, 8)) < 0.3, 127,
                                             batch["decoder_target_tokens"]).astype(np.int32)
    batch["encoder_input_tokens"][:, -1] = 0
    weights = batch["decoder_loss_weights"]
    masked = weights * (batch["encoder_input_tokens"] >= 28)
    assert 0 < masked.sum() < weights.sum()
    logits = M.get_model(cfg).logits(params, batch)
    ce, _ = losses.cross_entropy_with_z_loss(logits, jnp.asarray(batch["decoder_target_tokens"]))
    ce = np.asarray(ce)
    for w in (1.0, 0.25, 0.0):
        model = M.get_model(dataclasses.replace(cfg, unmasked_loss_weight=w, z_loss=0.0))
        np.testing.assert_array_equal(model.masked_residue_weights(batch, jnp.asarray(weights)),
                                      masked)
        expect = masked + w * (weights - masked)
        loss, aux = model.loss_fn(params, batch)
        np.testing.assert_allclose(loss, (ce * expect).sum() / expect.sum(), rtol=1e-5)
        np.testing.assert_allclose(aux["weight_sum"], expect.sum(), rtol=1e-6)
        eval_loss, _ = model.loss_fn(params, batch, training=False)
        np.testing.assert_allclose(eval_loss, (ce * weights).sum() / weights.sum(), rtol=1e-5)
    with pytest.raises(ValueError, match="unmasked_loss_weight"):
        dataclasses.replace(cfg, unmasked_loss_weight=1.5)


@pytest.mark.parametrize("name", sorted(M.PRESETS))
def test_config_roundtrip_json(name):
    cfg = M.get_config(name, scan_layers=True)
    d = json.loads(json.dumps(M.config_to_dict(cfg)))
    assert M.config_from_dict(d) == cfg
    assert d["family"] in M.FAMILIES


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown model preset"):
        M.get_config("prot_t5_huge")
    with pytest.raises(ValueError, match="no fields"):
        M.get_config("prot_t5_tiny", emb_size=3)
    with pytest.raises(ValueError, match="remat_policy"):
        M.get_config("prot_bert_tiny", remat_policy="some")
    with pytest.raises(ValueError, match="family"):
        M.config_from_dict({"family": "gpt", "config": {}})
    with pytest.raises(TypeError):
        M.get_model(object())


def test_no_tensorflow_or_seqio_at_import():
    import subprocess
    import sys
    code = ("import sys, protlm.models, protlm.layers, protlm.partitioning, protlm.models.summary\n"
            "bad = [m for m in ('tensorflow', 'seqio') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
