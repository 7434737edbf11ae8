"""Mesh, rule tables, sharded init, and sharded == single-device numerics on 8 fake CPUs."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

import protlm.models as M
from protlm import errors
from protlm import partitioning as P
from tests.models.conftest import key


def test_create_mesh_sizes():
    mesh = P.create_mesh(data=-1, model=2)
    assert dict(mesh.shape) == {"data": 4, "fsdp": 1, "model": 2}
    assert dict(P.create_mesh(data=2, fsdp=-1, model=2).shape)["fsdp"] == 2
    # a setting the user fixes: a one-line ConfigError (protlm.cli) naming the gin macros
    with pytest.raises(errors.ConfigError, match="devices: set --gin.MESH_DATA / MESH_FSDP"):
        P.create_mesh(data=3, model=2)
    with pytest.raises(errors.ConfigError, match="8 devices: set --gin.MESH_DATA"):
        P.create_mesh(data=1, fsdp=8, model=8)
    with pytest.raises(ValueError, match="at most one"):
        P.create_mesh(data=-1, model=-1)
    with pytest.raises(ValueError, match="unknown logical axis rules"):
        P.get_logical_axis_rules("3d")


def test_activate_makes_activation_constraints_real():
    from protlm.layers.axes import BATCH_LENGTH_EMBED, constrain
    mesh, rules = P.create_mesh(data=2, fsdp=4), P.fsdp_logical_axis_rules()

    def f(x):
        return constrain(x * 2, BATCH_LENGTH_EMBED)

    def constraints(jaxpr):
        return [e for e in jaxpr.eqns if e.primitive.name == "sharding_constraint"]
    with P.activate(mesh, rules):
        (eqn,) = constraints(jax.make_jaxpr(f)(jnp.ones((8, 4, 16))).jaxpr)
    assert eqn.params["sharding"].spec == PartitionSpec(("data", "fsdp"), None, None)
    with mesh, nn.logical_axis_rules(rules):        # the old idiom: silently unconstrained
        assert constraints(jax.make_jaxpr(f)(jnp.ones((8, 4, 16))).jaxpr) == []


def test_rules_map_params_and_activations():
    std, fsdp = P.standard_logical_axis_rules(), P.fsdp_logical_axis_rules()
    assert nn.logical_to_mesh_axes(("embed", "mlp"), std) == PartitionSpec(None, "model")
    assert nn.logical_to_mesh_axes(("embed", "mlp"), fsdp) == PartitionSpec("fsdp", "model")
    assert nn.logical_to_mesh_axes(("layers", "embed", "heads", "kv"), fsdp) == \
        PartitionSpec(None, "fsdp", "model", None)
    # Activations: batch takes data+fsdp first, so embed stays unsharded.
    for rules in (fsdp, P.two_d_logical_axis_rules()):
        assert nn.logical_to_mesh_axes(("batch", "length", "embed"), rules) == \
            PartitionSpec(("data", "fsdp"), None, None)


def _batch(family: str, rng: np.random.Generator, b: int = 8, length: int = 12):
    toks = rng.integers(3, 28, (b, length)).astype(np.int32)
    toks[:, -3:] = 0  # padding
    if family == "t5":
        dec = np.concatenate([np.zeros((b, 1), np.int32), toks[:, :-1]], 1)
        return {"encoder_input_tokens": toks, "decoder_input_tokens": dec,
                "decoder_target_tokens": toks,
                "decoder_loss_weights": (toks > 0).astype(np.float32)}
    return {"encoder_input_tokens": toks, "encoder_target_tokens": toks,
            "encoder_loss_weights": (rng.random((b, length)) < 0.3).astype(np.float32)}


@pytest.mark.parametrize("name,family", [
    ("prot_t5_tiny", "t5"), pytest.param("prot_bert_tiny", "bert", marks=pytest.mark.slow)])
@pytest.mark.parametrize("rules_name", ["standard", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_sharded_matches_single_device(name, family, rules_name):
    cfg = M.get_config(name, dtype="float32")
    model = M.get_model(cfg)
    batch = _batch(family, np.random.default_rng(0))
    rng = key(0)

    def loss_grads_logits(p, b):
        def f(p):
            loss, _ = model.loss_fn(p, b)
            return loss, model.logits(p, b)
        (loss, logits), grads = jax.value_and_grad(f, has_aux=True)(p)
        return loss, grads, logits

    # Single device reference.
    params = nn.meta.unbox(jax.jit(model.init)(rng, batch)["params"])
    ref_loss, ref_grads, ref_logits = jax.jit(loss_grads_logits)(params, batch)

    mesh = P.create_mesh(data=4, fsdp=1, model=2) if rules_name == "standard" else \
        P.create_mesh(data=2, fsdp=2, model=2)
    rules = P.get_logical_axis_rules(rules_name)
    variables, shardings = P.sharded_init(model.init, mesh, rules, rng, batch)
    sparams = variables["params"]
    # Sharded init gives the same values and really shards the big kernels over 'model'.
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
                           params, sparams)
    if family == "t5":
        leaf = sparams["token_embedder"]["embedding"]
    else:
        leaf = sparams["embeddings"]["word_embeddings"]["embedding"]
    assert leaf.sharding.spec[0] == "model"
    data_sh = P.data_sharding(mesh)
    sbatch = {k: jax.device_put(v, data_sh) for k, v in batch.items()}
    with P.activate(mesh, rules):
        step = jax.jit(loss_grads_logits, in_shardings=(shardings["params"], data_sh),
                       out_shardings=(P.replicated(mesh), shardings["params"], data_sh))
        loss, grads, logits = step(sparams, sbatch)
    np.testing.assert_allclose(loss, ref_loss, atol=1e-5)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
    diffs = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))), grads, ref_grads)
    assert max(jax.tree_util.tree_leaves(diffs)) <= 1e-5


def test_logical_to_mesh_sharding_structure():
    model = M.get_model(M.get_config("prot_t5_tiny", scan_layers=True))
    batch = _batch("t5", np.random.default_rng(0))
    abstract = jax.eval_shape(model.init, key(0), batch)
    mesh = P.create_mesh(data=4, model=2)
    sh = P.logical_to_mesh_sharding(abstract, mesh, P.standard_logical_axis_rules())
    wi = sh["params"]["encoder"]["layers"]["mlp"]["wi"]["kernel"]
    assert isinstance(wi, NamedSharding) and wi.spec == PartitionSpec(None, None, "model")
