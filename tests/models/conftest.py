"""Shared helpers for model tests: tiny batches."""
import numpy as np
import pytest


def t5_batch(rng: np.random.Generator, b: int = 2, enc_len: int = 10, dec_len: int = 8,
             pad: int = 0) -> dict:
    """Random ProtT5-like batch; the last `pad` positions of each row are padding."""
    enc = rng.integers(3, 128, (b, enc_len)).astype(np.int32)
    tgt = rng.integers(3, 28, (b, dec_len)).astype(np.int32)
    if pad:
        enc[:, -pad:] = 0
        tgt[:, -pad:] = 0
    dec = np.concatenate([np.zeros((b, 1), np.int32), tgt[:, :-1]], axis=1)
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec,
            "decoder_target_tokens": tgt, "decoder_loss_weights": (tgt > 0).astype(np.float32)}


def bert_batch(rng: np.random.Generator, b: int = 2, length: int = 10, pad: int = 0) -> dict:
    tgt = rng.integers(5, 30, (b, length)).astype(np.int32)
    if pad:
        tgt[:, -pad:] = 0
    weights = ((rng.random((b, length)) < 0.4) & (tgt > 0)).astype(np.float32)
    inp = np.where(weights > 0, 4, tgt).astype(np.int32)
    return {"encoder_input_tokens": inp, "encoder_target_tokens": tgt,
            "encoder_loss_weights": weights}


@pytest.fixture
def np_rng():
    return np.random.default_rng(0)


def key(seed: int = 0):
    """A PRNG key; 'rbg' compiles 3-4x faster than threefry on CPU (init and dropout)."""
    import jax
    return jax.random.key(seed, impl="rbg")


def perturbed(params, scale: float = 0.05, seed: int = 1):
    """`params` moved off their init by Gaussian noise (zero biases would hide layout errors)."""
    import jax

    leaves, tree = jax.tree_util.tree_flatten(params)
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_unflatten(
        tree, [x + scale * rng.standard_normal(x.shape).astype(np.float32) for x in leaves])


def assert_logical_names(tree) -> list:
    """Every leaf of a boxed tree carries one logical axis name (a str) per dimension.

    Returns:
      [(keystr path, LogicallyPartitioned leaf)] for further checks.
    """
    import flax.linen as nn
    import jax

    leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves
    out = []
    for path, leaf in leaves:
        where = jax.tree_util.keystr(path)
        assert isinstance(leaf, nn.LogicallyPartitioned), where
        assert len(leaf.names) == len(leaf.value.shape), where
        assert all(isinstance(n, str) for n in leaf.names), where
        out.append((where, leaf))
    return out


def _tiny(name: str, batch: dict):
    import flax.linen as nn
    import jax

    import protlm.models as M
    cfg = M.get_config(name)
    model = M.get_model(cfg)
    params = nn.meta.unbox(jax.jit(model.init)(key(0), batch)["params"])
    return cfg, model, params


@pytest.fixture(scope="session")
def t5_tiny():
    """(config, model, unboxed params) of prot_t5_tiny, initialised once per session."""
    return _tiny("prot_t5_tiny", t5_batch(np.random.default_rng(0)))


@pytest.fixture(scope="session")
def bert_tiny():
    """(config, model, unboxed params) of prot_bert_tiny, initialised once per session."""
    return _tiny("prot_bert_tiny", bert_batch(np.random.default_rng(0)))
