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

from protlm.hf.mapping import Rule
from protlm.models.t5 import T5Config

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


def rules(config: T5Config, encoder_only: bool = False) -> list[Rule]:
    """All rules, in the order tensors are written."""
    return encoder_rules(config) + ([] if encoder_only else decoder_rules(config))


def tied_aliases(config: T5Config, encoder_only: bool = False) -> dict[str, str]:
    """`{alias key: canonical key}` for tied copies a checkpoint may also store."""
    aliases = {"encoder.embed_tokens.weight": "shared.weight"}
    if not encoder_only:
        aliases["decoder.embed_tokens.weight"] = "shared.weight"
        if config.logits_via_embedding:
            aliases["lm_head.weight"] = "shared.weight"
    return aliases
