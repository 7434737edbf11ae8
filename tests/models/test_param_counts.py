"""Exact parameter counts: formula == jax.eval_shape == transformers (meta device)."""
import flax.linen as nn
import jax
import numpy as np
import pytest
import torch
import transformers

import protlm.models as M
from protlm.hf import spec as hf_spec
from protlm.models import t5
from tests.models.conftest import assert_logical_names

# transformers 5.x, meta device (see PROTTRANS_FACTS.md section 1).
EXPECTED = {"prot_t5_xl": 2_818_830_336, "prot_t5_xxl": 11_274_553_344, "prot_bert": 419_933_214}
EXPECTED_ENCODER = {"prot_t5_xl": 1_208_141_824, "prot_t5_xxl": 4_832_023_552}


def count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(nn.meta.unbox(tree)))


def abstract_params(config):
    family = M.get_family(config)
    shapes = family.batch_shapes(config, family.default_lengths(8), 1, pack=False)
    return jax.eval_shape(family.model(config).init, jax.random.PRNGKey(0), shapes)["params"]


def hf_count(name: str, part: str = "model") -> int:
    """Parameters of the exported part's transformers class built on the meta device."""
    cfg = M.get_config(name)
    cls = getattr(transformers, M.get_family(cfg).hf().classes[part])
    with torch.device("meta"):
        model = cls(hf_spec.transformers_config(cfg, part))
    # Tied weights are one Parameter: count unique storage once.
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_counts_match_expected_and_formula(name):
    cfg = M.get_config(name, scan_layers=True)  # scan keeps tracing of 24-30 layers quick
    n = count(abstract_params(cfg))
    assert n == EXPECTED[name] == cfg.num_params()


@pytest.mark.parametrize("name", sorted(EXPECTED_ENCODER))
def test_encoder_only_counts(name):
    cfg = M.get_config(name, scan_layers=True)
    abstract = jax.eval_shape(
        t5.T5EncoderOnly(cfg).init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1, 8), np.int32))
    assert count(abstract["params"]) == EXPECTED_ENCODER[name] == cfg.num_encoder_params()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_counts_match_transformers_meta(name):
    assert hf_count(name) == EXPECTED[name]
    if name in EXPECTED_ENCODER:
        assert hf_count(name, "encoder") == EXPECTED_ENCODER[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_param_counts_name_the_transformers_classes(name):
    """`config.param_counts()` keys are transformers classes with exactly that many parameters."""
    cfg = M.get_config(name)
    for cls_name, n in cfg.param_counts().items():
        with torch.device("meta"):
            model = getattr(transformers, cls_name)(hf_spec.transformers_config(cfg))
        assert sum(p.numel() for p in model.parameters()) == n, cls_name


@pytest.mark.parametrize("name", sorted(M.PRESETS))
def test_formula_equals_eval_shape_all_presets(name):
    for scan in (False, True):
        cfg = M.get_config(name, scan_layers=scan)
        if not scan and cfg.num_params() > 1e9:
            continue  # unrolled XL/XXL trace slowly; covered scanned
        assert count(abstract_params(cfg)) == cfg.num_params()


def test_untied_and_gated_variants_count():
    cfg = M.get_config("prot_t5_tiny", logits_via_embedding=False,
                       mlp_activations=("gelu_new", "linear"))
    assert count(abstract_params(cfg)) == cfg.num_params()


def test_every_leaf_has_logical_names():
    for name in ("prot_t5_tiny", "prot_bert_tiny"):
        for scan in (False, True):
            tree = abstract_params(M.get_config(name, scan_layers=scan))
            for where, leaf in assert_logical_names(tree):
                assert (leaf.names[0] == "layers") == ("['layers']" in where), where
