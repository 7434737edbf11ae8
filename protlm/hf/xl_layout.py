"""The transformers `XLNetLMHeadModel` parameter layout, shared by the ProtXLNet and ProtTXL exports.

HF layout (PyTorch state dict; XLNet's attention weights are `nn.Parameter`s `[d_model, n_head,
d_head]`, exactly protlm's `[embed, heads, kv]`, so they are copied):

    transformer.word_embedding.weight                      word_embedding/embedding (x scale)
    transformer.mask_emb [1, 1, d]                         mask_emb (two-stream)
    transformer.layer.{i}.rel_attn.{q,k,v,r,o}             layers_{i}/attention/{query,key,value,pos}/kernel, out
    transformer.layer.{i}.rel_attn.{r_w_bias,r_r_bias,r_s_bias}   per layer (tied: one param, copied)
    transformer.layer.{i}.rel_attn.seg_embed [2, n, d]
    transformer.layer.{i}.rel_attn.layer_norm.{weight,bias}
    transformer.layer.{i}.ff.layer_{1,2}.{weight,bias}     layers_{i}/ff/mlp/{wi,wo}
    transformer.layer.{i}.ff.layer_norm.{weight,bias}
    lm_loss.bias                                           lm_bias
    lm_loss.weight                                         tied to the word embedding (alias), or
                                                           its own tensor when the input is scaled

`xl_rules` builds the list for either family from the config's traits; `hf_config` the common
`config.json` fields.
"""
from __future__ import annotations

import numpy as np

from protlm.hf import config as hf_json
from protlm.hf.mapping import Rule
from protlm.models.xl_stack import XLConfig

ARCH = "XLNetLMHeadModel"
ATTENTION = (("q", "query"), ("k", "key"), ("v", "value"), ("r", "pos"))
BIASES = ("r_w_bias", "r_r_bias", "r_s_bias")


def _norm(hf: str, flax: tuple[str, ...]) -> list[Rule]:
    return [Rule(f"{hf}.weight", flax + ("scale",)), Rule(f"{hf}.bias", flax + ("bias",))]


def _linear(hf: str, flax: tuple[str, ...]) -> list[Rule]:
    return [Rule(f"{hf}.weight", flax + ("kernel",), "transpose"), Rule(f"{hf}.bias", flax + ("bias",))]


def layer_prefix(i: int) -> str:
    return f"transformer.layer.{i}.rel_attn"


def xl_rules(config: XLConfig) -> list[Rule]:
    """Every tensor of the protlm params, in write order. With a scaled input embedding
    (Transformer-XL) `lm_loss.weight` carries the embedding itself and comes first (import reads
    it); `transformer.word_embedding.weight` is written scaled. Tied biases (`untie_r=False`) are
    written into every layer (import reads layer 0 and checks the others)."""
    emb = ("word_embedding", "embedding")
    scale = float(config.embedding_scale)
    rules = [] if scale == 1.0 else [Rule("lm_loss.weight", emb)]
    rules.append(Rule("transformer.word_embedding.weight", emb, scale=scale))
    if config.two_stream:
        rules.append(Rule("transformer.mask_emb", ("mask_emb",), "expand"))
    biases = BIASES if config.segments else BIASES[:2]
    for i in range(config.num_layers):
        hf, fl = layer_prefix(i), (f"layers_{i}", "attention")
        rules += [Rule(f"{hf}.{h}", fl + (f, "kernel")) for h, f in ATTENTION]
        rules.append(Rule(f"{hf}.o", fl + ("out",)))
        rules += [Rule(f"{hf}.{b}", fl + (b,) if config.untie_r else (b,)) for b in biases]
        if config.segments:
            rules.append(Rule(f"{hf}.seg_embed", fl + ("seg_embed",)))
        rules += _norm(f"{hf}.layer_norm", fl + ("layer_norm",))
        ff, ffl = f"transformer.layer.{i}.ff", (f"layers_{i}", "ff")
        rules += _linear(f"{ff}.layer_1", ffl + ("mlp", "wi"))
        rules += _linear(f"{ff}.layer_2", ffl + ("mlp", "wo"))
        rules += _norm(f"{ff}.layer_norm", ffl + ("layer_norm",))
    rules.append(Rule("lm_loss.bias", ("lm_bias",)))
    return rules


def missing_segment_terms(config: XLConfig) -> dict[str, np.ndarray]:
    """Zero tensors of what XLNet has and a config without segments / query stream lacks:
    `r_s_bias`, `seg_embed` per layer and `mask_emb` (zero segment terms add nothing)."""
    out: dict[str, np.ndarray] = {}
    n, dh = config.num_heads, config.head_dim
    if not config.two_stream:
        out["transformer.mask_emb"] = np.zeros((1, 1, config.hidden_size), np.float32)
    if not config.segments:
        for i in range(config.num_layers):
            out[f"{layer_prefix(i)}.r_s_bias"] = np.zeros((n, dh), np.float32)
            out[f"{layer_prefix(i)}.seg_embed"] = np.zeros((2, n, dh), np.float32)
    return out


def check_heads(config: XLConfig) -> None:
    """transformers' XLNetConfig requires `d_head == d_model // n_head`."""
    if not config.heads_span_hidden:
        raise ValueError(
            f"{config.num_heads} heads x {config.head_dim} != d_model {config.hidden_size}: "
            "transformers' XLNetConfig requires d_head = d_model / n_head, so this model has no "
            "exact transformers class (Transformer-XL allows it; transformers 4.x's "
            "TransfoXLLMHeadModel was the only class that did)")


def hf_config(config: XLConfig, dtype: str, *, attn_type: str, tie_word_embeddings: bool,
              pad_token_id: int, bos_token_id: int | None, eos_token_id: int | None) -> dict:
    """The `XLNetConfig` fields every export writes (plus `untie_r` and `dropatt`, which
    transformers keeps as attributes and protlm reads back)."""
    check_heads(config)
    return {
        "architectures": [ARCH],
        "model_type": "xlnet",
        "attn_type": attn_type,
        "vocab_size": config.vocab_size,
        "d_model": config.hidden_size,
        "n_layer": config.num_layers,
        "n_head": config.num_heads,
        "d_head": config.head_dim,
        "d_inner": config.intermediate_size,
        "ff_activation": config.activation,
        "untie_r": config.untie_r,
        "initializer_range": config.initializer_range,
        "layer_norm_eps": config.layer_norm_eps,
        "dropout": config.dropout_rate,
        "dropatt": config.attention_dropout_rate,   # XLNet's flag; transformers uses `dropout`
        "mem_len": config.mem_len or None,
        "reuse_len": config.reuse_len or None,
        "bi_data": False,          # inference/fine-tuning setting; pretraining's is per row
        "clamp_len": config.clamp_len,
        "same_length": False,
        "use_mems_eval": True,
        "tie_word_embeddings": tie_word_embeddings,
        "pad_token_id": pad_token_id,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        **hf_json.dtype_fields(dtype),
        **hf_json.transformers_version(),
    }


def config_fields(d) -> dict:
    """protlm `XLConfig` fields of an `XLNetConfig` dict (transformers' defaults)."""
    hf_json.require(d, ("d_model", "n_layer", "n_head", "d_inner", "vocab_size"), "XLNet")
    d_model, n_head = int(d["d_model"]), int(d["n_head"])
    return dict(
        vocab_size=int(d["vocab_size"]), hidden_size=d_model, num_layers=int(d["n_layer"]),
        num_heads=n_head, head_dim=int(d.get("d_head") or d_model // n_head),
        intermediate_size=int(d["d_inner"]), activation=str(d.get("ff_activation", "gelu")),
        layer_norm_eps=float(d.get("layer_norm_eps", 1e-12)),
        dropout_rate=float(d.get("dropout", 0.1)),
        attention_dropout_rate=float(d.get("dropatt", d.get("dropout", 0.1))),
        initializer_range=float(d.get("initializer_range", 0.02)),
        mem_len=int(d.get("mem_len") or 0), clamp_len=int(d.get("clamp_len", -1)),
        untie_r=bool(d.get("untie_r", True)))
