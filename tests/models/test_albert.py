"""ProtAlbert network: one shared layer (params, scan, gradients), factorised embeddings, exact
counts, logical axes, padding / packing, sharded == one device."""
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import protlm.models as M
from protlm import partitioning
from protlm.hf import spec as hf_spec
from protlm.layers.attention import make_attention_mask
from protlm.models import losses
from protlm.models.bert import BertLayer
from tests import test_partitioning
from tests.models import test_bert
from tests.models.conftest import _tiny, bert_batch
from tests.models.test_param_counts import abstract_params, count
from tests.trainer import helpers, test_trainer

# transformers 5 on the meta device for Rostlab's prot_albert config (PROTTRANS_FACTS section 1).
EXPECTED = {"AlbertForMaskedLM": 207_557_794, "AlbertModel": 223_814_400}


@pytest.fixture(scope="module")
def tiny():
    return _tiny("prot_albert_tiny", bert_batch(np.random.default_rng(0)))


def test_one_shared_layer_and_factorised_embeddings(tiny):
    cfg, _, p = tiny
    assert set(p) == {"embeddings", "encoder", "mlm_head"}
    assert set(p["encoder"]) == {"embedding_hidden_mapping_in", "layer_groups_0"}  # 3 repeats, 1 layer
    assert set(p["encoder"]["layer_groups_0"]) == {"attention", "attention_layer_norm", "mlp",
                                                   "mlp_layer_norm"}
    e, h = cfg.embedding_size, cfg.hidden_size
    assert p["embeddings"]["word_embeddings"]["embedding"].shape == (34, e)
    assert p["encoder"]["embedding_hidden_mapping_in"]["kernel"].shape == (e, h)
    assert p["mlm_head"]["transform"]["kernel"].shape == (h, e)
    assert p["mlm_head"]["layer_norm"]["scale"].shape == (e,)
    np.testing.assert_array_equal(p["embeddings"]["word_embeddings"]["embedding"][0], 0)


def test_scan_has_the_same_params_and_outputs(tiny, np_rng):
    cfg, model, p = tiny
    scanned_cfg = dataclasses.replace(cfg, scan_layers=True, remat_policy="minimal")
    scanned = M.get_model(scanned_cfg)
    shapes = jax.tree_util.tree_map(lambda x: x.shape, nn.meta.unbox(abstract_params(scanned_cfg)))
    assert shapes == jax.tree_util.tree_map(lambda x: x.shape, p)
    batch = bert_batch(np_rng, pad=2)
    np.testing.assert_allclose(jax.jit(scanned.logits)(p, batch), jax.jit(model.logits)(p, batch),
                               atol=1e-5)
    grad = jax.jit(jax.grad(lambda q, m: m.loss_fn(q, batch)[0]), static_argnums=1)
    g_scan, g_loop = grad(p, scanned), grad(p, model)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g_scan, g_loop)


def test_shared_gradient_is_the_sum_over_repeats(tiny, np_rng):
    """Cross-layer sharing: d loss / d W_shared = the sum over the repeats of the gradient each
    application gets when it reads its own copy of W (the same network, unshared, by hand)."""
    cfg, model, p = tiny
    batch = bert_batch(np_rng)
    tokens = jnp.asarray(batch["encoder_input_tokens"])
    variables = {"params": p}

    def unshared_loss(copies):
        h = model.module.apply(variables, tokens, method=lambda m, t: m.embeddings(t))
        proj = p["encoder"]["embedding_hidden_mapping_in"]
        h = h @ proj["kernel"] + proj["bias"]
        mask = make_attention_mask(None, tokens > 0, None, None)
        for layer in copies:
            h, _ = BertLayer(cfg).apply({"params": layer}, h, mask)
        logits = model.module.apply(variables, h, method=lambda m, x: m.mlm_head(x))
        aux = losses.weighted_sums(logits, jnp.asarray(batch["encoder_target_tokens"]),
                                   jnp.asarray(batch["encoder_loss_weights"]), 0.0)
        return aux["loss"] / aux["weight_sum"]

    copies = [p["encoder"]["layer_groups_0"]] * cfg.num_layers
    np.testing.assert_allclose(jax.jit(unshared_loss)(copies), model.loss_fn(p, batch)[0],
                               rtol=1e-6)
    per_copy = jax.jit(jax.grad(unshared_loss))(copies)
    summed = jax.tree_util.tree_map(lambda *g: sum(g), *per_copy)
    for scan in (False, True):
        m = M.get_model(dataclasses.replace(cfg, scan_layers=scan))
        shared = jax.jit(jax.grad(lambda q: m.loss_fn(q, batch)[0]))(p)
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5),
                               shared["encoder"]["layer_groups_0"], summed)
    # one repeat's gradient is not the whole: the sum really adds several nonzero terms
    assert not np.allclose(per_copy[0]["mlp"]["wi"]["kernel"], summed["mlp"]["wi"]["kernel"])


def test_padding_and_packing(tiny, np_rng):
    test_bert.test_padding_and_packing(tiny, np_rng)


def test_blocked_attention_matches_dense(tiny, np_rng):
    """What protlm.embed switches to for proteins longer than 8,192 tokens."""
    test_bert.test_blocked_attention_matches_dense(tiny, np_rng)


def test_hidden_states_one_per_application(tiny, np_rng):
    cfg, model, p = tiny
    tokens = bert_batch(np_rng)["encoder_input_tokens"]
    last, hidden = model.encode(p, tokens, output_hidden_states=True)
    assert len(hidden) == cfg.num_layers + 1
    assert all(h.shape == (2, 10, cfg.hidden_size) for h in hidden)
    np.testing.assert_allclose(hidden[-1], last, atol=0)
    np.testing.assert_allclose(last, model.encode(p, tokens), atol=1e-6)


def test_every_leaf_has_logical_names():
    for scan in (False, True):
        tree = abstract_params(M.get_config("prot_albert_tiny", scan_layers=scan))
        leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))
        assert len(leaves) == 28
        for path, leaf in leaves:
            where = jax.tree_util.keystr(path)
            assert isinstance(leaf, nn.LogicallyPartitioned), where
            assert len(leaf.names) == len(leaf.value.shape), where
            assert all(isinstance(n, str) for n in leaf.names) and "layers" not in leaf.names, where


def test_groups_and_config_errors():
    cfg = M.get_config("prot_albert_tiny", num_layers=4, num_hidden_groups=2)
    assert count(abstract_params(cfg)) == cfg.num_params()
    with pytest.raises(ValueError, match="multiple of num_hidden_groups"):
        M.get_config("prot_albert_tiny", num_hidden_groups=2)   # 3 layers
    with pytest.raises(ValueError, match="divisible"):
        M.get_config("prot_albert_tiny", num_heads=5)


def test_exact_counts_equal_transformers_meta():
    cfg = M.get_config("prot_albert", scan_layers=True)
    assert count(abstract_params(cfg)) == cfg.num_params() == EXPECTED["AlbertForMaskedLM"]
    counts = cfg.param_counts()
    assert {k: counts[k] for k in EXPECTED} == EXPECTED
    for cls_name, n in counts.items():   # incl. AlbertForPreTraining (Rostlab's file)
        with torch.device("meta"):
            model = getattr(transformers, cls_name)(hf_spec.transformers_config(cfg))
        assert sum(q.numel() for q in model.parameters()) == n, cls_name


def test_flops_count_every_application():
    cfg = M.get_config("prot_albert")
    lengths = {"inputs": 512}
    layer = 4 * 4096 ** 2 + 2 * 4096 * 16384
    # the shared layer's weights are used 12 times: far more FLOPs than 6 x its parameters
    assert cfg.flops_per_token(lengths) > 6 * 12 * layer > 6 * cfg.num_params()
    assert cfg.flops_per_example(lengths) == cfg.flops_per_token(lengths) * 512
    assert cfg.flops_per_token({"inputs": 2048}) > cfg.flops_per_token(lengths)


@pytest.mark.slow
@pytest.mark.parametrize("rules_name", ["standard", "fsdp"])
def test_sharded_matches_single_device(rules_name):
    test_partitioning.test_sharded_matches_single_device("prot_albert_tiny", "albert", rules_name)


@pytest.mark.slow
def test_trainer_losses_do_not_depend_on_the_mesh(tmp_path):
    """The train loop (LAMB, lr 3e-2: a shared layer needs more than BERT's 1e-2 to move in 5
    steps) gives the same losses on 1 device and on data 2 x fsdp 2 x model 2."""
    run = functools.partial(helpers.run, preset="prot_albert_tiny", lr=3e-2)
    run(tmp_path / "one", partition=partitioning.PartitionConfig(num_devices=1))
    base = helpers.losses(tmp_path / "one")
    assert len(base) == 5 and base[-1] < base[0]
    for name, partition in test_trainer.MIXED_MESH.items():
        run(tmp_path / name, partition=partition)
        np.testing.assert_allclose(helpers.losses(tmp_path / name), base, rtol=1e-5, err_msg=name)
