"""Numerical parity with transformers for tiny T5 and BERT, weights copied by a local mapping.

(The real export/import lives in protlm/hf; this mapping only surfaces layout bugs early.)
"""
import flax.linen as nn
import jax
import numpy as np
import pytest
import torch
import transformers

import protlm.models as M
from tests.models.conftest import bert_batch, key, t5_batch

pytestmark = pytest.mark.hf


def _t(x):
    return torch.tensor(np.asarray(x, np.float32))


def _qkv(kernel):  # [embed, heads, kv] -> torch Linear weight [heads*kv, embed]
    d = kernel.shape[0]
    return _t(np.asarray(kernel).reshape(d, -1).T)


def _out(kernel):  # [heads, kv, embed] -> [embed, heads*kv]
    return _t(np.asarray(kernel).reshape(-1, kernel.shape[-1]).T)


def t5_state_dict(p, cfg) -> dict:
    sd = {"shared.weight": _t(p["token_embedder"]["embedding"])}
    for stack, n in (("encoder", cfg.num_encoder_layers), ("decoder", cfg.num_decoder_layers)):
        sp = p[stack]
        sd[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = \
            _t(np.asarray(sp["relpos_bias"]["rel_embedding"]).T)
        sd[f"{stack}.final_layer_norm.weight"] = _t(sp[f"{stack}_norm"]["scale"])
        for i in range(n):
            lp, pre = sp[f"layers_{i}"], f"{stack}.block.{i}.layer"
            attns = [("attention" if stack == "encoder" else "self_attention", "0.SelfAttention",
                      "pre_attention_layer_norm" if stack == "encoder"
                      else "pre_self_attention_layer_norm")]
            if stack == "decoder":
                attns.append(("encoder_decoder_attention", "1.EncDecAttention",
                              "pre_cross_attention_layer_norm"))
            for ours, theirs, norm in attns:
                for a, b in (("query", "q"), ("key", "k"), ("value", "v")):
                    sd[f"{pre}.{theirs}.{b}.weight"] = _qkv(lp[ours][a]["kernel"])
                sd[f"{pre}.{theirs}.o.weight"] = _out(lp[ours]["out"]["kernel"])
                sd[f"{pre}.{theirs.split('.')[0]}.layer_norm.weight"] = _t(lp[norm]["scale"])
            m = "1" if stack == "encoder" else "2"
            sd[f"{pre}.{m}.DenseReluDense.wi.weight"] = _t(np.asarray(lp["mlp"]["wi"]["kernel"]).T)
            sd[f"{pre}.{m}.DenseReluDense.wo.weight"] = _t(np.asarray(lp["mlp"]["wo"]["kernel"]).T)
            sd[f"{pre}.{m}.layer_norm.weight"] = _t(lp["pre_mlp_layer_norm"]["scale"])
    return sd


def test_t5_matches_transformers(np_rng):
    cfg = M.get_config("prot_t5_tiny")
    model = M.get_model(cfg)
    batch = t5_batch(np_rng, b=2, enc_len=12, dec_len=9)
    batch["encoder_input_tokens"][1, -4:] = 0  # encoder padding, masked on both sides
    p = nn.meta.unbox(jax.jit(model.init)(key(1), batch)["params"])
    hf = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=cfg.vocab_size, d_model=cfg.emb_dim, d_kv=cfg.head_dim, d_ff=cfg.mlp_dim,
        num_layers=cfg.num_encoder_layers, num_decoder_layers=cfg.num_decoder_layers,
        num_heads=cfg.num_heads, feed_forward_proj="relu", tie_word_embeddings=True,
        dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0)).eval()
    missing, unexpected = hf.load_state_dict(t5_state_dict(p, cfg), strict=False)
    assert not unexpected
    assert set(missing) <= {"lm_head.weight", "encoder.embed_tokens.weight",
                            "decoder.embed_tokens.weight"}, missing
    hf.tie_weights()
    enc = torch.tensor(batch["encoder_input_tokens"], dtype=torch.long)
    with torch.no_grad():
        out = hf(input_ids=enc, attention_mask=(enc > 0).long(),
                 decoder_input_ids=torch.tensor(batch["decoder_input_tokens"], dtype=torch.long),
                 output_hidden_states=True)
    ours = np.asarray(jax.jit(model.logits)(p, batch))
    np.testing.assert_allclose(ours, out.logits.numpy(), atol=1e-4, rtol=1e-4)
    last, hidden = jax.jit(model.encode, static_argnames="output_hidden_states")(
        p, batch["encoder_input_tokens"], output_hidden_states=True)
    for ours_h, theirs_h in zip(hidden, out.encoder_hidden_states, strict=True):
        np.testing.assert_allclose(np.asarray(ours_h), theirs_h.numpy(), atol=1e-4, rtol=1e-4)


def bert_state_dict(p, cfg) -> dict:
    e = p["embeddings"]
    sd = {
        "bert.embeddings.word_embeddings.weight": _t(e["word_embeddings"]["embedding"]),
        "bert.embeddings.position_embeddings.weight": _t(e["position_embeddings"]["embedding"]),
        "bert.embeddings.token_type_embeddings.weight": _t(e["token_type_embeddings"]["embedding"]),
        "bert.embeddings.LayerNorm.weight": _t(e["layer_norm"]["scale"]),
        "bert.embeddings.LayerNorm.bias": _t(e["layer_norm"]["bias"]),
    }
    for i in range(cfg.num_layers):
        lp, pre = p["encoder"][f"layers_{i}"], f"bert.encoder.layer.{i}"
        at = lp["attention"]
        for a in ("query", "key", "value"):
            sd[f"{pre}.attention.self.{a}.weight"] = _qkv(at[a]["kernel"])
            sd[f"{pre}.attention.self.{a}.bias"] = _t(np.asarray(at[a]["bias"]).reshape(-1))
        sd[f"{pre}.attention.output.dense.weight"] = _out(at["out"]["kernel"])
        sd[f"{pre}.attention.output.dense.bias"] = _t(at["out"]["bias"])
        sd[f"{pre}.attention.output.LayerNorm.weight"] = _t(lp["attention_layer_norm"]["scale"])
        sd[f"{pre}.attention.output.LayerNorm.bias"] = _t(lp["attention_layer_norm"]["bias"])
        sd[f"{pre}.intermediate.dense.weight"] = _t(np.asarray(lp["mlp"]["wi"]["kernel"]).T)
        sd[f"{pre}.intermediate.dense.bias"] = _t(lp["mlp"]["wi"]["bias"])
        sd[f"{pre}.output.dense.weight"] = _t(np.asarray(lp["mlp"]["wo"]["kernel"]).T)
        sd[f"{pre}.output.dense.bias"] = _t(lp["mlp"]["wo"]["bias"])
        sd[f"{pre}.output.LayerNorm.weight"] = _t(lp["mlp_layer_norm"]["scale"])
        sd[f"{pre}.output.LayerNorm.bias"] = _t(lp["mlp_layer_norm"]["bias"])
    h = p["mlm_head"]
    sd.update({
        "cls.predictions.transform.dense.weight": _t(np.asarray(h["transform"]["kernel"]).T),
        "cls.predictions.transform.dense.bias": _t(h["transform"]["bias"]),
        "cls.predictions.transform.LayerNorm.weight": _t(h["layer_norm"]["scale"]),
        "cls.predictions.transform.LayerNorm.bias": _t(h["layer_norm"]["bias"]),
        "cls.predictions.bias": _t(h["bias"]),
    })
    return sd


def test_bert_matches_transformers(np_rng):
    cfg = M.get_config("prot_bert_tiny")
    model = M.get_model(cfg)
    batch = bert_batch(np_rng, b=2, length=11)
    batch["encoder_input_tokens"][0, -3:] = 0
    p = nn.meta.unbox(jax.jit(model.init)(key(2), batch)["params"])
    # Non-trivial head bias so the tie + bias path is exercised.
    p["mlm_head"]["bias"] = jax.random.normal(jax.random.PRNGKey(3), (cfg.vocab_size,))
    hf = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings, hidden_act="gelu",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, layer_norm_eps=1e-12,
        pad_token_id=0)).eval()
    missing, unexpected = hf.load_state_dict(bert_state_dict(p, cfg), strict=False)
    assert not unexpected
    assert set(missing) <= {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias",
                            "bert.embeddings.position_ids",
                            "bert.embeddings.token_type_ids"}, missing
    hf.tie_weights()
    ids = torch.tensor(batch["encoder_input_tokens"], dtype=torch.long)
    with torch.no_grad():
        out = hf(input_ids=ids, attention_mask=(ids > 0).long(), output_hidden_states=True)
    ours = np.asarray(jax.jit(model.logits)(p, batch))
    real = batch["encoder_input_tokens"] > 0
    np.testing.assert_allclose(ours[real], out.logits.numpy()[real], atol=1e-4, rtol=1e-4)
    _, hidden = jax.jit(model.encode, static_argnames="output_hidden_states")(
        p, batch["encoder_input_tokens"], output_hidden_states=True)
    assert len(hidden) == len(out.hidden_states)
    np.testing.assert_allclose(np.asarray(hidden[-1])[real], out.hidden_states[-1].numpy()[real],
                               atol=1e-4, rtol=1e-4)
