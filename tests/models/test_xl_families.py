"""ProtTXL and ProtXLNet together: logical axes, scan == unrolled, 8-device mesh == 1 device
(loss, gradients and the carried memory), exact counts."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

import protlm.models as M
from protlm import partitioning as P
from protlm.models import scan_utils
from tests.models.conftest import assert_logical_names, key

SEQS = ["MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", "MSTNPKPQRKTKRNTNRRPQDVKFPGGGQIVGG",
        "MAXUKLLLLAAAGGGQQQWWERTY", "MKVLLAGHHHHHHDEFGIKLMNPQRSTVWY"] * 2
TINY = ("prot_txl_tiny", "prot_xlnet_tiny")


def _batch(cfg):
    family = M.get_family(cfg)
    return family.array_batch(SEQS, family.default_lengths(20), seed=0)


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("scan", [False, True])
def test_every_param_and_the_carry_have_logical_names(name, scan):
    cfg = M.get_config(name, scan_layers=scan, untie_r=not scan)
    model = M.get_model(cfg)
    shapes = M.get_family(cfg).batch_shapes(cfg, M.get_family(cfg).default_lengths(8), 2, False)
    tree = jax.eval_shape(model.init, key(0), shapes)["params"]
    carry = jax.eval_shape(lambda: model.init_carry(shapes))
    for t in (tree, carry):
        assert_logical_names(t)
    assert nn.get_partition_spec(carry)["mems"] == PartitionSpec("batch", "layers", "length", "embed")


@pytest.mark.parametrize("name", TINY)
def test_scanned_equals_unrolled_with_memory(name):
    cfg = M.get_config(name, dropout_rate=0.0, attention_dropout_rate=0.0)
    scanned_cfg = dataclasses.replace(cfg, scan_layers=True, remat_policy="minimal")
    model, scanned = M.get_model(cfg), M.get_model(scanned_cfg)
    batch = _batch(cfg)
    params = nn.meta.unbox(jax.jit(model.init)(key(0), batch)["params"])
    stacked = scan_utils.stack_layers(params)
    carry = nn.meta.unbox(model.init_carry(batch))

    def grads(m):
        return jax.jit(jax.value_and_grad(lambda p, c: m.loss_fn(p, batch, carry=c), has_aux=True))

    unrolled_fn, scanned_fn = grads(model), grads(scanned)
    for _ in range(2):
        (l1, a1), g1 = unrolled_fn(params, carry)
        (l2, a2), g2 = scanned_fn(stacked, carry)
        np.testing.assert_allclose(l1, l2, rtol=1e-5)
        g2 = scan_utils.unstack_layers(g2)
        for x, y in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
            np.testing.assert_allclose(x, y, atol=1e-5)
        np.testing.assert_allclose(a1["carry"]["mems"], a2["carry"]["mems"], atol=1e-5)
        carry = a1["carry"]


@pytest.mark.parametrize("name", TINY)
def test_sharded_matches_single_device_with_carry(name):
    cfg = M.get_config(name, dropout_rate=0.0, attention_dropout_rate=0.0)
    model = M.get_model(cfg)
    batch = _batch(cfg)
    carry = nn.meta.unbox(model.init_carry(batch))
    params = nn.meta.unbox(jax.jit(model.init)(key(0), batch)["params"])
    _, first = model.loss_fn(params, batch, carry=carry)
    carry = first["carry"]                       # a non-empty memory going in

    def step(p, b, c):
        (loss, aux), grads = jax.value_and_grad(
            lambda q: model.loss_fn(q, b, carry=c), has_aux=True)(p)
        return loss, grads, aux["carry"]

    ref = jax.jit(step)(params, batch, carry)
    mesh = P.create_mesh(data=4, fsdp=1, model=2)
    rules = P.standard_logical_axis_rules()
    variables, shardings = P.sharded_init(model.init, mesh, rules, key(0), batch)
    carry_sh = P.logical_to_mesh_sharding(jax.eval_shape(lambda: model.init_carry(batch)), mesh,
                                          rules)
    data_sh = P.data_sharding(mesh)
    sbatch = {k: jax.device_put(v, data_sh) for k, v in batch.items()}
    scarry = jax.device_put(carry, carry_sh)
    assert scarry["mems"].sharding.spec[0] == ("data", "fsdp")
    with mesh, nn.logical_axis_rules(rules):
        fn = jax.jit(step, in_shardings=(shardings["params"], data_sh, carry_sh),
                     out_shardings=(P.replicated(mesh), shardings["params"], carry_sh))
        loss, grads, nxt = fn(variables["params"], sbatch, scarry)
    np.testing.assert_allclose(loss, ref[0], atol=1e-5)
    diffs = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))), grads, ref[1])
    assert max(jax.tree_util.tree_leaves(diffs)) <= 1e-5
    np.testing.assert_allclose(nxt["mems"], ref[2]["mems"], atol=1e-5)
    np.testing.assert_array_equal(nxt["valid"], ref[2]["valid"])
    assert isinstance(nxt["mems"].sharding, NamedSharding)


# Exact counts (eval_shape == formula is tested for every preset in test_param_counts.py).
EXPECTED = {"prot_txl": 409_251_868, "prot_txl_bfd": 562_363_932, "prot_xlnet": 409_413_669}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_full_size_counts(name):
    cfg = M.get_config(name, scan_layers=True)
    shapes = M.get_family(cfg).batch_shapes(cfg, M.get_family(cfg).default_lengths(8), 1, False)
    tree = jax.eval_shape(M.get_model(cfg).init, key(0), shapes)["params"]
    n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(nn.meta.unbox(tree)))
    assert n == cfg.num_params() == EXPECTED[name]
