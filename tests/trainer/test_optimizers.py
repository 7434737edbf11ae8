"""Schedules, optimizer builders and optimizer-state sharding."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from protlm import optimizers, partitioning


def test_rsqrt_schedule_matches_t5_rsqrt_decay():
    lr = optimizers.rsqrt_schedule(peak_value=0.01, warmup_steps=10_000)
    # T5: 1/sqrt(max(step, 10k)).
    for step in (0, 5_000, 10_000, 40_000, 1_000_000):
        assert float(lr(step)) == pytest.approx(1 / np.sqrt(max(step, 10_000)), rel=1e-6)


def test_rsqrt_linear_warmup_ramps_then_decays():
    lr = optimizers.rsqrt_schedule(peak_value=1.0, warmup_steps=100, linear_warmup=True)
    assert float(lr(0)) == pytest.approx(0.01)
    assert float(lr(49)) == pytest.approx(0.5)
    assert float(lr(99)) == pytest.approx(1.0)
    assert float(lr(400)) == pytest.approx(0.5)


def test_linear_warmup_linear_decay():
    lr = optimizers.linear_warmup_linear_decay(peak_value=0.002, warmup_steps=40, total_steps=400)
    assert float(lr(0)) == 0.0
    assert float(lr(20)) == pytest.approx(0.001)
    assert float(lr(40)) == pytest.approx(0.002)
    assert float(lr(220)) == pytest.approx(0.001)
    assert float(lr(400)) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="total_steps"):
        optimizers.linear_warmup_linear_decay(1.0, 10, 10)


def _params():
    return {"dense": {"kernel": jnp.ones((256, 128)), "bias": jnp.ones((128,))},
            "attn": {"kernel": jnp.ones((256, 4, 64))}, "norm": {"scale": jnp.ones((256,))}}


def test_adafactor_factors_large_matrices_only():
    tx = optimizers.adafactor(optimizers.constant_schedule(0.01))
    state = tx.init(_params())
    fact = [s for s in jax.tree_util.tree_leaves(state, is_leaf=lambda x: hasattr(x, "v_row"))
            if hasattr(s, "v_row")][0]
    assert {fact.v_row["dense"]["kernel"].shape, fact.v_col["dense"]["kernel"].shape} == {
        (256,), (128,)}
    assert fact.v["dense"]["kernel"].shape == (1,)          # factored: no full second moment
    assert fact.v["norm"]["scale"].shape == (256,)          # vectors keep the full moment


def test_lamb_does_not_decay_biases_or_norms():
    params = _params()
    tx = optimizers.lamb(optimizers.constant_schedule(0.1), weight_decay=0.5, max_grad_norm=None)
    zero = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    assert float(jnp.abs(updates["dense"]["bias"]).max()) == 0.0
    assert float(jnp.abs(updates["norm"]["scale"]).max()) == 0.0
    assert float(jnp.abs(updates["dense"]["kernel"]).max()) > 0.0


def test_adamw_clips_global_norm():
    params = {"w": jnp.zeros((4, 4))}
    tx = optimizers.adamw(optimizers.constant_schedule(1.0), weight_decay=0.0, max_grad_norm=1.0)
    grads = {"w": jnp.full((4, 4), 100.0)}
    state = tx.init(params)
    clipped, _ = optax.clip_by_global_norm(1.0).update(grads, optax.EmptyState())
    assert float(optax.global_norm(clipped)) == pytest.approx(1.0, rel=1e-5)
    updates, _ = tx.update(grads, state, params)
    assert np.all(np.isfinite(np.asarray(updates["w"])))


def test_state_partition_specs_follow_params():
    mesh = partitioning.create_mesh(data=4, model=2)
    params = _params()
    specs = {"dense": {"kernel": P("data", "model"), "bias": P("model")},
             "attn": {"kernel": P(None, "model", None)}, "norm": {"scale": P("data")}}
    for tx in (optimizers.adafactor(optimizers.constant_schedule(0.01)),
               optimizers.lamb(optimizers.constant_schedule(0.01))):
        state = jax.eval_shape(tx.init, params)
        out = optimizers.state_partition_specs(state, params, specs, mesh)
        flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(
            out, is_leaf=lambda x: isinstance(x, P))[0]}
        shapes = {jax.tree_util.keystr(k): v.shape for k, v in
                  jax.tree_util.tree_flatten_with_path(state)[0]}
        for key, spec in flat.items():
            shape = shapes[key]
            if "['dense']['kernel']" in key and shape == (256, 128):
                assert spec == P("data", "model")
            if "['dense']['kernel']" in key and shape == (256,):
                assert spec == P("data")                     # column axis removed
            if "['dense']['kernel']" in key and shape == (128,):
                assert spec == P("model")                    # row axis removed
            if "['attn']['kernel']" in key and shape == (256, 4, 64):
                assert spec == P(None, "model", None)
            if shape in ((), (1,)):
                assert all(a is None for a in spec)
        # every spec is valid for its array on this mesh
        for key, spec in flat.items():
            jax.sharding.NamedSharding(mesh, spec).shard_shape(shapes[key])
