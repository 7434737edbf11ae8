"""ProtXLNet and ProtTXL exported to transformers 5 `XLNetLMHeadModel` run exactly as in protlm.

Real proteins, tiny and small presets from random init, the tiny ones also after 10 optimizer
steps with the carried memory: logits of two consecutive stream segments (the second read with the
memory of the first) agree to 1e-4, residue vectors of `XLNetModel` (padded by the exported
tokenizer) equal `protlm.embed`'s, the tokenizers give protlm's ids, and protlm -> HF -> protlm is bit-identical.
"""
from __future__ import annotations

import functools
import itertools

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from protlm import models
from protlm.data import plm
from protlm.data import tokens as tok
from protlm.data.streams import ProteinStreams
from protlm.hf import export, importer, recurrent_parity, spec as hf_spec
from protlm.hf import xlnet as hf_xlnet

from .conftest import init_params

import torch
import transformers

pytestmark = pytest.mark.hf
TOL = 1e-4
ROWS, LENGTH = 4, 32


def stream_batches(config, proteins, count, bi_data=False):
    """`count` consecutive batches of the family's stream objective over real proteins."""
    family = models.get_family(config)
    records = itertools.cycle(proteins)
    if family.name == "txl":
        from protlm.data import causal_lm
        streams = ProteinStreams(records, ROWS, tok.encode_prottxl, tok.PROTTXL_EOS_ID)
        return [causal_lm.stream_batch(streams, t, LENGTH) for t in range(count)]
    cfg = plm.PLMConfig(seq_len=LENGTH, reuse_len=config.reuse_len,
                        perm_size=config.reuse_len // 2, num_predict=6, bi_data=bi_data)
    rows = plm.bi_data_rows(ROWS, bi_data)
    streams = ProteinStreams(records, ROWS, tok.encode_protxlnet, tok.PROTXLNET_EOD_ID, rows)
    return [plm.stream_batch(streams, t, cfg, 0, 0, rows) for t in range(count)]


def preset(name):
    over = {"reuse_len": 16} if "xlnet" in name else {}
    return models.get_config(name, dtype="float32", mem_len=24, **over)


@functools.lru_cache(maxsize=None)
def trained_params(name: str, trained: bool, seqs: tuple[str, ...]):
    config = preset(name)
    params = init_params(config)
    if not trained:
        return config, params
    model = models.get_model(config)
    tx = optax.adam(3e-3)
    opt = tx.init(params)

    @jax.jit
    def step(p, o, batch, carry, rng):
        (_, aux), grads = jax.value_and_grad(
            lambda q: model.loss_fn(q, batch, rng, carry=carry), has_aux=True)(p)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, aux["carry"]

    batches = stream_batches(config, list(seqs), 10)
    carry = nn.meta.unbox(model.init_carry(batches[0]))
    for i, batch in enumerate(batches):
        params, opt, carry = step(params, opt, batch, carry, jax.random.PRNGKey(i))
    return config, jax.tree_util.tree_map(np.asarray, params)


def hf_model(path, cls="XLNetLMHeadModel"):
    model, info = getattr(transformers, cls).from_pretrained(
        path, dtype=torch.float32, output_loading_info=True)
    if cls == "XLNetModel":   # the base model has no LM head: lm_loss.* are left over
        info["unexpected_keys"] = set(info["unexpected_keys"]) - {"lm_loss.weight", "lm_loss.bias"}
    assert not any(info.values()), f"transformers loading report: {info}"
    return model.eval()


def check_roundtrip(path, config, params):
    back, back_config = importer.params_from_hf(path, dtype="float32", progress=False)
    assert back_config == config
    flat = jax.tree_util.tree_leaves_with_path(params)
    back_flat = dict(jax.tree_util.tree_leaves_with_path(back))
    assert set(back_flat) == {p for p, _ in flat}
    for path_, leaf in flat:
        np.testing.assert_array_equal(back_flat[path_], leaf, err_msg=jax.tree_util.keystr(path_))


def check_two_segments(config, params, hf, batches, label):
    """protlm with its carried memory == transformers with `mems`, segment 1 then 2."""
    model = models.get_model(config)
    diffs, carry, mems = recurrent_parity.segment_logit_diffs(
        model, models.get_family(config).hf(), params, hf, batches)
    worst = max(diffs)
    print(f"{label}: two segments with memory, max |logit diff| {worst:.2e}")
    assert worst <= TOL
    assert mems[0].shape[0] == int(carry["valid"].min()) > 0   # the same memory on both sides


def check_embedding(path, config, params, seqs):
    """`XLNetModel` on the exported tokenizer's (padded) ids == protlm's residue vectors."""
    family = models.get_family(config)
    model = models.get_model(config)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    texts = [hf_xlnet.hf_input_text(s) if family.name == "xlnet" else " ".join(s) for s in seqs]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    base = hf_model(path, "XLNetModel")
    # transformers' 'uni' branch cannot combine its causal mask with an attention_mask of a
    # batch (`attn_mask += data_mask` broadcasts in place); a causal model never sees the
    # right padding anyway, so the Transformer-XL export is called without one.
    kwargs = {} if family.name == "txl" else {"attention_mask": enc.attention_mask}
    with torch.no_grad():
        hidden = base(input_ids=enc.input_ids, **kwargs).last_hidden_state
    hidden = hidden.numpy()
    worst = 0.0
    for i, s in enumerate(seqs):
        ids, offset = family.tokenize(s)
        row = enc.input_ids[i].numpy()[enc.attention_mask[i].numpy().astype(bool)]
        np.testing.assert_array_equal(row, ids)          # the tokenizer gives protlm's ids
        ours = np.asarray(model.encode(params, ids[None]))[0]
        theirs = hidden[i][enc.attention_mask[i].numpy().astype(bool)]
        worst = max(worst, float(np.abs(ours - theirs)[offset:offset + len(s)].max()))
    assert worst <= TOL, worst


# (preset, trained): every preset from its random init, the tiny ones also after 10 optimizer
# steps with the carried memory (training the small presets adds time, not coverage).
CASES = [("prot_txl_tiny", False), ("prot_xlnet_tiny", False),
         pytest.param("prot_txl_tiny", True, marks=pytest.mark.slow),
         pytest.param("prot_xlnet_tiny", True, marks=pytest.mark.slow),
         pytest.param("prot_txl_small", False, marks=pytest.mark.slow),
         pytest.param("prot_xlnet_small", False, marks=pytest.mark.slow)]


@pytest.mark.parametrize("name,trained", CASES)
def test_export_matches_transformers_with_memory(name, trained, proteins, tmp_path):
    config, params = trained_params(name, trained, tuple(proteins))
    path = export.export_params(params, config, tmp_path / "hf", progress=False)
    label = f"{name} {'trained' if trained else 'init'}"
    check_two_segments(config, params, hf_model(path), stream_batches(config, proteins, 2), label)
    check_embedding(path, config, params, proteins[:6])
    check_roundtrip(path, config, params)


def test_bi_data_rows_match_transformers_bi_data(proteins, tmp_path):
    """XLNet's bi_data: the second half of the rows use negated distances (transformers splits
    the batch the same way when its config has bi_data=True)."""
    config, params = trained_params("prot_xlnet_tiny", False, tuple(proteins))
    path = export.export_params(params, config, tmp_path / "hf", progress=False)
    hf = transformers.XLNetLMHeadModel.from_pretrained(path, bi_data=True).eval()
    batches = stream_batches(config, proteins, 2, bi_data=True)
    assert batches[0]["reverse"][:, 0].tolist() == [0, 0, 1, 1]
    check_two_segments(config, params, hf, batches, "prot_xlnet_tiny bi_data")


def test_txl_export_is_xlnet_uni_with_scaled_untied_embedding(tmp_path):
    config = models.get_config("prot_txl_tiny")
    params = init_params(config)
    path = export.export_params(params, config, tmp_path / "hf", progress=False)
    cfg = transformers.AutoConfig.from_pretrained(path)
    assert (cfg.attn_type, cfg.tie_word_embeddings, cfg.ff_activation) == ("uni", False, "relu")
    hf = hf_model(path)
    emb = params["word_embedding"]["embedding"]
    np.testing.assert_allclose(hf.transformer.word_embedding.weight.detach().numpy(),
                               emb * np.sqrt(config.hidden_size), rtol=1e-6)
    np.testing.assert_array_equal(hf.lm_loss.weight.detach().numpy(), emb)
    assert float(hf.transformer.layer[0].rel_attn.seg_embed.detach().abs().max()) == 0.0
    # an XLNet 'uni' checkpoint whose segment terms are not zero is no Transformer-XL
    with torch.no_grad():
        hf.transformer.layer[1].rel_attn.seg_embed.fill_(0.5)
    hf.save_pretrained(tmp_path / "changed")
    with pytest.raises(ValueError, match="seg_embed"):
        importer.params_from_hf(tmp_path / "changed", progress=False)


def test_untransformable_configs_are_refused(tmp_path):
    bfd = models.get_config("prot_txl_bfd")
    with pytest.raises(ValueError, match="14 heads x 128"):
        models.get_family(bfd).hf().check_export(bfd, "model")
    config = models.get_config("prot_txl_tiny", same_length=True)
    with pytest.raises(ValueError, match="same_length"):
        export.export_params(init_params(config), config, tmp_path / "x", progress=False)


def test_import_rostlab_layout(tmp_path):
    """A Rostlab-style directory: config.json as transformers 3 wrote it (no `untie_r`, no
    `dropatt`, `mem_len: null`) and a `pytorch_model.bin` that also stores the tied `lm_loss.weight`."""
    torch.manual_seed(0)
    hf_cfg = transformers.XLNetConfig(vocab_size=37, d_model=32, n_layer=2, n_head=4, d_inner=64,
                                      ff_activation="gelu", mem_len=None, pad_token_id=5)
    hf = transformers.XLNetLMHeadModel(hf_cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    d = tmp_path / "prot_xlnet"
    d.mkdir()
    torch.save(dict(hf.state_dict()), d / "pytorch_model.bin")
    config_json = {k: v for k, v in hf_cfg.to_dict().items()
                   if k not in ("untie_r", "dropatt", "transformers_version", "dtype")}
    config_json.update(architectures=["XLNetLMHeadModel"], model_type="xlnet")
    import json
    (d / "config.json").write_text(json.dumps(config_json))
    params, config = importer.params_from_hf(d, dtype="float32", progress=False)
    assert config.family_name == "xlnet" and config.untie_r and config.mem_len == 0
    model = models.get_model(config)
    ids = np.array([[33, 24, 18, 0, 20, 4, 3]], np.int32)
    with torch.no_grad():
        want = hf.transformer(input_ids=torch.as_tensor(ids.astype(np.int64))).last_hidden_state
    np.testing.assert_allclose(np.asarray(model.encode(params, ids)), want.numpy(), atol=TOL)


@pytest.mark.parametrize("name,cls_count", [("prot_xlnet", 409_413_669), ("prot_txl", 409_433_116)])
def test_full_size_names_shapes_and_counts_equal_transformers_meta(name, cls_count):
    config = models.get_config(name)
    specs = export.hf_tensor_specs(config, hf_spec.param_shapes(config))
    ours = {s.name: tuple(s.shape) for s in specs}
    with torch.device("meta"):
        hf = transformers.XLNetLMHeadModel(hf_spec.transformers_config(config))
    tied = set(hf._tied_weights_keys or {}) if config.family_name == "xlnet" else set()
    theirs = {k: tuple(v.shape) for k, v in hf.state_dict().items() if k not in tied}
    assert ours == theirs
    assert sum(p.numel() for p in hf.parameters()) == cls_count
    assert config.param_counts()["XLNetLMHeadModel"] == cls_count
    if config.family_name == "xlnet":
        assert config.num_params() == cls_count


def test_xlnet_tokenizer_is_rostlabs_layout(tmp_path, proteins):
    hf_xlnet.write_tokenizer(str(tmp_path))
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "spiece.model"))
    assert [sp.id_to_piece(i) for i in range(sp.get_piece_size())][:9] == tok.PROTXLNET_SPECIALS
    assert sum(sp.id_to_piece(i).startswith("\u2581") for i in range(37)) == 20
    family = models.get_family(models.get_config("prot_xlnet_tiny"))
    for t in (transformers.XLNetTokenizer.from_pretrained(str(tmp_path)),
              transformers.AutoTokenizer.from_pretrained(str(tmp_path))):
        assert t.padding_side == "left" and t.pad_token_id == 5
        seqs = proteins[:4] + ["MKUZOBXA"]
        enc = t([hf_xlnet.hf_input_text(s) for s in seqs], padding=True, return_tensors="np")
        for row, mask, s in zip(enc.input_ids, enc.attention_mask, seqs):
            assert row[0] == 5 or mask.all()             # left padding with <pad>
            np.testing.assert_array_equal(row[mask.astype(bool)], family.tokenize(s)[0])


def test_txl_tokenizer_gives_protlm_ids(tmp_path, proteins):
    from protlm.hf import txl as hf_txl
    hf_txl.write_tokenizer(str(tmp_path))
    t = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    family = models.get_family(models.get_config("prot_txl_tiny"))
    for s in proteins[:4] + ["MKUZOBXA"]:
        assert t(" ".join(s)).input_ids == family.tokenize(s)[0].tolist()
