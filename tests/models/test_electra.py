"""ProtElectra: the joint objective (masking, sampling, labels, shared embeddings, no gradient
through sampling, exact accumulation, deterministic evaluation) and the network (names, axes,
padding, packing, scan, counts, FLOPs)."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import protlm.models as M
from protlm.data import tokens as tok
from protlm.models import electra, electra_family
from protlm.models.scan_utils import stack_layers
from tests.models.conftest import key

SEQS = ["MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", "MSTNPKPQRKTKRNTNRRPQDVKFPGG", "MAAALLW",
        "GSHMSLFDFFKNKGSAATATDRLKLEVKEAILKY", "MDPNCSCAAGDSCTCAGSCKCKECKCTSCKKSCCS"]


def _batch(seqs=SEQS, length=40, seed=0):
    return M.get_family(M.get_config("prot_electra_tiny")).array_batch(seqs, {"inputs": length}, seed)


def _tiny(**overrides):
    cfg = M.get_config("prot_electra_tiny", **overrides)
    model = M.get_model(cfg)
    params = nn.unbox(jax.jit(model.init)(key(0), _batch())["params"])
    return cfg, model, params


@pytest.fixture(scope="module")
def tiny():
    return _tiny()


def _norms(tree) -> dict[str, float]:
    return {k: float(sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(v)))
            for k, v in tree.items()}


def test_param_tree_and_shared_embeddings_are_one_parameter(tiny):
    cfg, _, p = tiny
    assert set(p) == {"embeddings", "generator_projection", "generator_encoder", "generator_head",
                      "discriminator_encoder", "discriminator_head"}
    assert set(p["embeddings"]) == {"word_embeddings", "position_embeddings",
                                    "token_type_embeddings", "layer_norm"}
    assert set(p["generator_head"]) == {"transform", "layer_norm", "bias"}   # decoder tied
    assert set(p["discriminator_head"]) == {"dense", "prediction"}
    tables = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(p)
              if "embedding" in jax.tree_util.keystr(path).split("'][")[-1]]
    assert all(t.startswith("['embeddings']") for t in tables) and len(tables) == 3
    assert p["embeddings"]["word_embeddings"]["embedding"].shape == (30, cfg.embedding_size)
    assert p["generator_projection"]["kernel"].shape == (32, 16)   # embedding 32 -> hidden 16
    # Both losses reach the one table: gradients from each term add up on it.
    model = M.get_model(cfg)
    batch, rng = _batch(), jax.random.PRNGKey(1)

    def grads(**weights):
        m = M.get_model(dataclasses.replace(cfg, **weights))
        return jax.grad(lambda q: m.loss_fn(q, batch, rng)[0])(p)

    gen, disc = grads(discriminator_weight=0.0), grads(generator_weight=0.0)
    both = jax.grad(lambda q: model.loss_fn(q, batch, rng)[0])(p)
    table = ("embeddings", "word_embeddings", "embedding")
    get = lambda t: np.asarray(t[table[0]][table[1]][table[2]])  # noqa: E731
    assert np.abs(get(gen)).max() > 0 and np.abs(get(disc)).max() > 0
    np.testing.assert_allclose(get(gen) + get(disc), get(both), rtol=1e-5, atol=1e-7)


def test_no_gradient_flows_through_sampling(tiny):
    cfg, _, p = tiny
    disc_only = M.get_model(dataclasses.replace(cfg, generator_weight=0.0))
    g = _norms(jax.grad(lambda q: disc_only.loss_fn(q, _batch(), jax.random.PRNGKey(2))[0])(p))
    for name in ("generator_projection", "generator_encoder", "generator_head"):
        assert g[name] == 0.0, name
    assert g["discriminator_encoder"] > 0 and g["embeddings"] > 0
    gen_only = M.get_model(dataclasses.replace(cfg, discriminator_weight=0.0))
    g = _norms(jax.grad(lambda q: gen_only.loss_fn(q, _batch(), jax.random.PRNGKey(2))[0])(p))
    assert g["discriminator_encoder"] == 0.0 and g["discriminator_head"] == 0.0
    assert g["generator_encoder"] > 0


def test_masking_samples_and_labels(tiny):
    _, model, p = tiny
    rng = np.random.default_rng(0)   # 40 distinct proteins: every row draws its own numbers
    seqs = ["".join(rng.choice(list(tok.STANDARD_AMINO_ACIDS), 120)) for _ in range(40)]
    batch = _batch(seqs, length=128, seed=3)
    c = jax.jit(model.corrupt)(p, batch, jax.random.PRNGKey(4))
    orig, sel = batch["encoder_target_tokens"], np.asarray(c.selected)
    gen_in, disc_in = np.asarray(c.generator_inputs), np.asarray(c.discriminator_inputs)
    # selection: round(15 % of the non-padding tokens) per row, residues only (ELECTRA's count)
    np.testing.assert_array_equal(sel.sum(1), np.maximum(1, np.round(0.15 * (orig > 0).sum(1))))
    assert np.all(orig[sel] >= electra_family.FIRST_SAMPLED_ID)
    other = np.asarray(model.corrupt(p, batch, jax.random.PRNGKey(5)).selected)
    assert np.any(other != sel)                     # dynamic masking: a new draw every step
    # generator input: unselected positions untouched, selected ones [MASK] or the original
    np.testing.assert_array_equal(gen_in[~sel], orig[~sel])
    assert np.all((gen_in[sel] == tok.PROTBERT_MASK_ID) | (gen_in[sel] == orig[sel]))
    share = np.mean(gen_in[sel] == tok.PROTBERT_MASK_ID)
    assert abs(share - 0.85) < 0.04, share          # ELECTRA: 85 % [MASK], 15 % unchanged
    # the samples replace the selected positions only, and only with residue ids
    np.testing.assert_array_equal(disc_in[~sel], orig[~sel])
    np.testing.assert_array_equal(disc_in[sel], np.asarray(c.sampled)[sel])
    assert disc_in[sel].min() >= electra_family.FIRST_SAMPLED_ID
    # labels: exactly "token differs from the original" (padding never)
    np.testing.assert_array_equal(np.asarray(c.labels), (disc_in != orig) & (orig > 0))
    assert 0 < c.labels.sum() <= sel.sum()
    # the batch's own 80/10/10 input is not what the generator sees
    assert np.any(batch["encoder_input_tokens"] != gen_in)
    # ELECTRA-Large: 25 %, one setting
    large = M.get_model(dataclasses.replace(model.config, mask_prob=0.25))
    np.testing.assert_array_equal(np.asarray(large.num_selected(batch)),
                                  np.maximum(1, np.round(0.25 * (orig > 0).sum(1))))


def test_accumulated_microbatches_give_the_whole_batch_gradient(tiny):
    """Global normalisers + per-row draws: the sum over microbatches is the whole batch's."""
    _, model, p = tiny
    batch, rng = _batch(length=40), jax.random.PRNGKey(5)
    norm = model.loss_normalizer(batch)
    assert set(norm) == {"weight_sum", "discriminator_weight_sum"}
    grad_fn = jax.jit(jax.grad(lambda q, b, n: model.loss_fn(q, b, rng, normalizer=n),
                               has_aux=True))
    full, full_aux = grad_fn(p, batch, norm)
    parts = [grad_fn(p, {k: v[s] for k, v in batch.items()}, norm)
             for s in (slice(0, 2), slice(2, 5))]
    summed = jax.tree_util.tree_map(jnp.add, parts[0][0], parts[1][0])
    for a, b in zip(jax.tree_util.tree_leaves(summed), jax.tree_util.tree_leaves(full)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for k in full_aux:
        np.testing.assert_allclose(parts[0][1][k] + parts[1][1][k], full_aux[k], rtol=1e-5)


def test_evaluation_is_deterministic_and_reports_the_discriminator(tiny):
    cfg, model, p = tiny
    batch = _batch()
    sums = jax.jit(model.eval_sums)(p, batch)
    again = jax.jit(model.eval_sums)(p, batch)
    for k in sums:
        np.testing.assert_array_equal(sums[k], again[k])
    np.testing.assert_array_equal(model.loss_fn(p, batch)[0], model.loss_fn(p, batch)[0])
    other = M.get_model(dataclasses.replace(cfg, eval_seed=1)).eval_sums(p, batch)
    assert float(other["loss"]) != float(sums["loss"])
    m = model.summarize_eval(jax.device_get(sums))
    tokens = float((batch["encoder_target_tokens"] > 0).sum())
    assert m["unreplaced_share"] == pytest.approx(1 - float(sums["replaced"]) / tokens)
    assert 0 <= m["discriminator_accuracy"] <= 1 and m["objective"] == pytest.approx(
        m["loss"] + 50 * m["discriminator_loss"])
    # masked_residue_* counts only the residues shown as [MASK] (the rest can be copied)
    assert 0 < float(sums["masked_weight_sum"]) < float(sums["weight_sum"])
    train = model.summarize_train(jax.device_get(model.loss_fn(p, batch, key(1))[1]))
    assert {"loss", "accuracy", "discriminator_accuracy", "unreplaced_share"} <= set(train)
    # score / predict use the evaluation key's selection too
    weights = np.asarray(model.loss_weights(batch))
    assert weights.sum() == float(sums["weight_sum"])
    pred = np.asarray(model.predict_batch(p, batch))
    np.testing.assert_array_equal(pred[weights == 0], batch["encoder_target_tokens"][weights == 0])
    np.testing.assert_allclose(-np.sum(model.score_batch(p, batch)), sums["loss"], rtol=1e-5)


def test_loss_value_is_the_two_weighted_terms(tiny):
    _, model, p = tiny
    batch, rng = _batch(), jax.random.PRNGKey(6)
    loss, aux = model.loss_fn(p, batch, rng)
    c = model.corrupt(p, batch, rng)
    logp = jax.nn.log_softmax(c.generator_logits)
    orig, w = batch["encoder_target_tokens"], np.asarray(c.selected, np.float32)
    mlm = -np.sum(np.take_along_axis(np.asarray(logp), orig[..., None], -1)[..., 0] * w) / w.sum()
    x, y, tw = np.asarray(c.discriminator_logits), np.asarray(c.labels), orig > 0
    bce = np.sum((np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))) * tw) / tw.sum()
    np.testing.assert_allclose(loss, mlm + 50.0 * bce, rtol=1e-5)
    assert float(aux["weight_sum"]) == w.sum()


def test_padding_does_not_change_the_objective(tiny):
    _, model, p = tiny
    batch, rng = _batch(length=40), jax.random.PRNGKey(7)
    padded = {k: np.pad(v, ((0, 0), (0, 9))) for k, v in batch.items()}
    a, aux_a = model.loss_fn(p, batch, rng)
    b, aux_b = model.loss_fn(p, padded, rng)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    for k in aux_a:
        np.testing.assert_allclose(aux_a[k], aux_b[k], rtol=1e-5, atol=1e-6)


def test_packing_scan_and_blocked_attention(tiny):
    cfg, model, p = tiny
    batch = _batch(SEQS[:2], length=40)
    one = {k: v[:1, :30] for k, v in batch.items()}
    two = {k: v[1:, :25] for k, v in batch.items()}
    packed = {k: np.concatenate([one[k], two[k]], 1) for k in batch}
    packed["encoder_segment_ids"] = np.array([[1] * 30 + [2] * 25], np.int32)
    packed["encoder_positions"] = np.array([list(range(30)) + list(range(25))], np.int32)
    for method in ("generator_logits", "discriminator_logits"):
        fn = jax.jit(lambda q, b, m=method: model.apply_network(m, q, b["encoder_target_tokens"],
                                                                 b))
        out = fn(p, packed)
        np.testing.assert_allclose(out[:, :30], fn(p, one), atol=1e-5)
        np.testing.assert_allclose(out[:, 30:], fn(p, two), atol=1e-5)
    scanned = M.get_model(dataclasses.replace(cfg, scan_layers=True, remat_policy="minimal"))
    blocked = M.get_model(dataclasses.replace(cfg, attention_block_size=8))
    ref = model.loss_fn(p, batch, jax.random.PRNGKey(8))[0]
    np.testing.assert_allclose(scanned.loss_fn(stack_layers(p), batch, jax.random.PRNGKey(8))[0],
                               ref, rtol=1e-5)
    np.testing.assert_allclose(blocked.loss_fn(p, batch, jax.random.PRNGKey(8))[0], ref, rtol=1e-5)


def test_encode_runs_the_encoder_part_and_needs_its_params(tiny):
    cfg, model, p = tiny
    tokens = _batch()["encoder_target_tokens"]
    disc = np.asarray(model.encode(p, tokens))
    assert disc.shape == tokens.shape + (cfg.discriminator_hidden_size,)
    gen_model = M.get_model(dataclasses.replace(cfg, encoder_part="generator"))
    assert gen_model.config.hidden_size == cfg.generator_hidden_size == 16
    last, hidden = gen_model.encode(p, tokens, output_hidden_states=True)
    assert last.shape[-1] == 16 and len(hidden) == cfg.generator_num_layers + 1
    only_gen = {k: v for k, v in p.items() if not k.startswith("discriminator")}
    np.testing.assert_array_equal(gen_model.encode(only_gen, tokens), last)
    with pytest.raises(ValueError, match="hold no discriminator"):
        model.encode(only_gen, tokens)


def test_every_leaf_has_logical_names():
    for scan in (False, True):
        cfg = M.get_config("prot_electra_tiny", scan_layers=scan, embedding_size=16)
        abstract = jax.eval_shape(M.get_model(cfg).init, key(0), _batch())["params"]
        leaves = jax.tree_util.tree_leaves_with_path(
            abstract, is_leaf=lambda x: isinstance(x, nn.Partitioned))
        assert any("discriminator_projection" in jax.tree_util.keystr(k) for k, _ in leaves)
        for path, leaf in leaves:
            where = jax.tree_util.keystr(path)
            assert isinstance(leaf, nn.LogicallyPartitioned), where
            assert len(leaf.names) == len(leaf.value.shape), where
            assert all(isinstance(n, str) for n in leaf.names), where


def test_counts_flops_and_config_errors():
    bfd = M.get_config("prot_electra_discriminator_bfd")
    assert bfd.param_counts() == {"ElectraForPreTraining": 682_562_561,
                                  "ElectraForMaskedLM": 682_563_870}
    gen = M.get_config("prot_electra_generator_bfd")
    assert list(gen.param_counts()) == ["ElectraForMaskedLM", "ElectraForPreTraining"]
    assert gen.num_params() == bfd.num_params() == 682_562_561 + 682_563_870 - 51_243_520
    paper = M.get_config("prot_electra")
    disc, gen_count = (paper.param_counts()[c] for c in ("ElectraForPreTraining",
                                                         "ElectraForMaskedLM"))
    assert 415e6 < disc < 425e6 and gen_count == 65_215_262   # 4 x 65.2 M = the ~261 MB file
    assert (paper.generator_hidden_size, paper.generator_num_heads) == (256, 4)
    lengths = {"inputs": 512}
    flops = bfd.flops_per_example(lengths)
    assert bfd.tokens_per_example(lengths) == 512
    assert flops == pytest.approx(bfd.flops_per_token(lengths) * 512)
    # both networks: more than 6 x (all non-embedding params) per token
    assert bfd.flops_per_token(lengths) > 6 * (bfd.num_params() - 40000 * 1280)
    one = dataclasses.replace(bfd, generator_num_layers=1)
    assert one.flops_per_example(lengths) < flops
    with pytest.raises(ValueError, match="encoder_part"):
        M.get_config("prot_electra_tiny", encoder_part="both")
    with pytest.raises(ValueError, match="not divisible"):
        M.get_config("prot_electra_tiny", generator_num_heads=3)
    with pytest.raises(ValueError, match="mask_token_fraction"):
        M.get_config("prot_electra_tiny", mask_token_fraction=1.5)
    with pytest.raises(ValueError, match="mask_prob"):
        M.get_config("prot_electra_tiny", mask_prob=-0.1)


def test_generator_sizes_follow_electra():
    assert electra.generator_sizes(1024, 30) == {
        "generator_hidden_size": 256, "generator_num_layers": 30,
        "generator_intermediate_size": 1024, "generator_num_heads": 4}
    assert electra.generator_sizes(256, 12)["generator_num_heads"] == 1
