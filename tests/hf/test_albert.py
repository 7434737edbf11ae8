"""ProtAlbert <-> transformers `AlbertForMaskedLM`: numerics and gradients on real proteins, exact
round trips, full-size names, Rostlab's config and `AlbertForPreTraining` layout, tokenizer files."""
from __future__ import annotations

import json
import logging

import jax
import numpy as np
import pytest

from protlm import models
from protlm.data import tokens
from protlm.hf import albert as hf_albert
from protlm.hf import export, importer, spec, tokenizers
from protlm.hf.mapping import get_path
from protlm.hf.weights_reader import HFWeights
from protlm.models import registry

from . import test_numerics
from .conftest import eval_batch, init_params, pad, token_rows, train, train_batch
from .test_full_size_names import _hf_meta_state

import torch
import transformers

pytestmark = pytest.mark.hf

# Rostlab/prot_albert config.json as PROTTRANS_FACTS section 7 gives it (the whole file: no
# model_type, no architectures).
ROSTLAB_CONFIG = {
    "attention_probs_dropout_prob": 0.0, "embedding_size": 128, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0, "hidden_size": 4096, "initializer_range": 0.02,
    "inner_group_num": 1, "intermediate_size": 16384, "max_position_embeddings": 40000,
    "num_attention_heads": 64, "num_hidden_groups": 1, "num_hidden_layers": 12,
    "type_vocab_size": 2, "vocab_size": 34,
}
TINY_HF = dict(vocab_size=34, embedding_size=16, hidden_size=32, num_hidden_layers=3,
               num_attention_heads=4, intermediate_size=64, max_position_embeddings=256,
               hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["prot_albert_tiny", "prot_albert_small"])
def test_export_matches_transformers(name, proteins, tmp_path):
    """Random init, then after 20 training steps: same hidden states and logits as transformers
    (<= 1e-4 on 16 real proteins), the exported tokenizer gives protlm's ids, and HF -> protlm is
    bit-identical."""
    test_numerics.test_export_matches_transformers(name, proteins, tmp_path)


def _torch_grads(out_dir, batch):
    """Loss and `{HF key: grad}` of transformers' `AlbertForMaskedLM` on an MLM batch."""
    model = transformers.AlbertForMaskedLM.from_pretrained(out_dir, dtype=torch.float32).train()
    inputs = {k: torch.as_tensor(v) for k, v in hf_albert.SPEC.torch_inputs(batch).items()}
    loss = model(**inputs).loss
    loss.backward()
    return float(loss), {k: p.grad.numpy() for k, p in model.named_parameters()}


@pytest.mark.slow
def test_gradients_match_torch(proteins, tmp_path):
    """One shared layer used 3 times: the gradient protlm computes (scan over depth) for every
    param equals transformers' autograd one, on the MLM objective of real proteins."""
    config = models.get_config("prot_albert_tiny", scan_layers=True, remat_policy="full")
    params = train(config, init_params(config), proteins, steps=5)
    batch = train_batch(config, proteins, np.random.default_rng(1))
    out = export.export_params(params, config, tmp_path / "hf", progress=False)
    hf_loss, hf_grads = _torch_grads(out, batch)
    model = models.get_model(config)
    loss, grads = jax.value_and_grad(lambda p: model.loss_fn(p, batch)[0])(params)
    assert abs(float(loss) - hf_loss) <= 1e-5
    word = "albert.embeddings.word_embeddings.weight"
    for rule in hf_albert.rules(config):
        ours = rule.to_hf(np.asarray(get_path(grads, rule.path)))
        theirs = hf_grads[rule.hf_key]
        scale = max(float(np.abs(theirs).max()), 1e-3)
        assert np.abs(ours - theirs).max() <= 1e-4 * scale + 1e-7, rule.hf_key
    assert np.abs(hf_grads[word]).max() > 0   # the tied decoder's share arrives in the embedding


def test_num_hidden_groups_match_transformers(proteins, tmp_path):
    config = models.get_config("prot_albert_tiny", num_layers=4, num_hidden_groups=2)
    params = init_params(config, seed=3)
    out = export.export_params(params, config, tmp_path / "hf", progress=False)
    hf = transformers.AlbertForMaskedLM.from_pretrained(out, dtype=torch.float32).eval()
    batch = eval_batch(config, proteins[:6])
    ids = torch.as_tensor(batch["encoder_input_tokens"]).long()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=(ids > 0).long()).logits.numpy()
    mask = batch["encoder_input_tokens"] > 0
    logits = np.asarray(models.get_model(config).logits(params, batch))
    assert np.abs(logits - ref)[mask].max() <= 1e-4
    assert sum(k.startswith("albert.encoder.albert_layer_groups.1.") for k in HFWeights(str(out))) == 16


def test_full_size_names_and_shapes_equal_transformers():
    config = models.get_config("prot_albert")
    specs = export.hf_tensor_specs(config, spec.param_shapes(config))
    ours = {s.name: tuple(s.shape) for s in specs}
    assert ours == _hf_meta_state(config, "model")
    assert sum(s.nbytes for s in specs) // 4 == 207_557_794 == config.param_counts()["AlbertForMaskedLM"]


def test_rostlab_config_fields_and_recognition():
    ours = hf_albert.to_hf_config(models.get_config("prot_albert"))
    assert {k: ours[k] for k in ROSTLAB_CONFIG} == ROSTLAB_CONFIG
    assert ours["model_type"] == "albert" and ours["architectures"] == ["AlbertForMaskedLM"]
    assert hf_albert.from_hf_config(ROSTLAB_CONFIG) == models.get_config("prot_albert")
    assert registry.family_for_hf_config(ROSTLAB_CONFIG).name == "albert"
    # a BERT config without model_type has no layer-sharing fields: not ALBERT
    assert not hf_albert.recognizes({"hidden_size": 1024, "embedding_size": 1024})
    with pytest.raises(ValueError, match="inner_group_num 2"):
        hf_albert.from_hf_config({**ROSTLAB_CONFIG, "inner_group_num": 2})
    with pytest.raises(ValueError, match="lacks"):
        hf_albert.from_hf_config({k: v for k, v in ROSTLAB_CONFIG.items() if k != "embedding_size"})


def test_rostlab_pretraining_layout_imports(tmp_path, proteins, caplog):
    """`AlbertForPreTraining` in pytorch_model.bin, tied copies stored, config without model_type:
    imports (pooler and sentence-order head dropped with a warning) and computes what
    transformers computes; re-export writes the same tensors."""
    torch.manual_seed(0)
    model = transformers.AlbertForPreTraining(transformers.AlbertConfig(**TINY_HF)).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a swapped mapping cannot pass
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.uniform_(0.5, 1.5)
    src = tmp_path / "rostlab"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(
        {k: v for k, v in model.config.to_dict().items() if k in ROSTLAB_CONFIG}))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert "predictions.decoder.weight" in state and "sop_classifier.classifier.weight" in state
    torch.save(state, src / "pytorch_model.bin")
    with caplog.at_level(logging.WARNING, logger="protlm.hf.importer"):
        params, config = importer.params_from_hf(src, dtype="float32")
    assert "sop_classifier.classifier.weight" in caplog.text and "albert.pooler.weight" in caplog.text
    batch = eval_batch(config, proteins[:6])
    ids = torch.as_tensor(batch["encoder_input_tokens"]).long()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=(ids > 0).long(), output_hidden_states=True)
    ours = models.get_model(config)
    mask = batch["encoder_input_tokens"] > 0
    hidden = np.asarray(ours.encode(params, batch["encoder_input_tokens"]))
    assert np.abs(hidden - out.hidden_states[-1].numpy())[mask].max() <= 1e-4
    logits = np.asarray(ours.logits(params, batch))
    assert np.abs(logits - out.prediction_logits.numpy())[mask].max() <= 1e-4
    dst = export.export_params(params, config, tmp_path / "dst", progress=False)
    a, b = HFWeights(str(src)), HFWeights(str(dst))
    kept = [k for k in a.keys() if k not in hf_albert.DROPPED_KEYS
            and k not in hf_albert.tied_aliases(config)]
    assert kept == b.keys()
    for k in kept:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


RARE = "MKUZOBXACDEFGHIKLMNPQRSTVWY"


def test_tokenizer_files_give_protlm_ids(tmp_path, proteins):
    """spiece.model (sentencepiece), tokenizer.json (tokenizers), AlbertTokenizer and AutoTokenizer
    (from tokenizer.json, and converted from spiece.model alone) all give `Family.tokenize`'s ids."""
    import sentencepiece as spm
    from tokenizers import Tokenizer  # noqa: PLC0415

    config = models.get_config("prot_albert_tiny")
    seqs = proteins + [RARE]
    texts = [tokenizers.hf_input_text(s) for s in seqs]
    expected = pad(token_rows(config, seqs))
    out = tmp_path / "tok"
    assert hf_albert.write_tokenizer(str(out), config) == [
        "spiece.model", "tokenizer.json", "special_tokens_map.json", "tokenizer_config.json"]
    sp = spm.SentencePieceProcessor(model_file=str(out / "spiece.model"))
    assert sp.get_piece_size() == tokens.PROTALBERT_VOCAB_SIZE
    assert [sp.id_to_piece(i) for i in range(5)] == list(tokens.PROTALBERT_SPECIAL_TOKENS)
    assert [sp.id_to_piece(i) for i in range(5, 30)] == ["\u2581" + r for r in tokens.PROTALBERT_RESIDUES]
    assert (sp.pad_id(), sp.unk_id()) == (0, 1)
    raw = Tokenizer.from_file(str(out / "tokenizer.json"))
    spm_only = tmp_path / "spm_only"
    spm_only.mkdir()
    for name in ("spiece.model", "special_tokens_map.json", "tokenizer_config.json"):
        (spm_only / name).write_bytes((out / name).read_bytes())
    for row, text, seq in zip(token_rows(config, seqs), texts, seqs):
        assert [tokens.PROTALBERT_CLS_ID] + sp.encode(text) + [tokens.PROTALBERT_SEP_ID] == row
        assert raw.encode(text).ids == row, seq
    for tok in (transformers.AlbertTokenizer.from_pretrained(str(out)),
                transformers.AutoTokenizer.from_pretrained(str(out)),
                transformers.AutoTokenizer.from_pretrained(str(spm_only))):
        assert type(tok).__name__ == "AlbertTokenizer" and len(tok) == tokens.PROTALBERT_VOCAB_SIZE
        np.testing.assert_array_equal(tok(texts, padding=True, return_tensors="np").input_ids,
                                      expected)
        assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id,
                tok.mask_token_id) == (0, 1, 2, 3, 4)
        assert tok.decode(expected[0], skip_special_tokens=True).replace(" ", "") == seqs[0]
