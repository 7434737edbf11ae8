"""ProtT5 <-> transformers `T5ForConditionalGeneration` / `T5EncoderModel` parameter names.

Written here rather than taken from transformers' conversion script, which names the non-gated
decoder MLP wrongly in some versions. HF layout (PyTorch state dict, torch Linear = `[out, in]`):

    shared.weight                                               token_embedder/embedding
    {enc,dec}oder.block.0.layer.0.SelfAttention.relative_attention_bias.weight  [buckets, heads]
    encoder.block.{i}.layer.0.{layer_norm, SelfAttention.{q,k,v,o}}
    encoder.block.{i}.layer.1.{layer_norm, DenseReluDense.{wi | wi_0, wi_1, wo}}
    decoder.block.{i}.layer.0 self attention, layer.1 EncDecAttention, layer.2 DenseReluDense
    {enc,dec}oder.final_layer_norm.weight
    lm_head.weight                                              only when not tied (T5 v1.1 style)

Tied copies that some checkpoints store (`encoder.embed_tokens.weight`, `decoder.embed_tokens.weight`,
and `lm_head.weight` of a tied model) are aliases of `shared.weight`; transformers 5 writes only
`shared.weight`.
"""
from __future__ import annotations

import os

from collections.abc import Mapping

import numpy as np

from protlm.data import tokens
from protlm.hf import config as hf_config
from protlm.hf import tokenizers
from protlm.hf.mapping import Rule
from protlm.hf.spec import HFSpec, masked_labels
from protlm.models.t5 import T5Config

# T5's `n_positions` is informational only (relative positions have no limit): ProtT5's value.
T5_N_POSITIONS = 512
T5_ARCH = "T5ForConditionalGeneration"
T5_ENCODER_ARCH = "T5EncoderModel"
PARTS = {"model": T5_ARCH, "encoder": T5_ENCODER_ARCH}
# Longest input the tokenizer accepts without warning (relative positions have no limit).
T5_MODEL_MAX_LENGTH = 1_000_000_000

# Keys transformers itself ignores when loading (an unused bias some old checkpoints carry);
# import drops them with a warning.
DROPPED_KEYS = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)


def _attention(hf: str, flax: tuple[str, ...]) -> list[Rule]:
    rules = [Rule(f"{hf}.{t}.weight", flax + (f, "kernel"), "heads_in")
             for t, f in (("q", "query"), ("k", "key"), ("v", "value"))]
    return rules + [Rule(f"{hf}.o.weight", flax + ("out", "kernel"), "heads_out")]


def _mlp(hf: str, flax: tuple[str, ...], config: T5Config) -> list[Rule]:
    if len(config.mlp_activations) == 1:
        wi = [Rule(f"{hf}.wi.weight", flax + ("wi", "kernel"), "transpose")]
    else:
        wi = [Rule(f"{hf}.wi_{j}.weight", flax + (f"wi_{j}", "kernel"), "transpose")
              for j in range(len(config.mlp_activations))]
    return wi + [Rule(f"{hf}.wo.weight", flax + ("wo", "kernel"), "transpose")]


def _norm(hf: str, flax: tuple[str, ...]) -> Rule:
    return Rule(f"{hf}.weight", flax + ("scale",))


def encoder_rules(config: T5Config) -> list[Rule]:
    """Rules of the shared embedding and the encoder stack (all a `T5EncoderModel` holds)."""
    rules = [
        Rule("shared.weight", ("token_embedder", "embedding")),
        Rule("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
             ("encoder", "relpos_bias", "rel_embedding"), "transpose"),
    ]
    for i in range(config.num_encoder_layers):
        hf, fl = f"encoder.block.{i}", ("encoder", f"layers_{i}")
        rules.append(_norm(f"{hf}.layer.0.layer_norm", fl + ("pre_attention_layer_norm",)))
        rules += _attention(f"{hf}.layer.0.SelfAttention", fl + ("attention",))
        rules.append(_norm(f"{hf}.layer.1.layer_norm", fl + ("pre_mlp_layer_norm",)))
        rules += _mlp(f"{hf}.layer.1.DenseReluDense", fl + ("mlp",), config)
    rules.append(_norm("encoder.final_layer_norm", ("encoder", "encoder_norm")))
    return rules


def decoder_rules(config: T5Config) -> list[Rule]:
    """Rules of the decoder stack (and the untied output projection, if any)."""
    rules = [Rule("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                  ("decoder", "relpos_bias", "rel_embedding"), "transpose")]
    for i in range(config.num_decoder_layers):
        hf, fl = f"decoder.block.{i}", ("decoder", f"layers_{i}")
        rules.append(_norm(f"{hf}.layer.0.layer_norm", fl + ("pre_self_attention_layer_norm",)))
        rules += _attention(f"{hf}.layer.0.SelfAttention", fl + ("self_attention",))
        rules.append(_norm(f"{hf}.layer.1.layer_norm", fl + ("pre_cross_attention_layer_norm",)))
        rules += _attention(f"{hf}.layer.1.EncDecAttention", fl + ("encoder_decoder_attention",))
        rules.append(_norm(f"{hf}.layer.2.layer_norm", fl + ("pre_mlp_layer_norm",)))
        rules += _mlp(f"{hf}.layer.2.DenseReluDense", fl + ("mlp",), config)
    rules.append(_norm("decoder.final_layer_norm", ("decoder", "decoder_norm")))
    if not config.logits_via_embedding:
        rules.append(Rule("lm_head.weight", ("decoder", "logits_dense", "kernel"), "transpose"))
    return rules


def rules(config: T5Config, part: str = "model") -> list[Rule]:
    """All rules of `part` ("model" or "encoder"), in the order tensors are written."""
    return encoder_rules(config) + ([] if part == "encoder" else decoder_rules(config))


def tied_aliases(config: T5Config, part: str = "model") -> dict[str, str]:
    """`{alias key: canonical key}` for tied copies a checkpoint may also store."""
    aliases = {"encoder.embed_tokens.weight": "shared.weight"}
    if part != "encoder":
        aliases["decoder.embed_tokens.weight"] = "shared.weight"
        if config.logits_via_embedding:
            aliases["lm_head.weight"] = "shared.weight"
    return aliases


# ------------------------------------------------------------------------------------ config.json
def feed_forward_proj(activations: tuple[str, ...]) -> str:
    """HF `feed_forward_proj` of protlm's `mlp_activations`.

    ("relu",) -> "relu"; ("gelu_new", "linear") -> "gated-gelu" (HF maps it to the tanh GELU);
    (act, "linear") -> "gated-act" for other activations.
    """
    if len(activations) == 1:
        return activations[0]
    if len(activations) == 2 and activations[1] == "linear":
        act = activations[0]
        if act == "gelu_new":
            return "gated-gelu"
        if act == "gelu":
            raise ValueError("mlp_activations ('gelu', 'linear') (exact GELU, gated) has no HF T5 "
                             "feed_forward_proj: HF's 'gated-gelu' is the tanh approximation "
                             "('gelu_new'); train with ('gelu_new', 'linear') to export")
        return f"gated-{act}"
    raise ValueError(f"mlp_activations {activations} has no HF T5 equivalent; HF supports one "
                     "activation or (activation, 'linear') gated")


def mlp_activations(proj: str) -> tuple[str, ...]:
    """protlm `mlp_activations` of an HF `feed_forward_proj`."""
    parts = proj.split("-")
    if len(parts) == 1:
        return (proj,)
    if len(parts) == 2 and parts[0] == "gated":
        return ("gelu_new" if parts[1] == "gelu" else parts[1], "linear")
    raise ValueError(f"feed_forward_proj {proj!r} is not 'act' or 'gated-act'")


def to_hf_config(config: T5Config, part: str = "model", dtype: str = "float32") -> dict:
    """config.json of `T5ForConditionalGeneration` (part "encoder": `T5EncoderModel`)."""
    proj = feed_forward_proj(config.mlp_activations)
    gated = proj.startswith("gated-")
    dense_act = proj.split("-")[-1]
    return {
        "architectures": [PARTS[part]],
        "d_ff": config.mlp_dim,
        "d_kv": config.head_dim,
        "d_model": config.emb_dim,
        "decoder_start_token_id": tokens.PROTT5_PAD_ID,
        "dense_act_fn": "gelu_new" if proj == "gated-gelu" else dense_act,
        "dropout_rate": config.dropout_rate,
        "eos_token_id": tokens.PROTT5_EOS_ID,
        "feed_forward_proj": proj,
        "initializer_factor": 1.0,
        "is_encoder_decoder": True,
        "is_gated_act": gated,
        "layer_norm_epsilon": config.layer_norm_eps,
        "model_type": "t5",
        "n_positions": T5_N_POSITIONS,
        "num_decoder_layers": config.num_decoder_layers,
        "num_heads": config.num_heads,
        "num_layers": config.num_encoder_layers,
        "output_past": True,
        "pad_token_id": tokens.PROTT5_PAD_ID,
        "relative_attention_max_distance": config.relative_attention_max_distance,
        "relative_attention_num_buckets": config.relative_attention_num_buckets,
        "tie_word_embeddings": bool(config.logits_via_embedding),
        "use_cache": True,
        "vocab_size": config.vocab_size,
        **hf_config.dtype_fields(dtype),
        **hf_config.transformers_version(),
    }


def from_hf_config(d: Mapping, **overrides) -> T5Config:
    """T5Config of an HF T5 config.json dict (transformers' defaults for optional fields).

    Args:
      d: the parsed config.json.
      **overrides: T5Config fields to set on top (e.g. dtype, scan_layers).
    """
    hf_config.require(d, ("d_model", "d_kv", "d_ff", "num_heads", "num_layers", "vocab_size"), "T5")
    num_layers = int(d["num_layers"])
    fields = dict(
        vocab_size=int(d["vocab_size"]),
        emb_dim=int(d["d_model"]),
        num_heads=int(d["num_heads"]),
        head_dim=int(d["d_kv"]),
        mlp_dim=int(d["d_ff"]),
        mlp_activations=mlp_activations(d.get("feed_forward_proj", "relu")),
        num_encoder_layers=num_layers,
        num_decoder_layers=int(d.get("num_decoder_layers") or num_layers),
        dropout_rate=float(d.get("dropout_rate", 0.1)),
        relative_attention_num_buckets=int(d.get("relative_attention_num_buckets", 32)),
        relative_attention_max_distance=int(d.get("relative_attention_max_distance", 128)),
        logits_via_embedding=d.get("tie_word_embeddings", True) is not False,
        layer_norm_eps=float(d.get("layer_norm_epsilon", 1e-6)),
    )
    fields.update(overrides)
    return T5Config(**fields)


def part_of_hf(d: Mapping, keys: set) -> str:
    """"encoder" for a `T5EncoderModel` directory (by architecture, or weights without a decoder)."""
    encoder = T5_ENCODER_ARCH in (d.get("architectures") or []) or not any(
        k.startswith("decoder.") for k in keys)
    return "encoder" if encoder else "model"


# ------------------------------------------------------------------------------------ tokenizer
def prott5_sentencepiece_model() -> bytes:
    """`spiece.model` of the ProtT5 vocabulary without the sentinels: 28 pieces, `<pad>`0 `</s>`1
    `<unk>`2 and `▁A`3 .. `▁Z`27; transformers' `T5Tokenizer` appends the 100 `<extra_id_i>`
    sentinels at 127 - i, exactly as `protlm.data.tokens.PROTT5_TOKENS` has them."""
    num_base = tokens.PROTT5_VOCAB_SIZE - tokens.PROTT5_NUM_SENTINELS
    specials = {tokens.PROTT5_PAD_ID: "<pad>", tokens.PROTT5_EOS_ID: "</s>",
                tokens.PROTT5_UNK_ID: "<unk>"}
    return tokenizers.unigram_sentencepiece_model(
        tokens.PROTT5_TOKENS[:num_base], specials, unk_id=tokens.PROTT5_UNK_ID,
        pad_id=tokens.PROTT5_PAD_ID, eos_id=tokens.PROTT5_EOS_ID)


def write_tokenizer(out_dir: str, config: T5Config | None = None) -> list[str]:
    """Writes `spiece.model`, `tokenizer_config.json`, `special_tokens_map.json` (Rostlab layout).

    `config` is unused: every ProtT5 shares one vocabulary.

    Returns:
      The file names written.
    """
    del config
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, tokenizers.SPIECE_MODEL), "wb") as f:
        f.write(prott5_sentencepiece_model())
    sentinels = [f"<extra_id_{i}>" for i in range(tokens.PROTT5_NUM_SENTINELS)]
    special = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
               "additional_special_tokens": sentinels}
    tokenizers.write_json(os.path.join(out_dir, "special_tokens_map.json"), special)
    tokenizers.write_json(os.path.join(out_dir, "tokenizer_config.json"), {
        "tokenizer_class": "T5Tokenizer", "do_lower_case": False,
        "extra_ids": tokens.PROTT5_NUM_SENTINELS, "model_max_length": T5_MODEL_MAX_LENGTH, **special})
    return [tokenizers.SPIECE_MODEL, "special_tokens_map.json", "tokenizer_config.json"]


# ------------------------------------------------------------------------------------ the spec
def torch_inputs(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`T5ForConditionalGeneration` forward kwargs of a span-denoising batch (same loss)."""
    enc = np.asarray(batch["encoder_input_tokens"]).astype(np.int64)
    return {"input_ids": enc, "attention_mask": (enc != 0).astype(np.int64),
            "decoder_input_ids": np.asarray(batch["decoder_input_tokens"]).astype(np.int64),
            "labels": masked_labels(batch["decoder_target_tokens"], batch["decoder_loss_weights"])}


def part_of_params(params: Mapping) -> str:
    return "model" if "decoder" in params else "encoder"


def select_params(params: Mapping, part: str) -> Mapping:
    return {k: v for k, v in params.items() if k != "decoder"} if part == "encoder" else params


def check_export(config: T5Config, part: str) -> None:
    if part == "model" and not config.logits_via_embedding:
        raise ValueError(
            "logits_via_embedding=False (untied output projection): transformers 5 ties T5's "
            "lm_head to shared.weight whatever tie_word_embeddings says, so the exported model "
            "would compute different logits; export the encoder with --encoder_only")


SPEC = HFSpec(
    model_types=("t5",), classes=PARTS, embed_class=T5_ENCODER_ARCH, embed_part="encoder",
    rules=rules, to_hf_config=to_hf_config, from_hf_config=from_hf_config,
    write_tokenizer=write_tokenizer, torch_inputs=torch_inputs, tied_aliases=tied_aliases,
    dropped_keys=DROPPED_KEYS, part_of_hf=part_of_hf, part_of_params=part_of_params,
    select_params=select_params, check_export=check_export)
