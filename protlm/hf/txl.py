"""ProtTXL -> transformers 5 `XLNetLMHeadModel` with `attn_type="uni"` (the Transformer-XL form).

transformers 5 deleted `TransfoXL*` (deprecated in 4.35; 4.57 is the last release with it), so
protlm exports Transformer-XL as the XLNet class it is a special case of: with `attn_type="uni"`
XLNet's relative attention, causal mask, memory (`mem_len`, `use_mems_eval`) and `clamp_len` are
Transformer-XL's (`protlm.layers.relative_attention` explains why the two relative shifts agree on
every visible key). What Transformer-XL does differently is absorbed by the parameters, so the
export reproduces protlm's outputs with memory (tests: 1e-4 on real proteins over two segments):

* the input embedding is scaled by sqrt(d_model): `transformer.word_embedding.weight` is written
  pre-scaled and the output layer, tied to the unscaled table in Transformer-XL, becomes its own
  `lm_loss.weight` (`tie_word_embeddings: false`); import reads `lm_loss.weight` and checks the
  other against it;
* no segment terms and no query stream: `r_s_bias`, `seg_embed` and `mask_emb` are written as
  zeros (a zero `seg_embed` adds nothing even when `token_type_ids` are passed) and must be zeros
  on import;
* tied `r_w_bias` / `r_r_bias` (Transformer-XL's default) are written into every layer;
* ReLU, LayerNorm eps 1e-5, `same_length=False` (`same_length` masks one key less than XLNet's
  variant: such a config is refused), and n_head x d_head = d_model (transformers' XLNetConfig
  rejects other head shapes, e.g. ProtTXL-BFD's 14 x 128).

Users need transformers >= 5.0 (or any 4.x with XLNet); no Transformer-XL class is involved.
Tokenizer: a `tokenizer.json` (`PreTrainedTokenizerFast`, word-level over single residues) that
prepends `<eos>` as protlm does and maps U Z O B to X.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from protlm.data import tokens
from protlm.hf import tokenizers, xl_layout
from protlm.hf.spec import HFSpec, masked_labels
from protlm.models.txl import TXLConfig


def rules(config: TXLConfig, part: str = "model"):
    del part
    return xl_layout.xl_rules(config)


def constant_tensors(config: TXLConfig, part: str = "model") -> dict[str, np.ndarray]:
    del part
    return xl_layout.missing_segment_terms(config)


def check_export(config: TXLConfig, part: str = "model") -> None:
    del part
    xl_layout.check_heads(config)
    if config.same_length:
        raise ValueError("same_length=True: Transformer-XL's same-length mask shows each query one "
                         "key fewer than XLNet's; export with same_length=False (it changes no "
                         "parameter) and evaluate with protlm for the same-length numbers")


def to_hf_config(config: TXLConfig, part: str = "model", dtype: str = "float32") -> dict:
    del part
    check_export(config)
    out = xl_layout.hf_config(config, dtype, attn_type="uni", tie_word_embeddings=False,
                              pad_token_id=tokens.PROTTXL_PAD_ID, bos_token_id=None,
                              eos_token_id=tokens.PROTTXL_EOS_ID)
    out["use_mems_train"] = True   # Transformer-XL always trains with its memory
    return out


def from_hf_config(d: Mapping, **overrides) -> TXLConfig:
    """TXLConfig of an XLNet `attn_type="uni"` config.json written by `to_hf_config`."""
    if d.get("attn_type") != "uni":
        raise ValueError(f"attn_type {d.get('attn_type')!r}: a Transformer-XL export has 'uni'")
    if d.get("same_length"):
        raise ValueError("same_length=True XLNet masks have no Transformer-XL equivalent")
    fields = xl_layout.config_fields(d)
    fields["layer_norm_eps"] = float(d.get("layer_norm_eps", 1e-5))
    fields.update(overrides)
    return TXLConfig(**fields)


def recognizes(d: Mapping) -> bool:
    return d.get("attn_type") == "uni"


# ------------------------------------------------------------------------------------ tokenizer
def write_tokenizer(out_dir: str, config: TXLConfig | None = None) -> list[str]:
    """Writes `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`:
    `tokenizer(" ".join(seq))` gives protlm's ids (`<eos>` first)."""
    del config
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors  # noqa: PLC0415

    vocab = {t: i for i, t in enumerate(tokens.PROTTXL_TOKENS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Replace(a, b) for a, b in sorted(tokens.RARE_RESIDUE_MAP.items())])
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<eos> $A", pair="<eos> $A <eos> $B", special_tokens=[("<eos>", tokens.PROTTXL_EOS_ID)])
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    special = {"eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>"}
    tokenizers.write_json(os.path.join(out_dir, "special_tokens_map.json"), special)
    tokenizers.write_json(os.path.join(out_dir, "tokenizer_config.json"), {
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1_000_000_000,
        "padding_side": "right", **special})
    return ["tokenizer.json", "special_tokens_map.json", "tokenizer_config.json"]


def torch_inputs(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`XLNetLMHeadModel` kwargs of a causal-LM batch: labels are the (already shifted) targets."""
    ids = np.asarray(batch["decoder_input_tokens"]).astype(np.int64)
    return {"input_ids": ids,
            "labels": masked_labels(batch["decoder_target_tokens"], batch["decoder_loss_weights"])}


SPEC = HFSpec(
    model_types=("xlnet",), classes={"model": xl_layout.ARCH}, embed_class="XLNetModel",
    embed_part="model", rules=rules, to_hf_config=to_hf_config, from_hf_config=from_hf_config,
    write_tokenizer=write_tokenizer, torch_inputs=torch_inputs, check_export=check_export,
    recognizes=recognizes, constant_tensors=constant_tensors)
